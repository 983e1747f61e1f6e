"""Benchmark: fire lag of ``waterwatch worker`` with 1,000,000 open matters plus a burst.

    python bench/bench_worker_firelag.py [--matters 1000000] [--burst 10000] [--window 60]
                                         [--load events|changelog] [--time-scale 1] [--quick]

Every matter is a phone ticket of category ``hydrant_fault``: one clock
(R15.2, 12 h), whose first stage, warn_50, comes 6 h (÷ time scale) after
``ticket.created``.  A ticket created at ``D - 6 h`` (in the past, so valid)
therefore has its first deadline at ``D``, and its next one 3.6 h later:
inside the run, each matter fires exactly one alert, at the instant chosen.

The ``--matters`` deadlines are spread uniformly over ``--spread`` (an hour of
policy time; ÷ time scale on the wall clock), i.e. ``matters / spread`` come
due per second.  The run observes the first ``--window`` seconds of that hour:

1. Phase A (far matters: ``matters - near``), loaded before anything is due:
   their deadlines lie in the last part of the hour, hours after the run (at
   time scale 1), so they sit in the worker's table and deadline index the
   whole time.  ``--load events`` (default) sends their ``ticket.created``
   through the worker (the load rate is measured); ``--load changelog`` writes
   the states the worker would write straight to the ``matters`` changelog and
   lets the worker recover them (the recovery time is measured).
2. Phase B (near matters: ``matters × window / spread``, deadlines uniform over
   ``[T0, T0 + window)``, plus ``--burst`` matters all due in the one second
   ``T0 + window / 2``), sent as events once phase A is in; ``T0`` is chosen
   so that phase B is loaded before it.
3. The alerts topic is read while the window passes.  Fire lag per alert =
   the record's timestamp (CreateTime, set when the worker appends it) minus
   the alert's ``data.fired_at`` (the stage's instant).  Reported for the
   spread and the burst separately; burst drain = the last burst alert's
   timestamp minus the due second.  Targets: p99 ≤ 1 s, burst drained ≤ 5 s,
   worker peak RSS (VmHWM) ≤ 1.5 GB.

Every topic, group and data dir of the run is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_common import (
    Bench,
    TicketStates,
    bootstrap,
    encode_event,
    end_offsets,
    ensure_worker_topics,
    log,
    machine_rows,
    main_thread_sched,
    parse_iso,
    pct,
    print_table,
    proc_cpu_seconds,
    produce,
    start_py_spy,
    summarize_profile,
    ticket_event,
    wait_events,
)


class AlertReader(threading.Thread):
    """Reads the alerts topic from the start: (CreateTime s, fired_at s, matter id, stage, late_by)."""

    def __init__(self, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.rows: list[tuple[float, float, str, str, Any]] = []
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            c = KafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False, fetch_max_wait_ms=100,
                              max_partition_fetch_bytes=8 * 1024 * 1024)  # fmt: skip
            parts = c.partitions_for_topic(self.topic) or set()
            c.assign([TopicPartition(self.topic, p) for p in parts])
            c.seek_to_beginning()
            while not self.stop_flag.is_set():
                for records in c.poll(timeout_ms=100, max_records=5000).values():
                    batch = []
                    for r in records:
                        d = json.loads(r.value)["data"]
                        batch.append((r.timestamp / 1000.0, parse_iso(d["fired_at"]), d["matter_id"],
                                      d.get("stage", ""), d.get("late_by")))  # fmt: skip
                    with self.lock:
                        self.rows.extend(batch)
            c.close()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for r in self.rows if r[2].startswith(prefix))


def lag_rows(label: str, lags: list[float]) -> list[tuple[str, str]]:
    if not lags:
        return [(f"{label} alerts", "0")]
    return [
        (f"{label} alerts", f"{len(lags):,}"),
        (f"{label} fire lag p50 (s)", f"{pct(lags, 50):.3f}"),
        (f"{label} fire lag p99 (s)", f"{pct(lags, 99):.3f}"),
        (f"{label} fire lag max (s)", f"{max(lags):.3f}"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matters", type=int, default=1_000_000)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--spread", type=float, default=3600.0, help="policy seconds the deadlines spread over")
    ap.add_argument("--window", type=float, default=60.0, help="wall seconds of the spread observed")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--load", choices=("events", "changelog"), default="events")
    ap.add_argument("--load-timeout", type=float, default=1800.0, help="give up loading after this many s")
    ap.add_argument("--quick", action="store_true", help="20,000 matters, burst 1,000, window 20 s")
    ap.add_argument("--py-spy", metavar="BIN", help="profile the worker during the window (stderr)")
    ap.add_argument(
        "--variant",
        default="",
        help="EXPERIMENT: flags of bench/worker_variant.py, e.g. '--no-alert-flush' or '--linger 0.005'",
    )
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.matters, args.burst, args.window = 20_000, 1_000, 20.0
    t_run = time.monotonic()
    scale = args.time_scale
    spread_wall = args.spread / scale
    window = min(args.window, spread_wall)
    n_near = round(args.matters * window / spread_wall)
    n_far = args.matters - n_near

    b = Bench("firelag", keep_logs=args.keep_logs)
    reader: AlertReader | None = None
    try:
        ts = TicketStates(scale)
        offset = ts.first_offset  # seconds from ticket.created to its first stage
        ensure_worker_topics(b)
        w = b.worker(time_scale=scale, variant=shlex.split(args.variant))
        rows_load: list[tuple[str, str]] = []

        # ---- phase A: the far matters
        t_a = int(time.time())
        far_hi = t_a + offset - 120  # created ≥ 2 min ago
        far_lo = far_hi - max(0.0, spread_wall - window)
        if n_far and far_lo < t_a + args.load_timeout + 600:
            raise SystemExit(f"time scale {scale}: the far deadlines ({far_lo - t_a:.0f} s from now) could fall "
                             "within the run; lower --time-scale")  # fmt: skip
        step = (far_hi - far_lo) / max(1, n_far)

        def far_t(i: int) -> int:
            return int(far_lo + i * step) - offset

        t0 = time.monotonic()
        if args.load == "events":
            produce(b.events_topic, (encode_event(ticket_event(f"F-{i}", far_t(i))) for i in range(n_far)))
            produce_s = time.monotonic() - t0
            log(f"phase A: {n_far:,} ticket.created produced in {produce_s:.0f} s")
            w.start()
            ready_s = w.wait_ready(timeout=120)
            first, done, at_first = wait_events(w, n_far, timeout=args.load_timeout, what="phase A load")
            load_rate = (n_far - at_first) / max(1e-9, done - first)
            log(f"phase A: loaded at {load_rate:,.0f} events/s")
            rows_load = [
                ("load", "events through the worker"),
                ("phase A produce (s)", f"{produce_s:.0f}"),
                ("phase A load events/s", f"{load_rate:,.0f}"),
                ("phase A load time (s)", f"{done - first:.0f}"),
                ("time to load 1,000,000 at that rate (min)", f"{1_000_000 / load_rate / 60:.1f}"),
            ]
        else:
            produce(b.changelog_topic, ((f"F-{i}".encode(), ts.state(f"F-{i}", far_t(i))) for i in range(n_far)))
            produce_s = time.monotonic() - t0
            log(f"phase A: {n_far:,} states written to the changelog in {produce_s:.0f} s")
            w.start()
            ready_s = w.wait_ready(timeout=args.load_timeout)
            load_rate = 600.0  # a conservative guess for phase B's event rate
            rows_load = [
                ("load", "states written to the changelog, recovered by the worker"),
                ("phase A changelog write (s)", f"{produce_s:.0f}"),
                ("phase A recovery: start to ready (s)", f"{ready_s:.1f}"),
                ("recovery matters/s", f"{n_far / ready_s:,.0f}"),
            ]
        body = w.healthz() or {}
        if int(body.get("matters_indexed", -1)) != n_far:
            log(f"WARNING: matters_indexed {body.get('matters_indexed')} != {n_far}")
        rss_after_a = w.sample_memory().get("VmRSS", 0) / 1024
        log(f"phase A done: {body}; RSS {rss_after_a:,.0f} MB")

        # ---- phase B: near matters and the burst, due after they are loaded
        n_b = n_near + args.burst
        lead = n_b / max(100.0, load_rate) * 1.5 + 10
        t0_due = int(time.time() + lead) + 1
        burst_due = int(t0_due + window / 2)
        reader = AlertReader(b.alerts_topic)
        reader.start()

        def phase_b() -> Any:
            for i in range(n_near):
                d = int(t0_due + i * window / max(1, n_near))
                yield encode_event(ticket_event(f"N-{i}", d - offset))
            for i in range(args.burst):
                yield encode_event(ticket_event(f"B-{i}", burst_due - offset))

        events_before = int(body.get("events", 0))
        produce(b.events_topic, phase_b())
        wait_events(w, events_before + n_b, timeout=max(60.0, t0_due - time.time() + 120), what="phase B load")
        b_loaded_at = time.time()
        margin = t0_due - b_loaded_at
        log(f"phase B: {n_b:,} loaded {margin:.1f} s before the first deadline")

        # ---- the window
        spy = None
        if args.py_spy:
            time.sleep(max(0.0, burst_due - 2 - time.time()))
            spy = start_py_spy(args.py_spy, w.pid, b.tmp / "profile.txt", seconds=12)
        end_at = t0_due + window
        hard_end = end_at + 300
        cpu_samples: list[tuple[float, float]] = []  # (wall time, worker CPU seconds)
        sched_samples: list[tuple[float, float, float]] = []  # (wall time, main thread on CPU, waiting)
        while True:
            now = time.time()
            cpu_samples.append((now, proc_cpu_seconds(w.pid) or 0.0))
            sched = main_thread_sched(w.pid)
            if sched is not None:
                sched_samples.append((now, *sched))
            w.sample_memory()
            if not w.alive():
                raise RuntimeError(f"worker died; log tail:\n{w.log_tail()}")
            if reader.error is not None:
                raise RuntimeError(f"alert reader failed: {reader.error!r}")
            got_b, got_n = reader.count("B-"), reader.count("N-")
            if now > end_at + 2 and got_b >= args.burst and got_n >= n_near:
                break
            if now > hard_end:
                log(f"gave up waiting: {got_b:,} of {args.burst:,} burst and {got_n:,} of {n_near:,} spread alerts")
                break
            time.sleep(0.1)
        time.sleep(1.0)
        reader.stop_flag.set()
        reader.join(timeout=30)
        final = w.healthz() or {}
        mem = w.sample_memory()
        hwm_mb = max(w.peak_hwm_kb, mem.get("VmHWM", 0)) / 1024
        stop_s = w.stop()
        if spy is not None:
            spy.wait(timeout=60)
            log("worker profile around the burst (py-spy):\n" + summarize_profile(b.tmp / "profile.txt"))
        warnings = w.log_text().count("[WARNING]")
        tracebacks = w.log_text().count("Traceback")
        timer_slow = w.log_text().count("is overlapping") + w.log_text().count("woke up too late")

        rows_all = reader.rows
        spread_lags = [ts_ - fired for ts_, fired, mid, _, _ in rows_all if mid.startswith("N-")]
        burst_rows = [(ts_, fired) for ts_, fired, mid, _, _ in rows_all if mid.startswith("B-")]
        burst_lags = [ts_ - fired for ts_, fired in burst_rows]
        far_alerts = sum(1 for r in rows_all if r[2].startswith("F-"))
        late_marked = sum(1 for r in rows_all if r[4] is not None)
        # the spread's lag outside the burst's drain (burst second .. last burst alert)
        drain_s = (max(t for t, _ in burst_rows) - burst_due) if burst_rows else float("nan")
        spread_before = [
            ts_ - fired for ts_, fired, mid, _, _ in rows_all if mid.startswith("N-") and fired < burst_due
        ]
        spread_during = [ts_ - fired for ts_, fired, mid, _, _ in rows_all
                  if mid.startswith("N-") and burst_due <= fired <= burst_due + max(0.0, drain_s)]  # fmt: skip
        spread_after = [ts_ - fired for ts_, fired, mid, _, _ in rows_all
                 if mid.startswith("N-") and fired > burst_due + max(0.0, drain_s)]  # fmt: skip
        with (b.tmp / "alerts.csv").open("w") as fh:  # kept with --keep-logs
            fh.write("create_time,fired_at,matter_id,stage,late_by\n")
            for r in rows_all:
                fh.write(",".join("" if x is None else str(x) for x in r) + "\n")
        changelog_records = sum(end_offsets(b.changelog_topic).values())

        def cpu_share(t_from: float, t_to: float) -> float:
            inside = [(t, c) for t, c in cpu_samples if t_from <= t <= t_to]
            if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
                return float("nan")
            return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

        def sched_share(t_from: float, t_to: float) -> tuple[float, float]:
            inside = [x for x in sched_samples if t_from <= x[0] <= t_to]
            if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
                return float("nan"), float("nan")
            dt = inside[-1][0] - inside[0][0]
            return (inside[-1][1] - inside[0][1]) / dt, (inside[-1][2] - inside[0][2]) / dt

        burst_run, burst_wait = sched_share(burst_due, burst_due + drain_s)
        burst_cpu = cpu_share(burst_due, burst_due + drain_s)
        quiet_cpu = cpu_share(t0_due, burst_due - 0.5)

        rows = [
            ("matters (open, indexed)", f"{args.matters:,} + burst {args.burst:,}"),
            ("time scale", f"{scale:g}"),
            *([("EXPERIMENTAL worker variant", args.variant)] if args.variant else []),
            (
                "deadline spread",
                f"{args.matters:,} over {args.spread:,.0f} policy s = {spread_wall:,.0f} wall s "
                f"({args.matters / spread_wall:,.1f} due/s)",
            ),
            ("observed window (s)", f"{window:.0f}: {n_near:,} spread deadlines, burst at +{window / 2:.0f} s"),
            *rows_load,
            ("worker startup to ready (s)", f"{ready_s:.1f}"),
            ("phase B (near + burst) loaded before T0 (s)", f"{margin:.1f}"),
            *lag_rows("spread", spread_lags),
            *lag_rows("spread, due before the burst:", spread_before),
            *lag_rows("spread, due while the burst drained:", spread_during),
            *lag_rows("spread, due after the burst drained:", spread_after),
            *lag_rows("burst", burst_lags),
            ("burst drained after the due second (s)", f"{drain_s:.2f}"),
            ("burst drain rate (alerts/s)", f"{len(burst_lags) / drain_s:,.0f}" if drain_s > 0 else "n/a"),
            ("worker CPU during the burst drain", f"{burst_cpu * 100:.0f}% of one core"),
            ("worker CPU in the window before the burst", f"{quiet_cpu * 100:.0f}% of one core"),
            (
                "burst drain: event-loop thread running / runnable-waiting / idle",
                f"{burst_run * 100:.0f}% / {burst_wait * 100:.0f}% / {max(0.0, 1 - burst_run - burst_wait) * 100:.0f}%",
            ),
            ("missing alerts spread / burst", f"{n_near - len(spread_lags):,} / {args.burst - len(burst_lags):,}"),
            ("alerts of far matters (expected 0)", f"{far_alerts:,}"),
            ("alerts marked late (late_by set)", f"{late_marked:,}"),
            ("worker RSS after phase A (MB)", f"{rss_after_a:,.0f}"),
            ("worker peak RSS VmHWM (MB, target ≤ 1,536)", f"{hwm_mb:,.0f}"),
            (
                "worker counters",
                f"events {final.get('events', 0):,}, checks sent {final.get('checks_sent', 0):,}, "
                f"checks {final.get('checks', 0):,}, alerts {final.get('alerts', 0):,}, "
                f"indexed {final.get('matters_indexed', 0):,}",
            ),
            ("changelog records", f"{changelog_records:,}"),
            ("worker stop after SIGTERM (s)", f"{stop_s:.1f}"),
            ("worker log warnings / tracebacks / timer overlaps", f"{warnings} / {tracebacks} / {timer_slow}"),
            ("bench wall time (s)", f"{time.monotonic() - t_run:.0f}"),
            *machine_rows(),
        ]
        print_table(rows)
    finally:
        if reader is not None:
            reader.stop_flag.set()
            reader.join(timeout=10)
        b.finish()


if __name__ == "__main__":
    main()
