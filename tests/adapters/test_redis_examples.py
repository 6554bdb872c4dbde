"""examples/redis_exports under chaos: the fixed worker stays green in every mode, the
first version is caught by chaos ``crash`` (a worker dying with the lock held)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from pytest_bgwork.adapters import arq as _arq_adapter  # noqa: F401
from pytest_bgwork.adapters import redis as _adapter  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# imported here, once: pytester's in-process runs drop the modules a run imported, and a
# second run would otherwise pair a fresh redis-py with the adapter bound to the first
sys.path.insert(0, str(EXAMPLES))
try:
    importlib.import_module("redis_exports.test_redis_exports")
    importlib.import_module("arq_exports.test_arq_exports")
finally:
    sys.path.remove(str(EXAMPLES))

SUITE = """
    import pytest
    import redis_exports.app as app
    from redis_exports.test_redis_exports import exports_done, run_exports

    @pytest.mark.asyncio
    @pytest.mark.parametrize("n", range(4))
    async def test_exports_{name}(bg_redis, n):
        bucket = await run_exports(bg_redis, app.{handler})
        exports_done(bg_redis)
        assert bucket.overlaps == []
"""

MODES = ["duplicate", "fail-first", "reorder", "crash", "latency", "overlap",
         "duplicate,fail-first,reorder,crash,latency,overlap"]


@pytest.mark.parametrize("mode", MODES)
def test_the_fixed_worker_passes_under_every_chaos_mode(pytester: pytest.Pytester, mode: str) -> None:
    pytester.syspathinsert(EXAMPLES)
    pytester.makepyfile(SUITE.format(name="fixed", handler="handle_export"))
    result = pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-chaos={mode}")
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize("mode", ["crash", "duplicate,fail-first,reorder,crash,latency,overlap"])
def test_chaos_crash_catches_the_first_version(pytester: pytest.Pytester, mode: str) -> None:
    pytester.syspathinsert(EXAMPLES)
    pytester.makepyfile(SUITE.format(name="buggy", handler="handle_export_buggy"))
    plain = pytester.runpytest("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=4)  # the happy path alone does not show it
    result = pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-chaos={mode}")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*hash(es) not terminal (state not in *", "*fault.crash*"])


ARQ_SUITE = """
    import pytest
    from arq_exports import app
    from arq_exports.test_arq_exports import exports_done, run_exports

    @pytest.mark.asyncio
    @pytest.mark.parametrize("n", range(4))
    async def test_arq_exports_{name}(bg_arq, n):
        app.BUCKET.clear()
        await run_exports(app.{settings})
        exports_done(bg_arq)
"""


@pytest.mark.parametrize("mode", ["crash", "latency", "duplicate,fail-first,reorder,crash,latency,overlap"])
def test_the_fixed_arq_job_passes_under_chaos(pytester: pytest.Pytester, mode: str) -> None:
    pytester.syspathinsert(EXAMPLES)
    pytester.makepyfile(ARQ_SUITE.format(name="fixed", settings="WorkerSettings"))
    result = pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-chaos={mode}")
    result.assert_outcomes(passed=4)


def test_chaos_crash_catches_the_first_arq_job(pytester: pytest.Pytester) -> None:
    pytester.syspathinsert(EXAMPLES)
    pytester.makepyfile(ARQ_SUITE.format(name="buggy", settings="BuggyWorkerSettings"))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=4)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=crash")
    assert result.parseoutcomes().get("failed", 0) >= 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*hash(es) not terminal (state not in *",
                                 "*redis.hset [[]ok[]] attempt arq.queue/build:e?#1"])
