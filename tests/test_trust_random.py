"""Randomness is the simulation's: inside it ``uuid.uuid4``/``uuid1`` and the ``random``
module's functions draw from its seed (opt out with ``real_random=True``), restored after."""

from __future__ import annotations

import random
import re
import uuid
from uuid import uuid4  # imported by name before any simulation, as apps do

import pytest
from hypothesis import strategies as st

import pytest_bgwork as bg


def _draws(seed: int, real_random: bool = False) -> list[object]:
    with bg.Simulation(seed=seed, real_random=real_random) as sim:
        async def main() -> list[object]:
            return [uuid.uuid4(), uuid4(), uuid.uuid1(), random.random(), random.randint(1, 10**9),
                    random.choice("abcdefghij" * 10)]

        return sim.run(main())


def test_same_seed_same_ids_and_draws() -> None:
    first = _draws(3)
    assert first == _draws(3)
    assert first != _draws(4)
    assert first[0].version == 4 and first[2].version == 1  # type: ignore[attr-defined]


def test_real_random_opts_out() -> None:
    assert _draws(3, real_random=True) != _draws(3, real_random=True)


def test_the_random_module_and_uuid_are_restored_after_the_run() -> None:
    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    random.seed(1234)
    _draws(3)
    assert [random.random() for _ in range(3)] == expected  # its state untouched by the run
    assert uuid.uuid4() != uuid.uuid4()
    assert uuid.uuid4.__module__ == "uuid" and uuid4 is uuid.uuid4


def test_a_simulation_continues_its_own_stream_across_runs() -> None:
    with bg.Simulation(seed=3) as sim:
        async def draw() -> float:
            return random.random()

        twice = [sim.run(draw()), sim.run(draw())]
    assert twice[0] != twice[1]
    with bg.Simulation(seed=3) as again:
        assert [again.run(draw()), again.run(draw())] == twice


def test_explore_sees_the_same_ids_for_the_same_seed() -> None:
    seen: list[list[str]] = []

    async def scenario(sim: bg.Simulation) -> None:
        ids = [str(uuid4()) for _ in range(3)]
        seen.append(ids)
        for export_id in ids:
            await sim.kv.set("exports", export_id, {"status": "queued", "n": random.randint(1, 99)})
            sim.effects.record("export", key=export_id)

    def one_effect_each(sim: bg.Simulation) -> None:
        bg.assert_effects_once(sim, "export")

    bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[one_effect_each], max_examples=5, seed=1)
    first = list(seen)
    seen.clear()
    bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[one_effect_each], max_examples=5, seed=1)
    assert seen == first


IDS_TEST = """
import random
from uuid import uuid4

import pytest

def test_ids(bgwork):
    print("IDS", uuid4(), random.random())

@pytest.mark.bgwork(real_random=True)
def test_real(bgwork):
    print("REAL", uuid4(), random.random())
"""


def test_plugin_tests_draw_from_the_seed_unless_real_random(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(IDS_TEST)
    runs = []
    for _ in range(2):
        result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--bgwork-seed=7")
        result.assert_outcomes(passed=2)
        out = result.stdout.str()
        runs.append((re.findall(r"IDS \S+ \S+", out), re.findall(r"REAL \S+ \S+", out)))
    assert len(runs[0][0]) == 1 and runs[0][0] == runs[1][0]
    assert len(runs[0][1]) == 1 and runs[0][1] != runs[1][1]
