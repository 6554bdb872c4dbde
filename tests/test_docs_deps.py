"""A docs page whose examples import a library pytest-bgwork does not depend on says how
to install it, and the ``test`` extra installs it (so the project's run of the page has it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Libraries docs examples import that are no dependency of pytest-bgwork, and the extra
#: a page names for them.
OPTIONAL = {"starlette": "fastapi", "fastapi": "fastapi"}


def _extra(name: str, extras: dict[str, list[str]], seen: frozenset[str] = frozenset()) -> set[str]:
    """The distribution names an extra installs, following ``pytest-bgwork[...]`` references."""
    out: set[str] = set()
    for req in extras[name]:
        m = re.match(r"pytest-bgwork\[([\w,-]+)\]", req)
        if m:
            for inner in m.group(1).split(","):
                if inner not in seen:
                    out |= _extra(inner, extras, seen | {name})
        else:
            out.add(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower())
    return out


def test_a_page_importing_an_optional_library_says_how_to_install_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    pages = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        for lib, extra in OPTIONAL.items():
            if not re.search(rf"^\s*(from {lib}[\s.]|import {lib}\b)", text, re.M):
                continue
            pages.append(page.name)
            assert lib not in required
            assert f"pytest-bgwork[{extra}]" in text, f"{page.name} imports {lib}: name the [{extra}] extra"
            for name in (extra, "test", "examples"):
                assert lib in _extra(name, extras), f"the [{name}] extra does not install {lib}"
    assert {"webhooks.md", "asgi.md"} <= set(pages)
