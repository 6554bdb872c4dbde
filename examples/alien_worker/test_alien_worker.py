"""The thumbnail worker on the real alienplatform SDK, backed by the simulation (fixture bg_alien).

Two workers share the queue. Runs plain and under ``--bgwork-chaos=duplicate,fail-first,reorder,crash``:
the fixed worker renders each image once and loses nothing; the first version is caught
rendering twice when its lease lapses mid-render.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pytest_bgwork as bg
from alien_worker.app import QUEUE, RENDER_SECONDS, jobs, store, worker, worker_buggy

pytestmark = pytest.mark.asyncio


def renderer(sim: bg.Simulation) -> Any:
    async def render(image_id: str) -> bytes:
        await asyncio.sleep(RENDER_SECONDS)  # the expensive part
        sim.effects.record("render", key=image_id)
        return f"PNG:{image_id}".encode()

    return render


async def run_two_workers(sim: bg.Simulation, work: Any, images: int) -> None:
    for n in range(images):
        await jobs.send({"image_id": f"img{n}"})
    render = renderer(sim)
    await asyncio.gather(work("a", render), work("b", render))
    await sim.run_until_idle()


async def test_each_image_is_rendered_once_and_nothing_is_lost(bg_alien: bg.Simulation) -> None:
    await run_two_workers(bg_alien, worker, images=3)
    bg.assert_effects_once(bg_alien, "render")
    assert sorted(k for k in bg_alien.kv.items("thumbnails") if k.startswith("thumb:")) == [
        "thumb:img0", "thumb:img1", "thumb:img2"]
    assert (await store.get("thumb:img0")).value == b"PNG:img0"
    bg.assert_nothing_lost(bg_alien)


async def test_the_lease_is_renewed_before_the_render(bg_alien: bg.Simulation) -> None:
    await run_two_workers(bg_alien, worker, images=1)
    extends = [e for e in bg_alien.history.events if (e.service, e.op) == ("queue", "extend")]
    assert extends and extends[0].detail["seconds"] == 120.0


async def test_the_first_version_renders_twice_when_its_lease_lapses(bg_alien: bg.Simulation) -> None:
    await run_two_workers(bg_alien, worker_buggy, images=1)
    with pytest.raises(bg.CheckFailed, match="render"):
        bg.assert_effects_once(bg_alien, "render")
    stale = [e.detail["stale"] for e in bg_alien.history.events if (e.service, e.op) == ("queue", "ack")]
    assert any(stale)  # the first worker's late ack deleted nothing


async def test_a_duplicated_message_is_rendered_once(bg_alien: bg.Simulation) -> None:
    bg_alien.queues.create(QUEUE)
    bg_alien.faults.duplicate(QUEUE, times=2)
    await run_two_workers(bg_alien, worker, images=1)
    assert bg_alien.effects.count("render") == 1
    bg.assert_nothing_lost(bg_alien)
