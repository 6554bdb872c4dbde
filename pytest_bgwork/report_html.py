"""The HTML report: one self-contained page with a swimlane timeline per test.

The plugin hands plain data (``TestTimeline``) to ``render``/``write``; this module
never imports pytest, so the page can also be built from a ``Simulation`` by hand
(``TestTimeline.from_simulation``). Lanes are computed here from the history event
vocabulary (CONTRIBUTING.md) and drawn as positioned HTML, so the page reads without
JavaScript; the inline script adds a lane filter, an order/time scale switch and an
event detail panel. Every piece of user text goes through ``html.escape``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.history import Event
    from .simulation import Simulation

__all__ = ["DEFAULT_EVENT_LIMIT", "Bar", "Lane", "Mark", "TestTimeline", "build_lanes",
           "event_dicts", "render", "write"]

#: Events drawn per test; the page says how many more there were.
DEFAULT_EVENT_LIMIT = 3000
_ATTEMPT_END = {"ack": "ok", "nack": "fail", "attempt_failed": "fail", "crashed": "crash"}
_TASK_END = {"task_done": "ok", "task_failed": "fail", "cut_off": "crash",
             "timeout": "fail", "cancelled": "crash"}
_GROUP_ORDER = ("queue", "kv", "stream", "runtime", "task_manager", "schedule", "effect",
                "fault", "other")
_GROUP_TITLES = {"queue": "queue", "kv": "kv", "stream": "stream", "runtime": "waitUntil",
                 "task_manager": "task manager", "schedule": "schedule", "effect": "effect",
                 "fault": "faults", "other": "other"}


def _plain(value: Any) -> Any:
    """JSON-safe copy of ``value`` (reprs for anything else), so data crosses xdist."""
    return json.loads(json.dumps(value, default=repr))


def event_dicts(
    events: Iterable[Event], limit: int = DEFAULT_EVENT_LIMIT
) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` events as plain dicts, and how many events there were in all."""
    out: list[dict[str, Any]] = []
    total = 0
    for e in events:
        total += 1
        if len(out) < limit:
            out.append({"seq": e.seq, "t": e.t, "service": e.service, "op": e.op,
                        "outcome": e.outcome, "detail": _plain(e.detail), "attempt": e.attempt,
                        "text": e.render()})
    return out, total


@dataclass
class TestTimeline:
    """What the page shows for one test: identity, outcome, replay line and its events."""

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    outcome: str
    seed: int
    replay: str
    events: list[dict[str, Any]]
    total_events: int | None = None
    chaos: tuple[str, ...] = ()
    digest: str = ""
    stats: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @classmethod
    def from_simulation(
        cls, sim: Simulation, *, nodeid: str, outcome: str, replay: str = "",
        chaos: Sequence[str] = (), message: str = "", limit: int = DEFAULT_EVENT_LIMIT,
    ) -> TestTimeline:
        """Capture ``sim``'s history and counts (plain data: safe to pickle or send)."""
        events, total = event_dicts(sim.history, limit)
        return cls(nodeid, outcome, sim.seed, replay, events, total, tuple(chaos),
                   sim.history.digest(), dict(sim.stats()), message)

    def to_data(self) -> dict[str, Any]:
        """Plain dict (for pytest-xdist, which sends reports between processes)."""
        return {"nodeid": self.nodeid, "outcome": self.outcome, "seed": self.seed,
                "replay": self.replay, "events": self.events, "total_events": self.total_events,
                "chaos": list(self.chaos), "digest": self.digest, "stats": self.stats,
                "message": self.message}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TestTimeline:
        """Inverse of ``to_data``."""
        return cls(data["nodeid"], data["outcome"], int(data["seed"]), data["replay"],
                   list(data["events"]), data.get("total_events"), tuple(data.get("chaos", ())),
                   data.get("digest", ""), dict(data.get("stats", {})), data.get("message", ""))


