"""Four races background work really has, each with its fixed twin (issue 11).

Shared by ``tests/test_races.py`` (one seed each) and ``bench/bench_races.py`` (seeds
1-10, the figures). Each case is ``(scenario, checks)`` for ``bg.explore``; ``fixed=True``
gives the twin that uses a conditional write or an idempotency key. Every scenario
survives any fault on its own terms (a publish or webhook that fails is retried, at most
three times), so a check that fails points at the race, never at the harness.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

import pytest_bgwork as bg

Scenario = Callable[[bg.Simulation], Awaitable[None]]
Check = Callable[[bg.Simulation], Any]
RETRYABLE = (ConnectionError, TimeoutError)


def at_most_once(effect: str) -> Check:
    """Each key's ``effect`` happened at most once (a crash may lose one; that is not this bug)."""

    def check(sim: bg.Simulation) -> None:
        __tracebackhide__ = True
        if sim.effects.count(effect):
            bg.assert_effects_once(sim, effect)

    check.__name__ = check.__qualname__ = f"{effect}_at_most_once"
    return check


async def publish_retrying(sim: bg.Simulation, queue: str, payload: Any, key: str | None) -> None:
    """Publish like any client: retry a failed publish (which may have applied) twice."""
    for _ in range(3):
        try:
            await sim.queues.publish(queue, payload, idempotency_key=key)
            return
        except RETRYABLE:
            continue


async def claim_message(sim: bg.Simulation, delivery: Any) -> bool:
    """Consumer-side dedup by message id (``SET NX``): a redelivered message runs once."""
    return await sim.kv.set("seen-messages", delivery.message.id, True, if_absent=True)


# -- 1. check-then-act: two deliveries both read "not charged", both charge ------------------
def check_then_act(fixed: bool) -> tuple[Scenario, list[Check]]:
    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("charges", retry_delay=0)

        async def charge(payload: Any, delivery: Any) -> None:
            order = payload["order"]
            if fixed:  # one conditional write both checks and claims
                if not await sim.kv.set("charged", order, True, if_absent=True):
                    return
            else:  # read, then write: another worker can pass the read in between
                if (await sim.kv.get("charged", order)).exists:
                    return
                await sim.kv.set("charged", order, True)
            sim.effects.record("charge", key=order)

        sim.queues.route("charges", charge)
        await publish_retrying(sim, "charges", {"order": "o1"}, key="o1")

    return scenario, [at_most_once("charge")]


# -- 2. lost update: two workers read-modify-write one record ---------------------------------
def lost_update(fixed: bool) -> tuple[Scenario, list[Check]]:
    ns, key = "carts", "c1"

    async def add(sim: bg.Simulation, item: str) -> None:
        while True:
            r = await sim.kv.get(ns, key)
            cart = r.data if r.exists else {"items": []}
            if item in cart["items"]:
                return  # a redelivery: already added
            cart["items"].append(item)
            if not fixed:
                await sim.kv.set(ns, key, cart)  # may overwrite an add made since the read
                return
            # compare-and-set on the version read; on a conflict, read again
            cond: dict[str, Any] = {"if_version": r.version} if r.exists else {"if_absent": True}
            if await sim.kv.set(ns, key, cart, **cond):
                return

    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("cart-adds", retry_delay=0)

        async def handler(payload: Any, delivery: Any) -> None:
            await add(sim, payload["item"])

        sim.queues.route("cart-adds", handler)
        for item in ("apple", "pear"):
            await publish_retrying(sim, "cart-adds", {"item": item}, key=item)

    def every_acked_add_is_in_the_cart(sim: bg.Simulation) -> None:
        __tracebackhide__ = True
        acked = sorted(m.payload["item"] for m in sim.queues.messages("cart-adds")
                       if m.state == "acked")
        cart = sim.kv.items(ns).get(key, {"items": []})
        lost = [item for item in acked if item not in cart["items"]]
        if lost:
            raise bg.CheckFailed(f"lost update: {lost} acked but missing from the cart "
                                 f"{cart['items']}\n" + sim.history.timeline())

    return scenario, [every_acked_add_is_in_the_cart]


# -- 3. a publish retried without an idempotency key ------------------------------------------
def publish_retry(fixed: bool) -> tuple[Scenario, list[Check]]:
    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("emails", retry_delay=0)

        async def send(payload: Any, delivery: Any) -> None:
            if await claim_message(sim, delivery):  # dedups redeliveries, not a 2nd message
                sim.effects.record("email", key=payload["order"])

        sim.queues.route("emails", send)
        # a publish that timed out may have applied: without a key the retry enqueues again
        await publish_retrying(sim, "emails", {"order": "o1"}, key="o1" if fixed else None)

    return scenario, [at_most_once("email")]


# -- 4. a webhook whose retried delivery enqueues the job twice --------------------------------
def webhook_enqueue(fixed: bool) -> tuple[Scenario, list[Check]]:
    def make_app(sim: bg.Simulation) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            event = json.loads(body)
            status = 200
            try:  # the event id is the natural idempotency key
                await sim.queues.publish("fulfil", {"order": event["order"]},
                                         idempotency_key=event["id"] if fixed else None)
            except RETRYABLE:
                status = 503
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        return app

    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("fulfil", retry_delay=0)

        async def fulfil(payload: Any, delivery: Any) -> None:
            if await claim_message(sim, delivery):
                sim.effects.record("shipment", key=payload["order"])

        sim.queues.route("fulfil", fulfil)
        app = make_app(sim)
        for _ in range(3):  # the sender retries a delivery that errored or was not 2xx
            try:
                [response] = await sim.webhooks.deliver(app, "/webhooks", {"id": "evt_1",
                                                                            "order": "o1"})
                if response.status_code < 300:
                    break
            except (*RETRYABLE, httpx.HTTPError):
                continue

    return scenario, [at_most_once("shipment")]


CASES: dict[str, Callable[[bool], tuple[Scenario, list[Check]]]] = {
    "check-then-act": check_then_act,
    "lost update": lost_update,
    "no-key publish retry": publish_retry,
    "webhook double-enqueue": webhook_enqueue,
}
