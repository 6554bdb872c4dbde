"""Code in the docs fits the site: no line of a fenced block in docs/ or README.md is
longer than 80 characters (the site clips longer ones behind a scroll bar)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 80
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})")


def long_code_lines(text: str, limit: int = LIMIT) -> Iterator[tuple[int, int]]:
    """(1-based line, length) of each fenced-code line longer than ``limit``.

    A fence may be indented (inside a list or an admonition): its lines are measured
    without that indent, as the site shows them. A fence closes on a line of the same
    character at least as long, as CommonMark says.
    """
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            shown = lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip()
            if len(shown) > limit:
                yield j + 1, len(shown)
            j += 1
        i = j + 1


def test_the_scanner_measures_code_only() -> None:
    text = "\n".join([
        "prose " * 30,  # prose may be long: the site wraps it
        "```python",
        "x = 1",
        "y = '" + "a" * 80 + "'",
        "```",
        "- a list item:",
        "",
        "    ```text",
        "    " + "b" * 80,  # 80 once the list's indent is taken off
        "    " + "c" * 81,
        "    ```",
        "~~~~",
        "```",  # a shorter or other fence does not close it
        "d" * 81,
        "~~~~",
    ])
    assert list(long_code_lines(text)) == [(4, 86), (10, 81), (14, 81)]


def test_no_docs_code_line_is_longer_than_80_characters() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = [f"{page.relative_to(ROOT)}:{line}: {length} characters"
             for page in pages for line, length in long_code_lines(page.read_text())]
    assert not found, (f"fenced code lines over {LIMIT} characters (reflow them; "
                       "the site clips them):\n" + "\n".join(found))