# -- lanes ----------------------------------------------------------------------------------
@dataclass
class Mark:
    """A point on a lane: event ``i`` (position in the test's event list) at time ``t``."""

    i: int
    t: float
    label: str
    kind: str
    title: str


@dataclass
class Bar:
    """A span on a lane from event ``start`` to event ``end`` (``None``: still open at the end)."""

    start: int
    end: int | None
    t0: float
    t1: float | None
    label: str
    state: str
    title: str


@dataclass
class Lane:
    """One row of the swimlane chart."""

    key: str
    group: str
    label: str
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    children: list[Lane] = field(default_factory=list)
    #: The parent lane's label (an attempt's message), so a filter keeps them together.
    parent: str = ""


class _Builder:
    def __init__(self) -> None:
        self.lanes: dict[str, Lane] = {}
        self.open: dict[tuple[str, str], list[Bar]] = {}

    def lane(self, group: str, key: str, label: str, parent: str | None = None) -> Lane:
        full = f"{group}:{key}"
        lane = self.lanes.get(full)
        if lane is None:
            lane = self.lanes[full] = Lane(full, group, label)
            if parent is not None:
                self.lanes[parent].children.append(lane)
                lane.parent = self.lanes[parent].label
        return lane

    def start(self, lane: Lane, slot: str, i: int, e: dict[str, Any], label: str) -> Bar:
        bar = Bar(i, None, e["t"], None, label, "open", e["text"])
        lane.bars.append(bar)
        self.open.setdefault((lane.key, slot), []).append(bar)
        return bar

    def finish(self, lane: Lane, slot: str, i: int, e: dict[str, Any], state: str,
               label: str | None = None) -> bool:
        stack = self.open.get((lane.key, slot))
        if not stack:
            return False
        bar = stack.pop(0)
        bar.end, bar.t1, bar.state = i, e["t"], state
        bar.title += "\n" + e["text"]
        if label is not None:
            bar.label = label
        return True


def _kind(e: dict[str, Any], default: str = "op") -> str:
    if e["service"] == "fault":
        return "fault"
    if e["outcome"] == "fail":
        return "fail"
    if e["outcome"] == "unknown":
        return "unknown"
    return default


