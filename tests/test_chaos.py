"""Chaos mode: every queue made adversarial, from the API and from the command line."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.checking import chaos
from pytest_bgwork.core.faults import Fault


# -- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("duplicate", ("duplicate",)),
        ("crash, Duplicate ,crash", ("duplicate", "crash")),  # MODES order, no repeats
        (["reorder", "fail-first"], ("fail-first", "reorder")),
        ("duplicate,fail-first,reorder,crash,latency,overlap", chaos.MODES),
        ("", ()),
        ([], ()),
        (None, ()),
        ("none", ()),
        ("off", ()),
    ],
)
def test_parse_accepts_strings_lists_and_off(value: Any, expected: tuple[str, ...]) -> None:
    assert chaos.parse(value) == expected


def test_parse_rejects_unknown_modes_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=re.escape(
        "--x: unknown chaos mode(s) 'dupe', 'boom'; valid values are duplicate, fail-first, "
        "reorder, crash, latency, overlap (comma-separated), or none to turn chaos off"
    )):
        chaos.parse("dupe,crash,boom", source="--x")


def test_parse_rejects_a_value_that_is_not_text() -> None:
    with pytest.raises(ValueError, match=r"chaos= expects chaos modes as a comma-separated "
                                         r"string or a list of strings .*got \[1\]"):
        chaos.parse([1], source="chaos=")  # type: ignore[list-item]


def test_faults_for_each_mode_are_plain_fault_rules() -> None:
    rules = chaos.faults_for(chaos.MODES)
    assert [r.describe() for r in rules] == [
        "duplicate * at queue.publish x2",
        "fail * at queue.deliver on every call raising "
        "ConnectionError('bgwork chaos: fail-first') in attempt 1",
        "reorder * at queue.deliver on every call up to 1s",
        # each message's first attempt that passes a point (fail-first's attempt 1 never does)
        "crash * at a point drawn among those the attempt passes",
        "latency up to 0.1s on every service call",
        "duplicate * at queue.publish overlapping (the copies start at the same instant) x2",
    ]
    assert bg.FaultPlan(rules).to_data()[3] == {"kind": "crash", "point": "*", "queue": "*"}
    assert chaos.faults_for(["crash"])[0].attempt is None


def test_apply_with_no_modes_adds_nothing() -> None:
    with bg.Simulation(seed=1) as sim:
        assert chaos.apply(sim, "") == ()
        assert len(sim.faults.plan) == 0
        assert len(sim.history) == 0


def test_a_plan_with_a_reorder_fault_applies_and_an_unknown_kind_is_refused() -> None:
    with bg.Simulation(seed=1) as sim:
        sim.faults.apply([{"kind": "reorder", "point": "queue.deliver", "queue": "*",
                           "seconds": 0.5}])
        assert sim.faults.plan.faults == (Fault("reorder", "queue.deliver", "*", seconds=0.5),)
        with pytest.raises(ValueError, match=r"Fault.kind must be one of .*'reorder'.*got 'nope'"):
            sim.faults.apply([{"kind": "nope"}])


# -- behaviour on a simulation -----------------------------------------------------------------
async def _run_jobs(sim: bg.Simulation, n: int = 3, **create: Any) -> list[tuple[Any, int]]:
    """Publish ``n`` payloads to a routed queue whose handler writes KV; return (payload, attempt)."""
    seen: list[tuple[Any, int]] = []
    sim.queues.create("jobs", retry_delay=0, **create)

    async def handler(payload: Any, delivery: Any) -> None:
        seen.append((payload, delivery.attempt))
        await sim.kv.set("done", str(payload), {"by": delivery.attempt})

    sim.queues.route("jobs", handler)
    for i in range(n):
        await sim.queues.publish("jobs", i)
    await sim.run_until_idle()
    return seen


@pytest.mark.asyncio
async def test_duplicate_delivers_every_message_twice(bgwork: bg.Simulation) -> None:
    chaos.apply(bgwork, "duplicate")
    seen = await _run_jobs(bgwork)
    assert sorted(p for p, _ in seen) == [0, 0, 1, 1, 2, 2]
    assert bgwork.history.count("fault", "duplicate") == 3
    assert bgwork.stats()["faults"] == 3
    assert bgwork.queues.stats("jobs")["acked"] == 3


@pytest.mark.asyncio
async def test_fail_first_fails_attempt_one_before_the_handler_runs(bgwork: bg.Simulation) -> None:
    chaos.apply(bgwork, ["fail-first"])
    seen = await _run_jobs(bgwork)
    assert seen == [(0, 2), (1, 2), (2, 2)]  # the handler never saw an attempt 1
    failed = bgwork.history.filter("queue", "attempt_failed")
    assert [(e.detail["id"], e.detail["attempt"], e.detail["error"]) for e in failed] == [
        (f"msg_{i}", 1, "ConnectionError: bgwork chaos: fail-first") for i in (1, 2, 3)
    ]
    assert bgwork.history.count("fault", "fail", point="queue.deliver") == 3
    assert bgwork.stats()["redeliveries"] == 3


@pytest.mark.asyncio
def _crash_points(seed: int) -> list[tuple[str, str | None]]:
    """Crash chaos on a handler passing kv.get, kv.set, stream.create, stream.write, stream.close."""
    with bg.Simulation(seed=seed) as sim:
        chaos.apply(sim, "crash")

        async def main() -> None:
            sim.queues.create("jobs", visibility_timeout=45, retry_delay=0)

            async def handler(payload: Any, delivery: Any) -> None:
                await sim.kv.get("done", str(payload))
                await sim.kv.set("done", str(payload), {"by": delivery.attempt})
                async with await sim.streams.create("out") as s:
                    await s.write("x")

            sim.queues.route("jobs", handler)
            await sim.queues.publish("jobs", 1)
            await sim.run_until_idle()

        sim.run(main())
        assert sim.history.count("queue", "crashed") == 1
        assert sim.queues.stats("jobs")["acked"] == 1
        return [(e.detail["point"], e.attempt) for e in sim.history.filter("fault", "crash")]


def test_crash_dies_in_attempt_one_at_a_point_drawn_from_the_seed() -> None:
    """Not only the first point: across seeds every point attempt 1 passes is hit, the ack too."""
    by_seed = {seed: _crash_points(seed) for seed in range(1, 41)}
    assert all(len(v) == 1 and v[0][1] == "jobs/msg_1#1" for v in by_seed.values())
    points = {v[0][0] for v in by_seed.values()}
    assert points == {"kv.get", "kv.set", "stream.create", "stream.write", "stream.close",
                      "queue.ack"}
    assert _crash_points(7) == by_seed[7]  # the same seed, the same point


@pytest.mark.asyncio
async def test_crash_with_fail_first_crashes_the_first_attempt_that_runs_the_handler(
        bgwork: bg.Simulation) -> None:
    """Modes compose: fail-first takes attempt 1, crash still kills a handler run (attempt 2)."""
    chaos.apply(bgwork, "fail-first,crash")
    seen = await _run_jobs(bgwork, n=1, visibility_timeout=45)
    assert seen == [(0, 2), (0, 3)]
    crashes = bgwork.history.filter("fault", "crash")
    assert [e.attempt for e in crashes] == ["jobs/msg_1#2"]
    assert bgwork.history.count("queue", "crashed") == 1


@pytest.mark.asyncio
async def test_crash_without_service_calls_dies_at_the_ack(bgwork: bg.Simulation) -> None:
    """A handler that only has an effect crashes at the ack: the effect happens twice."""
    chaos.apply(bgwork, "crash")
    bgwork.queues.create("mail")

    async def send(payload: Any, delivery: Any) -> None:
        bgwork.effects.record("email", key=payload["to"])

    bgwork.queues.route("mail", send)
    await bgwork.queues.publish("mail", {"to": "ann@example.com"})
    await bgwork.run_until_idle()
    assert [e.detail["point"] for e in bgwork.history.filter("fault", "crash")] == ["queue.ack"]
    assert bgwork.effects.count("email") == 2
    with pytest.raises(AssertionError, match="email"):
        bg.assert_effects_once(bgwork, "email")


def _reorder_run(seed: int, partition: str | None = None) -> tuple[list[int], str]:
    with bg.Simulation(seed=seed) as sim:
        chaos.apply(sim, "reorder")
        order: list[int] = []

        async def main() -> None:
            sim.queues.create("jobs")

            async def handler(payload: Any, delivery: Any) -> None:
                order.append(payload)

            sim.queues.route("jobs", handler)
            for i in range(6):
                await sim.queues.publish("jobs", i, partition_key=partition)
            await sim.run_until_idle()

        sim.run(main())
        assert 0 < sim.clock.monotonic() <= 6 * chaos.REORDER_MAX_SECONDS
        return order, sim.history.digest()


def test_reorder_shuffles_handler_order_deterministically() -> None:
    order, digest = _reorder_run(seed=11)
    assert sorted(order) == list(range(6))
    assert order != list(range(6))  # this seed draws a different order
    assert _reorder_run(seed=11) == (order, digest)  # same seed, same run


def test_reorder_keeps_a_partition_key_in_order() -> None:
    order, _ = _reorder_run(seed=11, partition="customer-1")
    assert order == list(range(6))


def test_chaos_is_recorded_and_counted() -> None:
    with bg.Simulation(seed=2) as sim:
        assert chaos.apply(sim, "crash,duplicate") == ("duplicate", "crash")
        first = sim.history.events[0]
        assert (first.name, first.detail) == ("chaos.on", {"modes": ["duplicate", "crash"]})
        sim.run(_run_jobs(sim, n=1))
        assert sim.stats()["faults"] == sim.history.count("fault") == 2


# -- the pytest surface -----------------------------------------------------------------------
_USER_SUITE = """
import pytest

