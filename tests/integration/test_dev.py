"""`waterwatch dev` end to end on the real broker: what it prints equals what replay computes."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaConsumer, TopicPartition

from waterwatch.core.config import load_config
from waterwatch.core.replay import Rejected, replay
from waterwatch.dev import DEMO_EVENTS, run_dev
from waterwatch.events import parse_event
from waterwatch.topics import ALERTS

pytestmark = pytest.mark.integration


def _alert_ends(bootstrap: str) -> dict[TopicPartition, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(ALERTS.name, p) for p in sorted(c.partitions_for_topic(ALERTS.name) or ())]
        return dict(c.end_offsets(parts))
    finally:
        c.close()


def test_dev_round_trips_the_demo_through_kafka_and_publishes_the_alerts(kafka_bootstrap: str) -> None:
    from waterwatch.admin import ensure_topics

    ensure_topics(kafka_bootstrap)
    before = _alert_ends(kafka_bootstrap)
    cfg = load_config()
    lines: list[str] = []
    summary = run_dev(cfg, kafka_bootstrap, DEMO_EVENTS, echo=lines.append)
    assert summary.produced == summary.consumed == 28
    assert summary.rejected_events == 0

    # what replay computes for the same events, up to the same horizon
    engine = cfg.engine()
    evs = [(i, parse_event(x)) for i, x in enumerate(DEMO_EVENTS.read_text(encoding="utf-8").splitlines())]
    horizon = max(int(e.time.timestamp()) for _, e in evs) + 3 * 86400
    expected = [a.to_event(engine.tz) for a in replay(engine, evs, until=horizon) if not isinstance(a, Rejected)]
    assert summary.alerts == len(expected)

    # and exactly those alerts are on waterwatch.alerts, keyed by matter
    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        c.assign(list(before))
        for tp, off in before.items():
            c.seek(tp, off)
        got: list[dict[str, object]] = []
        for _ in range(40):
            for records in c.poll(timeout_ms=500).values():
                for r in records:
                    body = json.loads(r.value)
                    assert r.key.decode() == body["subject"]
                    got.append(body)
            if len(got) >= len(expected):
                break
    finally:
        c.close()
    assert sorted(json.dumps(g, sort_keys=True) for g in got) == sorted(json.dumps(e, sort_keys=True) for e in expected)
    # console lines carry no personal data from the demo (the reporter's phone number)
    assert not any("13912345678" in line for line in lines)


def test_live_dev_runs_worker_and_notifier_and_prints_what_people_receive(kafka_bootstrap: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The README's first command without the setup: the demo scenario, alerts as they fire, and the SMS and
    e-mail texts the console delivery prints (resident notices included: dev loads examples/residents.csv)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WATERWATCH_KAFKA": kafka_bootstrap, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    for name in ("TWILIO_ACCOUNT_SID", "SENDGRID_API_KEY", "WATERWATCH_WECOM", "WATERWATCH_WECOM_BASE_URL"):
        env.pop(name, None)  # console delivery, as on a fresh machine
    run = subprocess.run([sys.executable, "-m", "waterwatch.cli", "dev", "--for", "50"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "demo households in waterwatch.residents" in out
    assert "published ticket.created" in out and "alert.overdue" in out
    assert "── sms → +86138****" in out, out[-3000:]  # masked recipient, console delivery
    assert "停水通知" in out, "a resident pre-outage notice was delivered"
    assert "Traceback" not in out, out[-3000:]
