"""Benchmark: the notifier's overhead per message, and its sustained deliveries/s end to end (issue #5).

    python bench/bench_notifier.py [--messages 5000] [--alerts 2000] [--quick]
        [--alert-source engine|harness] [--skip-inprocess | --skip-e2e] [--breakdown]
        [--variant no-flush] [--keep-logs]

Part 1, in process (no Kafka). N messages of realistic alerts (``engine``, the
default: alerts the real engine fires over the synthetic city of ``synth.py``,
notices left out; ``harness``: ``make_alert`` of the integration tests, mixed
levels and units). A message is one delivery: one alert to one recipient on one
channel, the channels sms, email and wecom in turn (N/3 each); its alert is
routed (``Routing.plan``, with the routing copy of part 2) for the recipient,
then each stage is timed separately with ``perf_counter_ns``, in the order the
notifier runs them:

(a) render:   ``Renderer.render(alert, channel, language)``;
(b) record:   the state machine of ``notifiers/delivery.py`` with the table's JSON:
              ``new`` → gates (quiet hours, consent) → ``gate`` → ``begin`` → ``to_json``
              (the intent, before the call), then ``succeeded`` → ``to_json`` → the
              ``waterwatch.deliveries`` record JSON (after the call);
(c) SDK call: the REAL sender (``TwilioSms``, ``SendGridEmail``, ``WeComRobot``) against
              the local fakes of tests/fakes/providers.py with latency 0.  The fakes run in
              this process (a thread each), so their own request handling is in the number;
              a bare ``http.client`` POST to the same fake is shown as the floor.

"notifier overhead" = render + record (no provider round trip); "total with
SDK call" = render + record + the call.  Target of the issue: median overhead ≤ 1 ms.

Part 2, end to end on the real broker (``WATERWATCH_KAFKA``). A real
``waterwatch notifier`` subprocess (unique topic prefix and app id, metrics
port 0, the test harness's provider environment: the real SDKs pointed at the
fakes, latency 0; a routing copy with quiet hours off, a 1 s merge window and no provider pacing).
M warning alerts (default 2,000, notify = the unit: 2 deliveries each, sms +
email) are published to the alerts topic at once; measured: first publish →
last ``sent`` record on the deliveries topic (Kafka timestamps), deliveries/s
over that span and between the 10th and 90th percentile of the ``sent``
timestamps, duplicates (provider requests per delivery id > 1, must be 0),
missing deliveries (must be 0), the notifier's CPU and peak RSS (VmHWM), and
the broker's send+flush round trip (acks=all), which the notifier pays before
every provider call ("intent before the call").

``--breakdown`` runs the notifier of part 2 through this file (``--as-notifier``):
the project's code unchanged, its methods wrapped with timers (flush, provider
call, render, table writes, the time between jobs), reported per delivery.
``--variant no-flush`` (EXPERIMENT: breaks "intent before the call") runs it
without the flush before each provider call, to measure what that flush costs.

Everything the run created (topics, consumer group, temp dirs, the subprocess)
is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import math
import os
import platform
import statistics
import sys
import time
from base64 import b64encode
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (REPO / "tests" / "integration", REPO / "tests", HERE, REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

PUBLIC_URL = "http://127.0.0.1:6067"
"""Status callbacks of part 1's SMS carry this base (as with WATERWATCH_PUBLIC_URL set)."""


# ====================================================================== helpers


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def ms3(ns: Sequence[int]) -> str:
    """median / p90 / p99 of nanosecond samples, in ms."""
    return " / ".join(f"{pct(ns, p) / 1e6:.3f}" for p in (50, 90, 99))


def code_version() -> str:
    parts = []
    for rel in ("notifiers/app.py", "notifiers/delivery.py", "notifiers/templating.py", "notifiers/routing.py"):
        try:
            parts.append(f"{Path(rel).stem} {hashlib.sha1((REPO / rel).read_bytes()).hexdigest()[:8]}")
        except OSError:
            parts.append(f"{Path(rel).stem} ?")
    return ", ".join(parts)


def load_str(load: tuple[float, float, float]) -> str:
    return f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"


# ====================================================================== alerts


def engine_alerts(n: int) -> list[dict[str, Any]]:
    """Up to ``n`` distinct alert CloudEvents (``alert.*``) the real engine fires over the synthetic city."""
    from synth import city_year

    from waterwatch.core.config import load_config
    from waterwatch.core.replay import Replayer
    from waterwatch.events import parse_event

    matters = max(100, min(4000, int(n / 1.1) + 50))
    events = sorted((parse_event(json.dumps(e).encode()) for e in city_year(matters)), key=lambda e: e.time)
    r = Replayer(load_config().engine())
    fired: list[Any] = []
    for e in events:
        fired += r.feed(e)[0]
    fired += list(r.run_until(int(events[-1].time.timestamp()) + 30 * 86400, inclusive=True))
    out = [a.to_event() for a in fired]
    return [e for e in out if str(e.get("type", "")).startswith("alert.")][:n]


