"""Benchmark: a synthetic residents CSV, its import validation, and the notifier's resident directory.

    python bench/synth_residents.py [--households 100000] [--others 10000] [--seed 7]
                                    [--csv PATH] [--broker]

Writes a deterministic CSV (``--households`` in one outage area, Gulou
sub-district: two compounds and the sub-district itself, all in supply zone
3; ``--others`` spread over the other districts), then measures, each step in
a fresh child process so its memory is its own:

* validation: ``waterwatch residents import --dry-run`` (rows/s, peak RSS);
* the directory: built from the ``Resident`` JSON records as the notifier
  reads them off the compacted topic (records/s, RSS growth, RSS of the whole
  process), then ``resolve`` of the outage area (district + both compounds +
  the zone: every household reached up to four times, yielded once) per
  channel, ``count``, a resume from the middle, and duplicates/missing
  against a brute-force check (both must be 0);
* with ``--broker``: the real import to a temporary topic on
  ``WATERWATCH_KAFKA`` (or the local broker) and the directory rebuilt by
  reading that topic back, then the topic is deleted.

Prints a table.  ``--csv PATH`` keeps the generated file.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import platform
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEADER = ["account", "name", "phone", "email", "language", "districts", "compounds", "zones",
          "sms_consent", "email_consent"]  # fmt: skip
OUTAGE_AREA: dict[str, list[str]] = {
    "districts": ["gulou"],
    "compounds": ["yinhe-garden", "fenghuang-yuan"],
    "zones": ["zone-3"],
}
TARGET_COMPOUNDS = ["yinhe-garden", "fenghuang-yuan", ""]  # "" = listed only by sub-district
OTHER_PLACES = [  # (districts, compounds, zones) outside the outage area
    ("chiping", "chiping-xincheng", ""), ("linqing", "", ""), ("", "kaifa-jiayuan", ""),
    ("liuyuan", "yuxin-street-1", "zone-4"), ("", "hubin-garden", ""), ("yanggu", "", ""), ("", "", "zone-1"),
]  # fmt: skip
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚"


# ------------------------------------------------------------------ the synthetic file


def write_csv(path: Path, households: int, others: int, seed: int) -> dict[str, int]:
    """Write the CSV; return the expected reach of the outage area per channel."""
    rnd = random.Random(seed)
    expect = {"sms": 0, "email": 0}
    total = households + others
    order = list(range(total))
    rnd.shuffle(order)  # accounts are not in file order
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(total):
            account = f"{3710000000 + order[i]:010d}"
            in_area = i < households
            name = rnd.choice(SURNAMES) + rnd.choice(GIVEN) + (rnd.choice(GIVEN) if rnd.random() < 0.6 else "")
            has_phone = rnd.random() < 0.97
            has_email = rnd.random() < 0.55 or not has_phone
            phone = f"+86138{i:08d}" if has_phone else ""
            email = f"h{i}@example.invalid" if has_email else ""
            lang = "en" if rnd.random() < 0.03 else "zh"
            sms_ok = rnd.random() >= 0.04
            email_ok = rnd.random() >= 0.10
            if in_area:
                compound = rnd.choice(TARGET_COMPOUNDS)
                districts = "gulou" if (not compound or rnd.random() < 0.5) else ""
                zones = "zone-3" if rnd.random() < 0.3 else ""
                expect["sms"] += bool(has_phone and sms_ok)
                expect["email"] += bool(has_email and email_ok)
            else:
                districts, compound, zones = rnd.choice(OTHER_PLACES)
            w.writerow([account, name, phone, email, lang, districts, compound, zones,
                        "yes" if sms_ok else "no", "yes" if email_ok else "no"])  # fmt: skip
    return expect


# ------------------------------------------------------------------ measurements (child processes)


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _validate(path: str) -> dict[str, Any]:
    from waterwatch.residents import import_csv, load_registry

    registry = load_registry(REPO / "config")
    base = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    s = import_csv(Path(path), registry, dry_run=True, progress=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"rows": s.read, "valid": s.valid, "rejected": s.rejected, "seconds": dt, "cpu": cpu,
            "peak_rss": peak_rss_mb(), "base_rss": base}  # fmt: skip


def _records(path: str) -> list[tuple[bytes, bytes]]:
    """The (key, value) records the import would produce, as bytes (what a consumer receives)."""
    from waterwatch.residents import check_csv, load_registry

    registry = load_registry(REPO / "config")
    out = []
    for row in check_csv(Path(path), registry):
        if row.resident is not None:
            out.append((row.resident.account.encode(), row.resident.model_dump_json(exclude_none=True).encode()))
    return out


def _directory(path: str, expect: dict[str, int], from_topic: tuple[str, str] | None) -> dict[str, Any]:
    import gc

    from waterwatch.residents import ResidentDirectory

    out: dict[str, Any] = {}
    if from_topic is None:
        records = _records(path)
        source = "records in memory"
    else:
        t0 = time.perf_counter()
        records = _read_topic(*from_topic)
        out["read_topic_s"] = time.perf_counter() - t0
        source = "the topic"
    out["source"] = source
    gc.collect()
    base = rss_mb()
    d = ResidentDirectory()
    t0, c0 = time.perf_counter(), time.process_time()
    for key, value in records:
        d.apply(key, value)
    out["build_s"] = time.perf_counter() - t0
    out["build_cpu"] = time.process_time() - c0
    out["n"] = len(d)
    del records
    gc.collect()
    out["dir_mb"] = rss_mb() - base
    out["deep_mb"] = deep_size(d) / 2**20
    out["proc_rss"] = rss_mb()
    for channel in ("sms", "email"):
        t0 = time.perf_counter()
        it = d.resolve(OUTAGE_AREA, channel)
        first = next(it, None)
        t_first = time.perf_counter() - t0
        accounts = [first.account] if first else []
        accounts.extend(h.account for h in it)
        out[f"{channel}_s"] = time.perf_counter() - t0
        out[f"{channel}_first_s"] = t_first
        out[f"{channel}_n"] = len(accounts)
        out[f"{channel}_dup"] = len(accounts) - len(set(accounts))
        out[f"{channel}_missing"] = expect[channel] - len(set(accounts))
        out[f"{channel}_sorted"] = accounts == sorted(accounts)
        t0 = time.perf_counter()
        out[f"{channel}_count"] = d.count(OUTAGE_AREA, channel)
        out[f"{channel}_count_s"] = time.perf_counter() - t0
        if accounts:
            mid = accounts[len(accounts) // 2]
            t0 = time.perf_counter()
            rest = [h.account for h in d.resolve(OUTAGE_AREA, channel, after_account=mid)]
            out[f"{channel}_resume_s"] = time.perf_counter() - t0
            out[f"{channel}_resume_ok"] = accounts[: len(accounts) // 2 + 1] + rest == accounts
    out["peak_rss"] = peak_rss_mb()
    return out


def deep_size(d: Any) -> int:
    """Bytes of every object the directory holds (each counted once): a check on the RSS growth."""
    seen: set[int] = set()
    total = 0
    stack: list[Any] = [d._entries, d._index, d._area_tuples]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, tuple | list | set):
            stack.extend(obj)
    return total


def _read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    from kafka import KafkaConsumer, TopicPartition

    from waterwatch.admin import supported_configs

    consumer = KafkaConsumer(**supported_configs(
        KafkaConsumer, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 2**20, fetch_max_bytes=64 * 2**20,
    ))  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 300
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
                out.extend((r.key, r.value) for r in batch)
        return out
    finally:
        consumer.close()


def _import(path: str, bootstrap: str, topic: str) -> dict[str, Any]:
    from waterwatch.residents import import_csv, load_registry

    registry = load_registry(REPO / "config")
    t0 = time.perf_counter()
    s = import_csv(Path(path), registry, bootstrap=bootstrap, topic=topic, progress=False)
    return {"produced": s.produced, "failed": s.failed, "seconds": time.perf_counter() - t0, "peak_rss": peak_rss_mb()}


def in_child(fn: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--households", type=int, default=100_000, help="households in the outage area")
    ap.add_argument("--others", type=int, default=10_000, help="households elsewhere")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--csv", type=Path, default=None, help="keep the generated CSV here")
    ap.add_argument("--broker", action="store_true", help="also import to a temporary topic and read it back")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="ww-residents-")
    path = args.csv or Path(tmp.name) / "residents.csv"
    t0 = time.perf_counter()
    expect = write_csv(path, args.households, args.others, args.seed)
    gen_s = time.perf_counter() - t0
    size_mb = path.stat().st_size / 2**20
    total = args.households + args.others

    v = in_child(_validate, str(path))
    rows: list[tuple[str, str]] = [
        ("households (in area + others)", f"{total:,} ({args.households:,} + {args.others:,})"),
        ("CSV size (MB) / generate (s)", f"{size_mb:.1f} / {gen_s:.1f}"),
        ("validate --dry-run: wall / CPU (s)", f"{v['seconds']:.2f} / {v['cpu']:.2f}"),
        ("validate rows/s (wall / CPU)", f"{v['rows'] / v['seconds']:,.0f} / {v['rows'] / v['cpu']:,.0f}"),
        ("validate valid / rejected", f"{v['valid']:,} / {v['rejected']:,}"),
        ("validate peak RSS (MB)", f"{v['peak_rss']:.0f} (interpreter + imports {v['base_rss']:.0f})"),
    ]

    topic = None
    if args.broker:
        from waterwatch import kafka_local

        bootstrap = kafka_local.bootstrap_servers()
        topic = f"wwbench.residents-{uuid.uuid4().hex[:10]}"
        try:
            imp = in_child(_import, str(path), bootstrap, topic)
            rows += [
                ("import to Kafka (s)", f"{imp['seconds']:.2f}"),
                ("import produced records/s", f"{imp['produced'] / imp['seconds']:,.0f}"),
                ("import produced / not delivered", f"{imp['produced']:,} / {imp['failed']:,}"),
                ("import peak RSS (MB)", f"{imp['peak_rss']:.0f}"),
            ]
            d = in_child(_directory, str(path), expect, (bootstrap, topic))
            rows.append(("read the topic back (s)", f"{d['read_topic_s']:.2f}"))
        finally:
            from waterwatch.admin import delete_topics

            delete_topics(bootstrap, [topic])
    else:
        d = in_child(_directory, str(path), expect, None)

    rows += [
        (
            f"directory build from {d['source']}: wall / CPU (s)",
            f"{d['build_s']:.2f} / {d['build_cpu']:.2f} ({d['n'] / d['build_cpu']:,.0f} records/s CPU)",
        ),
        ("directory households", f"{d['n']:,}"),
        ("directory size: RSS growth (MB)", f"{d['dir_mb']:.0f} ({d['dir_mb'] * 2**20 / max(d['n'], 1):,.0f} B each)"),
        (
            "directory size: its objects (MB)",
            f"{d['deep_mb']:.0f} ({d['deep_mb'] * 2**20 / max(d['n'], 1):,.0f} B each)",
        ),
        ("process RSS with the directory (MB)", f"{d['proc_rss']:.0f} (peak {d['peak_rss']:.0f})"),
    ]
    for ch in ("sms", "email"):
        rows += [
            (f"resolve {ch}: households", f"{d[f'{ch}_n']:,} (expected {expect[ch]:,})"),
            (f"resolve {ch}: first / all (s)", f"{d[f'{ch}_first_s']:.3f} / {d[f'{ch}_s']:.3f}"),
            (f"resolve {ch}: duplicates / missing", f"{d[f'{ch}_dup']} / {d[f'{ch}_missing']}"),
            (f"resolve {ch}: sorted, resume ok", f"{d[f'{ch}_sorted']}, {d.get(f'{ch}_resume_ok')}"),
            (f"count {ch} (s)", f"{d[f'{ch}_count_s']:.3f} ({d[f'{ch}_count']:,})"),
        ]
    rows += [
        ("python", platform.python_version()),
        ("machine", f"{platform.machine()}, {os.cpu_count()} CPUs"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"{'metric':<{w}}  value")
    print(f"{'-' * w}  {'-' * 14}")
    for k, val in rows:
        print(f"{k:<{w}}  {val}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