SENT = []

async def _run(sim, handler):
    sim.queues.create("orders")
    sim.queues.route("orders", handler)
    await sim.queues.publish("orders", {"id": "o-1"})
    await sim.run_until_idle()

@pytest.mark.asyncio
async def test_charge_not_idempotent(bgwork):
    charged = []
    async def charge(payload, delivery):
        charged.append(payload["id"])
    await _run(bgwork, charge)
    assert charged == ["o-1"]

@pytest.mark.asyncio
async def test_charge_idempotent(bgwork):
    async def charge(payload, delivery):
        if not (await bgwork.kv.get("charges", payload["id"])).exists:
            await bgwork.kv.set("charges", payload["id"], {"amount": 5})
            bgwork.effects.record("charge", key=payload["id"])
    await _run(bgwork, charge)
    assert bgwork.effects.count("charge") == 1
"""


def test_without_chaos_both_user_tests_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_USER_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "bgwork: seed per test*; timeline on failure",
        "*2 simulation(s): simulated 0.0s, 2 deliveries, 0 redeliveries, 0 faults injected, "
        "0 dead letters",
    ])
    assert "chaos:" not in result.stdout.str()


@pytest.mark.parametrize(
    ("mode", "counts"),
    [
        ("duplicate", "4 deliveries, 2 redeliveries, 2 faults injected"),
        ("fail-first,duplicate", "6 deliveries, 4 redeliveries, 4 faults injected"),
        ("crash", "4 deliveries, 2 redeliveries, 2 faults injected"),
    ],
)
def test_chaos_turns_the_non_idempotent_test_red(
    pytester: pytest.Pytester, mode: str, counts: str
) -> None:
    pytester.makepyfile(_USER_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-chaos={mode}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED *::test_charge_not_idempotent*"])
    modes = chaos.parse(mode)
    text = ",".join(modes)
    result.stdout.fnmatch_lines([
        f"bgwork: seed per test*; chaos: {text}",
        f"seed * · replay: pytest '*test_charge_not_idempotent' --bgwork-seed=* "
        f"--bgwork-chaos={text} · chaos: {text}",
        "*chaos.on*",
        f"*2 simulation(s): simulated *s, {counts}, 0 dead letters (chaos: {text})",
    ])


def test_ini_key_and_marker_override(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "bgwork_chaos = duplicate\n")
    pytester.makepyfile(_USER_SUITE + """