def build_lanes(events: Sequence[dict[str, Any]]) -> list[Lane]:
    """Turn a test's events (``event_dicts``) into ordered swimlanes.

    Queue messages get a lifetime lane (publish to ack or dead letter) followed by one
    lane per attempt (deliver to ack/failure/crash, with the attempt's own operations
    as marks); KV keys, streams (open to closed), runtime and manager tasks, schedules,
    effects and faults each get lanes; anything else lands on an "other" lane.
    """
    b = _Builder()
    attempt_lanes: dict[str, Lane] = {}
    for i, e in enumerate(events):
        service, op, d = e["service"], e["op"], e["detail"]
        text = e["text"]
        if service == "queue":
            q = str(d.get("queue", "?"))
            mid = d.get("id")
            if mid is None:
                b.lane("queue", q, f"queue {q}").marks.append(Mark(i, e["t"], op, _kind(e), text))
                continue
            msg = b.lane("queue", f"{q}/{mid}", f"{q} {mid}")
            if op == "publish":
                if d.get("duplicate"):
                    msg.marks.append(Mark(i, e["t"], "dup publish", "note", text))
                elif not b.open.get((msg.key, "life")):
                    b.start(msg, "life", i, e, "in queue")
                    msg.marks.append(Mark(i, e["t"], "publish", "op", text))
                continue
            if op == "deliver":
                n = d.get("attempt", 1)
                lane = b.lane("queue", f"{q}/{mid}#{n}", f"  attempt #{n}", parent=msg.key)
                attempt_lanes[f"{q}/{mid}#{n}"] = lane
                b.start(lane, "run", i, e, f"#{n} running")
                continue
            if op in _ATTEMPT_END:
                n = d.get("attempt", 1)
                run = attempt_lanes.get(f"{q}/{mid}#{n}")
                state = _ATTEMPT_END[op]
                if op == "ack" and d.get("stale"):
                    state = "stale"
                if run is not None and b.finish(run, "run", i, e, state, f"#{n} {op}"):
                    if op == "ack" and not d.get("stale"):
                        b.finish(msg, "life", i, e, "ok", "acked")
                    continue
                msg.marks.append(Mark(i, e["t"], op, _kind(e), text))
                continue
            if op == "dead_letter":
                b.finish(msg, "life", i, e, "dead", "dead letter")
                msg.marks.append(Mark(i, e["t"], "dead letter", "fail", text))
                continue
            msg.marks.append(Mark(i, e["t"], op.replace("_", " "), _kind(e, "note"), text))
            continue
        if service == "kv":
            ns, key = d.get("ns", "?"), d.get("key", "?")
            lane = b.lane("kv", f"{ns}/{key}", f"{ns} {key}")
            lane.marks.append(Mark(i, e["t"], op, _kind(e, "read" if op == "get" else "op"), text))
        elif service == "stream":
            sid = str(d.get("id", "?"))
            name = d.get("name")
            lane = b.lane("stream", sid, f"{name} {sid}" if name else sid)
            if op == "create" and e["outcome"] == "ok":
                b.start(lane, "open", i, e, "open")
            elif op == "close" and e["outcome"] != "fail":
                if not b.finish(lane, "open", i, e, "ok", "open → closed"):
                    lane.marks.append(Mark(i, e["t"], op, _kind(e), text))
            elif op == "dropped_write":
                lane.marks.append(Mark(i, e["t"], "dropped write", "fail", text))
            else:
                lane.marks.append(Mark(i, e["t"], op, _kind(e, "read" if op == "read" else "op"),
                                       text))
        elif service in ("runtime", "task_manager"):
            if op == "response":
                req = str(d.get("request", "?"))
                b.lane(service, f"request {req}", f"request {req}").marks.append(
                    Mark(i, e["t"], "response", _kind(e), text))
                continue
            name = str(d.get("task", d.get("name", f"{service} lifecycle")))
            lane = b.lane(service, name, name)
            if op in ("wait_until", "create_task"):
                b.start(lane, "run", i, e, "running")
            elif op in _TASK_END:
                if not b.finish(lane, "run", i, e, _TASK_END[op], op.replace("_", " ")):
                    lane.marks.append(Mark(i, e["t"], op, _kind(e), text))
            else:
                lane.marks.append(Mark(i, e["t"], op, _kind(e, "fail" if op == "dropped" else "op"),
                                       text))
        elif service == "schedule":
            name = str(d.get("name", "?"))
            lane = b.lane("schedule", name, f"schedule {name}")
            slot = f"run {d.get('run')}"
            if op == "fire":
                b.start(lane, slot, i, e, "run")
            elif op in ("run_ok", "run_failed"):
                state = "ok" if op == "run_ok" else "fail"
                if not b.finish(lane, slot, i, e, state, op.replace("_", " ")):
                    lane.marks.append(Mark(i, e["t"], op, _kind(e), text))
            else:
                lane.marks.append(Mark(i, e["t"], op, _kind(e), text))
        elif service == "effect":
            lane = b.lane("effect", op, f"effect {op}")
            key = d.get("key")
            lane.marks.append(Mark(i, e["t"], op if key is None else f"{op} {key}", "effect", text))
        elif service == "chaos":
            continue  # the page header names the chaos modes
        elif service == "fault":
            where = d.get("point") or ""
            b.lane("fault", "faults", "faults injected").marks.append(
                Mark(i, e["t"], f"{op} @ {where}" if where else op, "fault", text))
        else:
            b.lane("other", service, service).marks.append(Mark(i, e["t"], op, _kind(e), text))
        attempt = e.get("attempt")
        if attempt and attempt in attempt_lanes and service != "queue":
            label = op if service != "fault" else f"{op}!"
            attempt_lanes[attempt].marks.append(
                Mark(i, e["t"], f"{service}.{label}", _kind(e), text))
    ordered: list[Lane] = []
    children = {c.key for lane in b.lanes.values() for c in lane.children}
    for group in _GROUP_ORDER:
        for lane in b.lanes.values():
            if lane.group == group and lane.key not in children:
                ordered.append(lane)
                ordered.extend(lane.children)
    return ordered


