"""One validator for the numbers and strings every entry point takes ("Bad input" in docs/trust.md).

Each function returns the clean value or raises at the user's call, naming the argument,
the limit and the fix: ``nack(delay=...) must be a number of seconds >= 0 and at most
900; got nan. ...``. ``where`` is the call as the user wrote it: a bare name (``"nack"``
gives ``nack(delay=...)``) or a call text ending in ``)`` (``"kv.set(ns='s', key='k')"``
gives ``kv.set(ns='s', key='k'): ttl=``).

Numbers: ``bool`` is never a number, NaN and infinity are refused, and a duration may not
pass the clock's range (``MAX_SECONDS``). Strings: lone surrogates (which no UTF-8 system
can store or send) and length limits are refused.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["MAX_SECONDS", "BadArgument", "integer", "name_error", "number", "seconds", "text", "utf8"]

#: The longest duration (TTL, delay, timeout...) any call accepts: about 31.7 years. Past
#: it an expiry or timer would leave the virtual clock's range (its wall clock and its
#: microsecond resolution), so it is refused rather than left to overflow later.
MAX_SECONDS = 1e9


def _head(where: str, arg: str) -> str:
    return f"{where}: {arg}=" if where.endswith(")") else f"{where}({arg}=...)"


def _fail(where: str, arg: str, expected: str, value: object, fix: str,
          error: type[Exception] = ValueError) -> Exception:
    got = _show(value)
    message = f"{_head(where, arg)} must be {expected}; got {got}"
    return error(f"{message}. {fix}" if fix else message)


class BadArgument(TypeError, ValueError):
    """An argument of the wrong type: both a ``TypeError`` and a ``ValueError``, so code that
    caught either before the validator existed still catches it."""


def _error_for(value: object) -> type[Exception]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return BadArgument
    return ValueError


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1e6 else f"{x:g}"


def _show(value: object) -> str:
    if isinstance(value, str) and len(value) > 60:
        return f"a string of {len(value)} characters"
    text_ = repr(value)
    return text_ if len(text_) <= 80 else text_[:77] + "..."


def number(
    value: object,
    where: str,
    arg: str,
    *,
    lo: float = 0.0,
    hi: float | None = MAX_SECONDS,
    lo_open: bool = False,
    unit: str = "seconds",
    fix: str = "",
    none: bool | str = False,
) -> float:
    """A finite real number in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``), as a float."""
    if (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value)):
        v = float(value)
        if (v > lo if lo_open else v >= lo) and (hi is None or v <= hi):
            return v
    bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
    past_range = (hi == MAX_SECONDS and isinstance(value, int | float)
                  and not isinstance(value, bool) and math.isfinite(value) and value > hi)
    # the clock's range is named when it is the limit passed; a call's own limit always
    shown = hi is not None and (hi != MAX_SECONDS or past_range)
    limit = f"{bound} and at most {_fmt(hi)}" if shown and hi is not None else bound
    kind = f"a number of {unit}" if unit else "a number"
    if past_range and hi is not None:
        fix = (f"{_fmt(hi)} s (about {hi / 31_557_600:.0f} years) is the virtual clock's "
               "range" + (f"; {fix}" if fix else "."))
    nothing = "" if not none else ", or None" + (f" {none}" if isinstance(none, str) else "")
    raise _fail(where, arg, f"{kind} {limit}{nothing}", value, fix,
                _error_for(value))


def seconds(value: object, where: str, arg: str, *, hi: float | None = MAX_SECONDS,
            positive: bool = False, none: bool | str = False, fix: str = "") -> float | None:
    """A duration: finite seconds ``>= 0`` (``> 0`` when ``positive``), ``None`` if ``none``
    (a string there says what ``None`` means, e.g. ``"for no expiry"``)."""
    if value is None and none:
        return None
    return number(value, where, arg, lo=0.0, hi=hi, lo_open=positive, fix=fix,
                  none=none)


def integer(value: object, where: str, arg: str, *, lo: int = 1, hi: int | None = None,
            none: bool = False, what: str = "an int", fix: str = "") -> int | None:
    """An ``int`` (never a ``bool`` or a float such as 1.5) in ``[lo, hi]``; ``None`` if ``none``."""
    if value is None and none:
        return None
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        v = int(value)
        if v >= lo and (hi is None or v <= hi):
            return v
    limit = f"{what} >= {lo}" + (f" and at most {hi}" if hi is not None else "")
    if none:
        limit += ", or None"
    raise _fail(where, arg, limit, value, fix, _error_for(value))


def utf8(value: str, where: str, arg: str, *, inside: bool = False) -> str:
    """``value`` unless it holds a lone surrogate (``'\\ud800'``), which UTF-8 cannot encode.

    ``inside=True``: ``value`` is the JSON text of the argument, so no index is given.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        at = "" if inside else f" at index {exc.start}"
        raise ValueError(
            f"{_head(where, arg)} holds a lone surrogate {bad!r}{at}, which "
            "UTF-8 cannot encode, so no real service could store or send it. Decode bytes with "
            "errors='replace' (or 'surrogatepass' only where you re-encode the same way)."
        ) from None
    return value


def text(value: object, where: str, arg: str, *, max_len: int | None = None,
         empty: bool = False, pattern: re.Pattern[str] | None = None, none: bool = False,
         fix: str = "") -> str | None:
    """A ``str``: non-empty unless ``empty``, at most ``max_len`` characters, matching
    ``pattern`` when given, without lone surrogates; ``None`` if ``none``."""
    if value is None and none:
        return None
    if not isinstance(value, str):
        what = ("a string" if empty else "a non-empty string") + (" or None" if none else "")
        raise _fail(where, arg, what, value, fix, BadArgument)
    if not value and not empty:
        raise _fail(where, arg, "a non-empty string", value, fix)
    if max_len is not None and len(value) > max_len:
        raise _fail(where, arg, f"a string of at most {max_len} characters", value, fix)
    if pattern is not None and not pattern.match(value):
        raise _fail(where, arg, f"a string matching {pattern.pattern}", value, fix)
    return utf8(value, where, arg)


def name_error(where: str, arg: str, value: object, known: Any, kind: str = "name") -> str:
    """``, did you mean 'x'?`` text for an unknown ``value`` among ``known`` (or ``""``)."""
    import difflib

    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