@pytest.mark.bgwork(chaos="")
@pytest.mark.asyncio
async def test_opted_out(bgwork):
    charged = []
    async def charge(payload, delivery):
        charged.append(1)
    await _run(bgwork, charge)
    assert charged == [1]
    assert bgwork.faults.plan.faults == ()
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["FAILED *::test_charge_not_idempotent*"])
    # the replay line spells the chaos modes out, wherever they came from
    result.stdout.fnmatch_lines(["seed * · replay: pytest '*' --bgwork-seed=* "
                                 "--bgwork-chaos=duplicate · chaos: duplicate"])


def test_marker_turns_chaos_on_for_one_test_with_a_list(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bgwork(chaos=["fail-first"])
        @pytest.mark.asyncio
        async def test_marked(bgwork):
            bgwork.queues.create("q", retry_delay=0)
            attempts = []
            async def h(payload, delivery):
                attempts.append(delivery.attempt)
            bgwork.queues.route("q", h)
            await bgwork.queues.publish("q", 1)
            await bgwork.run_until_idle()
            assert attempts == [2]

        @pytest.mark.asyncio
        async def test_unmarked(bgwork):
            assert bgwork.faults.plan.faults == ()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*1 faults injected*"])


def test_bad_option_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=duplicate,dupe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*--bgwork-chaos / bgwork_chaos: unknown chaos mode(s) 'dupe'; valid values are "
        "duplicate, fail-first, reorder, crash, latency, overlap (comma-separated), or none to turn chaos off",
    ])


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "bgwork_chaos = everything\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown chaos mode(s) 'everything'; valid values are*"])