def harness_alerts(n: int, units: Sequence[str]) -> list[dict[str, Any]]:
    """``make_alert`` of the integration tests: mixed levels, units and notify lists."""
    from notifier_harness import make_alert

    kinds = [
        dict(level="warning", stage="warn_50", due_in=3600, notify=["unit"]),
        dict(level="overdue", notify=["unit", "ops", "warning_group"]),
        dict(level="reminder", stage="remind", notify=["unit", "ops"]),
        dict(level="escalation", stage="escalate", notify=["unit_head", "leaders"]),
    ]
    return [make_alert(unit=units[i % len(units)], **kinds[i % len(kinds)]) for i in range(n)]  # type: ignore[arg-type]


def warning_alerts(m: int, units: Sequence[str]) -> list[dict[str, Any]]:
    """Part 2's alerts: warnings to the unit (duty sms + email), spread over the units."""
    from notifier_harness import make_alert

    return [make_alert(level="warning", unit=units[i % len(units)], stage="warn_50", due_in=3600, notify=["unit"])
            for i in range(m)]  # fmt: skip


def unit_ids() -> list[str]:
    from waterwatch.core.units import load_units

    units = load_units(REPO / "config" / "units.yaml").units
    return [u for u, spec in units.items() if spec.duty is not None and spec.duty.phone and spec.duty.email]


# ====================================================================== part 1: in process


@dataclass
class Stage:
    name: str
    ns: list[int] = field(default_factory=list)


def fired_ts(alert: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(alert["data"]["fired_at"])).timestamp()


