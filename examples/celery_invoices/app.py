"""Invoices charged in the background by a Celery task, with retries the gateway asks for.

``charge_invoice.delay(invoice_id)`` queues a charge; the task posts it to the payment
gateway, which may decline a card for now and say when to retry (``retry_after``
seconds, up to four hours): the task then calls ``self.retry(countdown=...)``. The
task acks late and is requeued if its worker dies, so a charge is never lost; in
return it may run more than once, and two rules keep that from charging twice:

- every charge carries an ``Idempotency-Key`` (the gateway returns the first charge
  for a repeated key, as Stripe does);
- a task held for its countdown is unacked: Redis redelivers it after the visibility
  timeout (3600 s by default), so that timeout must outlast the longest countdown.

``configure(store=..., http=...)`` gives the tasks their invoice store and httpx
client (production: a database and ``httpx.Client()``; tests: the simulation's).
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
from celery import Celery

PAYMENTS_URL = "https://payments.example/v1/charges"
#: The gateway never asks to wait longer than this before retrying a declined card.
LONGEST_RETRY = 4 * 3600
#: Longer than any countdown, or Redis redelivers the held task and it runs twice.
VISIBILITY_TIMEOUT = 6 * 3600

app = Celery("invoices")
app.conf.update(
    broker_url="redis://localhost:6379/0",
    result_backend="redis://localhost:6379/1",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    #: Send an Idempotency-Key with each charge (the fix for charging twice).
    invoices_idempotency_keys=True,
)


class Store(Protocol):
    """Where invoices live: ``get`` an invoice dict (or None), ``set`` it back."""

    def get(self, invoice_id: str) -> dict[str, Any] | None: ...

    def set(self, invoice_id: str, invoice: dict[str, Any]) -> None: ...


_deps: dict[str, Any] = {}


def configure(*, store: Store, http: httpx.Client) -> None:
    """Give the tasks their store and HTTP client (call once at worker start-up)."""
    _deps.update(store=store, http=http)


@app.task(bind=True, max_retries=5)
def charge_invoice(self: Any, invoice_id: str) -> str:
    """Charge an open invoice once; retry when the gateway asks to."""
    store: Store = _deps["store"]
    http: httpx.Client = _deps["http"]
    invoice = store.get(invoice_id)
    if invoice is None:
        return "unknown invoice"
    headers = {"Idempotency-Key": f"charge-{invoice_id}"} if app.conf.invoices_idempotency_keys else {}
    response = http.post(PAYMENTS_URL, json={"invoice": invoice_id, "amount": invoice["amount"]},
                         headers=headers)
    if response.status_code == 402:  # declined for now: the gateway says when to try again
        retry_after = min(int(response.json()["retry_after"]), LONGEST_RETRY)
        raise self.retry(countdown=retry_after)
    response.raise_for_status()
    store.set(invoice_id, {**invoice, "status": "paid", "charge": response.json()["id"]})
    return "paid"