# -- rendering --------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(i: float, n: int) -> float:
    return round((i + 0.5) / max(n, 1) * 100, 3)


def _ruler(events: Sequence[dict[str, Any]]) -> str:
    n = len(events)
    ticks: list[str] = []
    last_t: float | None = None
    last_labelled = -100.0
    for i, e in enumerate(events):
        if last_t is not None and e["t"] == last_t:
            continue
        last_t = e["t"]
        x = _pct(i - 0.5, n) if i else 0.0
        text = f"+{e['t']:g}s"
        show = x - last_labelled >= 6
        if show:
            last_labelled = x
        ticks.append(
            f'<span class="tick{"" if show else " minor"}" style="left:{x}%" '
            f'data-i="{i}" data-t="{e["t"]}">{_esc(text) if show else ""}</span>'
        )
    return f'<div class="ruler">{"".join(ticks)}</div>'


def _lane_html(lane: Lane, n: int, t_end: float) -> str:
    parts: list[str] = []
    for bar in lane.bars:
        x0 = _pct(bar.start, n)
        x1 = _pct(bar.end, n) if bar.end is not None else 100.0
        label = bar.label
        if bar.end is None:
            label += " (never closed)" if lane.group == "stream" else " (still open)"
        parts.append(
            f'<span class="bar s-{_esc(bar.state)}" '
            f'style="left:{x0}%;width:{max(x1 - x0, 0.4):.3f}%" '
            f'data-i0="{bar.start}" data-i1="{"" if bar.end is None else bar.end}" '
            f'data-t0="{bar.t0}" data-t1="{"" if bar.t1 is None else bar.t1}" '
            f'title="{_esc(bar.title)}"><span class="bl">{_esc(label)}</span></span>'
        )
    marks = sorted(lane.marks, key=lambda m: m.i)
    for k, mark in enumerate(marks):
        x = _pct(mark.i, n)
        room = (_pct(marks[k + 1].i, n) if k + 1 < len(marks) else min(100.0, x + 25)) - x
        parts.append(
            f'<span class="mark k-{_esc(mark.kind)}" style="left:{x}%;width:{room:.3f}%" '
            f'data-i="{mark.i}" data-t="{mark.t}" title="{_esc(mark.title)}">'
            f'<span class="ml">{_esc(mark.label)}</span></span>'
        )
    child = " child" if lane.label.startswith("  ") else ""
    return (
        f'<div class="lane g-{_esc(lane.group)}{child}" data-group="{_esc(lane.group)}" '
        f'data-label="{_esc(f"{lane.parent} {lane.label.strip()}".strip())}">'
        f'<div class="lane-label" title="{_esc(lane.label.strip())}">'
        f'<span class="grp">{_esc(_GROUP_TITLES.get(lane.group, lane.group))}</span> '
        f'{_esc(lane.label.strip())}</div>'
        f'<div class="track">{"".join(parts)}</div></div>'
    )


def _stats_line(stats: Mapping[str, float]) -> str:
    if not stats:
        return ""
    return (f"simulated {stats.get('simulated_seconds', 0):.3f}s · "
            f"{int(stats.get('deliveries', 0))} deliveries "
            f"({int(stats.get('redeliveries', 0))} redelivered) · "
            f"{int(stats.get('faults', 0))} faults · "
            f"{int(stats.get('dead_letters', 0))} dead letters")


