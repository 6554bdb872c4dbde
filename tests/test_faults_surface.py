"""The public surface of ``sim.faults`` and ``Simulation``: only what a user calls.

The services' fault protocol (``_enter``/``_leave``, CONTRIBUTING.md "Fault points") and the
simulation's teardown machinery are private, so ``dir()`` and the API reference show only
the documented names. A new public name must be added to these lists: a deliberate act.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import pytest_bgwork as bg

FAULTS_PUBLIC = [
    "apply", "calls", "clear", "crash", "delay", "duplicate", "fail", "hang", "heal", "healed",
    "http", "injected", "is_paused", "latency", "paused", "plan", "unused",
]
SIMULATION_PUBLIC = [
    "advance", "allow_network", "choices", "clock", "close", "effects", "enter_context", "faults", "history", "kv",
    "loop", "max_time", "platform", "queues", "random", "real_random", "run", "run_until_idle",
    "runtime", "schedules", "seed", "stats", "streams", "task_manager", "tasks",
    "unmocked_requests", "webhooks", "workers",
]


def _public(obj: object) -> list[str]:
    return sorted(name for name in dir(obj) if not name.startswith("_"))


def test_sim_faults_shows_only_the_rules_a_user_adds_and_reads() -> None:
    with bg.Simulation() as sim:
        assert _public(sim.faults) == FAULTS_PUBLIC


def test_simulation_shows_only_what_a_user_calls() -> None:
    with bg.Simulation() as sim:
        assert _public(sim) == SIMULATION_PUBLIC


def test_the_services_fault_protocol_is_one_pair_and_private() -> None:
    """``_enter`` (``None``: go on; else an awaitable) and ``_leave``; no other entry."""
    with bg.Simulation() as sim:
        faults = sim.faults
        for gone in ("begin", "enter", "leave", "passes", "_begin", "_passes", "run_sync",
                     "watch", "release", "arm_pull", "keyed_integer", "deliveries"):
            assert not hasattr(faults, gone), gone
        assert faults._enter("kv.get") is None  # no rule in force: counted, go straight on
        assert faults.calls("kv.get") == 1
        faults.fail("kv.get", on_call=2, error=ConnectionError("down"))
        step = faults._enter("kv.get")  # call 2: the rule fires when the step is awaited
        assert step is not None
        with pytest.raises(ConnectionError) as caught:
            sim.run(step)  # type: ignore[arg-type]
        assert bg.is_injected(caught.value)
        assert faults.calls("kv.get") == 2
        faults._leave("kv.get")  # nothing due after the call: no error


def test_no_module_outside_the_injector_reads_its_fields() -> None:
    """Services use the protocol, never the injector's state (``_pending_after``), and never
    ``await faults._enter(...)`` directly: on the fast path it returns ``None``."""
    root = pathlib.Path(bg.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).as_posix() == "core/faults.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and node.attr in ("_pending_after", "_begin",
                                                                  "_passes"):
                offenders.append(f"{where} .{node.attr}")
            if (isinstance(node, ast.Await) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Attribute)
                    and node.value.func.attr == "_enter"):
                offenders.append(f"{where} await ._enter(...): use the step idiom")
    assert offenders == []
