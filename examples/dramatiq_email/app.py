"""Welcome emails sent by a dramatiq actor, once per user, under at-least-once delivery.

``send_welcome_email.send(user_id, email)`` queues the email; the actor posts it to
the mail API, then marks the user as mailed. A worker can die between those two steps:
the message is redelivered and the actor posts again. The mail API dedups on an
``Idempotency-Key`` (as Resend and Postmark do), so the retry sends nothing new; the
"already mailed" check only skips duplicates of a job that finished.

``configure(store=..., http=...)`` gives the actor its store and httpx client.
"""

from __future__ import annotations

from typing import Any, Protocol

import dramatiq
import httpx

MAIL_URL = "https://mail.example/v1/emails"
QUEUE = "emails"


class Store(Protocol):
    """Who was mailed: ``get(user_id)`` returns ``"sent"`` or None; ``set`` marks one."""

    def get(self, user_id: str) -> str | None: ...

    def set(self, user_id: str, value: str) -> None: ...


_deps: dict[str, Any] = {"idempotency_keys": True}


def configure(*, store: Store, http: httpx.Client, idempotency_keys: bool = True) -> None:
    """Give the actor its store and HTTP client (``idempotency_keys=False``: the old bug)."""
    _deps.update(store=store, http=http, idempotency_keys=idempotency_keys)


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=10_000)
def send_welcome_email(user_id: str, email: str) -> None:
    """Mail the welcome email once, even when this message is delivered twice."""
    store: Store = _deps["store"]
    http: httpx.Client = _deps["http"]
    if store.get(user_id) == "sent":
        return
    headers = {"Idempotency-Key": f"welcome-{user_id}"} if _deps["idempotency_keys"] else {}
    response = http.post(MAIL_URL, json={"to": email, "template": "welcome"}, headers=headers)
    response.raise_for_status()
    store.set(user_id, "sent")
