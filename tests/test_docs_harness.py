"""The docs harness (conftest.py at the root): pages run as test modules, loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

HARNESS = (Path(__file__).parent.parent / "conftest.py").read_text("utf-8")


@pytest.fixture
def docs(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(HARNESS)
    pytester.mkdir("docs")
    return pytester


def page(pytester: pytest.Pytester, name: str, text: str) -> None:
    (pytester.path / "docs" / name).write_text(text, "utf-8")


def test_blocks_share_a_module_and_test_functions_run_with_fixtures(docs: pytest.Pytester) -> None:
    page(docs, "a.md", "# A\n\n```python\nSTART = 3\n```\n\nText.\n\n```python\n"
         "import pytest\n\n@pytest.mark.asyncio\nasync def test_sleeps(bgwork):\n"
         "    import asyncio\n    await asyncio.sleep(START)\n    assert bgwork.clock.monotonic() == START\n```\n"
         "\n```text\nnot python: not run\n```\n")
    docs.runpytest("docs").assert_outcomes(passed=1)


def test_an_indented_fence_in_a_list_or_admonition_runs_too(docs: pytest.Pytester) -> None:
    page(docs, "b.md", "# B\n\n!!! note\n\n    ```python\n    def test_inside():\n"
         "        assert 1 + 1 == 3\n    ```\n")
    result = docs.runpytest("docs")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*docs/b.md:7: AssertionError*"])  # the line in the page


def test_a_failing_top_level_block_is_a_collection_error(docs: pytest.Pytester) -> None:
    page(docs, "c.md", "# C\n\n```python\nundefined_name\n```\n")
    result = docs.runpytest("docs")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting docs/c.md*", "*NameError*undefined_name*"])


def test_a_test_name_defined_twice_is_refused(docs: pytest.Pytester) -> None:
    page(docs, "d.md", "```python\ndef test_x():\n    pass\n```\n\n```python\ndef test_x():\n    pass\n```\n")
    result = docs.runpytest("docs")
    result.stdout.fnmatch_lines(["*test_x is defined at line 2 and again at line 7*rename one*"])


def test_an_unclosed_fence_is_refused(docs: pytest.Pytester) -> None:
    page(docs, "e.md", "# E\n\n```python\ndef test_x():\n    pass\n")
    result = docs.runpytest("docs")
    result.stdout.fnmatch_lines(["*ERROR collecting docs/e.md*", "*e.md: the fence opened at line 3 is never closed*"])