def _test_html(index: int, test: TestTimeline) -> str:
    events = test.events
    n = len(events)
    t_end = max((e["t"] for e in events), default=0.0)
    lanes = build_lanes(events)
    meta = [f"<span>seed <b>{test.seed}</b></span>"]
    if test.chaos:
        meta.append(f'<span class="chaos">chaos: {_esc(",".join(test.chaos))}</span>')
    if test.stats:
        meta.append(f"<span>{_esc(_stats_line(test.stats))}</span>")
    if test.digest:
        meta.append(f"<span>digest <code>{_esc(test.digest[:16])}</code></span>")
    total = test.total_events if test.total_events is not None else n
    cut = ""
    if total > n:
        cut = (f'<p class="cut">Showing the first {n} of {total} events; '
               f"{total - n} later event(s) are not drawn (replay the test to see them).</p>")
    message = f'<pre class="msg">{_esc(test.message)}</pre>' if test.message else ""
    body = "".join(_lane_html(lane, n, t_end) for lane in lanes) if lanes else \
        '<p class="empty">No events: this test did not touch the simulation.</p>'
    rows = "".join(
        f'<tr data-i="{i}"><td>{i}</td><td>+{e["t"]:.3f}s</td><td>{_esc(e["service"])}.'
        f'{_esc(e["op"])}</td><td>{_esc(e["outcome"])}</td><td>{_esc(e.get("attempt") or "")}'
        f'</td><td>{_esc(json.dumps(e["detail"], sort_keys=True, default=repr))}</td></tr>'
        for i, e in enumerate(events)
    )
    head = (f'<section class="test o-{_esc(test.outcome)}" id="test-{index}" '
            f'data-nodeid="{_esc(test.nodeid)}" data-events="{n}" data-tend="{t_end}">')
    return f"""{head}
<h2><span class="badge">{_esc(test.outcome)}</span> {_esc(test.nodeid)}</h2>
<div class="meta">{" ".join(meta)}</div>
<div class="replay">replay: <code>{_esc(test.replay)}</code></div>
{message}{cut}
<div class="toolbar"><label>filter lanes
<input type="search" class="filter" placeholder="e.g. msg_2, kv, stream"></label>
<label>scale <select class="scale"><option value="order">event order</option>
<option value="time">virtual time</option></select></label>
<span class="count"></span></div>
<div class="timeline">{_ruler(events)}{body}</div>
<div class="detail" aria-live="polite">Click a mark or bar to see its events.</div>
<details><summary>{n} event(s) as a table</summary>
<table class="events"><thead><tr><th>#</th><th>time</th><th>event</th><th>outcome</th>
<th>attempt</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>
</details>
</section>"""


