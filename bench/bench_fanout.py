"""Benchmark: resident fan-out of one ``notice.due`` to N households (default 100,000) in one outage area.

    WATERWATCH_KAFKA=127.0.0.1:9092 python bench/bench_fanout.py [--households 100000] [--others 2000]
                                                                 [--limit 1800] [--partitions 8]

Produces N ``Resident`` records (every household a phone, two in three an
e-mail, 1 % opted out of SMS) plus ``--others`` outside the area to a fresh
compacted residents topic, starts a real ``waterwatch notifier`` subprocess
against fake Twilio and SendGrid that answer at once (the real SDKs over
HTTP), publishes one ``pre_outage`` notice for the area and measures:

* directory catch-up (notifier start → /healthz ready) and time to expand
  (the notifier's ``jobs planned in X s`` log line);
* sends/s per channel (first to last request at the fake);
* duplicates (must be 0) and missing (must be 0) against the expected sets;
* peak RSS of the notifier (VmHWM; target ≤ 500 MB).

``--limit`` stops waiting after that many seconds and reports what was
measured so far (missing then counts what had not been sent yet). Prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "integration")]

AREA = "yinhe-garden"


def rss_peak_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB from /proc."""
    cur = peak = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return cur, peak


def residents(n: int, others: int) -> Any:
    from waterwatch.events import Resident

    for i in range(n + others):
        inside = i < n
        email = None if i % 3 == 2 else f"b{i}@example.invalid"
        yield Resident(account=f"B{i:07d}", phone=f"+86139{i:08d}", email=email,
                       language="en" if i % 9 == 0 else "zh", compounds=[AREA] if inside else ["fenghuang-yuan"],
                       consent={"sms": i % 100 != 7, "email": True})  # fmt: skip


