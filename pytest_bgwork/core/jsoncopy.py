"""The copy rule: a value handed to a service is stored as compact JSON text, read back as a fresh parse.

Every service that keeps a caller's value (KV values, queue payloads and metadata, stream
metadata) goes through :func:`dumps` and :func:`loads`, so they refuse the same things a real
store's client would (NaN and infinity, keys other than str/int/float/bool/None, sets,
datetimes, cycles) and a later change to the caller's object never reaches the store. Both are
the standard library's public ``json`` API, built once. ``bench/bench_jsoncopy.py`` measures
orjson and msgspec too: 3-4x faster per copy, but they write NaN as ``null`` and accept
datetimes and UUIDs (which the rule refuses), and orjson refuses int keys and big ints (which
it accepts), msgspec accepts sets and writes ``1e16`` for ``1e+16`` (history digests change).

:func:`to_text` is :func:`dumps` with an error that names the call, the argument and the bad
part (``value['when'] is a datetime``), for the services' slow path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "find_bad", "loads", "scan", "to_text"]

#: Compact (no spaces), UTF-8 (no ``\\u`` escapes), no NaN/Infinity (not JSON); built once,
#: as ``json.dumps`` with these options would build an encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()



def _c_dumps(make: Any) -> Callable[[Any], str] | None:
    """The same encoder, built once on CPython's C accelerator, or ``None`` without one.

    The one shim on a CPython internal here: ``JSONEncoder.encode`` rebuilds its C encoder
    on every call (``bench/bench_jsoncopy.py``: 3.44 us against 2.10 us per copy), so the
    accelerator ``json.encoder.c_make_encoder`` is built once with the encoder's own
    options. Checked on CPython 3.11 and 3.13 (the versions CI runs); where it is missing
    or takes other arguments, the public ``_ENCODER.encode`` is used, same text, slower.
    """
    if make is None:
        return None
    markers: dict[int, Any] = {}
    try:
        encode = make(markers, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
                      False, False, False)
    except TypeError:  # another signature: not a version this was checked on
        return None

    def c_dumps(value: Any) -> str:
        if isinstance(value, str):  # as JSONEncoder.encode: a top-level string is one call
            return json.encoder.encode_basestring(value)
        try:
            return "".join(encode(value, 0))
        except BaseException:
            markers.clear()  # an error leaves the containers it was inside marked
            raise

    return c_dumps


#: ``dumps(value)``: compact JSON text of ``value``; ``TypeError`` for a part JSON cannot hold,
#: ``ValueError`` for NaN, infinity or a cycle, ``RecursionError`` for nesting too deep.
dumps: Callable[[Any], str] = _c_dumps(getattr(json.encoder, "c_make_encoder", None)) or _ENCODER.encode
def _scanner(decoder: Any) -> Callable[[str, int], tuple[Any, int]]:
    """The decoder's scanner, or its public ``raw_decode`` (same answer, one frame more).

    ``raw_decode`` only wraps ``decoder.scan_once`` (CPython's C scanner), the attribute
    ``JSONDecoder.__init__`` sets; it is not documented, so where it is missing (checked
    on CPython 3.11 and 3.13) the public method is used.
    """
    scan = getattr(decoder, "scan_once", None)
    return scan if callable(scan) else decoder.raw_decode  # type: ignore[no-any-return]


#: ``scan(text, 0)``: ``(value, end)`` of the JSON value starting ``text``. Only for text
#: :func:`dumps` wrote; a hot path takes ``[0]`` inline (:func:`loads` without its frame).
scan: Callable[[str, int], tuple[Any, int]] = _scanner(_DECODER)


def loads(text: str) -> Any:
    """A fresh copy of the value :func:`dumps` wrote as ``text`` (no surrounding whitespace)."""
    return scan(text, 0)[0]


_SCALARS = (str, int, float, bool)


def find_bad(value: Any, path: str, seen: set[int] | None = None) -> tuple[str, str] | None:
    """The first part of ``value`` JSON cannot hold, as ``(where, what it is)``; ``None`` if none."""
    if seen is None:
        seen = set()
    if value is None or isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            return path, f"the float {value!r} (JSON has no NaN or infinity)"
        return None
    if id(value) in seen:
        return path, "a circular reference back to a container that holds it"
    if isinstance(value, list | tuple):
        seen.add(id(value))
        for i, item in enumerate(value):
            found = find_bad(item, f"{path}[{i}]", seen)
            if found:
                return found
        return None
    if isinstance(value, dict):
        seen.add(id(value))
        for k, item in value.items():
            if k is not None and not isinstance(k, _SCALARS):
                return f"{path} (a key)", f"a {type_name(k)} key {k!r}"
            found = find_bad(item, f"{path}[{k!r}]", seen)
            if found:
                return found
        return None
    return path, f"a {type_name(value)}"


def type_name(value: object) -> str:
    """The type's name, seen through freezegun's stand-ins (``FakeDatetime`` is a datetime)."""
    cls = type(value)
    while cls.__module__.startswith("freezegun") and cls.__bases__:
        cls = cls.__bases__[0]
    return cls.__name__


def to_text(value: Any, where: str, arg: str = "value") -> str:
    """:func:`dumps`, or an error that names ``where``, ``arg`` and the bad part.

    A part of an unsupported type raises ``TypeError``; NaN, infinity and circular
    references raise ``ValueError``.
    """
    try:
        return dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        found = find_bad(value, arg)
        if found is None:  # pragma: no cover - json refused something the walk accepts
            raise TypeError(f"{where}: {arg} is not JSON ({exc})") from None
        at, what = found
        error = TypeError if what.startswith("a ") and "circular" not in what else ValueError
        raise error(
            f"{where}: {arg} must be JSON (dicts, lists, str, int, float, bool, None), but "
            f"{at} is {what}. Values are stored as JSON copies, as the real service does: "
            "convert it first (e.g. datetime.isoformat(), list(a_set), str(a_uuid))."
        ) from None
