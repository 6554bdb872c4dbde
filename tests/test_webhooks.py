"""Webhooks: Stripe-style signatures on the virtual clock, and repeated signed delivery."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import pytest_bgwork as bg
from pytest_bgwork.services.webhooks import Webhooks, WebhookSignatureError

START = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
SECRET = "whsec_test"


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    with bg.Simulation() as sim:
        header = sim.webhooks.sign(b'{"a":1}', SECRET)
        expected = hmac.new(SECRET.encode(), f'{START}.{{"a":1}}'.encode(), hashlib.sha256)
        assert header == f"t={START},v1={expected.hexdigest()}"
        assert sim.webhooks.sign('{"a":1}', SECRET) == header  # str is signed as UTF-8
        assert sim.webhooks.sign({"a": 1}, SECRET) == header  # a dict as compact JSON
        assert sim.webhooks.sign(b"x", SECRET, timestamp=42).startswith("t=42,v1=")
        moment = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
        assert sim.webhooks.sign(b"x", SECRET, timestamp=moment).startswith(
            f"t={int(moment.timestamp())},"
        )


@pytest.mark.asyncio
async def test_sign_uses_the_virtual_clock(bgwork: bg.Simulation) -> None:
    await bgwork.advance(90)
    assert bgwork.webhooks.sign(b"x", SECRET).startswith(f"t={START + 90},")


def test_header_name_is_configurable() -> None:
    assert Webhooks.HEADER == "bgwork-signature"
    with bg.Simulation() as sim:
        assert sim.webhooks.header == "bgwork-signature"
        sim.webhooks.header = "stripe-signature"
        with pytest.raises(WebhookSignatureError, match="no stripe-signature header"):
            sim.webhooks.verify(b"x", None, SECRET)


def test_round_trip_verifies_and_returns_the_timestamp() -> None:
    with bg.Simulation() as sim:
        header = sim.webhooks.sign(b'{"id":"evt_1"}', SECRET)
        assert sim.webhooks.verify(b'{"id":"evt_1"}', header, SECRET) == START
        assert sim.webhooks.is_valid(b'{"id":"evt_1"}', header, SECRET)


def test_tampered_body_or_wrong_secret_is_rejected() -> None:
    with bg.Simulation() as sim:
        header = sim.webhooks.sign(b'{"amount":100}', SECRET)
        with pytest.raises(WebhookSignatureError, match="signature does not match the body"):
            sim.webhooks.verify(b'{"amount":999}', header, SECRET)
        assert not sim.webhooks.is_valid(b'{"amount":100}', header, "other-secret")


@pytest.mark.asyncio
async def test_stale_timestamp_is_rejected_beyond_tolerance(bgwork: bg.Simulation) -> None:
    header = bgwork.webhooks.sign(b"x", SECRET)
    await bgwork.advance(300)
    assert bgwork.webhooks.is_valid(b"x", header, SECRET)  # exactly at the edge: still fine
    await bgwork.advance(1)
    with pytest.raises(WebhookSignatureError, match=r"is 301s old, beyond tolerance=300s"):
        bgwork.webhooks.verify(b"x", header, SECRET)
    assert bgwork.webhooks.is_valid(b"x", header, SECRET, tolerance=3600)
    assert bgwork.webhooks.is_valid(b"x", header, SECRET, tolerance=None)


def test_future_timestamp_is_rejected_beyond_tolerance() -> None:
    with bg.Simulation() as sim:
        header = sim.webhooks.sign(b"x", SECRET, timestamp=START + 600)
        with pytest.raises(WebhookSignatureError, match="600s in the future"):
            sim.webhooks.verify(b"x", header, SECRET)


def test_malformed_headers_say_what_is_missing() -> None:
    with bg.Simulation() as sim:
        good = sim.webhooks.sign(b"x", SECRET)
        sig = good.split(",")[1]
        with pytest.raises(WebhookSignatureError, match="no t=<unix seconds>"):
            sim.webhooks.verify(b"x", sig, SECRET)
        with pytest.raises(WebhookSignatureError, match="no v1=<hex> signature"):
            sim.webhooks.verify(b"x", f"t={START}", SECRET)
        with pytest.raises(WebhookSignatureError, match="not signed"):
            sim.webhooks.verify(b"x", "", SECRET)
        assert not sim.webhooks.is_valid(b"x", f"t={START},v1=\u00e9", SECRET)  # non-ASCII
        assert not sim.webhooks.is_valid(b"x", f"t=\u00b2,{sig}", SECRET)  # a unicode digit
        # secret rotation: any one v1 entry may match
        assert sim.webhooks.is_valid(b"x", f"t={START},v1=00ff,{sig}", SECRET)


def test_bad_arguments_are_named() -> None:
    with bg.Simulation() as sim:
        with pytest.raises(TypeError, match="secret= must be a non-empty str or bytes"):
            sim.webhooks.sign(b"x", "")
        with pytest.raises(TypeError, match="timestamp= takes unix seconds"):
            sim.webhooks.sign(b"x", SECRET, timestamp=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timestamp= must be an aware datetime"):
            sim.webhooks.sign(b"x", SECRET, timestamp=dt.datetime(2026, 1, 1))
        with pytest.raises(TypeError, match="body= takes bytes, str or a JSON mapping"):
            sim.webhooks.sign(42, SECRET)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"verify\(tolerance=...\) must be a number of seconds >= 0, or None"):
            sim.webhooks.verify(b"x", "t=1,v1=00", SECRET, tolerance=-1)


def receiver(seen: list[dict[str, Any]], statuses: list[int] | None = None) -> Starlette:
    """A tiny app that verifies like a real one would, with the simulation's helper."""

    async def hook(request: Request) -> Response:
        body = await request.body()
        seen.append({
            "event": json.loads(body),
            "signature": request.headers.get("bgwork-signature"),
            "valid": bg.current().webhooks.is_valid(
                body, request.headers.get("bgwork-signature"), SECRET
            ),
            "trace": request.headers.get("x-trace"),
        })
        return JSONResponse({"ok": True}, status_code=statuses.pop(0) if statuses else 200)

    return Starlette(routes=[Route("/webhooks/billing", hook, methods=["POST"])])