def notice(matter: str, tz: Any) -> dict[str, Any]:
    now = datetime.now(tz)
    start = now + timedelta(hours=49)
    aid = f"{matter}/R19.1/pre_notice/v1/pre_notice"
    return {"specversion": "1.0", "id": aid, "source": "waterwatch/engine", "type": "notice.due",
            "time": now.isoformat(), "subject": matter, "datacontenttype": "application/json",
            "data": {"alert_id": aid, "matter_id": matter, "matter_kind": "outage", "rule": "R19.1",
                     "clock": "pre_notice", "level": "notice", "stage": "pre_notice", "due_at": now.isoformat(),
                     "fired_at": now.isoformat(), "unit": "runda", "notify": ["residents"], "notice": "pre_outage",
                     "message": "R19.1: resident notice pre_outage due",
                     "context": {"area": {"compounds": [AREA], "description": "银河花园"},
                                 "cause": "更换 DN300 阀门 valve replacement", "outage_kind": "planned",
                                 "starts_at": start.isoformat(),
                                 "expected_end_at": (start + timedelta(hours=7)).isoformat()}}}  # fmt: skip


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--others", type=int, default=2_000)
    ap.add_argument("--limit", type=float, default=1800.0, help="seconds to wait for the sends")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--paced", action="store_true",
                    help="pace provider calls as config/routing.yaml ships (default: unpaced, the notifier's capacity)")
    args = ap.parse_args()

    from fakes.providers import FakeSendGrid, FakeTwilio, FakeWeCom, SendGridWebhookSigner
    from kafka_helpers import delete_with_prefix, unique_name
    from notifier_harness import AUTH_TOKEN, SENDGRID_KEY, NotifierProcess, encode, provider_env, routing_config
    from worker_harness import TZ, Producer, free_port

    from waterwatch.admin import ensure_topics
    from waterwatch.topics import RESIDENTS

    bootstrap = os.environ.get("WATERWATCH_KAFKA", "127.0.0.1:9092")
    base = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    prefix = unique_name("bench-fanout")
    twilio = FakeTwilio("AC" + "0" * 30 + "12", AUTH_TOKEN).start()
    sendgrid = FakeSendGrid(SENDGRID_KEY).start()
    wecom = FakeWeCom().start()
    port = free_port()
    env = provider_env(twilio, sendgrid, wecom, port, SendGridWebhookSigner().public_key)
    env["WATERWATCH_PUBLIC_URL"] = ""  # no status callbacks requested
    # unpaced: what the notifier can do; e-mails still go in SendGrid batches (providers.email.batch)
    pacing: dict[str, Any] = {} if args.paced else {"providers": {"sms": {}, "email": {"batch": 1000,
                                                                                      "batch_wait": "1s"}}}
    proc = NotifierProcess(bootstrap=bootstrap, topic_prefix=prefix, app_id=f"{prefix}-notifier",
                           data_dir=base / "data", log_path=base / "notifier.log", web_port=port,
                           partitions=args.partitions, config_dir=routing_config(base, **pacing),
                           extra_env=env)  # fmt: skip
    proc.data_dir.mkdir(parents=True, exist_ok=True)
    producer = Producer(bootstrap)
    pacing_row = "as config/routing.yaml ships" if args.paced else "none (capacity); e-mail batches of up to 1,000"
    rows: list[tuple[str, str]] = [("provider pacing", pacing_row), ("households in the area", f"{args.households:,}"),
                                   ("households outside", f"{args.others:,}")]
    want_sms: set[str] = set()
    want_mail: set[str] = set()
    try:
        topic = f"{prefix}.residents"
        ensure_topics(bootstrap, [dataclasses.replace(RESIDENTS, name=topic)])
        t0 = time.monotonic()
        batch: list[tuple[bytes, bytes]] = []
        for r in residents(args.households, args.others):
            if AREA in r.compounds:
                if r.phone and r.consent["sms"]:
                    want_sms.add(r.phone)
                if r.email:
                    want_mail.add(r.email)
            batch.append((r.account.encode(), r.model_dump_json(exclude_none=True).encode()))
            if len(batch) >= 5000:
                producer.send(topic, batch)
                batch = []
        producer.send(topic, batch)
        rows.append(("residents produced", f"{time.monotonic() - t0:.1f} s"))

        t0 = time.monotonic()
        proc.start().wait_ready(timeout=600)
        assert proc.proc is not None
        pid = proc.proc.pid
        rows.append(("notifier ready (directory caught up)", f"{time.monotonic() - t0:.1f} s"))
        rows.append(("notifier RSS when ready", f"{rss_peak_mb(pid)[0]:.0f} MB"))

        alert = notice(unique_name("O"), TZ)
        t_pub = time.time()
        producer.send(f"{prefix}.alerts", [(alert["subject"].encode(), encode(alert))])
        deadline = time.monotonic() + args.limit
        peak = 0.0
        last_print = 0.0
        while time.monotonic() < deadline and proc.alive:
            peak = max(peak, rss_peak_mb(pid)[1])
            n_sms = len(twilio.requests)
            n_mail = sum(len((r.json or {}).get("personalizations", [])) for r in sendgrid.requests)
            if n_sms >= len(want_sms) and n_mail >= len(want_mail):
                break
            if time.monotonic() - last_print > 30:
                print(f"  {time.monotonic() - deadline + args.limit:6.0f} s: {n_sms:,} sms, {n_mail:,} e-mails, "
                      f"RSS {rss_peak_mb(pid)[0]:.0f} MB", flush=True)  # fmt: skip
                last_print = time.monotonic()
            time.sleep(1.0)
        time.sleep(2.0)
        peak = max(peak, rss_peak_mb(pid)[1])
        log = proc.log_text()
        m = re.search(r"(\d+) targeted, (\d+) jobs planned in ([0-9.]+) s", log)
        rows.append(("time to expand (jobs planned)", f"{m.group(3)} s ({int(m.group(2)):,} jobs)" if m else "n/a"))
        sms = Counter(r.form["To"] for r in twilio.requests if r.form and r.form.get("To"))
        mails: Counter[str] = Counter()
        for r in sendgrid.requests:
            for p in (r.json or {}).get("personalizations", []):
                for t in p.get("to", []):
                    mails[t["email"]] += 1
        for ch, got, want, reqs in (("sms", sms, want_sms, twilio.requests), ("email", mails, want_mail,
                                                                                sendgrid.requests)):  # fmt: skip
            # one time per message: a SendGrid request carries one e-mail per personalization
            times = sorted(t for r in reqs for t in [r.at] * max(1, len((r.json or {}).get("personalizations", []))))
            dupes = sum(n - 1 for n in got.values() if n > 1)
            rows.append((f"{ch}: sent / expected", f"{len(got):,} / {len(want):,}"))
            rows.append((f"{ch}: sends/s", f"{rate(times):.0f}"))
            rows.append((f"{ch}: duplicates", str(dupes)))
            rows.append((f"{ch}: missing", f"{len(want - set(got)):,}"))
            rows.append((f"{ch}: outside the area", str(len(set(got) - want))))
            if times:
                rows.append((f"{ch}: last send after publish", f"{times[-1] - t_pub:.0f} s"))
            if ch == "email" and reqs:
                sizes = [len((r.json or {}).get("personalizations", [])) for r in reqs]
                rows.append(("email: SendGrid requests (personalizations mean / max)",
                             f"{len(reqs):,} ({sum(sizes) / len(sizes):.0f} / {max(sizes)})"))  # fmt: skip
        rows.append(("peak notifier RSS (VmHWM)", f"{peak:.0f} MB (target <= 500)"))
        rows.append(("complete", "yes" if len(sms) >= len(want_sms) and len(mails) >= len(want_mail)
                     else f"no (stopped after {args.limit:.0f} s)"))  # fmt: skip
    finally:
        proc.kill()
        producer.close()
        for f in (twilio, sendgrid, wecom):
            f.stop()
        delete_with_prefix(bootstrap, prefix)
    width = max(len(k) for k, _ in rows)
    print(f"\nresident fan-out benchmark ({args.partitions} job partitions, fakes answer at once)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
