"""Fixtures for the web adapters (plain fixture functions; the plugin registers them).

``bg_sqs`` installs ``adapters.sqs`` on the test's simulation with dummy AWS credentials,
region and an empty AWS config, so boto3/aiobotocore clients created in the test (or by
the app under test) talk to ``sim.queues`` and nothing reads real credentials or leaves
the machine. botocore is imported only when a test asks for the fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..simulation import Simulation

__all__ = ["bg_sqs"]


@pytest.fixture
def bg_sqs(bgwork: Simulation, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulation]:
    """The test's simulation, with boto3 and aiobotocore SQS answered by ``bgwork.queues``
    (``adapters.sqs.install``); ``adapters.sqs.backend(sim)`` is the SQS backend (its queues)."""
    from . import sqs

    for key, value in sqs.DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with sqs.install(bgwork, credentials=False):
        yield bgwork
