"""Platform profiles: each real platform's limits and behaviours, as plain tables.

A *profile* is data the services read (``services/queues.py``, ``services/kv.py``): which
queue names, key lengths, delays and visibility timeouts the platform accepts, whether
it deduplicates, when a failed attempt comes back, how TTLs behave. ``PLATFORMS`` maps
``Simulation(platform=...)`` to each service's default profile. Sources are in
``docs/profiles.md`` (one row per rule, each naming its test). Imports only ``core``.
"""

from __future__ import annotations

import contextvars
import math
import re
from dataclasses import FrozenInstanceError

__all__ = [
    "KV_PROFILES",
    "PLATFORMS",
    "QUEUE_PROFILES",
    "KVProfile",
    "QueueProfile",
    "check_platform",
    "kv_profile",
    "queue_profile",
]

DAY = 86400.0


class _Profile:
    """A frozen record of its ``__slots__``: equality, hash, repr and immutability as a
    frozen dataclass's. Written out because generating the two dataclasses cost ~1.7 ms
    at every pytest start-up (the plugin reads ``PLATFORMS`` from this module)."""

    __slots__: tuple[str, ...] = ()  # a subclass lists its fields in order (repr, ==, hash)

    def _set(self, values: dict[str, object]) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, values[name])

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({shown})"

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), self._values()


class QueueProfile(_Profile):
    """How one platform's queues behave (see ``docs/profiles.md`` for the sources)."""

    __slots__ = (  # noqa: RUF023 - in field order, which repr, == and hash follow
        "name", "name_re", "name_text", "max_name", "max_key", "key_re", "dedup",
        "default_dedup_window", "max_payload", "metadata_counts", "max_metadata_keys", "max_delay",
        "whole_seconds", "per_message_delay", "default_visibility", "visibility_range",
        "visibility_lo_open", "default_max_retries", "max_retries_hi", "retry", "max_nack_delay",
        "retention", "ordered_partitions", "needs_partition_key",
    )

    name: str
    #: queue names: pattern, what it means in words, max length
    name_re: re.Pattern[str]
    name_text: str
    max_name: int
    #: idempotency/deduplication and partition/group keys: max length, allowed characters
    max_key: int
    key_re: re.Pattern[str] | None
    #: "key": an idempotency key seen within dedup_window returns the first message;
    #: "none": never deduplicates; "fifo": 5 minutes by key or content, window fixed
    dedup: str
    default_dedup_window: float
    #: message size limit in bytes; whether metadata (message attributes) counts toward it
    max_payload: int
    metadata_counts: bool
    max_metadata_keys: int | None
    #: publish delay: at most max_delay, whole seconds only?, allowed per message at all?
    max_delay: float
    whole_seconds: bool
    per_message_delay: bool
    #: visibility timeout / lease: default and inclusive range (lo_open: lo itself refused)
    default_visibility: float
    visibility_range: tuple[float, float]
    visibility_lo_open: bool
    #: retries: default max_retries, allowed range of max_retries (None: no upper bound)
    default_max_retries: int
    max_retries_hi: int | None
    #: "backoff": a failed attempt retries after retry_delay / exponential backoff and is
    #: dead-lettered at once when its budget is spent; "visibility": it comes back when
    #: its visibility timeout ends and moves to the DLQ on the receive past the budget
    retry: str
    #: nack(delay=...) upper bound
    max_nack_delay: float
    #: message retention (None: kept until consumed): default, lowest, highest
    retention: tuple[float, float, float] | None
    #: messages with one partition key are delivered one at a time, in order
    ordered_partitions: bool
    #: publish needs a partition key (SQS FIFO's MessageGroupId)
    needs_partition_key: bool

    def __init__(self, name: str, name_re: re.Pattern[str], name_text: str, max_name: int,
                 max_key: int, key_re: re.Pattern[str] | None, dedup: str,
                 default_dedup_window: float, max_payload: int, metadata_counts: bool,
                 max_metadata_keys: int | None, max_delay: float, whole_seconds: bool,
                 per_message_delay: bool, default_visibility: float,
                 visibility_range: tuple[float, float], visibility_lo_open: bool,
                 default_max_retries: int, max_retries_hi: int | None, retry: str,
                 max_nack_delay: float, retention: tuple[float, float, float] | None,
                 ordered_partitions: bool, needs_partition_key: bool) -> None:
        self._set(locals())

    @property
    def uses_visibility_retry(self) -> bool:
        """A failed attempt returns after its visibility timeout (SQS), not after a backoff."""
        return self.retry == "visibility"


