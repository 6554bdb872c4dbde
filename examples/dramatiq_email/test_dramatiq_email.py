"""Welcome emails under crashes and redelivery: each user is mailed exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

import pytest_bgwork as bg
from dramatiq_email.app import MAIL_URL, QUEUE, configure, send_welcome_email
from pytest_bgwork.adapters import dramatiq as bd

pytestmark = pytest.mark.asyncio
NS = "welcome-emails"


class SimStore:
    """Who was mailed, in ``sim.kv``, called from the actor's thread with ``bd.call``."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim

    def get(self, user_id: str) -> str | None:
        r = bd.call(self.sim.kv.get(NS, user_id))
        return r.data if r.exists else None

    def set(self, user_id: str, value: str) -> None:
        bd.call(self.sim.kv.set(NS, user_id, value))


class MailApi:
    """The mail provider: records each email it sends; a repeated Idempotency-Key sends nothing."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.keys: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        if key is None or key not in self.keys:
            to = httpx.Response(200, content=request.content).json()["to"]
            self.sim.effects.record("email", key=to)
        if key is not None:
            self.keys.add(key)
        return httpx.Response(200, json={"id": "em_1"})


@pytest.fixture
def mail(bgwork: bg.Simulation, respx_mock: respx.MockRouter) -> Iterator[respx.Route]:
    route = respx_mock.post(MAIL_URL).mock(side_effect=MailApi(bgwork))
    with httpx.Client() as http:
        configure(store=SimStore(bgwork), http=http)
        yield route


async def test_the_welcome_email_is_sent_once(bgwork: bg.Simulation, mail: respx.Route) -> None:
    send_welcome_email.send("u1", "ana@example.com")
    await bgwork.run_until_idle()
    bg.assert_effects_once(bgwork, "email", keys=["ana@example.com"])
    assert bgwork.kv.items(NS) == {"u1": "sent"}
    bg.assert_nothing_lost(bgwork)


async def test_a_mail_api_outage_is_retried_with_backoff(bgwork: bg.Simulation, mail: respx.Route) -> None:
    mail.side_effect = [httpx.Response(503), mail.side_effect]
    send_welcome_email.send("u2", "bo@example.com")
    await bgwork.run_until_idle()
    bg.assert_effects_once(bgwork, "email", keys=["bo@example.com"])
    assert bgwork.clock.monotonic() >= 10  # Retries' min_backoff, on virtual time


async def test_a_crash_after_sending_does_not_send_twice(bgwork: bg.Simulation, mail: respx.Route) -> None:
    bgwork.faults.crash(QUEUE, at="kv.set")  # mailed, then died before marking it
    send_welcome_email.send("u3", "cy@example.com")
    await bgwork.run_until_idle()
    assert mail.call_count == 2  # redelivered after the visibility timeout, posted again
    bg.assert_effects_once(bgwork, "email", keys=["cy@example.com"])


@pytest.mark.bgwork(chaos="off")  # a deterministic reproduction of the bug
async def test_the_bug_without_an_idempotency_key_redelivery_mails_twice(
    bgwork: bg.Simulation, mail: respx.Route
) -> None:
    with httpx.Client() as http:
        configure(store=SimStore(bgwork), http=http, idempotency_keys=False)
        bgwork.faults.crash(QUEUE, at="kv.set")
        send_welcome_email.send("u4", "dee@example.com")
        await bgwork.run_until_idle()
    with pytest.raises(bg.CheckFailed, match="email"):
        bg.assert_effects_once(bgwork, "email")
