"""Benchmark: sustained events/s of one ``waterwatch worker`` against a raw aiokafka loop.

    python bench/bench_worker_throughput.py [--events 200000] [--quick] [--times compress|shift]

1. N events of the synthetic city (``synth.city_year``, about 5.5 events per
   matter, the first N in time order) are moved to "now" (``--times
   compress``, default: one monotone map puts the whole set in the past hour,
   per-matter order kept; ``shift``: one constant shift, lifecycles unchanged,
   so the stages passed between a matter's events fire late as it is applied)
   and produced to ``<prefix>.events`` (8 partitions, key = matter id).
2. Raw baseline, same broker, same records: an aiokafka loop consumes that
   topic (its own group), produces every value to ``<prefix>.raw-out``
   (acks=all, like Faust's producer), and per fetched batch waits for the
   acks and commits.  Timed from the first record fetched to the last commit.
3. ``waterwatch worker`` (subprocess, 8 partitions, fresh group and data dir)
   processes the same topic; /healthz ``events`` is polled every 200 ms (every
   50 ms before: the polls took about 3 % of the worker's main thread) and the
   rate is taken between the first poll that sees events and the one that sees N.

Prints both rates and the ratio worker/raw (target ≥ 0.5), the worker's CPU
use over the measured span, and its counters; also the rate of the worker's
``Processor`` alone on the same records in this process (no Kafka, no Faust:
parse, decode/apply/encode), the ceiling of the worker's rate.  Every topic, group and data dir
of the run is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_common import (
    Bench,
    bootstrap,
    city_events_now,
    encode_event,
    ensure_worker_topics,
    log,
    machine_rows,
    main_thread_sched,
    pct,
    print_table,
    proc_cpu_seconds,
    produce,
    start_py_spy,
    summarize_profile,
)


async def raw_loop(src: str, dst: str, group: str, n: int, timeout: float) -> tuple[float, int]:
    """consume → produce → (acks) → commit, per fetched batch; return (seconds first→last, records)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap(), group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all", max_request_size=8 * 1024 * 1024)
    await asyncio.wait_for(producer.start(), 30)
    await asyncio.wait_for(consumer.start(), 30)
    seen = 0
    t_first: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while seen < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw loop: {seen} of {n} records after {timeout:.0f} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not batches:
                continue
            if t_first is None:
                t_first = time.perf_counter()
            futs = []
            for records in batches.values():
                for r in records:
                    futs.append(await producer.send(dst, value=r.value, key=r.key))
            await asyncio.wait_for(asyncio.gather(*futs), 60)
            await consumer.commit()
            seen += len(futs)
        assert t_first is not None
        return time.perf_counter() - t_first, seen
    finally:
        await asyncio.wait_for(consumer.stop(), 30)
        await asyncio.wait_for(producer.stop(), 30)


def processor_rates(events: list[tuple[bytes, bytes]], now: float, batch: int = 500) -> tuple[float, float, float]:
    """Events/s of the worker's Processor alone, in this process (no Kafka, no Faust), on the same records in
    order: (states decoded from their stored bytes and encoded every time, decoded states kept as the worker
    keeps them, kept and each changed matter's state encoded once per ``batch`` records as the worker does
    since 2026-11-28: records of one partition in order, a matter's records often in one batch).  The worker
    can never be faster than the last: it bounds the ratio whatever the plumbing costs."""
    from streams.processor import Processor, encode_state
    from streams.worker import config_tag, partition_for
    from waterwatch.core.config import load_config

    config = load_config()
    out = []
    for keep in (False, True):
        p = Processor(config.engine(), "x.events", state_tag=config_tag(config))
        stored: dict[bytes, bytes] = {}
        decoded: dict[bytes, Any] = {}
        t = time.perf_counter()
        for key, value in events:
            cached = decoded.pop(key, None) if keep else None
            r = p.on_event(key, value, topic="x.events", partition=0, offset=0,
                           stored=None if cached is not None else stored.get(key), now=now, cached=cached)  # fmt: skip
            if r.state is not None:
                stored[key] = r.state
                if keep and r.new_state is not None:
                    decoded[key] = r.new_state
        out.append(len(events) / (time.perf_counter() - t))
    # as the worker: per partition in order, batches of ``batch``, newest states encoded at each batch's end
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in events:
        by_partition.setdefault(partition_for(key, 8), []).append((key, value))
    ordered = [kv for part in by_partition.values() for kv in part]
    p = Processor(config.engine(), "x.events", state_tag=config_tag(config))
    stored = {}
    decoded = {}
    tag = p.state_tag
    t = time.perf_counter()
    for i in range(0, len(ordered), batch):
        pending: dict[bytes, tuple[Any, int | None]] = {}
        for key, value in ordered[i : i + batch]:
            cached = decoded.pop(key, None)
            r = p.on_event(key, value, topic="x.events", partition=0, offset=0,
                           stored=None if cached is not None else stored.get(key), now=now, cached=cached,
                           encode=False)  # fmt: skip
            if r.new_state is not None:
                pending[key] = (r.new_state, r.next_due)
                decoded[key] = r.new_state
        for key, (st, due) in pending.items():
            stored[key] = encode_state(st, due, tag)
    out.append(len(events) / (time.perf_counter() - t))
    return out[0], out[1], out[2]


