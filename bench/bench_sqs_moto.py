"""Pull-consumer round trips (send → receive → delete) against moto's mocked SQS.

Run: ``python bench/bench_sqs_moto.py [N]``. moto is what a team testing SQS code
would reach for; bgwork's pull consumer (`publish` → `receive` → `ack`) does the
same job with visibility timeouts on virtual time. moto is timed on fewer jobs and
scaled (it is slow), its client and mock set-up left out; the header says so.
"""

from __future__ import annotations

import json
import os
import sys
import time

import boto3
from _common import best_of, table
from moto import mock_aws

import pytest_bgwork as bg


def bgwork_round_trips(n: int) -> None:
    with bg.Simulation(seed=1) as sim:
        sim.queues.create("jobs", visibility_timeout=30)

        async def main() -> None:
            for i in range(n):
                await sim.queues.publish("jobs", {"job": i})
                delivery = await sim.queues.receive("jobs")
                assert delivery is not None
                await delivery.ack()

        sim.run(main())


def moto_round_trips(n: int) -> float:
    """Seconds for ``n`` round trips, client and mock set-up left out."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
        started = time.perf_counter()
        for i in range(n):
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"job": i}))
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=got["ReceiptHandle"])
        return time.perf_counter() - started


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    m = max(50, n // 25)
    ours = best_of(lambda: bgwork_round_trips(n))
    theirs = min(moto_round_trips(m) for _ in range(2)) * (n / m)
    table(
        f"send → receive → delete round trips: N={n} (moto timed on {m}, scaled)",
        ("pytest-bgwork queues (pull consumer)", ours),
        [("moto mock_aws SQS via boto3", theirs)],
        n,
    )


if __name__ == "__main__":
    main()
