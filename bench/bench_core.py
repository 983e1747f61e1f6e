"""Benchmark: a synthetic city-year replayed through the pure core.

    python bench/bench_core.py [--matters 200000]

Prints a table: events, matters, alerts, events/s (core only: apply + the
virtual clock's firing, events already parsed), parse rate, peak RSS, and the
load average while the core ran (on a shared machine the wall-clock rate moves
with it; the CPU-time rate much less).  Target (issue #3): ≥ 100,000 events/s
on one core with ≥ 1,000,000 events over 200,000 matters.  ``--time-ordered-input`` parses the events
in time order first (see the option's help).  See
docs/decisions/0008-core-throughput.md for where the time goes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth import city_year

from waterwatch.core import native_status
from waterwatch.core.config import load_config
from waterwatch.core.replay import Replayer, gc_paused
from waterwatch.events import parse_event


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--matters", type=int, default=200_000)
    ap.add_argument(
        "--time-ordered-input", action="store_true",
        help="parse the events in time order (as a time-ordered log is read) instead of matter by matter; "
        "the core gets the same events in the same order, but consecutive events lie next to each other in memory",
    )  # fmt: skip
    args = ap.parse_args()

    t0 = time.perf_counter()
    gen: Iterable[dict[str, Any]] = city_year(args.matters)
    if args.time_ordered_input:  # by whole seconds, stably: the replay's order below is unchanged
        gen = sorted(gen, key=lambda e: int(datetime.fromisoformat(e["time"]).timestamp() // 1))
    raw = [json.dumps(e, separators=(",", ":")).encode() for e in gen]
    del gen
    gen_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    events = [parse_event(b) for b in raw]
    parse_s = time.perf_counter() - t0
    del raw
    timed = sorted(((int(e.time.timestamp() // 1), e) for e in events), key=lambda p: p[0])
    del events
    rss_before = peak_rss_mb()

    engine = load_config().engine()
    r = Replayer(engine)
    gc.collect()
    t0 = time.perf_counter()
    c0 = time.process_time()
    alerts = 0
    with gc_paused():
        for t, e in timed:
            a, _ = r.feed(e, t=t)
            alerts += len(a)
        last = timed[-1][0]
        for _ in r.run_until(last + 30 * 86400, inclusive=True):
            alerts += 1
    core_s = time.perf_counter() - t0
    core_cpu = time.process_time() - c0
    load = os.getloadavg()
    n = len(timed)
    rows = [
        ("events", f"{n:,}"),
        ("matters", f"{r.stats.matters:,}"),
        ("rejected", f"{r.stats.rejected:,}"),
        ("alerts", f"{alerts:,}"),
        ("generate (s)", f"{gen_s:.1f}"),
        ("parse events/s", f"{n / parse_s:,.0f}"),
        ("core events/s (wall)", f"{n / core_s:,.0f}"),
        ("core events/s (CPU time)", f"{n / core_cpu:,.0f}"),
        ("core time (s)", f"{core_s:.1f}"),
        ("core µs/event (CPU time)", f"{core_cpu * 1e6 / n:.1f}"),
        ("load average 1/5/15 min", " ".join(f"{x:.2f}" for x in load)),
        ("peak RSS before core (MB)", f"{rss_before:,.0f}"),
        ("peak RSS (MB)", f"{peak_rss_mb():,.0f}"),
        ("input parsed", "in time order" if args.time_ordered_input else "matter by matter (generation order)"),
        ("core", native_status()),
        ("python", platform.python_version()),
        ("machine", f"{platform.machine()}, {platform.processor() or 'cpu'}"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"{'metric':<{w}}  value")
    print(f"{'-' * w}  {'-' * 14}")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


if __name__ == "__main__":
    main()