def bare_post(base_url: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    """One HTTP POST with http.client, a new connection (as the SDK's requests to the HTTP/1.0 fake)."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def run_inprocess(n: int, source: str, config_dir: Path) -> list[tuple[str, str]]:
    from fakes.providers import FakeSendGrid, FakeTwilio, FakeWeCom
    from notifier_harness import ACCOUNT_SID, AUTH_TOKEN, SENDGRID_KEY, WECOM_KEY
    from worker_common import log

    from notifiers import delivery as dv
    from notifiers.app import _iso, _record_status
    from notifiers.channels.base import Message
    from notifiers.channels.sendgrid_email import SendGridEmail
    from notifiers.channels.twilio_sms import TwilioSms
    from notifiers.channels.wecom import WeComRobot
    from notifiers.consent import ConsentBook
    from notifiers.retry import useful_until
    from notifiers.routing import delivery_id, load_routing
    from notifiers.templating import Renderer
    from waterwatch.core.config import load_config

    t0 = time.perf_counter()
    units = unit_ids()
    distinct = engine_alerts(n) if source == "engine" else harness_alerts(min(n, 2000), units)
    if not distinct:
        raise SystemExit("no alerts generated")
    alerts = [distinct[i % len(distinct)] for i in range(n)]
    log(f"part 1: {len(distinct):,} distinct {source} alerts for {n:,} messages in {time.perf_counter() - t0:.1f} s "
        f"({dict(Counter(a['type'] for a in distinct))})")  # fmt: skip

    cfg = load_config(config_dir)
    routing = load_routing(config_dir / "routing.yaml", cfg.units)
    renderer = Renderer(units=cfg.units, policy=cfg.policy)
    consent = ConsentBook()
    quiet = routing.quiet_hours("units")

    # a target per channel for alerts whose plan lacks that channel: an overdue alert reaches all three
    from notifier_harness import make_alert

    ref = routing.plan(make_alert(level="overdue", unit=units[0], notify=["unit", "ops", "warning_group"]))
    default_target = {t.channel: t for t in reversed(ref.targets)}
    assert set(default_target) >= {"sms", "email", "wecom"}, ref

    twilio = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, latency=0.0).start()
    sendgrid = FakeSendGrid(SENDGRID_KEY, latency=0.0).start()
    wecom = FakeWeCom(latency=0.0).start()
    channels = ("sms", "email", "wecom")
    try:
        wecom_env = {t.address: WECOM_KEY for t in ref.targets if t.channel == "wecom"}
        senders = {
            "sms": TwilioSms(ACCOUNT_SID, AUTH_TOKEN, "+15005550006", base_url=twilio.base_url),
            "email": SendGridEmail(SENDGRID_KEY, "alerts@waterwatch.example.invalid", host=sendgrid.base_url),
            "wecom": WeComRobot(wecom.base_url, env=wecom_env),
        }
        render = {ch: Stage(f"render {ch}") for ch in channels}
        rec_pre = {ch: Stage("record pre") for ch in channels}
        rec_post = {ch: Stage("record post") for ch in channels}
        call = {ch: Stage(f"call {ch}") for ch in channels}
        plan_ns: list[int] = []
        mentions = 0
        clock = time.perf_counter_ns
        cpu = time.thread_time_ns  # CPU time of this thread: the same work, without time spent preempted
        cpu_over: dict[str, list[int]] = {ch: [] for ch in channels}

        # warm-up: compile every template used, open the SDKs' lazy parts (not measured)
        for a in distinct[: min(len(distinct), 200)]:
            for ch in channels:
                renderer.render(a, ch, "zh")
        log(f"part 1: measuring {n:,} messages (one delivery each, channels in turn: {', '.join(channels)})")
        t_loop = time.perf_counter()
        for i, alert in enumerate(alerts):
            t = clock()
            plan = routing.plan(alert)
            until = useful_until(alert, routing.useful)
            plan_ns.append(clock() - t)
            now = min(fired_ts(alert), until - 1.0)
            ch = channels[i % len(channels)]
            tg = next((x for x in plan.targets if x.channel == ch), None) or default_target[ch]
            # (a) render
            c0, t = cpu(), clock()
            rendered = renderer.render(alert, ch, tg.language)
            render[ch].ns.append(clock() - t)
            # (b) record, before the call: new -> gates -> gate -> begin -> table JSON
            t = clock()
            did = delivery_id(plan.alert_id, tg.recipient_key, ch)
            d = dv.new(delivery_id=did, alert=alert, recipient_key=tg.recipient_key, channel=ch,
                       address=tg.address, language=tg.language, role=tg.role, urgent=plan.urgent,
                       useful_until=until, now=now, mentions=tg.mentions, fallback=tg.fallback,
                       fallback_address=tg.fallback_address, fallback_key=tg.fallback_key)  # fmt: skip
            quiet_until = quiet.release_at(now, False)
            why = quiet.why(now) if quiet_until is not None else ""
            allowed = consent.allowed(ch, tg.address) if ch in ("sms", "email") else True
            g = dv.gate(d, now, dv.Gates(consent=allowed, quiet_until=quiet_until, quiet_reason=why))
            b = dv.begin(g, now)
            intent = b.to_json()
            callback = (f"{PUBLIC_URL}/receipts/twilio/status?{urlencode({'d': did, 'r': tg.recipient_key})}"
                        if ch == "sms" else None)  # fmt: skip
            message = Message(delivery_id=did, channel=ch, to=tg.address, language=tg.language,  # type: ignore[arg-type]
                              rendered=rendered, recipient_key=tg.recipient_key, mentions=tuple(tg.mentions),
                              status_callback=callback,
                              custom_args={"delivery_id": did, "recipient_key": tg.recipient_key})  # fmt: skip
            rec_pre[ch].ns.append(clock() - t)
            c_before = cpu() - c0
            assert g.status == "ready" and intent, g
            # (c) the provider call through the real SDK
            t = clock()
            outcome = senders[ch].send(message)
            call[ch].ns.append(clock() - t)
            mentions += ch == "wecom" and bool(tg.mentions)
            # (b) record, after the call: succeeded -> table JSON -> the deliveries record
            c0, t = cpu(), clock()
            s = dv.succeeded(b, now, outcome.provider, outcome.provider_id)
            stored = s.to_json()
            rec = {"delivery_id": s.delivery_id, "alert_id": s.alert_id, "channel": s.channel,
                   "recipient": s.recipient_key, "attempt": s.attempt, "status": _record_status(s.status),
                   "provider_id": s.provider_id, "error": s.error, "at": _iso(now),
                   "kind": s.kind, "reason": s.reason}  # fmt: skip
            out = json.dumps(rec, ensure_ascii=False).encode()
            rec_post[ch].ns.append(clock() - t)
            cpu_over[ch].append(c_before + cpu() - c0)
            assert stored and out
            if (i + 1) % 1000 == 0:
                log(f"part 1: {i + 1:,} of {n:,}")
        loop_s = time.perf_counter() - t_loop

        # the floor under an SDK call: a bare POST of a same-size form to the same fake (new connection)
        auth = "Basic " + b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        callback = f"{PUBLIC_URL}/receipts/twilio/status?d=x"
        form = urlencode({"To": default_target["sms"].address, "From": "+15005550006", "Body": "x" * 120,
                          "StatusCallback": callback}).encode()  # fmt: skip
        path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        hdrs = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
        bare: list[int] = []
        for _ in range(min(n, 1000)):
            t = clock()
            status = bare_post(twilio.base_url, path, form, hdrs)
            bare.append(clock() - t)
            assert status == 201, status
        accepted = (len(twilio.messages), len(sendgrid.messages), len([m for m in wecom.messages]))
    finally:
        for f in (twilio, sendgrid, wecom):
            f.stop()

    def record(ch: str) -> list[int]:
        return [a + b for a, b in zip(rec_pre[ch].ns, rec_post[ch].ns, strict=True)]

    over = {ch: [r + c for r, c in zip(render[ch].ns, record(ch), strict=True)] for ch in channels}
    total = {ch: [o + c for o, c in zip(over[ch], call[ch].ns, strict=True)] for ch in channels}
    all_over = [x for ch in channels for x in over[ch]]
    all_total = [x for ch in channels for x in total[ch]]
    e2e_mix = over["sms"] + over["email"]
    verdict = ", ".join(f"{ch} {'yes' if pct(over[ch], 50) <= 1e6 else 'NO'}" for ch in channels)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(Counter(a["type"] for a in distinct).items()))
    rows: list[tuple[str, str]] = [
        ("== part 1: in process, per message (no Kafka) ==", ""),
        (
            "messages (one delivery each: sms, email, wecom in turn)",
            " / ".join(f"{len(call[ch].ns):,} {ch}" for ch in channels),
        ),
        ("alerts", f"{source}: {len(distinct):,} distinct ({kinds})"),
        ("all samples below: median / p90 / p99 (ms)", ""),
        ("(a) render sms", ms3(render["sms"].ns)),
        ("(a) render email (subject + html + text)", ms3(render["email"].ns)),
        ("(a) render wecom (markdown)", ms3(render["wecom"].ns)),
        (
            "(b) record, all channels (new→gate→begin→json | succeeded→json→record)",
            ms3([x for ch in channels for x in record(ch)]),
        ),
        ("(b)   of which before the call", ms3([x for ch in channels for x in rec_pre[ch].ns])),
        ("(b)   of which after the call", ms3([x for ch in channels for x in rec_post[ch].ns])),
        ("(c) SDK call sms: TwilioSms → FakeTwilio", ms3(call["sms"].ns)),
        ("(c) SDK call email: SendGridEmail → FakeSendGrid", ms3(call["email"].ns)),
        (
            f"(c) SDK call wecom: WeComRobot → FakeWeCom ({mentions:,} of {len(call['wecom'].ns):,} + @-mention post)",
            ms3(call["wecom"].ns),
        ),
        ("(c) floor: bare http.client POST → FakeTwilio (no SDK)", ms3(bare)),
        ("NOTIFIER OVERHEAD = render + record (no provider call): sms", ms3(over["sms"])),
        ("NOTIFIER OVERHEAD: email", ms3(over["email"])),
        ("NOTIFIER OVERHEAD: wecom", ms3(over["wecom"])),
        ("NOTIFIER OVERHEAD: all 3 channels pooled", ms3(all_over)),
        ("NOTIFIER OVERHEAD: sms + email pooled (the mix of part 2)", ms3(e2e_mix)),
        (
            "  the same, CPU time of the thread (no preemption): sms / email / wecom (median)",
            " / ".join(f"{statistics.median(cpu_over[ch]) / 1e6:.3f}" for ch in channels),
        ),
        ("target median overhead ≤ 1 ms met?", verdict),
        ("TOTAL WITH SDK CALL = overhead + call: sms", ms3(total["sms"])),
        ("TOTAL WITH SDK CALL: email", ms3(total["email"])),
        ("TOTAL WITH SDK CALL: wecom", ms3(total["wecom"])),
        ("TOTAL WITH SDK CALL: all 3 channels pooled", ms3(all_total)),
        ("not in the overhead: plan per alert (routing.plan + useful_until)", ms3(plan_ns)),
        ("in-process messages/s, one thread, plan + render + record + SDK call", f"{n / loop_s:,.0f}"),
        ("fake requests accepted: twilio (+ bare POSTs) / sendgrid / wecom", " / ".join(f"{x:,}" for x in accepted)),
    ]
    return rows


# ====================================================================== part 2: end to end


def _flush_probe(topic: str, n: int) -> list[float]:
    """The broker's send+flush round trip for a delivery-intent-sized record (1.5 KB)."""
    from bench_worker_throughput import flush_probe

    return asyncio.run(flush_probe(topic, n, size=1500))


def _sms_delivery_id(r: Any) -> str | None:
    cb = (r.form or {}).get("StatusCallback")
    if not cb:
        return None
    return (parse_qs(urlsplit(cb).query).get("d") or [None])[0]


def _mail_delivery_ids(r: Any) -> list[str]:
    return [str((p.get("custom_args") or {}).get("delivery_id"))
            for p in (r.json or {}).get("personalizations", [])]  # fmt: skip


def run_e2e(args: argparse.Namespace, b: Any, config_dir: Path) -> list[tuple[str, str]]:
    from fakes.providers import FakeSendGrid, FakeTwilio, FakeWeCom, SendGridWebhookSigner
    from notifier_harness import ACCOUNT_SID, AUTH_TOKEN, SENDGRID_KEY, encode, provider_env
    from worker_common import (
        WorkerProc,
        bootstrap,
        free_port,
        log,
        main_thread_sched,
        proc_cpu_seconds,
        produce,
    )
    from worker_harness import TopicReader

    from notifiers.routing import delivery_id, load_routing
    from waterwatch.admin import ensure_topics
    from waterwatch.core.config import load_config
    from waterwatch.topics import TopicSpec

    m = args.alerts
    units = unit_ids()
    alerts = warning_alerts(m, units)
    cfg = load_config(config_dir)
    routing = load_routing(config_dir / "routing.yaml", cfg.units)
    expected: dict[str, str] = {}
    for a in alerts:
        plan = routing.plan(a)
        assert sorted(t.channel for t in plan.targets) == ["email", "sms"], plan
        for t in plan.targets:
            expected[delivery_id(plan.alert_id, t.recipient_key, t.channel)] = t.channel
    n_exp = len(expected)

    timings = b.tmp / "timings.json"
    variant: list[str] = []
    if args.breakdown:
        variant += ["--timings", str(timings)]
    if args.variant == "no-flush":
        variant += ["--no-flush"]

    twilio = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, latency=0.0).start()
    sendgrid = FakeSendGrid(SENDGRID_KEY, latency=0.0).start()
    wecom = FakeWeCom(latency=0.0).start()
    signer = SendGridWebhookSigner()
    reader: Any = None
    rows: list[tuple[str, str]] = []
    try:
        port = free_port()
        env = provider_env(twilio, sendgrid, wecom, port, signer.public_key)

        @dataclass
        class NotifierProc(WorkerProc):
            """``waterwatch notifier`` (or this file's timing wrapper around it) instead of the worker."""

            def start(self) -> None:
                import subprocess

                import worker_common as wc

                head = ([sys.executable, str(Path(__file__).resolve()), "--as-notifier", *variant, "--"] if variant
                        else [wc.WATERWATCH])  # fmt: skip
                cmd = [*head, "notifier", "--partitions", str(self.partitions), "--app-id", self.app_id,
                       "--topic-prefix", self.topic_prefix, "--data-dir", str(self.data_dir),
                       "--web-port", str(self.web_port), "--metrics-port", "0",
                       "--config", str(config_dir)]  # fmt: skip
                full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WATERWATCH_KAFKA": bootstrap(), **env}
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                fh = self.log_path.open("ab")
                self.started_at = time.monotonic()
                self.proc = subprocess.Popen(cmd, cwd=str(self.log_path.parent), env=full_env, stdout=fh,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             preexec_fn=wc._pdeathsig)  # fmt: skip
                fh.close()
                wc._LIVE.append(self.proc)

        w = NotifierProc(app_id=b.app_id, topic_prefix=b.prefix, data_dir=b.tmp / "data",
                         log_path=b.tmp / "notifier.log", partitions=args.partitions, web_port=port)  # fmt: skip
        w.data_dir.mkdir(parents=True, exist_ok=True)
        w.start()
        ready_s = w.wait_ready(timeout=120)
        how = f" (wrapped: {' '.join(variant)})" if variant else ""
        log(f"part 2: notifier pid {w.pid} ready after {ready_s:.1f} s{how}")
        reader = TopicReader(bootstrap(), f"{b.prefix}.deliveries")
        reader.poll(0.5)
        cpu0 = proc_cpu_seconds(w.pid) or 0.0
        sched0 = main_thread_sched(w.pid)
        load_before = os.getloadavg()

        records = [(a["subject"].encode(), encode(a)) for a in alerts]
        t_pub0 = time.time()
        produce(f"{b.prefix}.alerts", records)
        pub_s = time.time() - t_pub0
        log(f"part 2: {m:,} alerts published in {pub_s:.2f} s; waiting for {n_exp:,} sent records")

        sent: dict[str, list[float]] = defaultdict(list)
        statuses: Counter[str] = Counter()
        seen = 0

        def drain() -> None:
            nonlocal seen
            reader.poll(0.2)
            for r in reader.records[seen:]:
                rec = json.loads(r.value)
                statuses[rec["status"]] += 1
                if rec["status"] == "sent":
                    sent[rec["delivery_id"]].append(r.timestamp / 1000)
            seen = len(reader.records)

        timeout = max(120.0, n_exp / 20)
        deadline = time.monotonic() + timeout
        last_log = time.monotonic()
        while len(sent) < n_exp:
            drain()
            if not w.alive():
                raise RuntimeError(f"notifier exited ({w.proc.returncode if w.proc else '?'}):\n{w.log_tail()}")
            if time.monotonic() > deadline:
                log(f"part 2: TIMEOUT after {timeout:.0f} s: {len(sent):,} of {n_exp:,} sent")
                break
            if time.monotonic() - last_log > 10:
                last_log = time.monotonic()
                log(f"part 2: {len(sent):,} of {n_exp:,} sent ({len(sent) / (time.time() - t_pub0):,.0f}/s so far)")
        t_done = time.time()
        cpu1 = proc_cpu_seconds(w.pid) or 0.0
        sched1 = main_thread_sched(w.pid)
        time.sleep(2.0)  # a duplicate would show up now
        drain()
        health = w.healthz() or {}
        w.sample_memory()
        hwm_mb = w.peak_hwm_kb / 1024
        stop_s = w.stop()
        log_text = w.log_text()

        # ---- counting
        per_id: Counter[str] = Counter()
        unattributed = 0
        for r in twilio.requests:
            did = _sms_delivery_id(r)
            if did is None:
                unattributed += 1
            else:
                per_id[did] += 1
        for r in sendgrid.requests:
            ids = _mail_delivery_ids(r)
            unattributed += not ids
            for did in ids:
                per_id[did] += 1
        dup_provider = sum(c - 1 for c in per_id.values() if c > 1)
        dup_records = sum(len(v) - 1 for v in sent.values() if len(v) > 1)
        missing_sent = len(set(expected) - set(sent))
        missing_calls = len(set(expected) - set(per_id))
        unexpected = len(set(per_id) - set(expected)) + unattributed

        ts = sorted(min(v) for v in sent.values())
        rows += [
            ("== part 2: end to end, real broker, real notifier subprocess ==", ""),
            ("alerts published (warning → unit duty: sms + email)", f"{m:,} → {n_exp:,} deliveries expected"),
            ("partitions / units (recipients)", f"{args.partitions} / {len(units)} units"),
            ("notifier", "waterwatch notifier" + (f" via --as-notifier {' '.join(variant)}" if variant else "")),
            ("notifier startup to ready (s)", f"{ready_s:.1f}"),
            ("publish time (s)", f"{pub_s:.2f}"),
        ]
        if ts:
            span = ts[-1] - t_pub0
            lo, hi = pct(ts, 10), pct(ts, 90)
            k = sum(1 for x in ts if lo <= x <= hi)
            steady = (k - 1) / (hi - lo) if hi > lo else float("nan")
            cpu_share = (cpu1 - cpu0) / max(1e-9, t_done - t_pub0)
            rows += [
                ("first publish → first sent (s)", f"{ts[0] - t_pub0:.2f}"),
                ("first publish → last sent (s)", f"{span:.2f}"),
                ("deliveries/s, first publish → last sent", f"{len(ts) / span:,.1f}"),
                ("deliveries/s sustained (10th→90th pct of sent times)", f"{steady:,.1f}"),
                ("alerts/s sustained (2 deliveries each)", f"{steady / 2:,.1f}"),
                ("ms per delivery sustained (1 / rate)", f"{1e3 / steady:.2f}" if steady == steady else "nan"),
                ("notifier CPU over the span", f"{cpu_share * 100:.0f}% of one core"),
            ]
            if sched0 and sched1:
                on, waiting = sched1[0] - sched0[0], sched1[1] - sched0[1]
                rows.append(("notifier main thread on CPU / runnable but waiting (s)", f"{on:.1f} / {waiting:.1f}"))
        rows += [
            ("sent deliveries (distinct ids)", f"{len(sent):,} of {n_exp:,}"),
            ("DUPLICATES: provider requests per delivery id > 1 (must be 0)", f"{dup_provider:,}"),
            ("duplicate sent records", f"{dup_records:,}"),
            ("MISSING: no sent record / no provider request (must be 0)", f"{missing_sent:,} / {missing_calls:,}"),
            ("unexpected provider requests", f"{unexpected:,}"),
            (
                "provider requests twilio / sendgrid / wecom",
                f"{len(twilio.requests):,} / {len(sendgrid.requests):,} / {len(wecom.requests):,}",
            ),
            ("deliveries records by status", ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))),
            (
                "notifier /healthz counters",
                ", ".join(
                    f"{k} {v}" for k, v in sorted(health.items()) if isinstance(v, int) and not isinstance(v, bool)
                ),
            ),
            ("notifier peak RSS VmHWM (MB)", f"{hwm_mb:,.0f}"),
            ("notifier stop (SIGTERM → exit, s)", f"{stop_s:.1f}"),
            (
                "notifier log: Traceback / [ERROR] / [WARNING] lines",
                f"{log_text.count('Traceback')} / {log_text.count('[ERROR]')} / {log_text.count('[WARNING]')}",
            ),
            ("load average during part 2 (before → after)", f"{load_str(load_before)} → {load_str(os.getloadavg())}"),
        ]
        if args.breakdown:
            rows += breakdown_rows(timings, len(sent))

        # the broker's round trip the notifier pays before each provider call
        probe_topic = f"{b.prefix}.probe"
        ensure_topics(bootstrap(), [TopicSpec(probe_topic, "k", "flush probe", ("x",), 1,
                                              {"retention.ms": "600000"})])  # fmt: skip
        probe = _flush_probe(probe_topic, 300)
        rows.append(("aiokafka send+flush round trip, acks=all, p50 / p90 / p99 (ms)",
                     " / ".join(f"{pct(probe, p) * 1e3:.2f}" for p in (50, 90, 99))))  # fmt: skip
    finally:
        if reader is not None:
            reader.close()
        for f in (twilio, sendgrid, wecom):
            f.stop()
    return rows


