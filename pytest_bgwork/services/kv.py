"""Key-value service: namespaces, TTL on virtual time, JSON values stored as copies.

Values are serialised to JSON text on ``set`` and parsed again on every read, so the
caller's object and the stored value never share state (and a value a real store
could not hold fails at once); an immutable value (exact ``str``, ``int``, ``float``,
``bool``, ``None``, ``bytes``) is its own copy and is handed out without parsing. TTL
expiry is lazy: nothing is scheduled on the loop (so ``run_until_idle`` never waits for
a TTL), and every KV operation first removes the keys whose time passed, recording
``kv.expire`` with the instant they expired.
"""

from __future__ import annotations

import datetime as _dt
import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..core import validate
from ..core.clock import _EPOCH
from ..core.context import current_attempt
from ..core.jsoncopy import dumps, loads, scan, to_text
from ..profiles import KV_PROFILES, PLATFORMS, KVProfile, kv_profile

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = ["KV", "KVResult", "KVVersion"]

#: (JSON text, expiry in virtual seconds or None, version, the value itself when it is immutable
#: (str, int, float, bool, None, bytes) and can be handed out as is, else ``_COPY``)
_Entry = tuple[str, float | None, int, Any]
_LogRow = tuple[float, str, str | None, float | None, str | None, str]
_State = tuple[
    dict[str, dict[str, _Entry]], list[tuple[float, str, str]], list[tuple[Any, ...]],
    dict[tuple[str, str], str], dict[tuple[str, str], float], dict[tuple[str, str], int],
    dict[tuple[str, str], list[tuple[float, "_Entry | None"]]],
]


#: Bytes values are stored as this marker (never the start of JSON text) + latin-1 text.
_BYTES = "\x00"


def _decode(text: str) -> Any:
    """Parse text this module encoded (compact, no surrounding whitespace), or bytes."""
    if text[:1] == _BYTES:
        return text[1:].encode("latin-1")
    return loads(text)


#: The detail names of the ``kv.set`` and ``kv.get`` events the hot paths record.
_SET = ("ns", "key", "ttl", "value")
_GET = ("ns", "key", "exists")

#: An entry whose value must be copied on every read: parse its JSON text again.
_COPY: Any = object()


def _value(entry: _Entry) -> Any:
    """A fresh copy of an entry's value (an immutable value is its own copy)."""
    value = entry[3]
    return _decode(entry[0]) if value is _COPY else value


_new = object.__new__
_float_repr = float.__repr__
_int_repr = int.__repr__


def _content_type(value: object) -> str:
    """The content type Agentuity's SDK gives a value set without one."""
    if isinstance(value, bytes | bytearray):
        return "application/octet-stream"
    if isinstance(value, str | int | float | bool):
        return "text/plain"
    return "application/json"


#: The last instant a virtual datetime can show (``datetime.max``), in epoch seconds.
_MAX_EPOCH = (_dt.datetime.max.replace(tzinfo=_dt.UTC) - _EPOCH).total_seconds()
_LAST_INSTANT = _dt.datetime.max.replace(tzinfo=_dt.UTC)
#: Redis keeps an expiry as milliseconds since the epoch in a signed 64-bit integer.
_MAX_REDIS_MS = 2**63 - 1



_Due = TypeVar("_Due", bound=tuple[Any, ...])


def pop_due(heap: list[_Due], now: float) -> Iterator[_Due]:
    """Pop and yield the ``(when, a, b)`` entries of a TTL heap due at ``now``, earliest first.

    Expiry is lazy and belongs to no queue attempt, so the current attempt is unset
    while the caller records what expired.
    """
    if not heap or heap[0][0] > now:
        return
    token = current_attempt.set(None)
    try:
        while heap and heap[0][0] <= now:
            yield heapq.heappop(heap)
    finally:
        current_attempt.reset(token)

@dataclass(slots=True)
class KVResult:
    """What ``get`` returns: ``exists``, a fresh copy of ``data``, ``expires_at``, ``version``.

    ``data`` is ``None`` for a missing key; a dict or list is parsed afresh from the stored
    JSON on every read, so changing it changes nothing stored (a ``str``, number, bool or
    ``bytes`` is immutable: it is its own copy). ``expires_at`` is the virtual wall-clock
    instant (aware UTC) the key expires, or ``None`` when it has no TTL; ``content_type``
    is what the value was stored as on the Agentuity profile. ``version`` is ``None`` for a
    missing key, 1 after its first write and +1 per write; after a delete or expiry the
    next write starts again at 1, except on the alien and redis profiles, where it continues
    (a key's versions never repeat). Pass it to ``set(..., if_version=)``.
    """

    exists: bool
    """Whether the key holds a value (``False``: missing, deleted or expired)."""
    data: Any = None
    """A fresh copy of the value (``None`` for a missing key)."""
    expires_at: _dt.datetime | None = None
    """The virtual instant (aware UTC) the key expires; ``None``: no TTL."""
    content_type: str | None = None
    """The value's content type on profiles that keep one (Agentuity), else ``None``."""
    version: int | None = None
    """1 after the key's first write, +1 per write (``None``: missing); pass it to
    ``set(..., if_version=)``."""


