"""The HTML report: lanes from the event vocabulary, escaping, the plugin option, a real browser."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork import report_html
from pytest_bgwork.report_html import TestTimeline, build_lanes, event_dicts, render

EVIL = '"><img src=x onerror=alert(1)></script>'


def _scenario_sim() -> bg.Simulation:
    """A report job whose attempt 1 crashes at its kv.set: stream, KV and an effect per
    attempt, plus a task."""
    sim = bg.Simulation(seed=5)
    sim.faults.crash("report-jobs", at="kv.set")

    async def main() -> None:
        sim.queues.create("report-jobs", visibility_timeout=60, retry_delay=0)

        async def handler(payload: Any, delivery: Any) -> None:
            await sim.kv.set("report-status", payload["job"], {"kind": "running"})
            s = await sim.streams.create("monthly-reports", content_type="text/csv")
            await s.write("a,b\n")
            sim.effects.record("email", key=payload["to"])
            if delivery.attempt == 2:
                await s.close()

        sim.queues.route("report-jobs", handler)
        await sim.queues.publish("report-jobs", {"job": EVIL, "to": "ann@example.com"})
        sim.history.record("runtime", "wait_until", task="send_email", request="checkout")
        await sim.run_until_idle()
        sim.history.record("runtime", "task_done", task="send_email", request="checkout")

    sim.run(main())
    return sim


@pytest.fixture(scope="module")
def timeline() -> TestTimeline:
    sim = _scenario_sim()
    try:
        return TestTimeline.from_simulation(
            sim, nodeid=f"tests/test_app.py::test_report[{EVIL}]", outcome="failed",
            replay="pytest 'tests/test_app.py::test_report' --bgwork-seed=5", chaos=("crash",),
            message=f"AssertionError: {EVIL}",
        )
    finally:
        sim.close()


def _lanes(tl: TestTimeline) -> dict[str, report_html.Lane]:
    return {lane.label.strip(): lane for lane in build_lanes(tl.events)}


# -- lanes --------------------------------------------------------------------------------------
def test_queue_message_has_a_lifetime_lane_then_one_lane_per_attempt(timeline: TestTimeline) -> None:
    lanes = build_lanes(timeline.events)
    labels = [lane.label.strip() for lane in lanes]
    i = labels.index("report-jobs msg_1")
    assert labels[i + 1:i + 3] == ["attempt #1", "attempt #2"]
    by = _lanes(timeline)
    life = by["report-jobs msg_1"].bars
    assert [(b.label, b.state) for b in life] == [("acked", "ok")]
    first, second = by["attempt #1"], by["attempt #2"]
    assert [(b.label, b.state) for b in first.bars] == [("#1 crashed", "crash")]
    assert [(b.label, b.state) for b in second.bars] == [("#2 ack", "ok")]
    # an attempt's own operations are marks on its lane: the crash stopped #1 at its kv.set
    assert [m.label for m in first.marks] == ["fault.crash!"]
    assert [m.label for m in second.marks] == [
        "kv.set", "stream.create", "stream.write", "effect.email", "stream.close"]
    assert first.marks[0].kind == "fault"


def test_streams_kv_effects_tasks_and_faults_get_lanes(timeline: TestTimeline) -> None:
    by = _lanes(timeline)
    stream = by["monthly-reports stream_1"]
    assert [(b.label, b.state) for b in stream.bars] == [("open → closed", "ok")]
    assert [m.label for m in stream.marks] == ["write"]
    kv = by[f"report-status {EVIL}"]
    assert [m.label for m in kv.marks] == ["set"]
    assert [m.label for m in by["effect email"].marks] == ["email ann@example.com"]
    assert [(b.label, b.state) for b in by["send_email"].bars] == [("task done", "ok")]
    assert [m.label for m in by["faults injected"].marks] == ["crash @ kv.set"]
    assert "chaos" not in by  # the header shows the modes; no lane for chaos.on
    groups = [lane.group for lane in build_lanes(timeline.events)]
    assert groups == sorted(groups, key=report_html._GROUP_ORDER.index)


def test_an_unclosed_stream_and_a_running_attempt_stay_open_to_the_end() -> None:
    with bg.Simulation(seed=1) as sim:
        sim.history.record("stream", "create", id="str_9", name="exports")
        sim.history.record("queue", "deliver", queue="q", id="msg_1", attempt=1)
        sim.history.record("queue", "dead_letter", queue="q", id="msg_1", attempts=1)
        events, _ = event_dicts(sim.history)
    by = {lane.label.strip(): lane for lane in build_lanes(events)}
    assert [(b.end, b.state) for b in by["exports str_9"].bars] == [(None, "open")]
    assert [(b.end, b.state) for b in by["attempt #1"].bars] == [(None, "open")]
    assert [m.label for m in by["q msg_1"].marks] == ["dead letter"]
    page = render([TestTimeline("t::x", "failed", 1, "r", events)])
    assert "open (never closed)" in page
    assert "#1 running (still open)" in page


def test_unknown_services_land_on_an_other_lane() -> None:
    events = [{"seq": 0, "t": 0.0, "service": "webhook", "op": "deliver", "outcome": "fail",
               "detail": {"path": "/hook"}, "attempt": None, "text": "webhook.deliver"}]
    (lane,) = build_lanes(events)
    assert (lane.group, lane.label, [(m.label, m.kind) for m in lane.marks]) == (
        "other", "webhook", [("deliver", "fail")])


# -- the page as text ---------------------------------------------------------------------------
def test_every_piece_of_user_text_is_escaped(timeline: TestTimeline) -> None:
    page = render([timeline])
    assert EVIL not in page
    assert "<img" not in page
    assert page.count("</script>") == 1  # only the report's own script closes
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;/script&gt;" in page
    assert "AssertionError: &quot;&gt;&lt;img" in page


def test_the_page_is_self_contained(timeline: TestTimeline) -> None:
    page = render([timeline])
    assert page.startswith("<!DOCTYPE html>")
    for outside in ("http://", "https://", "src=", "href=", "@import", "url(", "<link"):
        assert outside not in page.replace("src=x", ""), outside


def test_header_shows_seed_replay_chaos_stats_and_message(timeline: TestTimeline) -> None:
    page = render([timeline])
    assert "seed <b>5</b>" in page
    assert "replay: <code>pytest &#x27;tests/test_app.py::test_report&#x27; --bgwork-seed=5</code>" in page
    assert '<span class="chaos">chaos: crash</span>' in page
    assert "simulated 60.000s · 2 deliveries (1 redelivered) · 1 faults · 0 dead letters" in page
    assert f"digest <code>{timeline.digest[:16]}</code>" in page
    assert '<span class="badge">failed</span>' in page
    assert f"{len(timeline.events)} event(s) as a table" in page


def test_rendering_is_deterministic_and_round_trips_as_json(timeline: TestTimeline) -> None:
    data = json.loads(json.dumps(timeline.to_data()))
    again = TestTimeline.from_data(data)
    assert again == timeline
    assert render([again]) == render([timeline])


def test_long_histories_are_cut_with_a_visible_note() -> None:
    with bg.Simulation(seed=1) as sim:
        for i in range(12):
            sim.history.record("kv", "set", ns="n", key=str(i))
        tl = TestTimeline.from_simulation(sim, nodeid="t::x", outcome="failed", limit=5)
    assert (len(tl.events), tl.total_events) == (5, 12)
    assert ("Showing the first 5 of 12 events; 7 later event(s) are not drawn"
            in render([tl]))


def test_an_empty_run_says_so() -> None:
    assert "No failing tests in this run." in render([])
    assert "No tests used bgwork in this run." in render([], include_passing=True)
    quiet = TestTimeline("t::quiet", "failed", 1, "r", [])
    assert "No events: this test did not touch the simulation." in render([quiet])


def test_write_creates_parent_folders(tmp_path: Path, timeline: TestTimeline) -> None:
    target = report_html.write(tmp_path / "a" / "b" / "report.html", [timeline])
    assert target.read_text(encoding="utf-8") == render([timeline])


def test_the_report_module_does_not_import_pytest() -> None:
    source = Path(report_html.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(import|from)\s+_?pytest\b", source, re.M)


# -- the plugin option ----------------------------------------------------------------------------
_SUITE = """
import pytest