@pytest.mark.asyncio
async def test_deliver_three_times_posts_the_same_event_id(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, Any]] = []
    app = receiver(seen)
    event = {"id": "evt_42", "type": "invoice.paid", "data": {"amount": 100}}
    responses = await bgwork.webhooks.deliver(app, "/webhooks/billing", event, secret=SECRET,
                                              times=3, headers={"x-trace": "t1"})
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [s["event"] for s in seen] == [event] * 3
    assert [s["valid"] for s in seen] == [True] * 3
    assert [s["trace"] for s in seen] == ["t1"] * 3
    events = bgwork.history.filter("webhook", "deliver")
    assert [(e.detail["path"], e.detail["event_id"], e.detail["status"]) for e in events] == [
        ("/webhooks/billing", "evt_42", 200)
    ] * 3


@pytest.mark.asyncio
async def test_event_without_id_gets_one_stable_id(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, Any]] = []
    event = {"type": "invoice.paid"}
    await bgwork.webhooks.deliver(receiver(seen), "/webhooks/billing", {"id": "own"})
    await bgwork.webhooks.deliver(receiver(seen), "/webhooks/billing", event, times=2)
    assert [s["event"]["id"] for s in seen] == ["own", "evt_1", "evt_1"]
    assert event == {"type": "invoice.paid"}  # the caller's dict is left alone
    assert [s["signature"] for s in seen] == [None] * 3  # no secret: unsigned


@pytest.mark.asyncio
async def test_non_2xx_is_a_failed_delivery_in_the_history(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, Any]] = []
    responses = await bgwork.webhooks.deliver(
        receiver(seen, [500, 200]), "/webhooks/billing", {"id": "e"}, times=2
    )
    assert [r.status_code for r in responses] == [500, 200]
    events = bgwork.history.filter("webhook", "deliver")
    assert [(e.outcome, e.detail["status"]) for e in events] == [("fail", 500), ("ok", 200)]


