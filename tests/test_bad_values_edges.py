"""Bad values that used to get through: NaN delays in the task adapters, webhook headers
that are not a mapping, an exploration budget too large for a float."""

from __future__ import annotations

import math
import re

import pytest

import pytest_bgwork as bg


@pytest.mark.asyncio
async def test_taskiq_delay_label_nan_is_refused_naming_it(bgwork: bg.Simulation) -> None:
    from pytest_bgwork.adapters.taskiq import SimBroker

    broker = SimBroker()

    @broker.task
    async def job() -> None:
        pass

    from taskiq.exceptions import SendTaskError

    for bad in (math.nan, math.inf, "nan"):
        with pytest.raises(SendTaskError) as info:  # taskiq wraps what kick() raises
            await job.kicker().with_labels(delay=bad).kiq()
        assert isinstance(info.value.__cause__, ValueError)
        assert re.match(r"SimBroker\.kick\(message\): labels\['delay'\]= must be a number of "
                        r"seconds.*got (nan|inf)", str(info.value.__cause__))
    await job.kicker().with_labels(delay=30).kiq()  # a finite delay still works
    await bgwork.run_until_idle()
    assert bgwork.clock.monotonic() >= 30
    assert bgwork.queues.stats("taskiq")["acked"] == 1


@pytest.mark.asyncio
async def test_dramatiq_enqueue_delay_nan_is_refused_naming_it(bgwork: bg.Simulation) -> None:
    import dramatiq

    from pytest_bgwork.adapters import dramatiq as bd

    broker = bd.SimBroker()
    broker.declare_queue("default")
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match=r"SimBroker\.enqueue\(delay=\.\.\.\) must be a number "
                                             r"of milliseconds.*got (nan|inf)"):
            broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=(),
                                            kwargs={}, options={}), delay=bad)
    assert bgwork.history.filter("queue", "publish") == []


@pytest.mark.asyncio
async def test_webhook_headers_that_are_not_a_mapping_are_refused_naming_the_argument(
    bgwork: bg.Simulation,
) -> None:
    for bad in ([1], "x-sig", {"x-sig": 1}, {1: "v"}):
        with pytest.raises(ValueError, match=r"webhooks\.deliver\(headers=\.\.\.\) must be a mapping "
                                             r"of header names \(str\) to values"):
            await bgwork.webhooks.deliver(url="https://app.test/hooks", event={"id": "evt_1"},
                                          headers=bad)  # type: ignore[arg-type]
    assert bgwork.history.filter("webhook", "deliver") == []


@pytest.mark.parametrize("budget", ["1" * 400, "1" * 400 + "s", "1" * 400 + "x", "1e400", "10000001x"])
def test_an_explore_budget_past_the_limit_is_a_usage_error(pytester: pytest.Pytester, budget: str) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-explore-budget={budget}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bgwork-explore-budget / bgwork_explore_budget expects*at most*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