class KVProfile(_Profile):
    """How one platform's key-value store behaves (see ``docs/profiles.md``)."""

    __slots__ = (  # noqa: RUF023 - in field order, which repr, == and hash follow
        "name", "min_ttl", "ttl_whole_ms", "expire_after_instant", "ttl_lag", "max_value",
        "size_counts_key", "size_text", "key_re", "key_text", "ordered_keys", "content_types",
        "unique_versions", "empty_key", "far_ttl", "read_lag",
    )

    name: str
    #: smallest TTL accepted (seconds), or None
    min_ttl: float | None
    #: TTLs must be whole milliseconds (Redis: EX whole seconds or PX whole milliseconds)
    ttl_whole_ms: bool
    #: a key expires when now > its expiry (Redis), not at the instant itself
    expire_after_instant: bool
    #: expired items are deleted up to this many seconds late (DynamoDB TTL), 0: on time
    ttl_lag: float
    #: largest value (or item, when size_counts_key) in bytes; None: no limit
    max_value: int | None
    size_counts_key: bool
    size_text: str
    #: keys must match this pattern (None: any non-empty string)
    key_re: re.Pattern[str] | None
    key_text: str
    #: keys() lists in key order (False: an order drawn from sim.choices, as a hash table)
    ordered_keys: bool
    #: values keep a content type (Agentuity); content_type= is accepted
    content_types: bool
    #: a key's versions never repeat: after a delete or expiry the next write continues
    #: from the last version (Alien's per-write tokens; Redis's WATCH sees any write),
    #: instead of starting again at 1
    unique_versions: bool
    #: the empty string is a valid key (Redis)
    empty_key: bool
    #: TTLs past the clock's range (the year 9999) are accepted, up to 2**63 - 1 ms from now
    #: as Redis accepts them, and never expire in a simulation (elsewhere: refused)
    far_ttl: bool
    #: reads are eventually consistent by default: a read may return the state before a
    #: write for up to this many seconds after it (0: every read is consistent)
    read_lag: float

    def __init__(self, name: str, min_ttl: float | None, ttl_whole_ms: bool,
                 expire_after_instant: bool, ttl_lag: float, max_value: int | None,
                 size_counts_key: bool, size_text: str, key_re: re.Pattern[str] | None,
                 key_text: str, ordered_keys: bool, content_types: bool,
                 unique_versions: bool = False, empty_key: bool = False, far_ttl: bool = False,
                 read_lag: float = 0.0) -> None:
        self._set(locals())


_ANY = re.compile(r".+", re.S)
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_SQS_FIFO_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}\.fifo$")
#: SQS MessageDeduplicationId / MessageGroupId: alphanumerics and punctuation, 1..128
_SQS_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
_MIB = 1024 * 1024

QUEUE_PROFILES: dict[str, QueueProfile] = {
    "agentuity": QueueProfile(
        "agentuity", re.compile(r"^[a-z_][a-z0-9_-]*$"),
        "lowercase letters, digits, '_' and '-', starting with a letter or '_'", 256,
        256, None, "key", 300.0, _MIB, False, None, 900.0, False, True,
        30.0, (0.0, math.inf), True, 5, None, "backoff", 900.0, None, True, False),
    "sqs-standard": QueueProfile(
        "sqs-standard", _SQS_NAME, "1 to 80 of A-Z a-z 0-9 '_' '-'", 80,
        128, _SQS_KEY, "none", 0.0, _MIB, True, 10, 900.0, True, True,
        30.0, (0.0, 43200.0), False, 9, 999, "visibility", 43200.0, (4 * DAY, 60.0, 14 * DAY),
        False, False),
    "sqs-fifo": QueueProfile(
        "sqs-fifo", _SQS_FIFO_NAME, "1 to 75 of A-Z a-z 0-9 '_' '-', then '.fifo'", 80,
        128, _SQS_KEY, "fifo", 300.0, _MIB, True, 10, 0.0, True, False,
        30.0, (0.0, 43200.0), False, 9, 999, "visibility", 43200.0, (4 * DAY, 60.0, 14 * DAY),
        True, True),
    "alien": QueueProfile(
        "alien", re.compile(r"^[a-z_][a-z0-9_-]*$"),
        "lowercase letters, digits, '_' and '-', starting with a letter or '_'", 256,
        256, None, "key", 300.0, _MIB, False, None, 900.0, False, True,
        30.0, (1.0, 600.0), False, 5, None, "backoff", 900.0, None, True, False),
}