def breakdown_rows(path: Path, deliveries: int) -> list[tuple[str, str]]:
    try:
        t = {k: [int(x) for x in v] for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return [("breakdown", "(no timings file: the notifier did not exit cleanly)")]

    def s(key: str) -> int:
        return sum(t.get(key, []))

    jobs = len(t.get("on_job", []))
    sends = len(t.get("_send", [])) or 1
    # The deliver agent's cycle: every job (deliver, result, due) runs through on_job; a deliver job renders and
    # writes the intent in _send, a result job writes the outcome and its deliveries record (_record).  The
    # flush and the provider calls are not in it: the sender task flushes, the send threads call providers.
    parts = [
        (
            "jobs outside _send and _record: decode, table read, gates, outcomes",
            s("on_job") - s("_send") - s("_record"),
        ),
        ("render (Notifier._message)", s("_message")),
        ("table writes (_put: intent + outcome)", s("_put")),
        ("rest of _send: intent bookkeeping, a send slot, the outbox", s("_send") - s("_message") - s("_put")),
        ("deliveries record (_record: producer.send)", s("_record")),
        ("between jobs: Faust stream, plan agent, commits, waits", s("gap")),
    ]
    total = sum(v for _, v in parts)
    rows: list[tuple[str, str]] = [
        (
            f"== breakdown per delivery ({jobs:,} jobs, {sends:,} provider sends, deliver agent's wall time) ==",
            "mean ms (share)",
        ),
    ]
    for name, v in parts:
        rows.append((f"  {name}", f"{v / sends / 1e6:.3f} ({v / total * 100:.0f}%)" if total else "?"))
    rows += [
        ("  = cycle per delivery (sum)", f"{total / sends / 1e6:.3f} → {sends / (total / 1e9):,.0f} deliveries/s"),
        (
            "  not in the cycle: the sender task's flush before its calls, median / p90 / p99 (ms)",
            ms3(t.get("flush", [])),
        ),
        (
            "  not in the cycle: provider call in a send thread, sms / email median (ms)",
            f"{pct(t.get('call_sms', []), 50) / 1e6:.3f} / {pct(t.get('call_email', []), 50) / 1e6:.3f}",
        ),
        ("  plan agent per alert (on_alert) median / p90 / p99 (ms)", ms3(t.get("on_alert", []))),
        ("  jobs seen / sent deliveries", f"{jobs:,} / {deliveries:,}"),
    ]
    return rows


# ====================================================================== the notifier, wrapped (--as-notifier)


def as_notifier(argv: list[str]) -> None:
    """``--as-notifier [--timings FILE] [--no-flush] -- notifier ARGS``: the real CLI, wrapped with timers."""
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="bench_notifier.py --as-notifier")
    ap.add_argument("--timings", type=Path)
    ap.add_argument("--no-flush", action="store_true")
    opts = ap.parse_args(argv[:cut])

    import atexit
    import logging

    import notifiers.app as na
    import notifiers.channels as nc

    samples: dict[str, list[int]] = defaultdict(list)
    clock = time.perf_counter_ns
    timing = opts.timings is not None

    def wrap_async(name: str, on_enter: Callable[[int], None] | None = None) -> None:
        real = getattr(na.Notifier, name)

        async def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
            t = clock()
            if on_enter is not None:
                on_enter(t)
            try:
                return await real(self, *a, **kw)
            finally:
                end = clock()
                samples[name].append(end - t)
                if name == "on_job":
                    last_end[0] = end

        setattr(na.Notifier, name, wrapper)

    def wrap_sync(name: str) -> None:
        real = getattr(na.Notifier, name)

        def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
            t = clock()
            try:
                return real(self, *a, **kw)
            finally:
                samples[name].append(clock() - t)

        setattr(na.Notifier, name, wrapper)

    last_end = [0]

    def gap(t: int) -> None:
        if last_end[0]:
            samples["gap"].append(t - last_end[0])

    if timing:
        wrap_async("on_job", gap)
        for name in ("on_alert", "_send", "_record"):
            wrap_async(name)
        for name in ("_message", "_put"):
            wrap_sync(name)
        real_build_senders = nc.build_senders

        def build_senders(*a: Any, **kw: Any) -> Any:
            senders = real_build_senders(*a, **kw)
            for ch in ("sms", "email", "wecom"):
                sender = senders[ch]
                real_send = sender.send

                def send(message: Any, _real: Any = real_send, _key: str = f"call_{ch}") -> Any:
                    t = clock()
                    try:
                        return _real(message)
                    finally:
                        samples[_key].append(clock() - t)

                sender.send = send
            return senders

        nc.build_senders = build_senders  # run_notifier imports it from the module when it runs

    if timing or opts.no_flush:
        real_build = na.Notifier._build

        def build(self: Any) -> Any:
            app = real_build(self)
            producer = app.producer
            real_flush = producer.flush

            async def flush() -> None:
                if sys._getframe(1).f_code.co_name != "_sender_loop":  # the flush before provider calls
                    await real_flush()
                    return
                if opts.no_flush:  # EXPERIMENT: the intent is no longer in Kafka before the call
                    return
                t = clock()
                try:
                    await real_flush()
                finally:
                    samples["flush"].append(clock() - t)

            producer.flush = flush
            return app

        na.Notifier._build = build  # type: ignore[method-assign]

    def dump() -> None:
        if opts.timings is not None:
            opts.timings.write_text(json.dumps(samples))

    atexit.register(dump)
    logging.getLogger("waterwatch.notifier").warning("BENCH WRAPPER: timings=%s no_flush=%s", timing, opts.no_flush)
    from waterwatch.cli import main as cli_main

    sys.argv = ["waterwatch", *argv[cut + 1 :]]
    try:
        cli_main()
    finally:
        dump()