@dataclass(frozen=True, slots=True)
class KVVersion:
    """One entry of ``kv.history(ns, key)``.

    ``op`` is ``set``, ``delete`` or ``expire``; ``t`` is virtual seconds (for
    ``expire``, the instant the TTL ran out); ``outcome`` is ``unknown`` when the
    caller saw an error although the write happened (an ``after_apply`` fault).
    """

    t: float
    op: str
    data: Any
    ttl: float | None
    attempt: str | None
    outcome: str = "ok"


def check_name(arg: str, value: object, where: str) -> str:
    """``value`` must be a non-empty string without lone surrogates (a namespace, key or name)."""
    out = validate.text(value, where, arg)
    assert out is not None
    return out


def check_ttl(ttl: object, where: str) -> float | None:
    """``ttl`` must be ``None`` (no expiry) or finite seconds > 0 (``KV._check_ttl`` then
    checks that the expiry stays within the wall clock's range, the year 9999)."""
    return validate.seconds(ttl, where, "ttl", positive=True, none="for no expiry", hi=None)


def to_json_text(value: Any, where: str, arg: str = "value") -> str:
    """The copy rule's JSON text of ``value``, or an error naming ``where``, ``arg`` and the bad part."""
    return to_text(value, where, arg)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def check_version(if_version: object, where: str) -> int | None:
    """``if_version`` must be ``None`` or a version ``get`` returned (an int >= 1)."""
    if if_version is None:
        return None
    if isinstance(if_version, bool) or not isinstance(if_version, int):
        raise TypeError(f"{where}: if_version= must be an int >= 1 (the version kv.get() returned "
                        f"as r.version) or None; got {type(if_version).__name__} {if_version!r}")
    if if_version < 1:
        raise ValueError(f"{where}: if_version= must be >= 1 (versions start at 1); got "
                         f"{if_version!r}. For 'only if the key is missing' use if_absent=True.")
    return if_version


def _where(call: str, ns: str, key: str) -> str:
    """How an error names the call: ``kv.set(ns='a', key='b')``."""
    return f"{call}(ns={ns!r}, key={key!r})"


def _set_condition(ns: str, key: str, if_absent: object,
                   if_version: object) -> dict[str, Any]:
    """``set``'s ``if_absent=``/``if_version=`` checked, as the event's details."""
    where = _where("kv.set", ns, key)
    if not isinstance(if_absent, bool):
        raise TypeError(f"{where}: if_absent= must be True or False; got {if_absent!r}")
    version = check_version(if_version, where)
    if if_absent and version is not None:
        raise ValueError(f"{where}: give if_absent=True or if_version=n, not both (a key "
                         "with a version is never absent)")
    return {"if_absent": True} if if_absent else {"if_version": version}


def _condition_holds(cond: dict[str, Any], prev: _Entry | None) -> bool:
    """Whether a conditional ``set`` writes: the key is absent, or has the version asked for."""
    have = None if prev is None else prev[2]
    return have is None if "if_absent" in cond else have == cond["if_version"]


def _copy(value: Any, ns: str, key: str) -> tuple[str, Any]:
    """``set``'s value as (its JSON text, what reads hand out: the value itself or ``_COPY``).

    An immutable JSON value (exact str, int, float, bool, None) is its own copy: its text is
    what the JSON encoder writes, and reads hand it out without parsing. Anything else (a
    dict, a list) is stored as JSON text and parsed on every read, so a later change to the
    caller's object never reaches the store. Bytes are kept as ``_BYTES`` + latin-1 text.
    """
    kind = type(value)
    stored: Any = value
    if kind is dict or kind is list:
        stored = _COPY
        try:
            text = dumps(value)
        except (TypeError, ValueError, RecursionError):
            text = to_text(value, _where("kv.set", ns, key))  # raises, clearly
    elif kind is str:
        text = dumps(value)
    elif kind is int:
        text = _int_repr(value)
    elif kind is bool:
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif kind is float and value - value == 0.0:  # finite: NaN and infinity are refused below
        text = _float_repr(value)
    elif isinstance(value, bytes | bytearray):  # a subclass too: stored as plain bytes
        stored = bytes(value)
        return _BYTES + stored.decode("latin-1"), stored
    else:
        stored = _COPY
        text = to_text(value, _where("kv.set", ns, key))
    if not text.isascii():
        validate.utf8(text, _where("kv.set", ns, key), "value", inside=True)
    return text, stored


