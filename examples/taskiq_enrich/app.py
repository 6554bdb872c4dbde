"""Profile enrichment with taskiq: a sign-up is saved at once, enriched in the background.

``request_enrichment(user_id, email)`` writes a ``pending`` profile and kicks
``enrich_profile``, an async task that looks the person up in an enrichment API and
writes the ``enriched`` profile. API errors are retried by ``SmartRetryMiddleware``
(exponential delay with jitter). The task is acked when its result is saved (taskiq's
default ``when_saved``): a worker that dies mid-task leaves the message unacked and it
runs again, which is safe because writing the same profile twice is harmless.

The broker comes from ``ENRICH_BROKER_URL`` (taskiq's documented way to test: pick
the broker by environment): ``bgwork://`` is pytest-bgwork's simulated broker.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from taskiq import AsyncBroker, InMemoryBroker
from taskiq.middlewares import SmartRetryMiddleware

ENRICH_URL = "https://enrich.example/v1/people"
NS = "profiles"
TERMINAL = frozenset({"enriched", "failed"})


def make_broker() -> AsyncBroker:
    """The broker for ``ENRICH_BROKER_URL`` (production: an AMQP or Redis URL)."""
    url = os.environ.get("ENRICH_BROKER_URL", "memory://")
    if url == "bgwork://":
        from pytest_bgwork.adapters.taskiq import SimBroker

        return SimBroker(queue="enrich", visibility_timeout=60)
    if url == "memory://":
        return InMemoryBroker()
    raise ValueError(f"ENRICH_BROKER_URL={url!r}: install taskiq-aio-pika or taskiq-redis for it")


broker = make_broker().with_middlewares(
    SmartRetryMiddleware(default_retry_count=4, default_delay=30, use_jitter=True,
                         use_delay_exponent=True, max_delay_exponent=300))
_deps: dict[str, Any] = {}


def configure(*, kv: Any, http: httpx.AsyncClient) -> None:
    """Give the tasks their key-value store and HTTP client (at start-up)."""
    _deps.update(kv=kv, http=http)


async def request_enrichment(user_id: str, email: str) -> None:
    """Save the sign-up as pending and queue its enrichment."""
    await _deps["kv"].set(NS, user_id, {"status": "pending", "email": email})
    await enrich_profile.kiq(user_id, email)


@broker.task(retry_on_error=True, max_retries=4)
async def enrich_profile(user_id: str, email: str) -> str:
    """Look the person up and store the enriched profile (idempotent: same input, same write)."""
    kv, http = _deps["kv"], _deps["http"]
    response = await http.get(ENRICH_URL, params={"email": email})
    response.raise_for_status()
    person = response.json()
    await kv.set(NS, user_id, {"status": "enriched", "email": email,
                               "company": person["company"], "title": person["title"]})
    return user_id
