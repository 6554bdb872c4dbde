"""``assert_idempotent`` names the fix when a mock keeps state outside the simulation."""

from __future__ import annotations

from typing import Any

import pytest

import pytest_bgwork as bg


@pytest.mark.asyncio
async def test_a_mock_that_never_resets_is_named_with_the_fix(bgwork: bg.Simulation) -> None:
    seen: set[str] = set()  # the mail API's memory of idempotency keys: outside the simulation

    async def send_mail(key: str) -> None:
        if key not in seen:
            seen.add(key)
            bgwork.effects.record("email", key=key)

    async def handler(payload: Any) -> None:
        await bgwork.kv.set("orders", payload["id"], {"mailed": True})
        await send_mail(f"receipt-{payload['id']}")

    with pytest.raises(AssertionError) as failed:
        await bg.assert_idempotent(bgwork, handler, {"id": "o1"})
    text = str(failed.value)
    assert "effect email key='receipt-o1': clean run 1 time; this schedule 0 times" in text
    assert ("Effect(s) email key='receipt-o1' were recorded less often by the duplicate-delivery "
            "schedule than by the clean run") in text
    assert "keep such state in the simulation, in sim.kv" in text


@pytest.mark.asyncio
async def test_the_same_mock_with_its_memory_in_the_simulation_passes(bgwork: bg.Simulation) -> None:
    async def send_mail(key: str) -> None:
        if await bgwork.kv.set("mail-provider", key, True, if_absent=True):
            bgwork.effects.record("email", key=key)

    async def handler(payload: Any) -> None:
        await bgwork.kv.set("orders", payload["id"], {"mailed": True})
        await send_mail(f"receipt-{payload['id']}")

    await bg.assert_idempotent(bgwork, handler, {"id": "o1"})


@pytest.mark.asyncio
async def test_a_handler_that_is_not_idempotent_gets_no_such_hint(bgwork: bg.Simulation) -> None:
    async def handler(payload: Any) -> None:
        bgwork.effects.record("email", key=payload["id"])

    with pytest.raises(AssertionError) as failed:
        await bg.assert_idempotent(bgwork, handler, {"id": "o1"})
    assert "recorded less often" not in str(failed.value)