def test_bad_marker_value_names_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bgwork(chaos="slow")
        def test_marked(bgwork):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*UsageError: *::test_marked: @pytest.mark.bgwork(chaos=...): unknown chaos mode(s) "
        "'slow'; valid values are duplicate, fail-first, reorder, crash*",
    ])


def test_cli_none_overrides_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "bgwork_chaos = duplicate\n")
    pytester.makepyfile(_USER_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=none")
    result.assert_outcomes(passed=2)


def test_summary_and_html_report_add_up_across_xdist_workers(pytester: pytest.Pytester) -> None:
    """Workers send their counts and timelines on the reports; the controller sums and writes."""
    pytester.makepyfile(_USER_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--bgwork-chaos=duplicate",
                                "--bgwork-html=r.html")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*2 simulation(s): simulated 0.0s, 4 deliveries, 2 redeliveries, 2 faults injected, "
        "0 dead letters (chaos: duplicate)",
    ])
    page = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert "1 test(s) shown (failing tests); 1 failed. Chaos: duplicate." in page
    assert 'data-label="orders msg_1 attempt #2"' in page


# -- modes compose: each keeps the power it has alone ------------------------------------
def _skips_after_a_crash(modes: str, seed: int) -> bool:
    """A crash-between-writes bug: a retry sees the first write and skips the second.

    Whether chaos ``modes`` made the bug show (an order without a receipt) under ``seed``.
    """
    with bg.Simulation(seed=seed) as sim:
        chaos.apply(sim, modes)

        async def handler(payload: Any, delivery: Any) -> None:
            if (await sim.kv.get("charged", payload["id"])).exists:
                return  # the bug: "charged" is not "done"
            await sim.kv.set("charged", payload["id"], True)
            await sim.kv.set("receipt", payload["id"], True)

        async def main() -> list[bool]:
            sim.queues.create("orders")
            sim.queues.route("orders", handler)
            for i in range(3):
                await sim.queues.publish("orders", {"id": f"o{i}"})
            await sim.run_until_idle()
            return [(await sim.kv.get("receipt", f"o{i}")).exists for i in range(3)]

        return not all(sim.run(main()))


def test_all_modes_together_find_a_crash_between_writes_wherever_crash_alone_does() -> None:
    """fail-first, duplicate and reorder draw too, but never move crash's point: under each
    seed where ``crash`` alone finds the bug, all modes together find it too."""
    alone = {seed for seed in range(30) if _skips_after_a_crash("crash", seed)}
    together = {seed for seed in range(30)
                if _skips_after_a_crash("duplicate,fail-first,reorder,crash", seed)}
    assert len(alone) >= 5
    assert alone <= together, sorted(alone - together)


def test_chaos_overlap_never_runs_a_fifo_group_twice_at_once() -> None:
    with bg.Simulation(seed=1, platform="aws") as sim:
        chaos.apply(sim, "overlap")
        running: list[str] = []
        most = [0]

        async def handler(payload: Any, delivery: Any) -> None:
            running.append(payload)
            most[0] = max(most[0], len(running))
            await asyncio.sleep(1)
            running.remove(payload)

        async def main() -> None:
            sim.queues.create("jobs.fifo", profile="sqs-fifo", content_based_dedup=True)
            sim.queues.route("jobs.fifo", handler)
            for i in range(3):
                await sim.queues.publish("jobs.fifo", f"m{i}", partition_key="g1")
            sim.queues.create("plain", profile="sqs-standard")
            await sim.run_until_idle()

        sim.run(main())
        assert most[0] == 1
        assert sim.history.count("fault", "duplicate") == 0


def test_chaos_duplicate_never_redelivers_a_fifo_message_after_its_delete() -> None:
    with bg.Simulation(seed=1, platform="aws") as sim:
        chaos.apply(sim, "duplicate")

        async def main() -> None:
            sim.queues.create("jobs.fifo", profile="sqs-fifo", content_based_dedup=True)
            await sim.queues.publish("jobs.fifo", "m0", partition_key="g1")
            for _ in range(3):
                d = await sim.queues.receive("jobs.fifo")
                if d is not None:
                    await d.ack()

        sim.run(main())
        events = [(e.op, e.detail) for e in sim.history.events if e.service == "queue"]
        deleted_at = [i for i, (op, d) in enumerate(events) if op == "ack" and d["deleted"]]
        assert len(deleted_at) == 1
        assert not any(op == "deliver" for op, _ in events[deleted_at[0]:])
        assert [d["attempt"] for op, d in events if op == "deliver"] == [1, 2]
        # the copy came from attempt 1's lease lapsing before its delete: that delete was stale
        assert [(d["attempt"], d["stale"]) for op, d in events if op == "ack"] == [(1, True),
                                                                                (2, False)]