@pytest.mark.asyncio
async def test_counts_twice(bgwork):
    bgwork.queues.create("jobs")
    seen = []
    async def handler(payload, delivery):
        await bgwork.kv.set("seen", str(payload), {"n": len(seen)})
        seen.append(payload)
    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", 1)
    await bgwork.run_until_idle()
    assert seen == [1]

def test_passes(bgwork):
    pass
"""


def test_option_writes_the_failing_tests_lanes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=duplicate",
                                "--bgwork-html=out/report.html")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "bgwork: seed per test*; chaos: duplicate; html report: out/report.html",
        "*bgwork html report: */out/report.html*",
    ])
    page = (pytester.path / "out" / "report.html").read_text(encoding="utf-8")
    assert "1 test(s) shown (failing tests); 1 failed." in page
    assert "::test_counts_twice" in page and "::test_passes" not in page
    assert 'data-label="jobs msg_1"' in page
    assert 'data-label="jobs msg_1 attempt #2"' in page
    assert "fault.duplicate" in page or "duplicate @ queue.publish" in page
    assert "--bgwork-chaos=duplicate</code>" in page
    assert "AssertionError: assert [1, 1] == [1]" in page


def test_ini_and_all_tests(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "bgwork_html = report.html\nbgwork_html_all = true\n")
    pytester.makepyfile(_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    page = (pytester.path / "report.html").read_text(encoding="utf-8")
    assert "2 test(s) shown (every test that used bgwork); 0 failed." in page
    assert page.count('<span class="badge">passed</span>') == 2


def test_no_failures_still_writes_a_page(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok(bgwork):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-html=r.html")
    result.assert_outcomes(passed=1)
    assert "No failing tests in this run." in (pytester.path / "r.html").read_text("utf-8")


def test_a_teardown_error_is_reported_as_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.bgwork(strict=True)
        @pytest.mark.asyncio
        async def test_leaves_work(bgwork):
            asyncio.get_running_loop().create_task(asyncio.sleep(99), name="forgotten")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-html=r.html")
    result.assert_outcomes(passed=1, errors=1)
    page = (pytester.path / "r.html").read_text("utf-8")
    assert '<span class="badge">error</span>' in page
    assert "sim.cancelled_at_teardown" in page


# -- a real browser -----------------------------------------------------------------------------
def _chromium() -> str:
    path = os.environ.get("BGWORK_CHROMIUM", "/usr/bin/chromium")  # as tests/conftest.py
    if not os.path.exists(path):
        pytest.fail(
            f"headless Chromium not found at {path}: install Debian's chromium package "
            "(apt-get update && apt-get install -y chromium) or point BGWORK_CHROMIUM at a "
            "Chromium binary",
            pytrace=False,
        )
    return path


def _dump_dom(page: Path, tmp_path: Path, fragment: str = "") -> str:
    args = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom",
        page.as_uri() + fragment,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.browser
def test_chromium_renders_lanes_labels_and_fault_marks(
    tmp_path: Path, timeline: TestTimeline
) -> None:
    page = report_html.write(tmp_path / "report.html", [timeline])
    dom = _dump_dom(page, tmp_path, "#q=report-jobs&scale=time")
    assert 'data-bgwork-js="ready"' in dom  # the inline script ran
    lanes = re.findall(r'<div class="lane [^"]*"[^>]*data-label="([^"]*)"([^>]*)>', dom)
    labels = [label for label, _ in lanes]
    assert labels[:4] == ["queue report-jobs", "report-jobs msg_1",
                          "report-jobs msg_1 attempt #1", "report-jobs msg_1 attempt #2"]
    assert "monthly-reports stream_1" in labels and "faults injected" in labels
    hidden = {label for label, rest in lanes if "hidden" in rest}
    # the filter from the URL fragment kept the queue lanes and hid the others
    assert {"monthly-reports stream_1", "faults injected", "send_email"} <= hidden
    assert not hidden & set(labels[:4])
    shown = len(lanes) - len(hidden)
    assert f"{shown} of {len(lanes)} lanes shown" in dom
    assert 'data-scale="time"' in dom
    # on the time scale the message's life (t=0 to t=60, the end) spans the whole track
    assert '<span class="bar s-ok" style="left: 0%; width: 100%;" data-i0="2"' in dom
    assert re.search(r'<span class="mark k-fault"[^>]*><span class="ml">fault\.crash!</span>', dom)
    assert re.search(r'<span class="mark k-fault"[^>]*><span class="ml">crash @ kv\.set</span>',
                     dom)
    assert '<span class="bl">#1 crashed</span>' in dom
    assert '<span class="bl">open → closed</span>' in dom
    assert "<img" not in dom  # escaped text stayed text in the browser too


def test_a_missing_chromium_fails_with_the_install_line(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("BGWORK_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(pytest.fail.Exception, match=r"install Debian's chromium package "
                       r"\(apt-get update && apt-get install -y chromium\)"):
        _chromium()


@pytest.mark.parametrize("ci", ["", "1"])
def test_without_a_browser_the_run_says_so_and_ci_fails(ci: str, tmp_path: Path) -> None:
    """README's `pytest` passes on a machine without Chromium and says the check did not run;
    with CI set, the missing browser fails the run."""
    root = Path(__file__).parent.parent
    env = {**os.environ, "BGWORK_CHROMIUM": str(tmp_path / "no-chromium"), "CI": ci}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
         "tests/test_report_html.py", "-k", "chromium_renders or self_contained"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    if ci:
        assert done.returncode == 1, out
        assert "1 failed, 1 passed" in out and "install Debian's chromium package" in out
    else:
        assert done.returncode == 0, out
        assert re.search(r"\b1 passed, \d+ deselected", out), out
        assert "browser check did not run" in out
        assert "apt-get update && apt-get install -y chromium" in out