def _check_content_type(prof: KVProfile, ns: str, key: str, content_type: object) -> None:
    """``content_type=`` is kept by Agentuity only, and must be a non-empty string."""
    if not prof.content_types:
        raise ValueError(f"kv.set(ns={ns!r}, key={key!r}): profile {prof.name!r} keeps "
                         f"no content type (only 'agentuity' does); got "
                         f"content_type={content_type!r}. Leave it out.")
    if not isinstance(content_type, str) or not content_type:
        raise TypeError(f"kv.set(ns={ns!r}, key={key!r}): content_type= must be a "
                        f"non-empty string such as 'text/csv'; got {content_type!r}")


class KV:
    """``sim.kv``: namespaced JSON key-value store with TTL on virtual time.

    ``await set(ns, key, value, ttl=None)``, ``await get(ns, key)`` (a ``KVResult``),
    ``await delete(ns, key)``, ``await keys(ns, prefix="")``; sync helpers for checks:
    ``history(ns, key)``, ``items(ns)``, ``namespaces()``. Each namespace behaves like a
    platform's store (``configure(ns, profile=...)``; default: the simulation's platform's).
    """

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self._faults = sim.faults
        self._record = sim.history.record
        #: the hot paths hand the history's one write path (``History._append``, looked up
        #: at each call: it changes when someone subscribes) the row they built, what
        #: ``History.add`` would build (the history's time is this clock's)
        self._history = sim.history
        self._clock = sim.clock
        #: ns -> key -> (JSON text, expiry in virtual seconds or None)
        self._data: dict[str, dict[str, _Entry]] = {}
        #: heap of (expiry, ns, key); stale entries are skipped when popped
        self._expiries: list[tuple[float, str, str]] = []
        #: every write, deletion and expiry, in order, as flat tuples: a ``kv.set`` event's
        #: history row ``(t, "kv", "set", "ok", _SET, label, ns, key, ttl, text)`` (the same
        #: tuple the history holds) or ``(ns, key, *_LogRow)``; indexed per key when read
        #: (``_log``)
        self._writes: list[tuple[Any, ...]] = []
        self._index: dict[tuple[str, str], list[_LogRow]] = {}
        self._indexed = 0
        self._choices = sim.choices
        #: the profile of namespaces never configured: the simulation's platform's
        self._default: KVProfile = KV_PROFILES[PLATFORMS[sim.platform][1]]
        self._profiles: dict[str, KVProfile] = {}
        #: (ns, key) -> content type given explicitly to set (Agentuity)
        self._types: dict[tuple[str, str], str] = {}
        #: (ns, key) -> the TTL's instant, where deletion happens later (Redis: just after
        #: it; DynamoDB: up to 48 h after it); the entry holds the deletion instant
        self._due: dict[tuple[str, str], float] = {}
        #: (ns, key) -> its last version, on profiles whose versions never repeat (Alien)
        self._last_versions: dict[tuple[str, str], int] = {}
        #: (ns, key) -> writes not yet visible to an eventually consistent read (DynamoDB):
        #: (the instant it becomes visible, the entry before it), oldest first
        self._stale: dict[tuple[str, str], list[tuple[float, _Entry | None]]] = {}
        #: namespaces configured with consistent_reads=True (DynamoDB ConsistentRead)
        self._consistent: set[str] = set()

    @property
    def _log(self) -> dict[tuple[str, str], list[_LogRow]]:
        """(ns, key) -> ``[(t, op, JSON text or None, ttl, attempt label, outcome)]``, oldest
        first, keys in the order of their first entry: ``_writes`` indexed up to date."""
        writes, index = self._writes, self._index
        for i in range(self._indexed, len(writes)):
            entry = writes[i]
            if len(entry) == 10:  # a kv.set history row: (t, "kv", "set", "ok", _SET, label, ns, key, ttl, text)
                ns, key = entry[6], entry[7]
                row: _LogRow = (entry[0], "set", entry[9], entry[8], entry[5], "ok")
            else:  # (ns, key, *_LogRow)
                ns, key = entry[0], entry[1]
                row = entry[2:]
            log = index.get((ns, key))
            if log is None:
                index[(ns, key)] = [row]
            else:
                log.append(row)
        self._indexed = len(writes)
        return index

    # -- profiles ------------------------------------------------------------------------
    def configure(self, ns: str, *, profile: str, consistent_reads: bool | None = None) -> KVProfile:
        """Make namespace ``ns`` behave like ``profile`` (agentuity, redis, dynamodb, alien).

        Configure a namespace before its first write; its data keeps the rules it was
        written under. ``consistent_reads`` (dynamodb only, default ``False``): ``True``
        makes every read strongly consistent (``ConsistentRead=True``); with ``False`` a
        read may return the state before a write for up to 1 s after it.
        """
        ns = check_name("ns", ns, "kv.configure()")
        prof = kv_profile(profile, f"kv.configure({ns!r}, profile=...)")
        if consistent_reads is not None:
            if not isinstance(consistent_reads, bool):
                raise TypeError(f"kv.configure({ns!r}, consistent_reads=...) expects True or False; "
                                f"got {consistent_reads!r}")
            if not prof.read_lag:
                raise ValueError(f"kv.configure({ns!r}, profile={profile!r}, consistent_reads=...): every "
                                 f"read on profile {prof.name!r} is consistent; only 'dynamodb' has "
                                 "eventually consistent reads. Leave consistent_reads out.")
        current = self._profiles.get(ns, self._default)
        if prof is not current and ns in self._data:
            raise ValueError(f"kv.configure({ns!r}, profile={profile!r}): namespace {ns!r} "
                             f"already holds keys written under profile {current.name!r}; "
                             "configure a namespace before its first write.")
        self._profiles[ns] = prof
        if consistent_reads:
            self._consistent.add(ns)
        else:
            self._consistent.discard(ns)
        extra: dict[str, Any] = {} if consistent_reads is None else {"consistent_reads": consistent_reads}
        self._record("kv", "configure", ns=ns, profile=prof.name, **extra)
        return prof

    def profile(self, ns: str) -> KVProfile:
        """The profile namespace ``ns`` follows."""
        return self._profiles.get(check_name("ns", ns, "kv.profile()"), self._default)

    def _key_name(self, ns: str, key: object, where: str) -> str:
        """``key`` checked as a name; ``""`` too on a profile that allows it (Redis)."""
        if key == "" and self._profiles.get(ns, self._default).empty_key:
            return ""
        return check_name("key", key, where)

    def _check_key(self, prof: KVProfile, key: str, where: str) -> None:
        if prof.key_re is not None and not prof.key_re.match(key):
            raise ValueError(f"{where}: profile {prof.name!r} allows keys of {prof.key_text} "
                             f"only; got {key!r}. Encode other characters, e.g. "
                             "hashlib.sha256(key.encode()).hexdigest().")

    def _check_ttl(self, prof: KVProfile, ttl: float, where: str) -> None:
        if prof.min_ttl is not None and ttl < prof.min_ttl:
            raise ValueError(f"{where}: profile {prof.name!r} allows a ttl of at least "
                             f"{prof.min_ttl:g} s (the service refuses shorter ones); got "
                             f"ttl={ttl!r}. Use ttl={prof.min_ttl:g} or more, or configure the "
                             "namespace with the profile of the store you deploy on, e.g. "
                             "sim.kv.configure(ns, profile='redis').")
        if prof.ttl_whole_ms:
            ms = ttl * 1000
            if abs(ms - round(ms)) > 1e-6:
                raise ValueError(f"{where}: profile {prof.name!r} allows a ttl of whole seconds "
                                 f"(EX) or whole milliseconds (PX) only; got ttl={ttl!r} (Redis "
                                 "answers 'ERR value is not an integer or out of range'). Round "
                                 "it to milliseconds.")
        if self._clock.start + self._clock.monotonic() + ttl > _MAX_EPOCH:
            if prof.far_ttl:  # Redis: any expiry that fits in 2**63 - 1 ms since the epoch
                if (self._clock.start + self._clock.monotonic()) * 1000 + ttl * 1000 <= _MAX_REDIS_MS:
                    return
                raise ValueError(f"{where}: profile {prof.name!r} allows a ttl up to 2**63 - 1 ms "
                                 f"since the epoch (Redis answers 'invalid expire time in 'set' "
                                 f"command'); got ttl={ttl:g}. Use ttl=None for a key that never expires.")
            raise ValueError(f"{where}: ttl={ttl:g} puts the expiry past the year 9999, beyond "
                             "the clock's range; use ttl=None for a key that never expires.")

    def _check_size(self, prof: KVProfile, key: str, text: str, where: str) -> None:
        limit = prof.max_value
        if limit is None or (len(text) + len(key)) * 4 <= limit:
            return
        size = len(text) - 1 if text[:1] == _BYTES else len(text.encode())
        if prof.size_counts_key:
            size += len(key.encode())
        if size > limit:
            what = "the item (key and value)" if prof.size_counts_key else "the value"
            raise ValueError(f"{where}: {what} is {size} bytes; profile {prof.name!r} allows "
                             f"{prof.size_text} ({limit} bytes). Store large data elsewhere "
                             "(a stream) and keep its id here.")

    # -- async operations (fault points kv.set / kv.get / kv.delete / kv.keys) ----------
    async def set(self, ns: str, key: str, value: Any, ttl: float | None = None,
                  if_absent: bool = False, if_version: int | None = None, *,
                  content_type: str | None = None) -> bool:
        """Store a JSON copy of ``value`` (or bytes); ``ttl`` seconds of virtual time until it expires.

        A new ``set`` replaces the value and its TTL (``ttl=None`` removes the expiry). The
        namespace's profile sets the limits (Agentuity: ttl at least 60 s) and, on Agentuity,
        ``content_type`` (default: inferred as its SDK does). ``if_absent=True`` writes only
        if the key is missing (Redis ``SET NX``); ``if_version=n`` only if its version is
        ``n`` (a compare-and-set). Returns ``True`` when it wrote, ``False`` when the
        condition failed (nothing changed).
        """
        # 1. arguments: names, ttl and condition, then the copy; all refused before the fault
        # point, so a refused call leaves no event (the caller's mistake, not the service's)
        if (type(ns) is not str or not ns or type(key) is not str or not key
                or not (ns.isascii() and key.isascii())):
            ns = check_name("ns", ns, "kv.set()")
            key = self._key_name(ns, key, "kv.set()")
        prof = self._profiles.get(ns, self._default) if self._profiles else self._default
        if prof.key_re is not None:
            self._check_key(prof, key, _where("kv.set", ns, key))
        if ttl is not None:
            ttl = self._set_ttl(prof, ns, key, ttl)
        cond = None
        if if_absent is not False or if_version is not None:
            cond = _set_condition(ns, key, if_absent, if_version)
        text, stored = _copy(value, ns, key)
        # 2. the profile's rules on what it stores
        if prof.max_value is not None and (len(text) + len(key)) * 4 > prof.max_value:
            self._check_size(prof, key, text, _where("kv.set", ns, key))
        if content_type is not None:
            _check_content_type(prof, ns, key, content_type)
        # 3. the fault point, then the write (or the refused condition), then history
        faults = self._faults
        step = faults._enter("kv.set", call=True)
        if step is not None:
            try:
                await step
            except Exception as exc:
                self._record("kv", "set", "fail", ns=ns, key=key, ttl=ttl,
                             error=_error_text(exc), **(cond or {}))
                raise
        if self._expiries:
            self._sweep()
        space = self._data.get(ns)
        if space is None:
            space = self._data[ns] = {}
        prev = space.get(key)
        if cond is not None and not _condition_holds(cond, prev):
            self._refuse_set(ns, key, ttl, cond, prev, space)
            return False
        now = self._clock._mono
        if (ttl is None and content_type is None and not self._due and not self._types
                and not prof.unique_versions and not prof.read_lag):
            # ``_write``'s whole work for a plain write: no expiry, content type, TTL
            # instant to drop, per-key version counter or read lag
            version = 1 if prev is None else prev[2] + 1
            space[key] = (text, None, version, stored)
        else:
            version = self._write(prof, space, ns, key, text, stored, ttl, content_type, prev, now)
        attempt = current_attempt.get()
        label = attempt.label if attempt is not None else None
        if cond is not None:
            self._leave_set(ns, key, ttl, text, label, now, cond, version)
            return True
        try:
            faults._leave("kv.set")
        except Exception as exc:
            self._set_unknown(ns, key, ttl, text, label, now, exc, {})
            raise
        # the event's history row (``History._append``) is also the write log's entry: one flat tuple
        row = (now, "kv", "set", "ok", _SET, label, ns, key, ttl, text)
        self._writes.append(row)
        self._history._append(row)
        return True

    def _set_ttl(self, prof: KVProfile, ns: str, key: str, ttl: object) -> float:
        """``set``'s ``ttl=`` checked: seconds > 0, within the profile's limits and the clock's range."""
        where = _where("kv.set", ns, key)
        out = check_ttl(ttl, where)
        assert out is not None
        self._check_ttl(prof, out, where)
        return out

    def _write(self, prof: KVProfile, space: dict[str, _Entry], ns: str, key: str, text: str,
               stored: Any, ttl: float | None, content_type: str | None, prev: _Entry | None,
               now: float) -> int:
        """Store the entry with its new version and expiry (as the profile keeps them); the version."""
        expires = None if ttl is None else now + ttl
        version = 1 if prev is None else prev[2] + 1
        if prof.unique_versions:  # Alien: a key's versions never repeat, even after a delete
            version = self._last_versions[(ns, key)] = self._last_versions.get((ns, key), 0) + 1
        if expires is not None and (prof.expire_after_instant or prof.ttl_lag):
            due = expires
            if prof.expire_after_instant:  # Redis: expired when now > the instant
                expires = math.nextafter(due, math.inf)
            else:  # DynamoDB: deleted some time (< 48 h) after the instant
                expires = due + self._choices.fraction("kv.ttl_lag") * prof.ttl_lag
            self._due[(ns, key)] = due
        elif self._due:
            self._due.pop((ns, key), None)
        if content_type is not None:
            self._types[(ns, key)] = content_type
        elif self._types:
            self._types.pop((ns, key), None)
        space[key] = (text, expires, version, stored)
        if prof.read_lag:
            self._lag(prof, ns, key, prev, now)
        if expires is not None:
            heapq.heappush(self._expiries, (expires, ns, key))
        return version

    def _refuse_set(self, ns: str, key: str, ttl: float | None, cond: dict[str, Any],
                    prev: _Entry | None, space: dict[str, _Entry]) -> None:
        """A conditional ``set`` whose condition failed: nothing written; leave the fault point
        (an ``after_apply`` fault still fires) and record ``applied=False``."""
        have = None if prev is None else prev[2]
        if not space:
            del self._data[ns]
        try:
            self._faults._leave("kv.set")
        except Exception as exc:
            self._record("kv", "set", "unknown", ns=ns, key=key, ttl=ttl, applied=False,
                         version=have, error=_error_text(exc), **cond)
            raise
        self._record("kv", "set", ns=ns, key=key, ttl=ttl, applied=False, version=have, **cond)

    def _leave_set(self, ns: str, key: str, ttl: float | None, text: str, label: str | None,
                   now: float, cond: dict[str, Any], version: int) -> None:
        """A written conditional ``set``: leave the fault point, then log the write and its
        event (``unknown`` when an ``after_apply`` fault fired)."""
        extra: dict[str, Any] = {**cond, "applied": True, "version": version}
        try:
            self._faults._leave("kv.set")
        except Exception as exc:
            self._set_unknown(ns, key, ttl, text, label, now, exc, extra)
            raise
        self._writes.append((ns, key, now, "set", text, ttl, label, "ok"))
        self._record("kv", "set", ns=ns, key=key, ttl=ttl, value=text, **extra)

    def _set_unknown(self, ns: str, key: str, ttl: float | None, text: str, label: str | None,
                     now: float, exc: BaseException, extra: dict[str, Any]) -> None:
        """A ``set`` that was written but whose ``after_apply`` fault fired: outcome unknown."""
        self._writes.append((ns, key, now, "set", text, ttl, label, "unknown"))
        self._record("kv", "set", "unknown", ns=ns, key=key, ttl=ttl, value=text,
                     error=_error_text(exc), **extra)

    async def get(self, ns: str, key: str, *, consistent: bool = False) -> KVResult:
        """The live value of ``key`` as a fresh copy (``exists=False`` if missing or expired).

        On an eventually consistent namespace (dynamodb) the read may return the state
        before a recent write; ``consistent=True`` reads the latest (``ConsistentRead``).
        """
        if (type(ns) is not str or not ns or type(key) is not str or not key
                or not (ns.isascii() and key.isascii())):
            ns = check_name("ns", ns, "kv.get()")
            key = self._key_name(ns, key, "kv.get()")
        prof = self._profiles.get(ns, self._default) if self._profiles else self._default
        if prof.key_re is not None:
            self._check_key(prof, key, f"kv.get(ns={ns!r}, key={key!r})")
        faults = self._faults
        step = faults._enter("kv.get", call=True)
        if step is not None:
            try:
                await step
            except Exception as exc:
                self._record("kv", "get", "fail", ns=ns, key=key, error=_error_text(exc))
                raise
        if self._expiries:
            self._sweep()
        space = self._data.get(ns)
        entry = space.get(key) if space is not None else None
        stale = False
        if self._stale and (ns, key) in self._stale and not consistent and ns not in self._consistent:
            entry, stale = self._stale_read(ns, key, entry)
        try:
            faults._leave("kv.get")
        except Exception as exc:
            self._record("kv", "get", "unknown", ns=ns, key=key, exists=entry is not None,
                         error=_error_text(exc))
            raise
        if stale:
            self._record("kv", "get", ns=ns, key=key, exists=entry is not None, stale=True)
        else:
            attempt = current_attempt.get()
            self._history._append((self._clock._mono, "kv", "get", "ok", _GET,
                                   attempt.label if attempt is not None else None,
                                   ns, key, entry is not None))
        if entry is None:
            return KVResult(False)
        text, expires, version, value = entry
        data = scan(text, 0)[0] if value is _COPY else value  # ``loads``; bytes are never _COPY
        if expires is None:
            at = None
        else:
            if self._due and not stale:
                expires = self._due.get((ns, key), expires)
            at = self._wall(expires)
        kind = None
        if prof.content_types:
            kind = self._types.get((ns, key)) if self._types else None
            if kind is None:
                kind = ("application/octet-stream" if text[:1] == _BYTES else "application/json"
                        if text[:1] in "{[" else "text/plain")
        result = _new(KVResult)  # KVResult(True, data, at, kind, version), minus its __init__
        result.exists = True
        result.data = data
        result.expires_at = at
        result.content_type = kind
        result.version = version
        return result

    async def delete(self, ns: str, key: str, if_version: int | None = None) -> bool:
        """Remove ``key`` (a missing key is fine; the event says ``existed=False``).

        ``if_version=n`` deletes only if the key's version is ``n``. Returns ``True`` when
        it applied, ``False`` when the condition failed (nothing changed).
        """
        ns = check_name("ns", ns, "kv.delete()")
        key = self._key_name(ns, key, "kv.delete()")
        prof = self._profiles.get(ns, self._default)
        if prof.key_re is not None:
            self._check_key(prof, key, f"kv.delete(ns={ns!r}, key={key!r})")
        cond: dict[str, Any] | None = None
        if if_version is not None:
            check_version(if_version, f"kv.delete(ns={ns!r}, key={key!r})")
            cond = {"if_version": if_version}
        faults = self._faults
        step = faults._enter("kv.delete", call=True)
        try:
            if step is not None:
                await step
        except Exception as exc:
            self._record("kv", "delete", "fail", ns=ns, key=key, error=_error_text(exc),
                         **(cond or {}))
            raise
        self._sweep()
        space = self._data.get(ns)
        if cond is not None:
            entry = space.get(key) if space is not None else None
            have = None if entry is None else entry[2]
            if have != if_version:
                try:
                    faults._leave("kv.delete")
                except Exception as exc:
                    self._record("kv", "delete", "unknown", ns=ns, key=key, applied=False,
                                 version=have, error=_error_text(exc), **cond)
                    raise
                self._record("kv", "delete", ns=ns, key=key, applied=False, version=have, **cond)
                return False
        gone = space.pop(key, None) if space is not None else None
        existed = gone is not None
        if space is not None and not space:
            del self._data[ns]
        self._forget(ns, key)
        now = self._clock.monotonic()
        if existed and prof.read_lag:
            self._lag(prof, ns, key, gone, now)
        attempt = current_attempt.get()
        label = attempt.label if attempt is not None else None
        extra: dict[str, Any] = {} if cond is None else {**cond, "applied": True}
        try:
            faults._leave("kv.delete")
        except Exception as exc:
            if existed:
                self._writes.append((ns, key, now, "delete", None, None, label, "unknown"))
            self._record("kv", "delete", "unknown", ns=ns, key=key, existed=existed,
                         error=_error_text(exc), **extra)
            raise
        if existed:
            self._writes.append((ns, key, now, "delete", None, None, label, "ok"))
        self._record("kv", "delete", ns=ns, key=key, existed=existed, **extra)
        return True

    async def keys(self, ns: str, prefix: str = "") -> list[str]:
        """The live keys of ``ns`` that start with ``prefix``: sorted, or in an order drawn
        from ``sim.choices`` on profiles that list in hash order (Redis ``KEYS``, DynamoDB
        ``Scan``), so code that relies on an order fails here as it would there."""
        ns = check_name("ns", ns, "kv.keys()")
        if not isinstance(prefix, str):
            raise TypeError(f"kv.keys(ns={ns!r}): prefix= must be a string; got {prefix!r}")
        validate.utf8(prefix, f"kv.keys(ns={ns!r})", "prefix")
        faults = self._faults
        step = faults._enter("kv.keys", call=True)
        try:
            if step is not None:
                await step
        except Exception as exc:
            self._record("kv", "keys", "fail", ns=ns, prefix=prefix, error=_error_text(exc))
            raise
        self._sweep()
        found = sorted(k for k in self._data.get(ns, {}) if k.startswith(prefix))
        if not self._profiles.get(ns, self._default).ordered_keys:
            for i in range(len(found) - 1, 0, -1):  # Fisher-Yates; choice 0 keeps the order
                j = i - self._choices.integer(0, i, "kv.keys_order")
                found[i], found[j] = found[j], found[i]
        try:
            faults._leave("kv.keys")
        except Exception as exc:
            self._record("kv", "keys", "unknown", ns=ns, prefix=prefix, count=len(found),
                         error=_error_text(exc))
            raise
        self._record("kv", "keys", ns=ns, prefix=prefix, count=len(found))
        return found

    # -- sync helpers for checks and tests (no fault points) ----------------------------
    def history(self, ns: str, key: str) -> list[KVVersion]:
        """Every value ever written to ``key`` and every deletion/expiry, oldest first."""
        check_name("ns", ns, "kv.history()")
        self._key_name(ns, key, "kv.history()")
        self._sweep()
        return [
            KVVersion(t, op, None if text is None else _decode(text), ttl, label, outcome)
            for t, op, text, ttl, label, outcome in self._log.get((ns, key), ())
        ]

    def items(self, ns: str) -> dict[str, Any]:
        """The live keys of ``ns`` and copies of their values, sorted by key."""
        check_name("ns", ns, "kv.items()")
        self._sweep()
        space = self._data.get(ns, {})
        return {k: _value(space[k]) for k in sorted(space)}

    def content_type(self, ns: str, key: str) -> str | None:
        """The content type ``get`` would report for a live key, without a history event.

        ``None`` for a missing key or on a profile that keeps no content type.
        """
        check_name("ns", ns, "kv.content_type()")
        self._sweep()
        entry = self._data.get(ns, {}).get(key)
        if entry is None or not self._profiles.get(ns, self._default).content_types:
            return None
        kind = self._types.get((ns, key))
        if kind is None:
            text = entry[0]
            kind = ("application/octet-stream" if text[:1] == _BYTES else "application/json"
                    if text[:1] in "{[" else "text/plain")
        return kind

    def namespaces(self) -> list[str]:
        """The namespaces that hold at least one live key, sorted."""
        self._sweep()
        return sorted(self._data)

    # -- snapshot (assert_idempotent) -----------------------------------------------------
    def _snapshot(self) -> object:
        """A copy of every namespace, pending expiry and write log (values are immutable text)."""
        return (
            {ns: dict(space) for ns, space in self._data.items()},
            list(self._expiries),
            list(self._writes),
            dict(self._types),
            dict(self._due),
            dict(self._last_versions),
            {k: list(v) for k, v in self._stale.items()},
        )

    def _restore(self, state: object) -> None:
        """Put back a ``_snapshot()``; the snapshot stays reusable."""
        data, expiries, writes, types, due, last_versions, stale = cast(_State, state)
        self._data = {ns: dict(space) for ns, space in data.items()}
        self._expiries = list(expiries)
        self._writes = list(writes)
        self._index = {}
        self._indexed = 0
        self._types = dict(types)
        self._due = dict(due)
        self._last_versions = dict(last_versions)
        self._stale = {k: list(v) for k, v in stale.items()}

    # -- internals ---------------------------------------------------------------------------
    def _lag(self, prof: KVProfile, ns: str, key: str, prev: _Entry | None, now: float) -> None:
        """An eventually consistent namespace: the state before this write stays readable
        for a lag drawn from ``sim.choices`` (only while latency is on: exploration, chaos
        ``latency``; a plain test's reads are consistent)."""
        faults = self._faults
        if ns in self._consistent or not faults.latency or faults.healed:
            return
        lag = self._choices.fraction("kv.read_lag") * prof.read_lag
        if lag <= 0.0:
            return
        pending = self._stale.setdefault((ns, key), [])
        visible = max(now + lag, pending[-1][0]) if pending else now + lag
        pending.append((visible, prev))

    def _stale_read(self, ns: str, key: str, entry: _Entry | None) -> tuple[_Entry | None, bool]:
        """What an eventually consistent read of ``key`` sees now: the state before the
        oldest write not yet visible, if any (``True``), else the latest."""
        pending = self._stale[(ns, key)]
        now = self._clock._mono
        while pending and pending[0][0] <= now:
            pending.pop(0)
        if not pending:
            del self._stale[(ns, key)]
            return entry, False
        old = pending[0][1]
        if old is not None and old[1] is not None and old[1] <= now:
            old = None  # it had expired meanwhile
        return old, True

    def _wall(self, mono: float) -> _dt.datetime:
        """A virtual instant as an aware datetime; one past the year 9999 (a Redis TTL that
        far) shows as the clock's last instant."""
        at = self._clock.start + mono
        if at >= _MAX_EPOCH:
            return _LAST_INSTANT
        return _EPOCH + _dt.timedelta(seconds=at)

    def _sweep(self) -> None:
        """Drop every key whose TTL ran out, recording ``kv.expire`` (not tied to an attempt)."""
        for when, ns, key in pop_due(self._expiries, self._clock.monotonic()):
            space = self._data.get(ns)
            entry = space.get(key) if space is not None else None
            if space is None or entry is None or entry[1] != when:
                continue  # overwritten or deleted since
            del space[key]
            if not space:
                del self._data[ns]
            due = self._due.pop((ns, key), None) if self._due else None
            if due is not None and self._profiles.get(ns, self._default).ttl_lag:
                # DynamoDB: deleted at ``when``, its TTL ran out at ``due``
                self._writes.append((ns, key, when, "expire", None, None, None, "ok"))
                self._record("kv", "expire", ns=ns, key=key, expired_at=when, ttl_due=due)
            else:
                at = when if due is None else due  # Redis: gone just after the instant
                self._writes.append((ns, key, at, "expire", None, None, None, "ok"))
                self._record("kv", "expire", ns=ns, key=key, expired_at=at)
            if self._types:
                self._types.pop((ns, key), None)

    def _forget(self, ns: str, key: str) -> None:
        """Drop a deleted key's content type and TTL instant."""
        if self._types:
            self._types.pop((ns, key), None)
        if self._due:
            self._due.pop((ns, key), None)

    # -- sync entry points, for adapters whose client blocks the loop ---------------------
    def set_sync(self, ns: str, key: str, value: Any, ttl: float | None = None, **options: Any) -> Any:
        """``set`` for a client that calls blocking HTTP inside ``async def`` (agentuity's SDK).

        The same code as ``await set(...)``, run to completion without suspending: same
        checks, history and fault points; a delay fault moves the clock as a blocked loop
        would and a crash raises ``ProcessCrashed`` at once.
        """
        return self._faults._run_sync(self.set(ns, key, value, ttl, **options))

    def get_sync(self, ns: str, key: str) -> KVResult:
        """``get`` for a client that blocks the loop (see ``set_sync``)."""
        return self._faults._run_sync(self.get(ns, key))

    def delete_sync(self, ns: str, key: str, **options: Any) -> Any:
        """``delete`` for a client that blocks the loop (see ``set_sync``)."""
        return self._faults._run_sync(self.delete(ns, key, **options))

    def __repr__(self) -> str:
        return f"<KV namespaces={len(self._data)} keys={sum(map(len, self._data.values()))}>"