_CSS = """
*{box-sizing:border-box}
body{font:13px/1.4 system-ui,sans-serif;margin:0;padding:16px 20px;color:#1d232b;background:#f6f7f9}
h1{font-size:18px;margin:0 0 4px}
h2{font-size:14px;margin:0 0 6px;word-break:break-all}
.summary{color:#4a5563;margin-bottom:14px}
code{font:12px ui-monospace,monospace;background:#eef0f3;padding:1px 4px;border-radius:3px}
.test{background:#fff;border:1px solid #d9dde3;border-left:5px solid #8a94a3;border-radius:6px;
  padding:12px 14px;margin:0 0 18px}
.test.o-failed,.test.o-error{border-left-color:#d0362f}
.test.o-passed{border-left-color:#2e9b55}
.badge{display:inline-block;padding:0 6px;border-radius:3px;background:#8a94a3;color:#fff;
  font-size:11px;text-transform:uppercase}
.o-failed .badge,.o-error .badge{background:#d0362f}
.o-passed .badge{background:#2e9b55}
.meta span{margin-right:14px;color:#4a5563}
.chaos{color:#a34a00!important;font-weight:600}
.replay{margin:4px 0}
.msg{background:#fff4f3;border:1px solid #f1c4c0;padding:6px 8px;white-space:pre-wrap;
  max-height:160px;overflow:auto}
.cut{color:#a34a00}
.toolbar{margin:8px 0;display:flex;gap:16px;align-items:center;color:#4a5563}
.timeline{border:1px solid #e3e6ea;border-radius:4px;overflow:hidden}
.ruler{position:relative;height:20px;margin-left:260px;border-bottom:1px solid #e3e6ea;
  background:#fafbfc}
.tick{position:absolute;top:0;height:20px;border-left:1px solid #c5cbd3;padding-left:2px;
  font-size:10px;color:#6b7583;white-space:nowrap}
.tick.minor{border-left-color:#e6e9ed}
.lane{display:flex;min-height:34px;border-bottom:1px solid #f0f2f4}
.lane:nth-child(even){background:#fcfcfd}
.lane[hidden]{display:none}
.lane-label{width:260px;flex:none;padding:3px 8px;white-space:nowrap;overflow:hidden;
  text-overflow:ellipsis;border-right:1px solid #e3e6ea}
.lane.child .lane-label{padding-left:26px;color:#4a5563}
.grp{display:inline-block;min-width:64px;font-size:10px;color:#6b7583;text-transform:uppercase}
.track{position:relative;flex:1;min-height:34px}
.bar{position:absolute;top:17px;height:14px;border-radius:3px;background:#9fb3c8;overflow:hidden;
  cursor:pointer;min-width:3px}
.bl{font-size:10px;padding:0 4px;white-space:nowrap;color:#102a43;line-height:14px}
.s-ok{background:#a9dfbf}
.s-fail{background:#f5b7b1}
.s-crash{background:#d98880}
.s-dead{background:#c0392b}
.s-dead .bl{color:#fff}
.s-open{background:repeating-linear-gradient(45deg,#f9e79f,#f9e79f 6px,#fcf3cf 6px,#fcf3cf 12px)}
.s-stale{background:#f8c471}
.mark{position:absolute;top:2px;height:14px;margin-left:-5px;padding-left:12px;min-width:10px;
  overflow:hidden;white-space:nowrap;text-overflow:ellipsis;cursor:pointer;z-index:2;
  font-size:10px;line-height:14px;color:#34495e}
.mark::before{content:"";position:absolute;left:0;top:2px;width:10px;height:10px;
  border-radius:50%;background:#5d6d7e;box-sizing:border-box}
.k-read::before{background:#fff;border:2px solid #85929e}
.k-fail::before{background:#e74c3c}
.k-unknown::before{background:#f39c12}
.k-note::before{background:#aab7c4}
.k-effect::before{background:#8e44ad}
.k-fault::before{background:#c0392b;border-radius:0;transform:rotate(45deg) scale(.85)}
.k-fault{color:#c0392b;font-weight:600}
.mark.sel,.bar.sel{outline:2px solid #1f6feb}
.detail{margin:6px 0;padding:6px 8px;background:#f4f6f8;border-radius:4px;white-space:pre-wrap;
  font:12px ui-monospace,monospace;min-height:2em}
table.events{border-collapse:collapse;width:100%;font:11px ui-monospace,monospace}
table.events td,table.events th{border-bottom:1px solid #eef0f3;padding:2px 6px;text-align:left;
  vertical-align:top}
.empty{padding:8px;color:#6b7583}
"""

