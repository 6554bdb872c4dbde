"""Fetch a peer library's own tests from its sdist on the package index, at test time.

The peers' suites are never copied into this repository: `unpack("moto", "5.2.6")`
downloads the pinned sdist once (`pip download --no-binary :all: --no-deps`), unpacks
it into a cache folder outside the work tree and returns the unpacked root.
Set ``BGWORK_PEERS_CACHE`` to choose the folder (default: ``~/.cache/pytest-bgwork-peers``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path


def cache_dir() -> Path:
    """The folder that keeps downloaded and unpacked sdists between runs."""
    root = os.environ.get("BGWORK_PEERS_CACHE") or Path.home() / ".cache" / "pytest-bgwork-peers"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def unpack(dist: str, version: str) -> Path:
    """Return the unpacked sdist root of `dist==version`, downloading it the first time."""
    dest = cache_dir() / f"{dist}-{version}"
    marker = dest / ".unpacked"
    if marker.exists():
        return _root(dest)
    archives = cache_dir() / "archives"
    archives.mkdir(exist_ok=True)
    found = _archive(archives, dist, version)
    if found is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"{dist}=={version}", "-d", str(archives)],
            check=True,
        )
        found = _archive(archives, dist, version)
        if found is None:
            raise FileNotFoundError(f"pip downloaded no sdist of {dist}=={version} into {archives}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(found) as tar:
        tar.extractall(dest, filter="data")
    marker.touch()
    return _root(dest)


def _archive(folder: Path, dist: str, version: str) -> Path | None:
    names = {dist.lower().replace("-", "_"), dist.lower().replace("_", "-"), dist.lower()}
    for path in sorted(folder.glob("*.tar.gz")):
        stem = path.name[: -len(".tar.gz")].lower()
        if any(stem == f"{n}-{version}" for n in names):
            return path
    return None


def _root(dest: Path) -> Path:
    entries = [p for p in dest.iterdir() if p.is_dir()]
    return entries[0] if len(entries) == 1 else dest
