"""Buggy twin of ``worker.py``: its email has no Idempotency-Key.

SQS delivers at least once: a job delivered twice mails the customer twice.
``tests/adapters/test_web_examples.py`` runs the example's suite against this file and
checks that ``test_a_redelivered_job_mails_once`` fails.

(The original docstring follows.) A receipt worker on SQS: receive a job, send its receipt
email, then delete the job.

Written against plain aiobotocore (the producer side uses plain boto3): nothing here
knows about pytest-bgwork. Two rules make it safe on an at-least-once queue:

- delete a message only after its work is done: a worker that dies mid-job leaves the
  message to come back after its visibility timeout, and another attempt finishes it;
- make the work idempotent: SQS may deliver a message twice (and a redelivered job may
  have half-finished before), so the email carries an Idempotency-Key the provider
  dedups on.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

QUEUE = "receipt-jobs"
MAIL_URL = "https://mail.example/v1/send"
#: Long-poll wait per receive (SQS's maximum), and a job's time to finish before redelivery
#: (the queue's VisibilityTimeout, set when the queue is made: ``QUEUE_ATTRIBUTES``).
WAIT_SECONDS = 20
VISIBILITY_TIMEOUT = 60
QUEUE_ATTRIBUTES = {"VisibilityTimeout": str(VISIBILITY_TIMEOUT)}


def enqueue_receipt(sqs: Any, queue_url: str, order: dict[str, Any]) -> str:
    """Queue a receipt job with a plain boto3 client (what the web app calls); its message id."""
    sent = sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(order))
    return str(sent["MessageId"])


async def send_receipt(http: httpx.AsyncClient, job: dict[str, Any]) -> None:
    """Mail the receipt; the provider sends once per Idempotency-Key, however often we ask."""
    response = await http.post(
        MAIL_URL,
        json={"to": job["email"], "template": "receipt", "data": {"order_id": job["order_id"]}},
    )  # the bug: no Idempotency-Key, so every delivery mails again
    response.raise_for_status()


async def run_worker(sqs: Any, queue_url: str, http: httpx.AsyncClient, *, idle_polls: int = 2) -> int:
    """Receive -> process -> delete until ``idle_polls`` long polls in a row come back empty.

    Returns how many jobs it finished. An exception from a job ends the worker, as a crash
    ends a process: the job's message is not deleted and comes back later.
    """
    done = idle = 0
    while idle < idle_polls:
        got = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=WAIT_SECONDS)
        messages = got.get("Messages", [])
        idle = 0 if messages else idle + 1
        for message in messages:
            await send_receipt(http, json.loads(message["Body"]))
            await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            done += 1
    return done
