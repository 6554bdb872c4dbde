"""Start-up cost: the plugin loads in every pytest run of a venv where it is installed.

Importing it must load none of the heavy libraries (Hypothesis, httpx, respx, freezegun,
croniter, the report, any adapter's client library); they load on first use.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_bgwork as bg

HEAVY = ("hypothesis", "httpx", "respx", "freezegun", "croniter", "pytest_bgwork.report_html",
         "starlette", "fastapi", "boto3", "botocore", "aiobotocore", "celery", "kombu", "taskiq",
         "dramatiq", "agentuity", "alienplatform", "redis")


#: What pytest itself does not load and the plugin's start-up need not: the simulation and
#: its stdlib (asyncio comes with the virtual loop), loaded by the first test that uses it.
SIMULATION = ("asyncio", "pytest_bgwork.simulation", "pytest_bgwork.core.loop",
              "pytest_bgwork.core.faults", "pytest_bgwork.core.wallclock",
              "pytest_bgwork.checking.replay", "pytest_bgwork.services.queues", "pytest_bgwork.budget")


def _loaded_after(code: str, names: tuple[str, ...] = HEAVY) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_importing_the_plugin_loads_no_heavy_library() -> None:
    assert _loaded_after("import pytest_bgwork.plugin") == []


def test_importing_the_plugin_loads_no_simulation() -> None:
    assert _loaded_after("import pytest\nimport pytest_bgwork.plugin", SIMULATION) == []


def test_a_run_without_bgwork_tests_never_loads_the_simulation(pytester: pytest.Pytester) -> None:
    """Hooks that run in every pytest run (configure, header, each test's call and report,
    the summary) leave the simulation unloaded while no test uses it, options set or not."""
    pytester.makeconftest(f"""
        import sys
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_terminal_summary(terminalreporter):
            names = {SIMULATION[1:]!r}
            loaded = [m for m in sys.modules if m.startswith("pytest_bgwork") and
                      (m in names or m.startswith(("pytest_bgwork.core", "pytest_bgwork.services")))]
            terminalreporter.write_line("simulation modules loaded: " + (" ".join(loaded) or "none"))
    """)
    pytester.makepyfile("""
        import asyncio
        import pytest

        def test_plain():
            pass

        @pytest.mark.asyncio
        async def test_async_plain():
            await asyncio.sleep(0)

        def test_failing():
            assert 1 == 2
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bgwork-chaos=duplicate",
                                           "--bgwork-timeline=always", "--bgwork-strict")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["bgwork: seed per test*chaos: duplicate*",
                                 "simulation modules loaded: none"])


def test_public_names_load_on_first_use() -> None:
    assert _loaded_after("import pytest_bgwork as bg; bg.Simulation; bg.FaultPlan") == []
    assert "hypothesis" in _loaded_after("import pytest_bgwork as bg; bg.explore")


def test_every_public_name_resolves_and_all_lists_exactly_them() -> None:
    assert set(bg.__all__) == set(bg._EXPORTS)
    for name in bg.__all__:
        assert getattr(bg, name) is not None
    assert bg.strategies.fault_plans is not None
    with pytest.raises(AttributeError, match="has no attribute 'Simulatoin'"):
        bg.Simulatoin  # noqa: B018


def test_starting_the_wall_clock_loads_no_lazy_module() -> None:
    """freezegun's start scans every loaded module's attributes (``dir`` + ``getattr``):
    the lazy packages must not list names they would import on access, or the first
    ``bgwork`` test imports every adapter's library (and Hypothesis) while datetime is
    being patched — pydantic models then meet ``FakeDatetime`` and fail."""
    code = ("import pytest_bgwork, pytest_bgwork.adapters\n"
            "from pytest_bgwork.core.wallclock import wall_clock\n"
            "wall_clock.start(); wall_clock.stop()")
    assert [m for m in _loaded_after(code) if m != "freezegun"] == []
