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


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_importing_the_plugin_loads_no_heavy_library() -> None:
    assert _loaded_after("import pytest_bgwork.plugin") == []


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