KV_PROFILES: dict[str, KVProfile] = {
    "agentuity": KVProfile("agentuity", 60.0, False, False, 0.0, None, False, "", None, "",
                           True, True),
    "redis": KVProfile("redis", None, True, True, 0.0, 512 * _MIB, False,
                       "512 MB per value (Redis's string limit)", None, "", False, False,
                       True, True, True),
    "dynamodb": KVProfile("dynamodb", None, False, False, 2 * DAY, 400 * 1024, True,
                          "400 KB per item (key and value bytes)", None, "", False, False,
                          read_lag=1.0),
    "alien": KVProfile("alien", None, False, False, 0.0, 24576, False,
                       "24,576 bytes per value", re.compile(r"^[A-Za-z0-9_:.-]+$"),
                       "A-Z a-z 0-9 '-' '_' ':' '.'", True, False, True),
}

#: ``Simulation(platform=...)`` -> (default queue profile, default KV profile)
PLATFORMS: dict[str, tuple[str, str]] = {
    "agentuity": ("agentuity", "agentuity"),
    "aws": ("sqs-standard", "dynamodb"),
    "alien": ("alien", "alien"),
}


def _pick(table: dict[str, object], value: object, what: str, where: str) -> None:
    if not isinstance(value, str) or value not in table:
        raise ValueError(f"{where}: unknown {what} {value!r}; valid: {', '.join(map(repr, table))}")


#: The platform the running pytest test resolved (marker, ``--bgwork-platform``, ini
#: ``bgwork_platform``), set by the plugin around each test call: ``bg.explore`` and
#: ``explore_test`` read it in tests that have no ``bgwork`` simulation. ``None``: no test.
current_test_platform: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bgwork_test_platform", default=None)


def check_platform(platform: object, where: str = "Simulation(platform=...)") -> str:
    """``platform`` if it is one of ``PLATFORMS``, else a ``ValueError`` listing them."""
    _pick(PLATFORMS, platform, "platform", where)  # type: ignore[arg-type]
    return platform  # type: ignore[return-value]


def queue_profile(name: object, where: str = "queues.create(profile=...)") -> QueueProfile:
    """The queue profile called ``name`` (an unknown one is refused listing the valid ones)."""
    _pick(QUEUE_PROFILES, name, "queue profile", where)  # type: ignore[arg-type]
    return QUEUE_PROFILES[name]  # type: ignore[index]


def kv_profile(name: object, where: str = "kv.configure(profile=...)") -> KVProfile:
    """The KV profile called ``name`` (an unknown one is refused listing the valid ones)."""
    _pick(KV_PROFILES, name, "KV profile", where)  # type: ignore[arg-type]
    return KV_PROFILES[name]  # type: ignore[index]


def limit_error(call: str, arg: str, profile: str, limit: str, value: object, fix: str = "") -> ValueError:
    """A refusal that names the call's argument, the profile, its limit and the value given."""
    text = f"{call}({arg}=...): profile {profile!r} allows {limit}; got {value!r}."
    return ValueError(f"{text} {fix}".rstrip())


def _num(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


def seconds(call: str, arg: str, value: object, profile: str, lo: float, hi: float, *,
            lo_open: bool = False, whole: bool = False, fix: str = "") -> float:
    """``value`` as float seconds within the profile's ``[lo, hi]`` (whole seconds if ``whole``)."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        if (v > lo if lo_open else v >= lo) and v <= hi and (not whole or v.is_integer()):
            return v
    low = f"> {_num(lo)}" if lo_open else f">= {_num(lo)}"
    span = low if math.isinf(hi) else f"{low} and <= {_num(hi)}"
    unit = "whole seconds" if whole else "seconds"
    raise limit_error(call, arg, profile, f"{unit} {span}", value, fix)
