"""Run the documentation: README.md and each page under docs/ is a pytest test module.

The ```python blocks of a page, top to bottom, are that module's source (each block
placed at its own line of the page, so tracebacks point into the Markdown). Top-level
code runs when the page is collected, as a test file's does on import; `test_*`
functions and `Test*` classes in the blocks are collected as tests, with fixtures
(`bgwork`, `caplog`, ...), marks and pytest-asyncio, exactly as in a test file.
Output and pseudo-code use ```text fences and are not run.

pytest-markdown-docs and Sybil execute blocks but do not collect the test functions a
block defines (a block `async def test_x(bgwork): ...` would define it and pass without
running it), so this collector is the docs harness.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*\{?\.?(?P<lang>[\w+-]*)")
_PYTHON = {"python", "py", "python3"}
_ANY_PYTHON = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*\{?\.?(python|py|python3)\b", re.M | re.I)


def python_blocks(text: str) -> Iterator[tuple[int, str]]:
    """Yield (first code line, 0-based; dedented source) of each ```python fence.

    Fences indented inside lists, admonitions or tabs count too; a fence closes on a
    line of the same character at least as long, as CommonMark says.
    """
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"the fence opened at line {i + 1} is never closed")
        if lang in _PYTHON:
            yield i + 1, "\n".join(body) + "\n"
        i = j + 1


def page_source(path: Path) -> str:
    """The page's python blocks as one module, each block on its own lines of the page."""
    out: list[str] = []
    seen: dict[str, int] = {}
    try:
        blocks = list(python_blocks(path.read_text("utf-8")))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    for start, block in blocks:
        out.extend([""] * (start - len(out)))
        try:
            tree = ast.parse(block)
        except SyntaxError as exc:
            raise SyntaxError(f"{path}:{start + (exc.lineno or 1)}: {exc.msg}") from None
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if node.name.startswith("Test" if isinstance(node, ast.ClassDef) else "test"):
                line = start + node.lineno
                if node.name in seen:
                    raise ValueError(
                        f"{path}: {node.name} is defined at line {seen[node.name]} and again at line {line}; "
                        "the later one would hide the earlier test: rename one"
                    )
                seen[node.name] = line
        out.extend(block.splitlines())
    return "\n".join(out) + "\n"


class MarkdownPage(pytest.Module):
    """A docs page collected as a test module built from its python blocks."""

    def _getobj(self) -> types.ModuleType:
        source = page_source(self.path)
        name = "docs_" + re.sub(r"\W", "_", str(self.path.relative_to(self.config.rootpath).with_suffix("")))
        module = types.ModuleType(name)
        module.__file__ = str(self.path)
        tree = ast.parse(source, filename=str(self.path))
        try:  # pytest's assertion rewriting, so a failing assert in a page explains itself
            from _pytest.assertion.rewrite import rewrite_asserts

            rewrite_asserts(tree, source.encode(), str(self.path), self.config)
        except ImportError:  # pragma: no cover - a pytest without the private helper
            pass
        sys.modules[name] = module
        exec(compile(tree, str(self.path), "exec"), module.__dict__)
        self.config.pluginmanager.consider_module(module)
        return module


_ROOT = Path(__file__).parent


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect README.md and every Markdown page under docs/ that has python blocks."""
    documented = file_path == _ROOT / "README.md" or (_ROOT / "docs") in file_path.parents
    if documented and file_path.suffix == ".md" and _ANY_PYTHON.search(file_path.read_text("utf-8")):
        page: MarkdownPage = MarkdownPage.from_parent(parent, path=file_path)
        return page
    return None
