"""Bad input is refused at the user's call, naming the argument, the limit and the fix.

One table for the calls issue 9 found accepted silently or failing with internal errors
(``unhashable type``, ``OverflowError`` on a later ``get``, a NaN that disabled the
replay window), all refused now by ``core/validate.py`` or the checks built on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import pytest_bgwork as bg

NAN, INF = float("nan"), float("inf")
SURROGATE = "bad \ud800 text"


async def handler(payload: Any, delivery: Any) -> None: ...


async def no_args() -> None: ...


def _faults(sim: bg.Simulation) -> Any:
    return sim.faults


async def _publish(sim: bg.Simulation, *args: Any, **kwargs: Any) -> None:
    sim.queues.create("jobs")
    await sim.queues.publish(*args, **kwargs)


async def _write(sim: bg.Simulation, data: str) -> None:
    stream = await sim.streams.create("out")
    await stream.write(data)


async def _verify(sim: bg.Simulation, **kwargs: Any) -> None:
    body = b"{}"
    header = sim.webhooks.sign(body, "s3cret")
    sim.webhooks.verify(body, kwargs.pop("header", header), "s3cret", **kwargs)


def _route(sim: bg.Simulation, *args: Any, **kwargs: Any) -> None:
    sim.queues.create("jobs")
    sim.queues.route("jobs", *args, **kwargs)


Call = Callable[[bg.Simulation], Awaitable[object] | object]

#: (id, call, exception, what the message must say: the argument, the limit, the fix)
BAD: list[tuple[str, Call, type[BaseException], str]] = [
    ("times=0", lambda s: s.faults.fail("kv.set", times=0), ValueError,
     "sim.faults.fail(times=...) must be an int >= 1, or None; got 0"),
    ("times=-1", lambda s: s.faults.fail("kv.set", times=-1), ValueError, "got -1"),
    ("times=1.5", lambda s: s.faults.fail("kv.set", times=1.5), ValueError, "an int >= 1"),
    ("times='x'", lambda s: s.faults.fail("kv.set", times="x"), TypeError, "got 'x'"),
    ("duplicate times=1", lambda s: s.faults.duplicate("jobs", times=1), ValueError,
     "duplicate(times=...) must be the total number of deliveries, an int >= 2; got 1. "
     "times=2 delivers each message twice"),
    ("on_call=True", lambda s: s.faults.fail("kv.set", on_call=True), TypeError,
     "sim.faults.fail(on_call=...) must be an int >= 1, or None; got True. on_call= counts "
     "calls from 1; None fires on every call"),
    ("hang seconds=nan", lambda s: s.faults.hang("jobs", seconds=NAN), ValueError,
     "sim.faults.hang(seconds=...) must be a number of seconds >= 0; got nan"),
    ("delay seconds=inf", lambda s: s.faults.delay("kv.get", seconds=INF), ValueError,
     "sim.faults.delay(seconds=...) must be a number of seconds >= 0; got inf"),
    ("kv ttl=1e12", lambda s: s.kv.set("ns", "k", 1, ttl=1e12), ValueError,
     "kv.set(ns='ns', key='k'): ttl=1e+12 puts the expiry past the year 9999, beyond the "
     "clock's range; use ttl=None for a key that never expires."),
    ("kv ttl=nan", lambda s: s.kv.set("ns", "k", 1, ttl=NAN), ValueError,
     "kv.set(ns='ns', key='k'): ttl= must be a number of seconds > 0, or None for no expiry; "
     "got nan"),
    ("runtime drain(timeout=1e12)", lambda s: s.runtime.drain(timeout=1e12), ValueError,
     "drain(timeout=...) expects None or a finite number of seconds >= 0 and at most "
     "1,000,000,000 (the clock's range)"),
    ("verify tolerance=nan", lambda s: _verify(s, tolerance=NAN), ValueError,
     "webhooks.verify(tolerance=...) must be a number of seconds >= 0, or None; got nan. "
     "None accepts any age"),
    ("verify header=123", lambda s: _verify(s, header=123), TypeError,
     "webhooks.verify(header=...) must be the bgwork-signature header's text"),
    ("surrogate in payload", lambda s: _publish(s, "jobs", {"note": SURROGATE}), ValueError,
     "publish(payload=...) holds a lone surrogate '\\ud800', which UTF-8 cannot encode"),
    ("surrogate in idempotency key",
     lambda s: _publish(s, "jobs", {}, idempotency_key=SURROGATE), ValueError,
     "publish(idempotency_key=...) holds a lone surrogate '\\ud800' at index 4"),
    ("surrogate in kv key", lambda s: s.kv.set("ns", SURROGATE, 1), ValueError,
     "kv.set(): key= holds a lone surrogate '\\ud800' at index 4"),
    ("surrogate in kv value", lambda s: s.kv.set("ns", "k", [SURROGATE]), ValueError,
     "kv.set(ns='ns', key='k'): value= holds a lone surrogate"),
    ("surrogate in stream write", lambda s: _write(s, SURROGATE), ValueError,
     "stream stream_1 ('out'): write(): data= holds a lone surrogate '\\ud800' at index 4"),
    ("surrogate in kv.keys prefix", lambda s: s.kv.keys("ns", prefix=SURROGATE), ValueError,
     "kv.keys(ns='ns'): prefix= holds a lone surrogate"),
    ("surrogate in effect name", lambda s: s.effects.record(SURROGATE), ValueError,
     "effects.record(name=...) holds a lone surrogate"),
    ("surrogate in task title", lambda s: s.tasks.create(title=SURROGATE), ValueError,
     "tasks.create(title=...) holds a lone surrogate"),
    ("publish([], payload)", lambda s: _publish(s, [], {}), TypeError,
     "publish(name=...) must be a queue name (a string such as 'report-jobs'), given first; "
     "got list []"),
    ("faults.apply('string')", lambda s: s.faults.apply("string"), TypeError,
     "sim.faults.apply(plan=...) expects a list of bg.Fault or dicts"),
    ("FaultPlan(None)", lambda s: bg.FaultPlan(None), TypeError,  # type: ignore[arg-type]
     "FaultPlan(faults=...) expects a list of bg.Fault or dicts such as [{'kind': 'fail', "
     "'point': 'kv.set'}] (or a FaultPlan); got None"),
    ("FaultPlan unknown field", lambda s: bg.FaultPlan([{"kind": "fail", "pont": "kv.set"}]),
     TypeError, "item 0 {'kind': 'fail', 'pont': 'kv.set'} has unknown field(s) 'pont'"),
    ("route(app=42)", lambda s: _route(s, app=42, path="/w"), TypeError,
     "route('jobs', app=...) needs an ASGI application"),
    ("zero-argument handler", lambda s: _route(s, no_args), TypeError,
     "route('jobs', handler): the queue calls handler(payload, delivery), but no_args() "
     "cannot take those two arguments"),
    ("Simulation(seed=-5)", lambda s: bg.Simulation(seed=-5), ValueError,
     "seed= must be an int >= 0"),
    ("create(retry_delay=inf)", lambda s: s.queues.create("jobs", retry_delay=INF), ValueError,
     "create(retry_delay=...) must be a number of seconds >= 0; got inf. Use retry_delay=None "
     "for exponential backoff, 0 to retry at once."),
]


@pytest.mark.parametrize(("call", "error", "message"), [row[1:] for row in BAD],
                         ids=[row[0] for row in BAD])
def test_bad_input_is_refused_at_the_call(call: Call, error: type[BaseException],
                                          message: str) -> None:
    sim = bg.Simulation()

    async def main() -> None:
        result = call(sim)
        if isinstance(result, Awaitable):
            await result

    with pytest.raises(error) as info:
        sim.run(main())
    assert message in str(info.value)
    sim.close()


def test_wrong_types_are_both_type_and_value_errors() -> None:
    """Code that caught ``ValueError`` before the validator still catches a wrong type."""
    from pytest_bgwork.core import validate

    with pytest.raises(ValueError):
        validate.integer("x", "f", "times")
    with pytest.raises(TypeError):
        validate.number(True, "f", "seconds")


def test_negative_seed_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(bgwork): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-seed=-5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*--bgwork-seed / bgwork_seed expects an integer such as 1234; got '-5' (a seed is "
        ">= 0: random.Random(-n) is random.Random(n))",
    ])


def test_route_check_remembers_only_handlers_that_passed() -> None:
    """The route check caches a plain function's code once it passed; a closure of the
    same code with a different shape of defaults is checked again, a refusal never cached."""

    def make(with_defaults: bool) -> Any:
        async def h(payload: Any, delivery: Any = None, extra: Any = 1) -> None: ...

        if not with_defaults:
            h.__defaults__ = None  # same code, no defaults: three required arguments
        return h

    assert make(True).__code__ is make(False).__code__
    sim = bg.Simulation()
    for n in range(4):
        sim.queues.create(f"jobs{n}")
    sim.queues.route("jobs0", make(True))  # passes, cached
    sim.queues.route("jobs1", make(True))  # same shape: still fine
    for n in (2, 3):  # a refusal is never cached
        with pytest.raises(TypeError, match="cannot take those two arguments"):
            sim.queues.route(f"jobs{n}", make(False))