async def flush_probe(topic: str, n: int = 500, size: int = 1000) -> list[float]:
    """Seconds per (send one ``size``-byte record + flush), acks=all, like the worker's per-alert flush."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all")
    await asyncio.wait_for(producer.start(), 30)
    out = []
    try:
        for i in range(n):
            t = time.perf_counter()
            await producer.send(topic, value=b"x" * size, key=str(i).encode())
            await asyncio.wait_for(producer.flush(), 30)
            out.append(time.perf_counter() - t)
    finally:
        await asyncio.wait_for(producer.stop(), 30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="20,000 events")
    ap.add_argument("--times", choices=("compress", "shift"), default="compress")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--py-spy", metavar="BIN", help="profile the worker with this py-spy binary (stderr)")
    ap.add_argument(
        "--variant",
        default="",
        help="EXPERIMENT: flags of bench/worker_variant.py, e.g. '--no-alert-flush' or '--linger 0.005'",
    )
    ap.add_argument("--keep-logs", action="store_true", help="keep the worker log (temp dir) after the run")
    args = ap.parse_args()
    n_target = 20_000 if args.quick else args.events
    t_run = time.perf_counter()

    b = Bench("tput", keep_logs=args.keep_logs)
    try:
        now = time.time()
        t0 = time.perf_counter()
        events = city_events_now(int(n_target / 5.4) + 50, end=now - 60, mode=args.times)[:n_target]
        n = len(events)
        gen_s = time.perf_counter() - t0
        matters = len({e["subject"] for e in events})
        log(f"{n:,} events of {matters:,} matters generated in {gen_s:.1f} s ({args.times})")

        ensure_worker_topics(b, args.partitions)
        from streams.worker import WorkerSettings
        from waterwatch.admin import ensure_topics
        from waterwatch.topics import TopicSpec

        raw_out = f"{b.prefix}.raw-out"
        ensure_topics(bootstrap(), [TopicSpec(raw_out, "k", "raw loop output", ("x",), args.partitions,
                                              {"retention.ms": "3600000"})])  # fmt: skip
        _ = WorkerSettings  # (topics named like the worker's own)
        records = [encode_event(e) for e in events]
        del events
        proc_plain, proc_kept, proc_batch = processor_rates(records[:20_000], now)
        log(
            f"Processor alone (in process): {proc_plain:,.0f}/s decoding every state, {proc_kept:,.0f}/s kept, "
            f"{proc_batch:,.0f}/s kept and encoded once per matter and batch"
        )
        t0 = time.perf_counter()
        produce(b.events_topic, records)
        produce_s = time.perf_counter() - t0
        del records
        log(f"produced in {produce_s:.1f} s ({n / produce_s:,.0f}/s)")

        # ---- raw baseline
        raw_group = f"{b.app_id}-raw"
        b.extra_groups.append(raw_group)
        raw_s, raw_n = asyncio.run(raw_loop(b.events_topic, raw_out, raw_group, n, timeout=max(120, n / 500)))
        raw_rate = raw_n / raw_s
        log(f"raw loop: {raw_n:,} in {raw_s:.2f} s = {raw_rate:,.0f}/s")

        probe = asyncio.run(flush_probe(raw_out))
        log(f"send+flush round trip: p50 {pct(probe, 50) * 1e3:.2f} ms, p99 {pct(probe, 99) * 1e3:.2f} ms")

        # ---- the worker
        w = b.worker(partitions=args.partitions, variant=shlex.split(args.variant))
        w.start()
        ready_s = w.wait_ready(timeout=120)
        log(f"worker ready after {ready_s:.1f} s")
        first: tuple[float, int, float] | None = None  # (time, events, cpu)
        sched0: list[tuple[float, float] | None] = [None]  # the worker's main thread: (on CPU, waiting for one)
        last_seen: list[tuple[float, int]] = []
        spy: list[Any] = [None]

        def on_poll(body: dict[str, Any]) -> None:
            nonlocal first
            ev = int(body.get("events", 0))
            t = time.perf_counter()
            if first is None and ev > 0:
                first = (t, ev, proc_cpu_seconds(w.pid) or 0.0)
                sched0[0] = main_thread_sched(w.pid)
                spy[0] = start_py_spy(args.py_spy, w.pid, b.tmp / "profile.txt", seconds=min(30, n / 1000))
            if len(last_seen) == 0 or last_seen[-1][1] != ev:
                last_seen.append((t, ev))
            w.sample_memory()

        body = w.wait_until(lambda bd: int(bd.get("events", 0)) >= n, timeout=max(300, n / 100),
                            what=f"{n} events processed", interval=0.2, on_poll=on_poll,
                            progress_key="events")  # fmt: skip
        t_last = time.perf_counter()
        cpu_last = proc_cpu_seconds(w.pid) or 0.0
        sched1 = main_thread_sched(w.pid)
        assert first is not None
        span = t_last - first[0]
        done = int(body["events"]) - first[1]
        worker_rate = done / span if span > 0 else float("nan")
        cpu_share = (cpu_last - first[2]) / span if span > 0 else float("nan")
        # let the alerts and checks that follow settle briefly, for the counters
        time.sleep(2.0)
        final = w.healthz() or body
        w.sample_memory()
        stop_s = w.stop()
        log(f"worker: {done:,} events in {span:.2f} s = {worker_rate:,.0f}/s; stopped in {stop_s:.1f} s")
        errors = w.log_text().count("Traceback")
        if spy[0] is not None:
            spy[0].wait(timeout=60)
            log("worker profile (py-spy, during the measured span):\n" + summarize_profile(b.tmp / "profile.txt"))

        batches = int(final.get("batches", 0))
        records = int(final.get("events", 0)) + int(final.get("checks", 0))
        rows = [
            ("events", f"{n:,}"),
            ("matters", f"{matters:,}"),
            ("event times", f"{args.times} (set ends 60 s before the run)"),
            ("partitions", str(args.partitions)),
            *([("EXPERIMENTAL worker variant", args.variant)] if args.variant else []),
            ("produce events/s", f"{n / produce_s:,.0f}"),
            ("raw consume→produce→commit events/s", f"{raw_rate:,.0f}"),
            ("raw time (s)", f"{raw_s:.2f}"),
            (
                "aiokafka send+flush round trip p50 / p99 (ms)",
                f"{pct(probe, 50) * 1e3:.2f} / {pct(probe, 99) * 1e3:.2f}",
            ),
            ("worker startup to ready (s)", f"{ready_s:.1f}"),
            ("worker events/s (first→last)", f"{worker_rate:,.0f}"),
            ("worker time (s)", f"{span:.2f} for {done:,} events"),
            ("worker CPU over that span", f"{cpu_share * 100:.0f}% of one core"),
            (
                "worker main thread: on a CPU / runnable, waiting for one (s)",
                f"{sched1[0] - sched0[0][0]:.2f} / {sched1[1] - sched0[0][1]:.2f}"
                if sched1 is not None and sched0[0] is not None
                else "n/a",
            ),
            ("ratio worker/raw (target ≥ 0.5)", f"{worker_rate / raw_rate:.3f}"),
            (
                "Processor alone in process, no Kafka: events/s (first 20,000)",
                f"{proc_plain:,.0f} decoding each state, {proc_kept:,.0f} with decoded states kept, "
                f"{proc_batch:,.0f} also encoded once per matter and batch (as the worker)",
            ),
            ("  its ratio to raw (the ceiling of the worker's)", f"{proc_batch / raw_rate:.3f}"),
            (
                "worker alerts / deadletters / dup",
                f"{final.get('alerts', 0):,} / {final.get('deadletters', 0):,} / {final.get('duplicates', 0):,}",
            ),
            ("worker checks sent / processed", f"{final.get('checks_sent', 0):,} / {final.get('checks', 0):,}"),
            ("worker batches (records per batch)", f"{batches:,} ({records / max(1, batches):,.1f})"),
            ("worker matters indexed", f"{final.get('matters_indexed', 0):,}"),
            ("worker peak RSS VmHWM (MB)", f"{w.peak_hwm_kb / 1024:,.0f}"),
            ("worker log tracebacks", str(errors)),
            ("bench wall time (s)", f"{time.perf_counter() - t_run:.0f}"),
            *machine_rows(),
        ]
        print_table(rows)
    finally:
        b.finish()


if __name__ == "__main__":
    main()