# ====================================================================== main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000, help="part 1: messages (each on sms, email and wecom)")
    ap.add_argument("--alerts", type=int, default=2000, help="part 2: warning alerts (2 deliveries each)")
    ap.add_argument("--quick", action="store_true", help="500 messages, 200 alerts")
    ap.add_argument("--alert-source", choices=("engine", "harness"), default="engine", help="part 1's alerts")
    ap.add_argument("--partitions", type=int, default=8, help="part 2: the notifier's job topic partitions")
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="part 2: time the notifier's steps (wrapped methods)")
    ap.add_argument("--variant", choices=("no-flush",), help="EXPERIMENT: part 2 without the flush before the call")
    ap.add_argument("--keep-logs", action="store_true", help="keep the notifier log (temp dir) after the run")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.alerts = 500, 200
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    from notifier_harness import routing_config
    from worker_common import Bench, log, print_table

    t_run = time.perf_counter()
    load_start = os.getloadavg()
    code = code_version()
    rows: list[tuple[str, str]] = []
    b = Bench("notifier", keep_logs=args.keep_logs)
    try:
        # no provider pacing (providers: in routing.yaml): the fakes answer at once, this measures the notifier
        config_dir = routing_config(b.tmp, providers={"sms": {}, "email": {}})
        if not args.skip_inprocess:
            rows += run_inprocess(args.messages, args.alert_source, config_dir)
        if not args.skip_e2e:
            rows += run_e2e(args, b, config_dir)
    finally:
        b.finish()
        if args.keep_logs:
            log(f"notifier log: {b.tmp / 'notifier.log'}")
    code_now = code_version()
    rows += [
        ("== machine ==", ""),
        ("load average 1/5/15 min at start → end", f"{load_str(load_start)} → {load_str(os.getloadavg())}"),
        ("cpus", str(os.cpu_count())),
        ("notifier code (sha1 of file)", code if code == code_now else f"{code} (CHANGED during the run: {code_now})"),
        ("python", platform.python_version()),
        ("bench wall time (s)", f"{time.perf_counter() - t_run:.0f}"),
    ]
    print_table(rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--as-notifier"]:
        as_notifier(sys.argv[2:])
    else:
        main()