@pytest.mark.asyncio
async def test_deliver_is_a_fault_point(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, Any]] = []
    bgwork.faults.fail("webhook.deliver", on_call=2, error=ConnectionError("reset"))
    with pytest.raises(ConnectionError, match="reset"):
        await bgwork.webhooks.deliver(receiver(seen), "/webhooks/billing", {"id": "e"}, times=3)
    assert len(seen) == 1
    events = bgwork.history.filter("webhook", "deliver")
    assert [(e.outcome, e.detail["status"]) for e in events] == [("ok", 200), ("fail", None)]
    assert events[1].detail["error"] == "ConnectionError('reset')"


@pytest.mark.asyncio
async def test_after_apply_fault_means_the_app_got_it_but_the_sender_saw_an_error(
    bgwork: bg.Simulation,
) -> None:
    seen: list[dict[str, Any]] = []
    bgwork.faults.fail("webhook.deliver", after_apply=True, error=TimeoutError("no answer"))
    with pytest.raises(TimeoutError):
        await bgwork.webhooks.deliver(receiver(seen), "/webhooks/billing", {"id": "e"})
    assert len(seen) == 1
    (event,) = bgwork.history.filter("webhook", "deliver")
    assert (event.outcome, event.detail["status"]) == ("unknown", 200)


@pytest.mark.asyncio
async def test_app_exception_reaches_the_test_and_is_recorded(bgwork: bg.Simulation) -> None:
    async def hook(request: Request) -> Response:
        raise KeyError("customer")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with pytest.raises(KeyError, match="customer"):
        await bgwork.webhooks.deliver(app, "/hook", {"id": "e"})
    (event,) = bgwork.history.filter("webhook", "deliver")
    assert (event.outcome, event.detail["error"]) == ("fail", "KeyError('customer')")


@pytest.mark.asyncio
async def test_deliver_to_a_url_goes_through_httpx_so_respx_mocks_it(bgwork: bg.Simulation) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://partner.example/hooks").mock(return_value=httpx.Response(202))
        responses = await bgwork.webhooks.deliver(
            url="https://partner.example/hooks", event={"id": "evt_9"}, secret=SECRET, times=2
        )
    assert [r.status_code for r in responses] == [202, 202]
    sent = route.calls[0].request
    assert json.loads(sent.content) == {"id": "evt_9"}
    assert bgwork.webhooks.is_valid(sent.content, sent.headers["bgwork-signature"], SECRET)


@pytest.mark.asyncio
async def test_deliver_bad_arguments_are_named(bgwork: bg.Simulation) -> None:
    app = Starlette()
    with pytest.raises(TypeError, match="deliver\\(\\) needs a target"):
        await bgwork.webhooks.deliver(event={"id": "e"})
    with pytest.raises(TypeError, match="app= with path=, or url=; not both"):
        await bgwork.webhooks.deliver(app, "/x", {"id": "e"}, url="https://x.example")
    with pytest.raises(ValueError, match="path= starting with '/'"):
        await bgwork.webhooks.deliver(app, "hook", {"id": "e"})
    with pytest.raises(TypeError, match="event= must be a JSON object"):
        await bgwork.webhooks.deliver(app, "/x", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event= must be JSON-serialisable"):
        await bgwork.webhooks.deliver(app, "/x", {"when": dt.datetime(2026, 1, 1)})
    with pytest.raises(ValueError, match="times= is how many copies to deliver, an int >= 1; got 0"):
        await bgwork.webhooks.deliver(app, "/x", {"id": "e"}, times=0)
    assert bgwork.history.filter("webhook") == []


def test_used_from_a_user_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        SECRET = "whsec_1"
        processed = []

        async def hook(request):
            sim = request.app.state.sim
            body = await request.body()
            sim.webhooks.verify(body, request.headers.get(sim.webhooks.header), SECRET)
            event_id = (await request.json())["id"]
            if event_id not in processed:      # dedup by event id
                processed.append(event_id)
                sim.effects.record("credit", key=event_id)
            return Response(status_code=204)

        app = Starlette(routes=[Route("/hooks", hook, methods=["POST"])])

        @pytest.mark.asyncio
        async def test_retried_webhook_credits_once(bgwork):
            app.state.sim = bgwork
            responses = await bgwork.webhooks.deliver(app, "/hooks", {"id": "evt_7"},
                                                      secret=SECRET, times=3)
            assert [r.status_code for r in responses] == [204, 204, 204]
            assert bgwork.effects.count("credit") == 1
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
