"""Start-up: what importing the plugin costs, from ``python -X importtime``.

Run ``python bench/bench_startup.py [RUNS]`` (default 15). Each run is a fresh
``python -X importtime -c "import pytest_bgwork.plugin"``; for every module the smallest
self time over the runs is kept (the least disturbed by other load on a shared machine),
and the package's figure is the sum over ``pytest_bgwork*`` modules (pytest, its
dependencies and the editable-install finder left out). Aim: <= 30 ms, and none of the
heavy libraries loaded.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys

AIM_MS = 30.0
HEAVY = ("hypothesis", "httpx", "respx", "freezegun", "croniter", "pytest_bgwork.report_html")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def one_run() -> dict[str, int]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pytest_bgwork.plugin"],
                         capture_output=True, text=True, check=True).stderr
    return {m.group(4): int(m.group(1)) for m in map(_LINE.match, out.splitlines()) if m}


def child_cpu(code: str) -> float:
    """CPU seconds (user + system) of ``python -c code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    best: dict[str, int] = {}
    for _ in range(runs):
        for module, self_us in one_run().items():
            best[module] = min(best.get(module, self_us), self_us)
    ours = {m: t for m, t in best.items() if m.startswith("pytest_bgwork")}
    total_ms = sum(ours.values()) / 1000
    heavy = [m for m in HEAVY if m in best]
    print(f"import pytest_bgwork.plugin · -X importtime, per-module best of {runs} runs · "
          "shared 2-core machine")
    for module, self_us in sorted(ours.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {module:<40}{self_us / 1000:>7.2f} ms self")
    print(f"pytest_bgwork* modules: {len(ours)}, self time {total_ms:.1f} ms · aim <= {AIM_MS:g} ms: "
          f"{'met' if total_ms <= AIM_MS else 'MISSED'}")
    print(f"everything the import loads (pytest included): {sum(best.values()) / 1000:.0f} ms")
    print(f"heavy libraries loaded: {', '.join(heavy) if heavy else 'none'}")
    plain = plugin = float("inf")
    for _ in range(runs):  # interleaved: CPU time of the import over pytest's own
        plain = min(plain, child_cpu("import pytest"))
        plugin = min(plugin, child_cpu("import pytest, pytest_bgwork.plugin"))
    print(f"CPU time: python -c 'import pytest' {plain * 1000:.0f} ms, plus the plugin "
          f"{plugin * 1000:.0f} ms: the plugin adds {(plugin - plain) * 1000:.0f} ms of CPU "
          "(its modules and what they import beyond pytest)")


if __name__ == "__main__":
    main()
