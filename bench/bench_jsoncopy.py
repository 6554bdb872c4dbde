"""The copy rule's serializer: which JSON library ``pytest_bgwork.core.jsoncopy`` is built on.

Run ``python bench/bench_jsoncopy.py [N] [ROUNDS]``. Times one encode and one decode of the
status record ``bench_kv.py`` stores, per candidate, in the same run (CPU time, best of
``ROUNDS`` interleaved rounds): the private C encoder the services used to build by hand
(``json.encoder.c_make_encoder``, kept here only as the reference), the standard library's
public API (what ``jsoncopy`` uses), ``json.dumps``/``json.loads`` with the same options,
and orjson and msgspec when installed. It then checks, for each candidate, whether it gives
the same text and refuses the same values as the copy rule: speed alone does not decide.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from _common import interleaved

from pytest_bgwork.core import jsoncopy

VALUE = {"kind": "running", "progress": 42, "steps": ["fetch", "render"]}
TEXT = jsoncopy.dumps(VALUE)


def _private() -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    """The hand-built encoder and scanner the services used before (CPython internals)."""
    enc = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, jsoncopy._ENCODER.default, json.encoder.encode_basestring, None, ":", ",",
        False, False, False)
    scan: Any = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))
    return (lambda v: "".join(enc(v, 0))), (lambda t: scan(t, 0)[0])


def candidates() -> dict[str, tuple[Callable[[Any], str], Callable[[str], Any]]]:
    """name: (encode to str, decode from str)."""
    out = {
        "private c_make_encoder (before)": _private(),
        "jsoncopy: JSONEncoder().encode": (jsoncopy.dumps, jsoncopy.loads),
        "json.dumps / json.loads": (
            lambda v: json.dumps(v, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
            json.loads),
    }
    try:
        import orjson
    except ImportError:  # pragma: no cover - optional
        pass
    else:
        out["orjson"] = (lambda v: orjson.dumps(v).decode(), orjson.loads)
    try:
        import msgspec
    except ImportError:  # pragma: no cover - optional
        pass
    else:
        enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
        out["msgspec"] = (lambda v: enc.encode(v).decode(), dec.decode)
    return out


#: Values the copy rule must write exactly so, or refuse (None): what each candidate does.
CASES: list[tuple[str, Any]] = [
    ("1e16", 1e16),
    ("{1: 'a'} (int key)", {1: "a"}),
    ("2**70", 2**70),
    ("NaN", math.nan),
    ("datetime", datetime(2026, 1, 1, tzinfo=UTC)),
    ("UUID", UUID(int=1)),
    ("set", {1}),
]


def _outcome(encode: Callable[[Any], str], value: Any) -> str:
    try:
        return encode(value)
    except Exception as exc:
        return f"refused ({type(exc).__name__})"


def _repeat(fn: Callable[[Any], Any], arg: Any, n: int) -> Callable[[], object]:
    """``fn(arg)`` ``n`` times, as one timed run."""
    def run() -> None:
        for _ in range(n):
            fn(arg)
    return run


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    cands = candidates()
    runs: dict[str, Callable[[], object]] = {}
    for name, (encode, decode) in cands.items():
        assert decode(encode(VALUE)) == VALUE
        runs[f"{name} encode"] = _repeat(encode, VALUE, n)
        runs[f"{name} decode"] = _repeat(decode, TEXT, n)
    best = interleaved(runs, rounds)
    print(f"one encode / decode of {TEXT} (x{n}), CPU time, best of {rounds} interleaved rounds")
    print(f"{'serializer':<36}{'encode ns':>10}{'decode ns':>10}{'pair ns':>9}")
    for name in cands:
        e, d = best[f"{name} encode"] / n * 1e9, best[f"{name} decode"] / n * 1e9
        print(f"{name:<36}{e:>10.0f}{d:>10.0f}{e + d:>9.0f}")
    print("\nsame text and refusals as the copy rule (jsoncopy)?")
    ref = {label: _outcome(jsoncopy.dumps, value) for label, value in CASES}
    for name, (encode, _) in cands.items():
        diffs = [f"{label}: {_outcome(encode, value)} (rule: {ref[label]})"
                 for label, value in CASES if _outcome(encode, value) != ref[label]]
        print(f"  {name}: {'same' if not diffs else '; '.join(diffs)}")


if __name__ == "__main__":
    main()
