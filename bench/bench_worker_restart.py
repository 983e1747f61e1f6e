"""Benchmark: restart time of ``waterwatch worker`` holding M open matters.

    python bench/bench_worker_restart.py [--matters 1000000] [--load events|changelog] [--quick]

1. Load M open matters (phone tickets, hydrant_fault: one pending deadline
   each, hours away, so nothing fires during the run).  ``--load events``
   (default) sends M ``ticket.created`` through a first worker (the load rate
   is reported); ``--load changelog`` writes the states the worker would write
   straight to the ``matters`` changelog, and the first worker recovers them.
   The first worker is then stopped with SIGTERM.
2. (a) Warm restart: start again on the same data dir (local RocksDB state);
   time from process start to /healthz ready (target ≤ 30 s), and check that
   ``matters_indexed`` = M.  Stopped with SIGTERM.
3. (b) Cold restart: start on an EMPTY data dir, so the table is recovered
   from the changelog alone (target ≤ 120 s); same check.

Also reports the changelog's size (records and bytes on the broker), the time
to the first /healthz answer, stop times, and the RSS after each start.
Every topic, group and data dir of the run is deleted at the end.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_common import (
    Bench,
    TicketStates,
    WorkerProc,
    encode_event,
    end_offsets,
    ensure_worker_topics,
    log,
    machine_rows,
    print_table,
    produce,
    start_py_spy,
    summarize_profile,
    ticket_event,
    topic_bytes,
    wait_events,
)


def timed_start(w: WorkerProc, m: int, timeout: float, py_spy: str | None = None,
                profile: Path | None = None) -> dict[str, float]:  # fmt: skip
    """Start; return seconds to the first /healthz answer, to ready, and the RSS then."""
    w.start()
    spy = start_py_spy(py_spy, w.pid, profile, seconds=min(timeout, 180)) if py_spy and profile else None
    t_start = w.started_at
    first_answer: list[float] = []

    def on_poll(body: dict[str, Any]) -> None:
        if not first_answer:
            first_answer.append(time.monotonic() - t_start)
        w.sample_memory()

    body = w.wait_until(lambda bd: bool(bd.get("ready")), timeout, what="ready after restart", interval=0.05,
                        on_poll=on_poll)  # fmt: skip
    ready = time.monotonic() - t_start
    mem = w.sample_memory()
    indexed = int(body.get("matters_indexed", -1))
    if indexed != m:
        log(f"WARNING: matters_indexed {indexed:,} != {m:,} after restart")
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT (not on SIGTERM)
        spy.wait(timeout=60)
        if profile is not None:
            log("worker profile, start to ready (py-spy):\n" + summarize_profile(profile))
    return {"first_answer": first_answer[0] if first_answer else float("nan"), "ready": ready,
            "rss_mb": mem.get("VmRSS", 0) / 1024, "indexed": indexed}  # fmt: skip


def recovery_lines(text: str) -> str:
    """The worker's own 'recovered N matters' line and Faust's recovery summary, for the log."""
    keep = [ln for ln in text.splitlines()
            if re.search(r"recovered \d+ matters|Recovery complete|Restore complete|Resuming flow|"
                         r"recovery .*took|Highwater|Restoring state", ln)]  # fmt: skip
    return "\n".join(keep[-12:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matters", type=int, default=1_000_000)
    ap.add_argument("--load", choices=("events", "changelog"), default="events")
    ap.add_argument("--load-timeout", type=float, default=1800.0)
    ap.add_argument("--ready-timeout", type=float, default=600.0, help="give up on a restart after this many s")
    ap.add_argument("--quick", action="store_true", help="20,000 matters")
    ap.add_argument("--py-spy", metavar="BIN", help="profile the cold restart (stderr)")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    m = 20_000 if args.quick else args.matters
    t_run = time.monotonic()

    b = Bench("restart", keep_logs=args.keep_logs)
    try:
        ensure_worker_topics(b)
        ts = TicketStates()
        t_now = int(time.time())
        created = t_now - 600  # first deadline ~5 h 50 min away: nothing fires during the run

        def t_of(i: int) -> int:
            return created - (i % 3000)

        rows_load: list[tuple[str, str]] = []
        warm_dir = b.tmp / "data-warm"
        w1 = b.worker("worker-load", data_dir=warm_dir)
        t0 = time.monotonic()
        if args.load == "events":
            produce(b.events_topic, (encode_event(ticket_event(f"R-{i}", t_of(i))) for i in range(m)))
            produce_s = time.monotonic() - t0
            log(f"{m:,} ticket.created produced in {produce_s:.0f} s")
            w1.start()
            w1.wait_ready(timeout=120)
            first, done, at_first = wait_events(w1, m, timeout=args.load_timeout, what="load")
            rate = (m - at_first) / max(1e-9, done - first)
            rows_load = [("load", "events through the worker"), ("load events/s", f"{rate:,.0f}"),
                         ("load time (s)", f"{done - first:.0f}"),
                         ("time to load 1,000,000 at that rate (min)", f"{1_000_000 / rate / 60:.1f}")]  # fmt: skip
        else:
            produce(b.changelog_topic, ((f"R-{i}".encode(), ts.state(f"R-{i}", t_of(i))) for i in range(m)))
            produce_s = time.monotonic() - t0
            log(f"{m:,} states written to the changelog in {produce_s:.0f} s")
            w1.start()
            r = w1.wait_ready(timeout=args.ready_timeout)
            rows_load = [("load", "states written to the changelog"), ("changelog write (s)", f"{produce_s:.0f}"),
                         ("first start (recovery into an empty dir) to ready (s)", f"{r:.1f}")]  # fmt: skip
        body = w1.healthz() or {}
        log(f"loaded: {body}")
        load_rss = w1.sample_memory().get("VmRSS", 0) / 1024
        load_hwm = w1.peak_hwm_kb / 1024
        stop1 = w1.stop(timeout=120)
        log(f"first worker stopped in {stop1:.1f} s")

        records = sum(end_offsets(b.changelog_topic).values())
        sizes = topic_bytes([b.changelog_topic])
        cl_bytes = sizes.get(b.changelog_topic)
        data_bytes = sum(f.stat().st_size for f in warm_dir.rglob("*") if f.is_file())

        # ---- (a) warm: same data dir
        wa = b.worker("worker-warm", data_dir=warm_dir)
        a = timed_start(wa, m, args.ready_timeout)
        log(f"(a) warm restart ready in {a['ready']:.1f} s; recovery log:\n{recovery_lines(wa.log_text())}")
        stop_a = wa.stop(timeout=120)

        # ---- (b) cold: empty data dir, the changelog alone
        cold_dir = b.tmp / "data-cold"
        wb = b.worker("worker-cold", data_dir=cold_dir)
        c = timed_start(wb, m, args.ready_timeout, args.py_spy, b.tmp / "profile-cold.txt")
        log(f"(b) cold restart ready in {c['ready']:.1f} s; recovery log:\n{recovery_lines(wb.log_text())}")
        hwm_cold = max(wb.peak_hwm_kb, wb.sample_memory().get("VmHWM", 0)) / 1024
        stop_b = wb.stop(timeout=120)
        bad = sum(x.log_text().count("Traceback") for x in (w1, wa, wb))
        rebalances = sum(x.log_text().count("rebalancing") for x in (w1, wa, wb))

        rows = [
            ("matters (open, one pending deadline each)", f"{m:,}"),
            *rows_load,
            ("worker RSS after load (MB) / peak VmHWM", f"{load_rss:,.0f} / {load_hwm:,.0f}"),
            ("first worker stop after SIGTERM (s)", f"{stop1:.1f}"),
            ("changelog records", f"{records:,}"),
            ("changelog bytes on the broker (MB)", "n/a" if cl_bytes is None else f"{cl_bytes / 1e6:,.1f}"),
            ("local RocksDB data dir (MB)", f"{data_bytes / 1e6:,.1f}"),
            ("(a) warm restart: first /healthz answer (s)", f"{a['first_answer']:.1f}"),
            ("(a) warm restart: ready (s, target ≤ 30)", f"{a['ready']:.1f}"),
            ("(a) matters indexed after ready", f"{a['indexed']:,}"),
            ("(a) RSS at ready (MB)", f"{a['rss_mb']:,.0f}"),
            ("(a) stop after SIGTERM (s)", f"{stop_a:.1f}"),
            ("(b) cold restart: first /healthz answer (s)", f"{c['first_answer']:.1f}"),
            ("(b) cold restart: ready (s, target ≤ 120)", f"{c['ready']:.1f}"),
            ("(b) matters indexed after ready", f"{c['indexed']:,}"),
            ("(b) recovery matters/s (start to ready)", f"{m / c['ready']:,.0f}"),
            ("(b) RSS at ready (MB) / peak VmHWM", f"{c['rss_mb']:,.0f} / {hwm_cold:,.0f}"),
            ("(b) stop after SIGTERM (s)", f"{stop_b:.1f}"),
            ("worker log tracebacks / 'rebalancing' lines", f"{bad} / {rebalances}"),
            ("bench wall time (s)", f"{time.monotonic() - t_run:.0f}"),
            *machine_rows(),
        ]
        print_table(rows)
    finally:
        b.finish()


if __name__ == "__main__":
    main()
