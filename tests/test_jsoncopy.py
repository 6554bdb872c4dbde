"""The copy rule (``pytest_bgwork.core.jsoncopy``): one JSON text for every service's stored values."""

from __future__ import annotations

import ast
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import pytest_bgwork
from pytest_bgwork.core import jsoncopy


def test_dumps_writes_compact_utf8_text() -> None:
    assert jsoncopy.dumps({"a": [1, 2.5, None, True], "é": "ü"}) == '{"a":[1,2.5,null,true],"é":"ü"}'
    assert jsoncopy.dumps({1: "a"}) == '{"1":"a"}'  # as the real clients' json.dumps does
    assert jsoncopy.dumps(1e16) == "1e+16"  # history and replay digests keep this text


@pytest.mark.parametrize(
    ("value", "error"),
    [(math.nan, ValueError), (math.inf, ValueError), ({(1, 2): "a"}, TypeError),
     ({1}, TypeError), (datetime(2026, 1, 1, tzinfo=UTC), TypeError)],
)
def test_dumps_refuses_what_json_cannot_hold(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        jsoncopy.dumps(value)


def test_a_cycle_is_refused_and_the_next_call_still_works() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        jsoncopy.dumps([loop])
    assert jsoncopy.dumps([[1]]) == "[[1]]"  # nothing left marked by the failed call


def test_loads_gives_a_fresh_copy_each_time() -> None:
    text = jsoncopy.dumps({"steps": ["a"]})
    first, second = jsoncopy.loads(text), jsoncopy.loads(text)
    first["steps"].append("b")
    assert second == {"steps": ["a"]}


def test_scan_reads_back_what_dumps_wrote_as_a_fresh_copy_and_its_end() -> None:
    value = {"a": [1, 2.5, None, True], "é": "ü", "big": 2**70, "f": 1e16}
    text = jsoncopy.dumps(value)
    first, end = jsoncopy.scan(text, 0)
    assert first == value and end == len(text)
    first["a"].append(3)  # the hot paths hand this out: it shares nothing with the next read
    assert jsoncopy.scan(text, 0)[0] == value == jsoncopy.loads(text)


def test_without_the_decoders_scanner_scan_is_the_public_raw_decode() -> None:
    import json
    import types

    decoder = json.JSONDecoder()
    assert jsoncopy._scanner(decoder) == decoder.scan_once  # type: ignore[attr-defined]
    public = types.SimpleNamespace(raw_decode=decoder.raw_decode)  # no scan_once
    fallback = jsoncopy._scanner(public)
    assert fallback == decoder.raw_decode
    assert fallback('{"a":[1]}', 0) == ({"a": [1]}, 9)


def test_to_text_names_the_call_the_argument_and_the_bad_part() -> None:
    with pytest.raises(TypeError) as info:
        jsoncopy.to_text({"when": datetime(2026, 1, 1, tzinfo=UTC)}, "kv.set(ns='s', key='k')")
    assert str(info.value).startswith(
        "kv.set(ns='s', key='k'): value must be JSON (dicts, lists, str, int, float, bool, None), "
        "but value['when'] is a datetime.")
    with pytest.raises(ValueError, match=r"metadata\[0\] is the float nan"):
        jsoncopy.to_text([math.nan], "streams.create()", "metadata")


def test_no_service_builds_its_own_encoder_on_cpython_internals() -> None:
    """Every module of the package serialises through jsoncopy: none imports json's C internals."""
    private = {"c_make_encoder", "c_make_scanner", "c_encode_basestring", "make_scanner"}
    found = []
    for path in Path(pytest_bgwork.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ({a.name for a in node.names} if isinstance(node, ast.ImportFrom)
                     else {node.attr} if isinstance(node, ast.Attribute) else set())
            found += [f"{path.name}: {n}" for n in names & private]
    assert found == []


def test_a_users_test_meets_the_same_refusal_in_kv_and_queues(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import math
        import pytest

        @pytest.mark.asyncio
        async def test_kv(bgwork):
            await bgwork.kv.set("s", "k", {"progress": math.nan})

        @pytest.mark.asyncio
        async def test_queue(bgwork):
            bgwork.queues.create("jobs")
            await bgwork.queues.publish("jobs", {"progress": math.nan})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*ValueError: kv.set(ns='s', key='k'): value must be JSON*value?'progress'? is the float nan*",
        "*TypeError: publish(payload=...) must be JSON-serialisable*Out of range float values*",
    ])


def test_the_c_accelerator_shim_writes_and_refuses_exactly_as_the_public_encoder() -> None:
    import json

    from pytest_bgwork.core import jsoncopy

    shim = jsoncopy._c_dumps(getattr(json.encoder, "c_make_encoder", None))
    assert shim is not None  # CPython 3.11 and 3.13 have it
    public = jsoncopy._ENCODER.encode
    cycle: list[object] = []
    cycle.append(cycle)
    samples: list[object] = ["é\n\"", 1e16, 2**70, {"a": [1, 2.5, None, True]}, {1: "x", None: 2.0},
                             [], {}, float("nan"), {"k": {1, 2}}, cycle, {(1, 2): 3}]
    for value in samples:
        try:
            expected: object = public(value)
        except Exception as exc:  # the same refusal, type and text
            expected = (type(exc), str(exc))
        try:
            got: object = shim(value)
        except Exception as exc:
            got = (type(exc), str(exc))
        assert got == expected, value
    assert shim({"after": "a refusal"}) == public({"after": "a refusal"})  # markers were cleared


def test_without_the_accelerator_the_public_encoder_is_used() -> None:
    from pytest_bgwork.core import jsoncopy

    assert jsoncopy._c_dumps(None) is None

    def other_signature(*args: object) -> None:
        raise TypeError("takes other arguments")

    assert jsoncopy._c_dumps(other_signature) is None
