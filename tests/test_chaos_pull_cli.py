"""``--bgwork-chaos`` on a suite whose tests own pull workers: the buggy worker goes red
under each mode that can show its bug and under all modes together; the fixed one stays green."""

from __future__ import annotations

import pytest

SUITE = '''
import asyncio
import pytest
import pytest_bgwork as bg

FIXED = {fixed}


def worker(sim):
    async def loop():
        while True:
            d = await sim.queues.receive("exports")
            if d is None:
                await asyncio.sleep(1)
                continue
            job = d.payload["id"]
            try:
                await sim.kv.set("status", job, "running")
                if FIXED:  # the provider sends once per key
                    if await sim.kv.set("mail", job, True, if_absent=True):
                        sim.effects.record("email", key=job)
                else:  # no key: every run mails
                    sim.effects.record("email", key=job)
                await sim.kv.set("status", job, "done")
            except Exception:
                if FIXED:
                    raise  # the message comes back
            await d.ack()  # (the buggy one deletes a job whose handling raised)
    return loop()


@pytest.mark.asyncio
async def test_each_export_mailed_once_and_done(bgwork):
    bgwork.queues.create("exports", visibility_timeout=60)
    for n in (1, 2):
        bgwork.workers.start(f"w{{n}}", lambda: worker(bgwork))
    for job in ("e1", "e2"):
        await bgwork.queues.publish("exports", {{"id": job}})
    await bgwork.run_until_idle()
    bg.assert_effects_once(bgwork, "email", keys=["e1", "e2"])
    assert bgwork.kv.items("status") == {{"e1": "done", "e2": "done"}}
'''

ALL = "duplicate,fail-first,reorder,crash,latency,overlap"


@pytest.mark.parametrize("modes", ["duplicate", "fail-first", "crash", "overlap", ALL])
def test_the_buggy_worker_goes_red_and_the_fixed_one_stays_green(
        pytester: pytest.Pytester, modes: str) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_buggy=SUITE.format(fixed=False), test_fixed=SUITE.format(fixed=True))
    plain = pytester.runpytest("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=2)  # one clean delivery each: both look right
    result = pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-chaos={modes}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED test_buggy.py::test_each_export_mailed_once_and_done*"])
