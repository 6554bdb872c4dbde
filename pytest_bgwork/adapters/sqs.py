"""boto3 and aiobotocore SQS clients on ``sim.queues``: the user's unmodified code, no network.

``with adapters.sqs.install(sim): ...`` answers botocore's ``before-send.sqs.*`` event (the
seam moto uses: a handler that returns a response skips HTTP) from the simulation, for
boto3 and for aiobotocore (which gets its own awaitable response type). Each SQS queue is
a ``sim.queues`` queue with the ``sqs-standard`` or ``sqs-fifo`` profile, so deliveries,
visibility timeouts, faults, chaos, the history and the checks all apply.

What it answers (botocore's JSON protocol, ``AmazonSQS.<Operation>``): see ``_IMPLEMENTED``.
Any other operation raises ``UnsupportedOperation`` naming it. Out-of-range parameters get
SQS's error codes (and AWS's texts) as a botocore ``ClientError``; an injected fault is a
500 ``InternalError`` (or botocore's own transport error), never the caller's bad input.
As AWS does (moto's authors verified it), a delete or visibility change with an older
receipt handle of a message acts on its most recent receive.

Sync boto3 in a sync test body or a worker thread long-polls on virtual time (on the
loop's own thread it cannot wait and returns at once); botocore's retry sleeps are
skipped (recorded as ``sqs.retry_sleep``). aiobotocore long-polls on virtual time and
its retry sleeps are virtual too. A test's own freezegun ``freeze_time`` that moves
forward moves the virtual clock as far before the next call is answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import inspect
import io
import json
import os
import random
import re
import struct
import sys
import time as _time
import types
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest_bgwork as bg

__all__ = ["ACCOUNT_ID", "SqsBackend", "UnsupportedOperation", "backend", "install", "patch_client"]

#: The account id in queue URLs and ARNs (moto's default, so URLs look the same).
ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": DEFAULT_REGION}
#: Seconds between re-checks of an empty queue during a long poll (delayed messages become
#: visible without an event; anything published or expiring wakes the poll at once).
POLL_INTERVAL = 1.0
MAX_VISIBILITY = 43200
MAX_WAIT = 20
MAX_DELAY = 900
MAX_BATCH = 10
MAX_SIZE = 1024 * 1024  # SQS's message size limit since August 2025 (was 256 KiB)
PURGE_INTERVAL = 60.0
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_FIFO_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,75}\.fifo$")
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_ATTR_NAME_RE = re.compile(r"^(?!aws\.|amazon\.)(?!\.)(?!.*\.\.)(?!.*\.$)[A-Za-z0-9_.-]{1,256}$", re.I)
_INVALID_BODY = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: What SQS takes as a Number attribute: a decimal, optionally signed, with an exponent.
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_HANDLE_PREFIX = "AQEB"
_NS = uuid.UUID("6f0c3a52-93f5-4d6e-9b1a-1b4b5bcbd4f1")

#: Error shape -> (x-amzn-query-error code, HTTP status): what SQS answers today.
_ERRORS = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "QueueNameExists": "QueueAlreadyExists",
    "InvalidParameterValue": "InvalidParameterValue",
    "InvalidAttributeName": "InvalidAttributeName",
    "InvalidAttributeValue": "InvalidAttributeValue",
    "InvalidMessageContents": "InvalidMessageContents",
    "MissingParameter": "MissingParameter",
    "ReceiptHandleIsInvalid": "ReceiptHandleIsInvalid",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "PurgeQueueInProgress": "AWS.SimpleQueueService.PurgeQueueInProgress",
}
_QUEUE_ATTRIBUTES = (
    "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout", "RedrivePolicy", "FifoQueue", "ContentBasedDeduplication",
)
_READ_ONLY = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
              "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp",
              "QueueArn")
_SYSTEM_ATTRIBUTES = ("ApproximateFirstReceiveTimestamp", "ApproximateReceiveCount", "SenderId",
                      "SentTimestamp", "MessageDeduplicationId", "MessageGroupId", "SequenceNumber",
                      "AWSTraceHeader", "DeadLetterQueueSourceArn")
_IMPLEMENTED = ("CreateQueue", "GetQueueUrl", "ListQueues", "DeleteQueue", "SendMessage",
                "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
                "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "GetQueueAttributes",
                "SetQueueAttributes", "PurgeQueue", "TagQueue", "UntagQueue", "ListQueueTags",
                "ListDeadLetterSourceQueues")
#: SQS's own texts for the errors it documents (the code alone is not what users log).
INVALID_QUEUE_NAME = ("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 "
                      "in length")
INVALID_BATCH_ID = ("A batch entry id can only contain alphanumeric characters, hyphens and "
                    "underscores. It can be at most 80 letters long.")
NO_DEDUP_ID = ("The queue should either have ContentBasedDeduplication enabled or "
               "MessageDeduplicationId provided explicitly")
MAX_TAGS = 50


#: An SQS operation the adapter does not answer (it never sends it anywhere either): the
#: one "not simulated" error every adapter raises, under the name this adapter used first.
UnsupportedOperation = bg.UnsupportedFeature


class _SqsError(Exception):
    """An SQS error response: its shape name, message and status (``whole``: a batch entry's
    error that fails the whole batch request, as SQS does for missing FIFO ids)."""

    def __init__(self, shape: str, message: str, status: int = 400, *, whole: bool = False) -> None:
        super().__init__(message)
        self.shape = shape
        self.message = message
        self.status = status
        self.whole = whole


def _invalid(param: str, value: object, reason: str) -> _SqsError:
    return _SqsError("InvalidParameterValue",
                     f"Value {value} for parameter {param} is invalid. Reason: {reason}")


# -- wire helpers --------------------------------------------------------------------------
def md5_of_body(body: str) -> str:
    """``MD5OfMessageBody``: the hex MD5 of the UTF-8 body."""
    return hashlib.md5(body.encode()).hexdigest()


def md5_of_attributes(attributes: dict[str, dict[str, Any]]) -> str:
    """``MD5OfMessageAttributes`` as SQS computes it (names sorted; length-prefixed fields)."""
    buf = bytearray()

    def put(data: bytes) -> None:
        buf.extend(struct.pack("!I", len(data)))
        buf.extend(data)

    for name in sorted(attributes):
        attr = attributes[name]
        put(name.encode())
        put(attr["DataType"].encode())
        if "BinaryValue" in attr:
            buf.append(2)
            put(base64.b64decode(attr["BinaryValue"]))
        else:
            buf.append(1)
            put(attr["StringValue"].encode())
    return hashlib.md5(bytes(buf)).hexdigest()


def _int_param(params: dict[str, Any], name: str, lo: int, hi: int, default: int | None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _invalid(name, value, f"Must be between {lo} and {hi}, if provided.")
    return value


def _int_attr(name: str, value: object, lo: int, hi: int) -> int:
    text = str(value)
    if not re.fullmatch(r"-?\d+", text) or not lo <= int(text) <= hi:
        raise _SqsError("InvalidAttributeValue",
                        f"Invalid value for the parameter {name}. Reason: must be an integer "
                        f"from {lo} to {hi}; got {value!r}.")
    return int(text)


def _epoch_ms(sim: bg.Simulation) -> int:
    return round((sim.clock.start + sim.clock.monotonic()) * 1000)


# -- state ----------------------------------------------------------------------------------
@dataclass
class _Queue:
    """One SQS queue: its name, URL parts, attributes and the bookkeeping SQS adds."""

    name: str
    fifo: bool
    attributes: dict[str, str]
    created: int
    modified: int
    region: str
    dlq_for: set[str] = field(default_factory=set)
    purge_offset: int = -1
    purged_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{self.name}"

    def int_attr(self, name: str) -> int:
        return int(self.attributes[name])

    @property
    def redrive(self) -> tuple[str, int] | None:
        text = self.attributes.get("RedrivePolicy")
        if not text:
            return None
        policy = json.loads(text)
        return str(policy["deadLetterTargetArn"]).rsplit(":", 1)[-1], int(policy["maxReceiveCount"])


@dataclass
class _Receipt:
    """One receive of one message: the delivery it holds and when it began."""

    queue: str
    message_id: str
    delivery: Any
    received_at: float
    first_received_at: float


class SqsBackend:
    """The SQS service of one simulation: queues, receipt handles, wire format."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.queues: dict[str, _Queue] = {}
        self._receipts: dict[str, _Receipt] = {}
        self._latest: dict[tuple[str, str], str] = {}
        self._first_receive: dict[tuple[str, str], int] = {}
        #: (queue, simulation message id) -> AWSTraceHeader sent with it
        self._trace: dict[tuple[str, str], str] = {}
        #: (dead-letter queue, simulation message id) -> the MessageId it had (SQS keeps it)
        self._moved_ids: dict[tuple[str, str], str] = {}
        #: (queue, simulation message id) -> its first receive's monotonic time (12 h cap)
        self._first_mono: dict[tuple[str, str], float] = {}
        self._wakers: dict[str, list[asyncio.Future[None]]] = {}
        #: the latest time a test's own freezegun ``freeze_time`` held, as last seen
        self._frozen_seen: datetime.datetime | None = None
        self._requests = 0
        self._handles = 0
        self._subscribed = False
        self.closed = False

    # -- helpers -------------------------------------------------------------------------
    def _next_request_id(self) -> str:
        self._requests += 1
        return str(uuid.uuid5(_NS, f"request/{self._requests}"))

    def message_id(self, queue: str, sim_id: str) -> str:
        """The SQS ``MessageId`` of a simulation message (a deterministic UUID; a dead-lettered
        message keeps the id it had on its source queue, as SQS does)."""
        moved = self._moved_ids.get((queue, sim_id))
        return moved if moved is not None else str(uuid.uuid5(_NS, f"{queue}/{sim_id}"))

    def _queue(self, params: dict[str, Any]) -> _Queue:
        url = params.get("QueueUrl")
        if not isinstance(url, str) or not url:
            raise _SqsError("MissingParameter", "The request must contain the parameter QueueUrl.")
        name = url.rstrip("/").rsplit("/", 1)[-1]
        q = self.queues.get(name)
        if q is None:
            raise _SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return q

    def _url(self, q: _Queue, base: str) -> str:
        return f"{base}/{ACCOUNT_ID}/{q.name}"

    def _subscribe(self) -> None:
        if not self._subscribed:
            self._subscribed = True
            self.sim.history.subscribe(self._on_event)

    def _on_event(self, event: bg.Event) -> None:
        if self.closed or event.service != "queue":
            return
        queue = event.detail.get("queue")
        waiters = self._wakers.get(queue) if isinstance(queue, str) else None
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.get_loop().call_soon(_wake, fut)

    # -- the entry point -----------------------------------------------------------------
    async def answer(self, operation: str, body: bytes, base: str, region: str,
                     can_wait: bool) -> tuple[int, dict[str, Any]]:
        """Answer one operation: (HTTP status, JSON body). SQS errors become error bodies."""
        if operation not in _IMPLEMENTED:
            raise UnsupportedOperation(
                f"adapters.sqs does not implement the SQS operation {operation}; it answers "
                f"{', '.join(_IMPLEMENTED)}. Nothing was sent. Use a real queue for {operation} "
                "(moto, localstack) or open an issue with the behaviour you need.")
        try:
            params = json.loads(body.decode() or "{}") if body else {}
        except ValueError:
            raise bg.BgworkError(
                f"adapters.sqs got a {operation} request that is not JSON: this botocore speaks "
                "SQS's old query protocol. Upgrade botocore (>= 1.34 speaks JSON to SQS).") from None
        handler = getattr(self, f"_op_{operation}")
        await self._follow_freeze_time(can_wait)
        injected = self.sim.faults.injected
        try:
            result: dict[str, Any] = await handler(params, base=base, region=region, can_wait=can_wait)
        except _SqsError as err:
            self.sim.history.record("sqs", operation, "fail", error=err.shape, message=err.message)
            return err.status, {"__type": f"com.amazonaws.sqs#{err.shape}", "message": err.message,
                                "_query": _ERRORS.get(err.shape, err.shape)}
        except (ConnectionError, TimeoutError):
            raise  # a transport failure: botocore's own exception (``_convert``)
        except Exception as exc:
            if self.sim.faults.injected == injected:
                raise  # not a fault this simulation injected: a bug shows as itself
            # An injected fault is the service failing, never the caller's bad input: SQS's
            # HTTP 500 InternalError, which botocore retries like the real one.
            self.sim.history.record("sqs", operation, "fail", error="InternalError",
                                    injected=True, cause=repr(exc))
            return 500, {"__type": "com.amazonaws.sqs#InternalError",
                         "message": "We encountered an internal error. Please try again.",
                         "_query": "InternalError"}
        return 200, result

    async def _follow_freeze_time(self, can_wait: bool) -> None:
        """Move the virtual clock as far as a test's ``freeze_time`` moved forward.

        moto's users move time with freezegun (``with freeze_time("12:05")`` after one at
        12:00). The first frozen instant a request sees is the anchor; each later one past
        the latest seen moves the virtual clock forward by the difference (visibility
        timeouts, delays and the purge interval run out), firing what falls due on the way.
        Virtual time never runs back: an earlier frozen instant moves nothing. A call that
        cannot wait (sync boto3 on the loop's own thread) moves the clock as a blocked loop.
        """
        from ..core.wallclock import user_frozen_now

        now = user_frozen_now()
        if now is None:
            return
        seen = self._frozen_seen
        if seen is not None and now <= seen:
            return
        self._frozen_seen = now
        if seen is None:  # the anchor
            return
        seconds = (now - seen).total_seconds()
        self.sim.history.record("sqs", "freeze_time", seconds=seconds, to=now.isoformat())
        if can_wait:  # an explicit move, as sim.advance (it may pass max_time)
            await self.sim.advance(seconds)
        else:  # a call holding the loop's thread: time passes, nothing else runs meanwhile
            self.sim.clock.advance_to(self.sim.clock.monotonic() + seconds)

    # -- queues ----------------------------------------------------------------------------
    async def _op_CreateQueue(self, params: dict[str, Any], *, base: str, region: str,
                              **_: Any) -> dict[str, Any]:
        name = params.get("QueueName")
        if not isinstance(name, str):
            raise _SqsError("MissingParameter", "The request must contain the parameter QueueName.")
        given = {str(k): str(v) for k, v in (params.get("Attributes") or {}).items()}
        fifo = given.get("FifoQueue", "false").lower() == "true"
        if not (_FIFO_NAME_RE if fifo else _NAME_RE).match(name):
            if name.endswith(".fifo") and not fifo and _FIFO_NAME_RE.match(name):
                raise _invalid("QueueName", name, "Only FIFO queue names can end with .fifo; set "
                               "the attribute FifoQueue=true.")
            raise _SqsError("InvalidParameterValue", INVALID_QUEUE_NAME)
        tags = self._check_tags(params.get("tags") or {}, name)
        attributes = self._defaults(fifo)
        for key, value in given.items():
            self._set_attribute(attributes, key, value, fifo, name)
        existing = self.queues.get(name)
        if existing is not None:  # the same name: the URL if the attributes given match, else an error
            differ = sorted(k for k in given if k in attributes and existing.attributes.get(k) != attributes[k])
            if differ:
                raise _SqsError("QueueNameExists", "A queue already exists with the same name and a "
                                f"different value for attribute(s) {', '.join(differ)}")
            return {"QueueUrl": self._url(existing, base)}
        now = _epoch_ms(self.sim) // 1000
        q = _Queue(name, fifo, attributes, now, now, region, tags=tags)
        self._create_sim_queue(q)
        self.queues[name] = q
        self._link_redrive(q)
        self.sim.history.record("sqs", "CreateQueue", queue=name, fifo=fifo)
        return {"QueueUrl": self._url(q, base)}

    @staticmethod
    def _defaults(fifo: bool) -> dict[str, str]:
        out = {"DelaySeconds": "0", "MaximumMessageSize": str(MAX_SIZE),
               "MessageRetentionPeriod": "345600", "ReceiveMessageWaitTimeSeconds": "0",
               "VisibilityTimeout": "30"}
        if fifo:
            out.update(FifoQueue="true", ContentBasedDeduplication="false",
                       DeduplicationScope="queue", FifoThroughputLimit="perQueue")
        return out

    def _set_attribute(self, attributes: dict[str, str], key: str, value: str, fifo: bool,
                       name: str) -> None:
        limits = {"DelaySeconds": (0, MAX_DELAY), "MaximumMessageSize": (1024, MAX_SIZE),
                  "MessageRetentionPeriod": (60, 1209600), "ReceiveMessageWaitTimeSeconds": (0, MAX_WAIT),
                  "VisibilityTimeout": (0, MAX_VISIBILITY)}
        if key in limits:
            attributes[key] = str(_int_attr(key, value, *limits[key]))
        elif key == "RedrivePolicy":
            if value in ("", "{}"):
                attributes.pop(key, None)
                return
            try:
                policy = json.loads(value)
                target = str(policy["deadLetterTargetArn"])
                count = _int_attr("maxReceiveCount", policy["maxReceiveCount"], 1, 1000)
            except (ValueError, KeyError, TypeError):
                raise _SqsError("InvalidAttributeValue", f"Invalid value for the parameter "
                                f"RedrivePolicy. Reason: Redrive policy is not a dict or valid json "
                                f"with deadLetterTargetArn and maxReceiveCount: {value!r}.") from None
            dlq = self.queues.get(target.rsplit(":", 1)[-1])
            if dlq is None:
                raise _invalid("RedrivePolicy", value, "Dead letter target does not exist.")
            if dlq.fifo != fifo:
                raise _invalid("RedrivePolicy", value, "Dead-letter queue must be same type of queue "
                               "as the source.")
            attributes[key] = json.dumps({"deadLetterTargetArn": target, "maxReceiveCount": count},
                                         separators=(",", ":"))
        elif key == "FifoQueue":
            if (value.lower() == "true") != fifo:
                raise _SqsError("InvalidAttributeValue", "Invalid value for the parameter FifoQueue. "
                                "Reason: a queue's type cannot change.")
        elif key == "ContentBasedDeduplication":
            if not fifo:
                raise _SqsError("InvalidAttributeName",
                                f"Unknown Attribute ContentBasedDeduplication (queue {name} is not FIFO).")
            if value.lower() not in ("true", "false"):
                raise _SqsError("InvalidAttributeValue", "Invalid value for the parameter "
                                f"ContentBasedDeduplication: {value!r} (true or false).")
            attributes[key] = value.lower()
        elif key == "Policy" and value == "":
            attributes.pop(key, None)  # SQS: an empty policy removes the queue's policy
        elif key in _READ_ONLY or key in ("Policy", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds",
                                          "SqsManagedSseEnabled", "DeduplicationScope",
                                          "FifoThroughputLimit", "RedriveAllowPolicy"):
            if key in _READ_ONLY:
                raise _SqsError("InvalidAttributeName", f"Unknown Attribute {key}.")
            attributes[key] = value  # accepted and echoed; no behaviour simulated
        else:
            raise _SqsError("InvalidAttributeName", f"Unknown Attribute {key}.")

    def _create_sim_queue(self, q: _Queue) -> None:
        if q.name in self.sim.queues.names():  # re-created after DeleteQueue: a fresh start
            q.purge_offset = max((m.offset for m in self.sim.queues.messages(q.name)), default=-1) + 1
            return
        try:
            self.sim.queues.create(
                q.name, profile="sqs-fifo" if q.fifo else "sqs-standard",
                visibility_timeout=q.int_attr("VisibilityTimeout"),
                retention=q.int_attr("MessageRetentionPeriod"),
                dead_letter=False, stale_ack="deletes")
        except ValueError as exc:
            raise _invalid("QueueName", q.name, str(exc)) from None

    def _link_redrive(self, q: _Queue) -> None:
        redrive = q.redrive
        if redrive is not None and redrive[0] in self.queues:
            self.queues[redrive[0]].dlq_for.add(q.name)

    @staticmethod
    def _check_tags(tags: object, name: str) -> dict[str, str]:
        if not isinstance(tags, dict):
            raise _SqsError("MissingParameter", "The request must contain the parameter Tags.")
        if len(tags) > MAX_TAGS:
            raise _SqsError("InvalidParameterValue", f"Too many tags added for queue {name}.")
        out = {}
        for key, value in tags.items():
            if not isinstance(key, str) or not 1 <= len(key) <= 128:
                raise _SqsError("InvalidParameterValue",
                                "Tag keys must be between 1 and 128 characters in length.")
            out[key] = str(value)
        return out

    async def _op_ListQueues(self, params: dict[str, Any], *, base: str, region: str,
                             **_: Any) -> dict[str, Any]:
        prefix = params.get("QueueNamePrefix") or ""
        names = [n for n, q in self.queues.items() if n.startswith(prefix) and q.region == region]
        page, out = self._page(params, names)
        if page:
            out["QueueUrls"] = [self._url(self.queues[n], base) for n in page]
        return out

    @staticmethod
    def _page(params: dict[str, Any], names: list[str]) -> tuple[list[str], dict[str, Any]]:
        """One page of ``names`` (``MaxResults`` 1-1000, ``NextToken``), and the answer's
        ``NextToken`` when more follow."""
        most = _int_param(params, "MaxResults", 1, 1000, None)
        token = params.get("NextToken")
        start = 0
        if token is not None:
            try:
                start = int(base64.b64decode(str(token)).decode())
            except ValueError:
                raise _invalid("NextToken", token, "Invalid NextToken value.") from None
        out: dict[str, Any] = {}
        if most is not None and start + most < len(names):
            out["NextToken"] = base64.b64encode(str(start + most).encode()).decode()
        return names[start:start + (most or 1000)], out

    async def _op_ListDeadLetterSourceQueues(self, params: dict[str, Any], *, base: str,
                                             **_: Any) -> dict[str, Any]:
        """The queues whose ``RedrivePolicy`` names this one as their dead-letter queue."""
        q = self._queue(params)
        names = [n for n, src in self.queues.items() if (src.redrive or ("",))[0] == q.name]
        page, out = self._page(params, names)
        return {"queueUrls": [self._url(self.queues[n], base) for n in page], **out}

    async def _op_DeleteQueue(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        purged = await self._drop_messages(q)
        del self.queues[q.name]
        self.sim.history.record("sqs", "DeleteQueue", queue=q.name, deleted=purged)
        return {}

    async def _op_TagQueue(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        tags = params.get("Tags")
        if not tags:
            raise _SqsError("MissingParameter", "The request must contain the parameter Tags.")
        merged = {**q.tags, **self._check_tags(tags, q.name)}
        if len(merged) > MAX_TAGS:
            raise _SqsError("InvalidParameterValue", f"Too many tags added for queue {q.name}.")
        q.tags = merged
        return {}

    async def _op_UntagQueue(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        keys = params.get("TagKeys") or []
        if not keys:
            raise _SqsError("InvalidParameterValue",
                            "Tag keys must be between 1 and 128 characters in length.")
        for key in keys:
            q.tags.pop(key, None)
        return {}

    async def _op_ListQueueTags(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        return {"Tags": dict(q.tags)} if q.tags else {}

    async def _op_GetQueueUrl(self, params: dict[str, Any], *, base: str, **_: Any) -> dict[str, Any]:
        name = params.get("QueueName")
        q = self.queues.get(name) if isinstance(name, str) else None
        if q is None:
            raise _SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return {"QueueUrl": self._url(q, base)}

    async def _op_GetQueueAttributes(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        names = params.get("AttributeNames") or []
        counts = self.counts(q.name)
        values = {
            **q.attributes,
            "ApproximateNumberOfMessages": str(counts["visible"]),
            "ApproximateNumberOfMessagesNotVisible": str(counts["in_flight"]),
            "ApproximateNumberOfMessagesDelayed": str(counts["delayed"]),
            "CreatedTimestamp": str(q.created),
            "LastModifiedTimestamp": str(q.modified),
            "QueueArn": q.arn,
        }
        if "All" in names:
            return {"Attributes": values}
        out = {}
        for name in names:
            if name not in values:
                if name in _QUEUE_ATTRIBUTES:
                    continue  # e.g. RedrivePolicy on a queue without one
                raise _SqsError("InvalidAttributeName", f"Unknown Attribute {name}.")
            out[name] = values[name]
        return {"Attributes": out} if out else {}

    async def _op_SetQueueAttributes(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        attributes = dict(q.attributes)
        for key, value in (params.get("Attributes") or {}).items():
            self._set_attribute(attributes, str(key), str(value), q.fifo, q.name)
        q.attributes = attributes
        q.modified = _epoch_ms(self.sim) // 1000
        self._link_redrive(q)
        self.sim.history.record("sqs", "SetQueueAttributes", queue=q.name,
                                attributes=sorted(params.get("Attributes") or {}))
        return {}

    def counts(self, name: str) -> dict[str, int]:
        """Visible, in-flight and delayed messages of queue ``name`` (purged ones left out)."""
        q = self.queues[name]
        out = {"visible": 0, "in_flight": 0, "delayed": 0}
        for msg in self.sim.queues.messages(name):
            if msg.offset < q.purge_offset:
                continue
            state = {"ready": "visible", "in_flight": "in_flight", "delayed": "delayed"}.get(msg.state)
            if state is not None:
                out[state] += 1
        return out

    async def _op_PurgeQueue(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        now = self.sim.clock.monotonic()
        if q.purged_at is not None and now - q.purged_at < PURGE_INTERVAL:
            raise _SqsError("PurgeQueueInProgress", f"Only one PurgeQueue operation on {q.name} is "
                            "allowed every 60 seconds.", 403)
        q.purged_at = now
        purged = await self._drop_messages(q)
        self.sim.history.record("sqs", "PurgeQueue", queue=q.name, purged=purged)
        return {}

    async def _drop_messages(self, q: _Queue) -> int:
        """Delete every message of ``q`` (PurgeQueue, DeleteQueue); how many were visible or in flight."""
        messages = self.sim.queues.messages(q.name)
        q.purge_offset = max((m.offset for m in messages), default=-1) + 1
        purged = 0
        for handle, receipt in list(self._receipts.items()):  # in flight: delete with their lease
            if receipt.queue == q.name and self._latest.get((q.name, receipt.message_id)) == handle \
                    and receipt.delivery.settled is None:
                await receipt.delivery.ack()
                purged += 1
        while True:  # visible: take and delete (delayed ones are dropped when they surface)
            d = await self.sim.queues.receive(q.name)
            if d is None:
                break
            await d.ack()
            purged += 1
        return purged

    # -- sending -----------------------------------------------------------------------------
    def _check_message(self, q: _Queue, entry: dict[str, Any]) -> tuple[
            str, dict[str, Any] | None, int, str | None, str | None, str | None]:
        body = entry.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise _SqsError("MissingParameter", "The request must contain the parameter MessageBody.")
        bad = _INVALID_BODY.search(body)
        if bad:
            raise _SqsError("InvalidMessageContents", f"Invalid characters found. Invalid characters "
                            f"are: {bad.group()!r} (the body must be XML-safe Unicode).")
        attributes = entry.get("MessageAttributes") or None
        size = len(body.encode())
        if attributes:
            if len(attributes) > 10:
                raise _invalid("MessageAttributes", f"({len(attributes)} attributes)",
                               "Number of message attributes cannot exceed 10.")
            for name, attr in attributes.items():
                if not _ATTR_NAME_RE.match(name):
                    raise _SqsError("InvalidParameterValue", f"The message attribute name '{name}' "
                                    "is invalid. Attribute name can contain A-Z, a-z, 0-9, underscore "
                                    "(_), hyphen (-), and period (.) characters.")
                kind = str(attr.get("DataType", ""))
                base_kind = kind.split(".", 1)[0]
                if base_kind not in ("String", "Number", "Binary"):
                    raise _SqsError("InvalidParameterValue", f"The message attribute '{name}' has "
                                    "an invalid message attribute type, the set of supported type "
                                    "prefixes is Binary, Number, and String.")
                key = "BinaryValue" if base_kind == "Binary" else "StringValue"
                if not attr.get(key):
                    raise _invalid("MessageAttributes", name, f"The message attribute '{name}' must "
                                   f"contain a non-empty {key}.")
                value = attr[key]
                if base_kind == "Number" and not _NUMBER_RE.match(str(value)):
                    raise _SqsError("InvalidParameterValue", f"Can't cast the value of message "
                                    f"(user) attribute '{name}' to a number.")
                size += len(name.encode()) + len(kind.encode()) + (
                    len(base64.b64decode(value)) if key == "BinaryValue" else len(value.encode()))
            attributes = {n: {"DataType": a["DataType"],
                              **({"BinaryValue": a["BinaryValue"]} if "BinaryValue" in a
                                 else {"StringValue": a["StringValue"]})}
                          for n, a in attributes.items()}
        limit = q.int_attr("MaximumMessageSize")
        if size > limit:
            raise _SqsError("InvalidParameterValue", "One or more parameters are invalid. Reason: "
                            f"Message must be shorter than {limit} bytes.")
        delay = entry.get("DelaySeconds")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int)
                                  or not 0 <= delay <= MAX_DELAY):
            raise _invalid("DelaySeconds", delay, f"DelaySeconds must be >= 0 and <= {MAX_DELAY}.")
        if delay and q.fifo:  # SQS FIFO: 0 is accepted, any other per-message delay is not
            raise _invalid("DelaySeconds", delay, "The request include parameter that is not valid "
                           "for this queue type.")
        if delay is None:
            delay = 0 if q.fifo else q.int_attr("DelaySeconds")
        group = entry.get("MessageGroupId")
        dedup = entry.get("MessageDeduplicationId")
        if q.fifo:
            if group is None:
                raise _SqsError("MissingParameter", "The request must contain the parameter "
                                "MessageGroupId.", whole=True)
            if not isinstance(group, str) or not _KEY_RE.match(group):
                raise _invalid("MessageGroupId", group, "MessageGroupId can contain up to 128 "
                               "alphanumeric and punctuation characters.")
            if dedup is None:
                if q.attributes.get("ContentBasedDeduplication") != "true":
                    raise _SqsError("InvalidParameterValue", NO_DEDUP_ID, whole=True)
                dedup = hashlib.sha256(body.encode()).hexdigest()
            elif not isinstance(dedup, str) or not _KEY_RE.match(dedup):
                raise _invalid("MessageDeduplicationId", dedup, "1 to 128 printable ASCII characters.")
        else:
            if dedup is not None:
                raise _invalid("MessageDeduplicationId", dedup, "The request includes a parameter "
                               "that is not valid for this queue type.")
            group = None  # standard queues accept and ignore MessageGroupId (fair queues)
        return body, attributes, delay, group, dedup, self._trace_header(entry)

    @staticmethod
    def _trace_header(entry: dict[str, Any]) -> str | None:
        """The ``AWSTraceHeader`` system attribute sent with a message (the only one SQS takes)."""
        system = entry.get("MessageSystemAttributes") or {}
        for name in system:
            if name != "AWSTraceHeader":
                raise _invalid("MessageSystemAttributes", name, "Only AWSTraceHeader is a valid "
                               "message system attribute.")
        attr = system.get("AWSTraceHeader")
        if attr is None:
            return None
        value = attr.get("StringValue") if isinstance(attr, dict) else None
        if not isinstance(value, str) or not value or attr.get("DataType") != "String":
            raise _invalid("MessageSystemAttributes", "AWSTraceHeader", "AWSTraceHeader needs "
                           "DataType String and a non-empty StringValue.")
        return value

    async def _send_one(self, q: _Queue, checked: tuple[str, dict[str, Any] | None, int, str | None,
                                                         str | None, str | None]) -> dict[str, Any]:
        body, attributes, delay, group, dedup, trace = checked
        result = await self.sim.queues.publish(q.name, body, idempotency_key=dedup, partition_key=group,
                                               metadata=attributes, delay=delay)
        if trace is not None and not result.duplicate:
            self._trace[(q.name, result.id)] = trace
        out: dict[str, Any] = {"MessageId": self.message_id(q.name, result.id),
                               "MD5OfMessageBody": md5_of_body(body)}
        if attributes:
            out["MD5OfMessageAttributes"] = md5_of_attributes(attributes)
        if q.fifo:
            out["SequenceNumber"] = str(10**19 + result.offset)
        return out

    async def _op_SendMessage(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        return await self._guard(self._send_one(q, self._check_message(q, params)))

    async def _op_SendMessageBatch(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        entries = self._batch(params, "SendMessageBatch")
        total = sum(len(str(e.get("MessageBody", "")).encode()) for e in entries)
        if total > q.int_attr("MaximumMessageSize"):
            raise _SqsError("BatchRequestTooLong", f"Batch requests cannot be longer than "
                            f"{q.int_attr('MaximumMessageSize')} bytes. You have sent {total} bytes.")
        return await self._each_entry(
            entries, lambda entry: self._guard(self._send_one(q, self._check_message(q, entry))))

    @staticmethod
    async def _each_entry(entries: list[dict[str, Any]],
                          run: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]],
                          ) -> dict[str, Any]:
        """A batch's answer: each entry's result under ``Successful``, an entry's own error
        under ``Failed``; an error that fails the whole request (``whole``) propagates."""
        ok, failed = [], []
        for entry in entries:
            try:
                res = await run(entry)
            except _SqsError as err:
                if err.whole:
                    raise
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": err.shape,
                               "Message": err.message})
            else:
                ok.append({"Id": entry["Id"], **(res or {})})
        return {"Successful": ok, "Failed": failed}

    @staticmethod
    def _batch(params: dict[str, Any], op: str) -> list[dict[str, Any]]:
        entries = params.get("Entries") or []
        if not entries:
            raise _SqsError("EmptyBatchRequest", "There should be at least one "
                            f"{op}RequestEntry in the request.")
        if len(entries) > MAX_BATCH:
            raise _SqsError("TooManyEntriesInBatchRequest", f"Maximum number of entries per request "
                            f"are {MAX_BATCH}. You have sent {len(entries)}.")
        ids = [e.get("Id") for e in entries]
        for i in ids:
            if not isinstance(i, str) or not _BATCH_ID_RE.match(i):
                raise _SqsError("InvalidBatchEntryId", INVALID_BATCH_ID)
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise _SqsError("BatchEntryIdsNotDistinct", f"Id {i} repeated.")
            seen.add(i)
        return list(entries)

    async def _guard(self, coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """Run a queue operation; a ``ValueError`` the simulation raises while validating is SQS's
        InvalidParameterValue. One raised by an injected fault is not (``answer`` makes it a 500)."""
        injected = self.sim.faults.injected
        try:
            return await coro
        except (bg.UnknownQueue, ValueError, TypeError) as exc:
            if self.sim.faults.injected != injected:
                raise
            raise _SqsError("InvalidParameterValue", str(exc)) from None

    # -- receiving ---------------------------------------------------------------------------
    async def _op_ReceiveMessage(self, params: dict[str, Any], *, can_wait: bool,
                                 **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        most = _int_param(params, "MaxNumberOfMessages", 1, MAX_BATCH, 1)
        visibility = _int_param(params, "VisibilityTimeout", 0, MAX_VISIBILITY, None)
        wait = _int_param(params, "WaitTimeSeconds", 0, MAX_WAIT, q.int_attr("ReceiveMessageWaitTimeSeconds"))
        assert most is not None and wait is not None
        names = set(params.get("AttributeNames") or []) | set(params.get("MessageSystemAttributeNames") or [])
        for name in names:
            if name not in (*_SYSTEM_ATTRIBUTES, "All"):
                raise _SqsError("InvalidAttributeName", f"Unknown Attribute {name}.")
        wanted_attrs = list(params.get("MessageAttributeNames") or [])
        loop = asyncio.get_running_loop()
        deadline = self.sim.clock.monotonic() + (wait if can_wait else 0)
        while True:
            messages = await self._receive_batch(q, most, visibility, names, wanted_attrs)
            left = deadline - self.sim.clock.monotonic()
            if messages or left <= 0:
                break
            fut: asyncio.Future[None] = loop.create_future()
            self._subscribe()
            waiters = self._wakers.setdefault(q.name, [])
            waiters.append(fut)
            try:
                await asyncio.wait([fut], timeout=min(POLL_INTERVAL, left))
            finally:
                waiters.remove(fut)
                fut.cancel()
        return {"Messages": messages} if messages else {}

    async def _receive_batch(self, q: _Queue, most: int, visibility: int | None, names: set[str],
                             wanted: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        redrive = q.redrive
        effective = visibility if visibility is not None else q.int_attr("VisibilityTimeout")
        while len(out) < most:
            got = await self.sim.queues.receive_many(q.name, most - len(out))
            dropped = False
            for d in got:
                msg = d.message
                if msg.offset < q.purge_offset:  # sent before a purge: SQS deleted it
                    await d.ack()
                    dropped = True
                elif redrive is not None and d.attempt > redrive[1] and redrive[0] in self.queues:
                    await self._move_to_dlq(q, d, self.queues[redrive[0]])
                    dropped = True
                else:
                    out.append(await self._received(q, d, effective, names, wanted))
            if not dropped:  # (a second pull only to fill the places of dropped messages)
                break
        return out

    async def _received(self, q: _Queue, d: Any, effective: int, names: set[str],
                        wanted: list[str]) -> dict[str, Any]:
        """One message of a ReceiveMessage answer: its visibility set, its receipt handle made."""
        if effective != self.sim.queues.config(q.name).visibility_timeout:
            await d.extend(effective)
        return self._wire_message(q, d, names, wanted)

    async def _move_to_dlq(self, q: _Queue, d: Any, dlq: _Queue) -> None:
        """The receive past maxReceiveCount: SQS moves the message to the dead-letter queue."""
        msg = d.message
        res = await self.sim.queues.move_to_dead_letter_queue(  # checks see the copy as accounted for
            d, dlq.name, idempotency_key=msg.idempotency_key if dlq.fifo else None,
            partition_key=msg.partition_key if dlq.fifo else None)
        self._moved_ids[(dlq.name, res.id)] = self.message_id(q.name, msg.id)
        trace = self._trace.get((q.name, msg.id))
        if trace is not None:
            self._trace[(dlq.name, res.id)] = trace
        self.sim.history.record("sqs", "dead_letter", queue=q.name, id=msg.id, dlq=dlq.name,
                                receives=d.attempt - 1)

    def _wire_message(self, q: _Queue, d: Any, names: set[str], wanted: list[str]) -> dict[str, Any]:
        msg = d.message
        key = (q.name, msg.id)
        now = self.sim.clock.monotonic()
        self._handles += 1
        raw = hashlib.sha256(f"{q.name}/{msg.id}/{d.attempt}/{self._handles}".encode()).digest()
        handle = _HANDLE_PREFIX + base64.b64encode(raw * 3).decode()
        first_ms = self._first_receive.setdefault(key, _epoch_ms(self.sim))
        self._first_mono.setdefault(key, now)
        self._receipts[handle] = _Receipt(q.name, msg.id, d, now, now)
        if not getattr(d, "_overlap", False):
            # An overlapping copy (a duplicate delivered at the same time, as a standard queue
            # may) is another stored copy, not a receive of this one: both handles stay valid.
            self._latest[key] = handle
        body: str = msg.payload
        out: dict[str, Any] = {"MessageId": self.message_id(q.name, msg.id), "ReceiptHandle": handle,
                               "MD5OfBody": md5_of_body(body), "Body": body}
        system = {
            "SenderId": "AIDAIT2UOQQY3AUEKVGXU",
            "SentTimestamp": str(round(msg.published_at.timestamp() * 1000)),
            "ApproximateReceiveCount": str(d.attempt),
            "ApproximateFirstReceiveTimestamp": str(first_ms),
        }
        if q.fifo:
            system.update(MessageGroupId=str(msg.partition_key),
                          MessageDeduplicationId=str(msg.idempotency_key),
                          SequenceNumber=str(10**19 + msg.offset))
        trace = self._trace.get(key)
        if trace is not None:
            system["AWSTraceHeader"] = trace
        if names:
            chosen = system if "All" in names else {k: v for k, v in system.items() if k in names}
            if chosen:
                out["Attributes"] = chosen
        attributes: dict[str, Any] = msg.metadata or {}
        if attributes and wanted:
            picked = {n: a for n, a in attributes.items() if _attr_wanted(n, wanted)}
            if picked:
                out["MessageAttributes"] = picked
                out["MD5OfMessageAttributes"] = md5_of_attributes(picked)
        return out

    # -- settling ----------------------------------------------------------------------------
    def _receipt(self, q: _Queue, handle: object) -> _Receipt:
        receipt = self._receipts.get(handle) if isinstance(handle, str) else None
        if receipt is None or receipt.queue != q.name:
            raise _SqsError("ReceiptHandleIsInvalid", f'The input receipt handle "{handle}" is not a '
                            "valid receipt handle.")
        return receipt

    def _target(self, q: _Queue, receipt: _Receipt) -> tuple[Any, _Receipt]:
        """The delivery a handle acts on: its message's most recent receive. SQS (verified by
        moto's authors) deletes or changes the visibility with an older handle of the message
        too; an overlapping copy (a duplicate delivered at the same time) keeps its own."""
        if getattr(receipt.delivery, "_overlap", False):
            return receipt.delivery, receipt
        latest = self._receipts.get(self._latest.get((q.name, receipt.message_id), ""), receipt)
        return latest.delivery, latest

    async def _delete(self, q: _Queue, handle: object) -> None:
        d, _ = self._target(q, self._receipt(q, handle))
        if d.settled is not None:
            return  # deleted already: SQS answers a repeated delete with success
        # also after the lease lapsed: the queue's stale_ack="deletes" removes the message
        await d.ack()

    async def _op_DeleteMessage(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        await self._delete(q, params.get("ReceiptHandle"))
        return {}

    async def _op_DeleteMessageBatch(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        return await self._each_entry(self._batch(params, "DeleteMessageBatch"),
                                      lambda entry: self._delete(q, entry.get("ReceiptHandle")))

    async def _change_visibility(self, q: _Queue, entry: dict[str, Any]) -> None:
        seconds = entry.get("VisibilityTimeout")
        if seconds is None:
            raise _SqsError("MissingParameter", "The request must contain the parameter VisibilityTimeout.")
        _int_param(entry, "VisibilityTimeout", 0, MAX_VISIBILITY, None)
        d, receipt = self._target(q, self._receipt(q, entry.get("ReceiptHandle")))
        if d.settled is not None or d.expired:
            raise _SqsError("MessageNotInflight", f"Message {self.message_id(q.name, receipt.message_id)} "
                            "is not in flight (its visibility timeout ended or it was deleted).")
        held = self.sim.clock.monotonic() - receipt.received_at
        if held + seconds > MAX_VISIBILITY:
            raise _invalid("VisibilityTimeout", seconds, f"Total VisibilityTimeout for the message is "
                           f"beyond the limit [{MAX_VISIBILITY} seconds]")
        await d.extend(seconds)  # 0: visible to the very next receive

    async def _op_ChangeMessageVisibility(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        await self._change_visibility(q, params)
        return {}

    async def _op_ChangeMessageVisibilityBatch(self, params: dict[str, Any],
                                               **_: Any) -> dict[str, Any]:
        q = self._queue(params)
        return await self._each_entry(self._batch(params, "ChangeMessageVisibilityBatch"),
                                      lambda entry: self._change_visibility(q, entry))


def _attr_wanted(name: str, wanted: list[str]) -> bool:
    for pattern in wanted:
        if pattern in ("All", ".*") or pattern == name:
            return True
        if pattern.endswith(".*") and name.startswith(pattern[:-2]):
            return True
    return False


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# -- botocore glue --------------------------------------------------------------------------
_active: list[SqsBackend] = []
_UNIQUE_ID = "pytest-bgwork-sqs"
#: Attribute a request carries once answered (a handler registered twice answers once).
_ANSWER = "_bgwork_sqs_response"


def _split(request: Any, event_name: str) -> tuple[str, bytes, str, str]:
    operation = event_name.rsplit(".", 1)[-1]
    body = request.body
    if body is None:
        body = b""
    elif isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = body.read() if hasattr(body, "read") else bytes(body)
    url = str(request.url)
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    match = re.match(r"^sqs\.([a-z0-9-]+)\.", host)
    region = match.group(1) if match else DEFAULT_REGION
    return operation, body, f"{scheme}://{host}", region


def _headers(status: int, payload: dict[str, Any], request_id: str) -> tuple[dict[str, str], bytes]:
    query = payload.pop("_query", None)
    data = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"x-amzn-RequestId": request_id, "Content-Type": "application/x-amz-json-1.0",
               "Content-Length": str(len(data))}
    if query is not None:
        headers["x-amzn-query-error"] = f"{query};Sender"
    return headers, data


def _respond(request: Any, backend: Any, response_type: Any, raw_type: Any, url: str,
             status: int, payload: dict[str, Any]) -> Any:
    """The botocore (or aiobotocore) response for an answer, remembered on the request so a
    second ``before-send`` handler for the same request returns it again."""
    headers, data = _headers(status, payload, backend._next_request_id())
    response = response_type(url, status, headers, raw_type(data))
    response._content = data
    setattr(request, _ANSWER, response)
    return response


class _Raw(io.BytesIO):
    """The raw body botocore streams (``stream()``) or aiobotocore reads (``await read()``)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


class _AioRaw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        data, self._data = self._data, b""
        return data


def _convert(exc: BaseException, url: str) -> BaseException:
    """An injected network fault as botocore's own exception, so its retry logic sees it."""
    from botocore import exceptions as bx

    converted: BaseException = exc
    if isinstance(exc, TimeoutError):
        converted = bx.ReadTimeoutError(endpoint_url=url)
    elif isinstance(exc, ConnectionError):
        converted = bx.EndpointConnectionError(endpoint_url=url)
    return converted


def _drive(sim: Any, coro: Coroutine[Any, Any, Any], operation: str) -> Any:
    """Run ``coro`` to the end right here, as a blocking client on the loop's thread does.

    ``sim.faults._run_sync``: a delay or a latency moves the clock as a blocked loop would
    (nothing else runs meanwhile), a crash raises ``ProcessCrashed``. The answer never
    waits on the loop (``can_wait=False``: a long poll returns at once when empty).
    """
    try:
        return sim.faults._run_sync(coro)
    except RuntimeError as exc:
        if "run_sync()" not in str(exc):
            raise
        raise bg.BgworkError(
            f"boto3 {operation} had to wait on the event loop but runs synchronously on the "
            "simulation's loop thread, which cannot wait while it blocks. Call the sync client "
            "from a sync test or a worker thread (asyncio.to_thread), or use aiobotocore in "
            "async code.") from exc


async def _as_blocking_call(coro: Coroutine[Any, Any, Any]) -> Any:
    """``coro`` as a task for a thread that blocks on it: a crash unwinds to the thread
    (``ProcessCrashed``) instead of parking the task, as for a call driven in place."""
    from ..core import faults

    faults._sync_call.set(True)  # the task's own context: nothing else sees it
    return await coro


class _Dispatcher:
    """The ``before-send.sqs`` handler: answers from the active simulation, else passes (None)."""

    def __call__(self, request: Any, event_name: str, **_: Any) -> Any:
        if not _active:
            return None
        answered = getattr(request, _ANSWER, None)
        if answered is not None:  # registered twice on one emitter: botocore calls every handler
            return answered
        caller = sys._getframe(1).f_code
        if caller.co_flags & inspect.CO_COROUTINE:  # an aio emitter without the mapping below
            return self.aio(request, event_name)
        return self.sync(request, event_name)

    def sync(self, request: Any, event_name: str) -> Any:
        from botocore.awsrequest import AWSResponse

        backend = _active[-1]
        operation, body, base, region = _split(request, event_name)
        url = str(request.url)

        def make(can_wait: bool = False) -> Coroutine[Any, Any, tuple[int, dict[str, Any]]]:
            return backend.answer(operation, body, base, region, can_wait=can_wait)

        sim = backend.sim
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is sim.loop:
                status, payload = _drive(sim, make(), operation)
            elif running is not None:
                raise bg.NotRunning(f"boto3 {operation} ran on an event loop that is not the "
                                    "simulation's; run it on the simulation (the bgwork fixture)")
            elif sim.loop.is_running():  # a worker thread of the running simulation
                # the call runs as a task on the loop (a long poll waits there) while this
                # thread blocks in a wait on the virtual clock (core.threads)
                status, payload = asyncio.run_coroutine_threadsafe(
                    _as_blocking_call(make(can_wait=True)), sim.loop).result()
            else:  # a sync test body: the long poll runs the loop on virtual time
                status, payload = sim.run(make(can_wait=True))
        except (ConnectionError, TimeoutError) as exc:
            raise _convert(exc, url) from exc
        return _respond(request, backend, AWSResponse, _Raw, url, status, payload)

    async def aio(self, request: Any, event_name: str, **_: Any) -> Any:
        if not _active:
            return None
        answered = getattr(request, _ANSWER, None)
        if answered is not None:
            return answered
        from aiobotocore.awsrequest import AioAWSResponse

        backend = _active[-1]
        operation, body, base, region = _split(request, event_name)
        url = str(request.url)
        if asyncio.get_running_loop() is not backend.sim.loop:
            raise bg.NotRunning(f"aiobotocore {operation} ran on an event loop that is not the "
                                "simulation's; use it in an async test with the bgwork fixture")
        try:
            status, payload = await backend.answer(operation, body, base, region, can_wait=True)
        except (ConnectionError, TimeoutError) as exc:
            raise _convert(exc, url) from exc
        return _respond(request, backend, AioAWSResponse, _AioRaw, url, status, payload)


_dispatcher = _Dispatcher()


def _ensure_registered() -> None:
    """Register the dispatcher for every botocore session made from now on (once per process),
    with aiobotocore's mapping to its async twin, and on boto3's default session if it exists."""
    from botocore import handlers

    # checked on the list itself, not a flag: botocore may have been imported afresh since
    # (pytest's in-process runs drop the modules a run imported)
    if ("before-send.sqs", _dispatcher) not in handlers.BUILTIN_HANDLERS:
        handlers.BUILTIN_HANDLERS.append(("before-send.sqs", _dispatcher))
    try:
        from aiobotocore import hooks as aio_hooks
    except ImportError:
        pass
    else:
        mapping = getattr(aio_hooks, "_HANDLER_MAPPING", None)
        if isinstance(mapping, dict):
            mapping[_dispatcher] = _dispatcher.aio
    boto3 = sys.modules.get("boto3")
    session = getattr(boto3, "DEFAULT_SESSION", None) if boto3 is not None else None
    if session is not None:
        # unregister first: a handler left by an earlier import of this module (pytest's
        # in-process runs re-import it) holds the unique id but answers from its own, empty
        # list of installed simulations
        session._session.unregister("before-send.sqs", unique_id=_UNIQUE_ID)
        session._session.register("before-send.sqs", _dispatcher, unique_id=_UNIQUE_ID)


def backend(sim: bg.Simulation) -> SqsBackend:
    """The SQS backend installed on ``sim`` (its queues, attributes, receipt handles): what
    ``install`` yields, for code that got the simulation (the ``bg_sqs`` fixture yields it)."""
    for candidate in reversed(_active):
        if candidate.sim is sim:
            return candidate
    raise bg.BgworkError("adapters.sqs.backend(sim): adapters.sqs is not installed on this "
                         "simulation; use the bg_sqs fixture or `with adapters.sqs.install(sim):`.")


def patch_client(client: Any) -> Any:
    """Make a client created before ``install`` (or by a session made before) use the simulation."""
    client.meta.events.register("before-send.sqs", _dispatcher, unique_id=_UNIQUE_ID)
    return client


class _SkipSleep(types.ModuleType):
    """``botocore.endpoint.time`` while installed: retry sleeps are recorded, never slept."""

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    def sleep(self, seconds: float) -> None:
        if _active:
            _active[-1].sim.history.record("sqs", "retry_sleep", seconds=round(float(seconds), 6))
        else:  # pragma: no cover - only while installed
            _time.sleep(seconds)


def _jitter() -> float:
    """botocore's retry jitter, drawn from the active simulation's choices (same seed, same delays)."""
    if _active:
        return _active[-1].sim.choices.fraction("sqs.retry_jitter")
    return random.random()


class _SeededRandom(types.ModuleType):
    """``botocore.retryhandler.random`` while installed: legacy-mode jitter from the simulation."""

    def __init__(self) -> None:
        super().__init__("random")

    def __getattr__(self, name: str) -> Any:
        return getattr(random, name)

    def random(self) -> float:
        return _jitter()


def _unanswered(kind: str) -> Callable[..., Any]:
    def _send(self: Any, request: Any) -> Any:
        error = bg.UnmockedRequest(str(request.method), str(request.url))
        error.add_note(
            f"adapters.sqs is installed, but this {kind} request reached the network layer: the "
            "client (or its session) was made before the adapter was installed, or the service is "
            "not SQS. Create the client inside `with adapters.sqs.install(sim):` (or after the "
            "bg_sqs fixture), or call adapters.sqs.patch_client(client).")
        raise error

    return _send


@contextlib.contextmanager
def install(sim: bg.Simulation, *, credentials: bool = True) -> Iterator[SqsBackend]:
    """Answer boto3/aiobotocore SQS calls from ``sim.queues`` while the block runs.

    Yields the ``SqsBackend`` (``backend.queues``: the SQS queues). With ``credentials`` it
    sets dummy AWS credentials and region for variables that are not set (restored after),
    so no credential lookup touches the network. Clients must be created inside the block
    (or passed to ``patch_client``); any other botocore request made meanwhile raises
    instead of leaving the machine.
    """
    if not isinstance(sim, bg.Simulation):
        raise TypeError(f"adapters.sqs.install(sim): sim must be a pytest_bgwork Simulation (the "
                        f"`bgwork` fixture); got {type(sim).__name__}")
    from botocore import endpoint as sync_endpoint

    _ensure_registered()
    backend = SqsBackend(sim)
    saved_env: dict[str, str | None] = {k: os.environ.get(k) for k in DUMMY_CREDENTIALS}
    if credentials:
        for key, value in DUMMY_CREDENTIALS.items():
            os.environ.setdefault(key, value)
    from botocore import retryhandler
    from botocore.retries import standard

    patches: list[tuple[Any, str, Any]] = [
        (sync_endpoint, "time", sync_endpoint.time),
        (sync_endpoint.Endpoint, "_send", sync_endpoint.Endpoint._send),
        (retryhandler, "random", retryhandler.random),
        (standard.ExponentialBackoff, "__init__", standard.ExponentialBackoff.__init__),
    ]
    sync_endpoint.time = _SkipSleep()
    sync_endpoint.Endpoint._send = _unanswered("botocore")
    retryhandler.random = _SeededRandom()
    backoff_init = standard.ExponentialBackoff.__init__

    def seeded_backoff(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["random"] = _jitter  # standard retry mode: jitter from the simulation too
        backoff_init(self, *args, **kwargs)

    standard.ExponentialBackoff.__init__ = seeded_backoff
    try:
        from aiobotocore import endpoint as aio_endpoint
    except ImportError:
        pass
    else:
        patches.append((aio_endpoint.AioEndpoint, "_send", aio_endpoint.AioEndpoint._send))

        async def _aio_send(self: Any, request: Any) -> Any:
            return _unanswered("aiobotocore")(self, request)

        aio_endpoint.AioEndpoint._send = _aio_send
    _active.append(backend)
    try:
        yield backend
    finally:
        backend.closed = True
        _active.remove(backend)
        if not _active:
            for owner, name, value in reversed(patches):
                setattr(owner, name, value)
        if credentials:
            for key, old in saved_env.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