_JS = """
(function(){
  function pct(i,n){return (i+0.5)/Math.max(n,1)*100;}
  function opts(){
    var o={};
    location.hash.replace(/^#/,'').split('&').forEach(function(p){
      if(!p)return;
      var kv=p.split('=');
      o[decodeURIComponent(kv[0])]=decodeURIComponent(kv.slice(1).join('='));
    });
    return o;
  }
  function place(sec,scale){
    var n=+sec.dataset.events,tend=+sec.dataset.tend||1;
    function x(i,t){return scale==='time'?Math.min(100,(+t)/tend*100):pct(+i,n);}
    sec.querySelectorAll('.track').forEach(function(tr){
      var ms=[].slice.call(tr.querySelectorAll('.mark')).map(function(m){
        return [x(m.dataset.i,m.dataset.t),m];}).sort(function(a,b){return a[0]-b[0];});
      ms.forEach(function(p,k){
        var room=(k+1<ms.length?ms[k+1][0]:Math.min(100,p[0]+25))-p[0];
        p[1].style.left=p[0]+'%';p[1].style.width=room+'%';});
    });
    sec.querySelectorAll('.tick').forEach(function(m){
      var i=+m.dataset.i;
      m.style.left=(scale==='time'?x(0,m.dataset.t):(i?pct(i-0.5,n):0))+'%';});
    sec.querySelectorAll('.bar').forEach(function(b){
      var a=x(b.dataset.i0,b.dataset.t0),e=b.dataset.i1===''?100:x(b.dataset.i1,b.dataset.t1);
      b.style.left=a+'%';b.style.width=Math.max(e-a,0.4)+'%';});
    sec.dataset.scale=scale;
  }
  function filter(sec,q){
    q=(q||'').toLowerCase();var shown=0,all=0;
    sec.querySelectorAll('.lane').forEach(function(l){
      all++;
      var hit=!q||l.dataset.label.toLowerCase().indexOf(q)>=0||l.dataset.group.indexOf(q)>=0;
      l.hidden=!hit;
      if(hit)shown++;
    });
    sec.querySelector('.count').textContent=shown+' of '+all+' lanes shown';
  }
  var o=opts();
  document.querySelectorAll('section.test').forEach(function(sec){
    var f=sec.querySelector('.filter'),s=sec.querySelector('.scale'),d=sec.querySelector('.detail');
    f.value=o.q||'';s.value=o.scale==='time'?'time':'order';
    f.addEventListener('input',function(){filter(sec,f.value);});
    s.addEventListener('change',function(){place(sec,s.value);});
    sec.querySelector('.timeline').addEventListener('click',function(ev){
      var el=ev.target.closest('.mark,.bar');if(!el)return;
      sec.querySelectorAll('.sel').forEach(function(x){x.classList.remove('sel');});
      el.classList.add('sel');d.textContent=el.getAttribute('title');
      var i=el.dataset.i||el.dataset.i0,row=sec.querySelector('tr[data-i="'+i+'"]');
      if(row){sec.querySelector('details').open=true;row.scrollIntoView({block:'nearest'});}
    });
    place(sec,s.value);filter(sec,f.value);
  });
  document.documentElement.dataset.bgworkJs='ready';
})();
"""


_LEGEND = (
    "Each lane is a queue message and its attempts, a KV key, a stream (open → closed), "
    "a background task, an effect or the injected faults; marks are ordered by event "
    "(switch the scale to virtual time). Hover or click for details."
)


def render(
    tests: Sequence[TestTimeline], *, title: str = "pytest-bgwork report",
    subtitle: str = "", include_passing: bool = False,
) -> str:
    """The whole page as a string: inline CSS and JS, no external resources, no timestamps."""
    shown = "every test that used bgwork" if include_passing else "failing tests"
    failed = sum(1 for t in tests if t.outcome not in ("passed", "skipped"))
    summary = f"{len(tests)} test(s) shown ({shown}); {failed} failed."
    if subtitle:
        summary += f" {subtitle}"
    body = "\n".join(_test_html(i, t) for i, t in enumerate(tests)) if tests else (
        f'<p class="empty">No {"tests used bgwork" if include_passing else "failing tests"}'
        " in this run.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{_esc(title)}</h1>
<div class="summary">{_esc(summary)} {_LEGEND}</div>
{body}
<script>{_JS}</script>
</body></html>
"""


def write(
    path: str | os.PathLike[str], tests: Sequence[TestTimeline], **kwargs: Any
) -> Path:
    """Render the page and write it to ``path`` (parent folders created); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(tests, **kwargs), encoding="utf-8")
    return target
