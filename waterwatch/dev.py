"""``waterwatch dev``: the embedded default, end to end on a local broker.

It starts the local Apache Kafka (or uses ``WATERWATCH_KAFKA``), creates the
topics, publishes an events file (the bundled demo by default) to
``waterwatch.events``, reads back exactly the records this run produced,
runs them through the SLA core with a virtual clock, publishes every alert to
``waterwatch.alerts`` and prints it on the console (console delivery: no
provider credentials are needed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from waterwatch.admin import ensure_topics
from waterwatch.core.config import Config
from waterwatch.core.engine import Alert
from waterwatch.core.replay import Replayer
from waterwatch.events import EventError, parse_event
from waterwatch.masking import mask_text
from waterwatch.publish import publish_file
from waterwatch.topics import ALERTS, EVENTS

_IN_REPO = Path(__file__).resolve().parents[1] / "examples" / "demo-events.jsonl"
DEMO_EVENTS = _IN_REPO if _IN_REPO.exists() else Path.cwd() / "examples" / "demo-events.jsonl"


@dataclass
class DevSummary:
    produced: int
    rejected_lines: int
    consumed: int
    rejected_events: int
    alerts: int
    seconds: float


def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return dict(consumer.end_offsets(parts))
    finally:
        consumer.close()


def _read_from(bootstrap: str, start: dict[TopicPartition, int], timeout_s: float = 30.0) -> list[bytes]:
    """Every record from ``start`` up to the end offsets as they are now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = list(start)
        consumer.assign(parts)
        end = consumer.end_offsets(parts)
        for tp, off in start.items():
            consumer.seek(tp, off)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError("could not read back the published events in time")
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records if r.offset < end[TopicPartition(r.topic, r.partition)]]
        return values
    finally:
        consumer.close()


def describe_alert(alert: Alert, tz: Any) -> str:
    """One console line per alert; free texts are masked (no personal data on the console)."""
    from datetime import datetime

    when = datetime.fromtimestamp(alert.fired_at, tz).strftime("%Y-%m-%d %H:%M")
    late = f" (late by {alert.late_by}s)" if alert.late_by else ""
    who = ",".join(alert.notify)
    return f"{when}  {alert.type:<17} {alert.rule:<11} {alert.matter_id:<16} → {who}: {mask_text(alert.message)}{late}"


def run_dev(
    config: Config,
    bootstrap: str,
    events_file: Path = DEMO_EVENTS,
    until: int | None = None,
    echo: Callable[[str], None] = print,
) -> DevSummary:
    t0 = time.monotonic()
    ensure_topics(bootstrap)
    start = _end_offsets(bootstrap, EVENTS.name)
    summary = publish_file(events_file, bootstrap, progress=False)
    echo(f"published {summary.produced} events to {EVENTS.name} ({summary.rejected} lines rejected)")
    raw = _read_from(bootstrap, start)
    engine = config.engine()
    replayer = Replayer(engine)
    events = []
    bad = 0
    for value in raw:
        try:
            events.append(parse_event(value))
        except EventError:
            bad += 1
    events.sort(key=lambda e: e.time.timestamp())
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    alerts_out = 0

    def emit(alerts: list[Alert]) -> None:
        nonlocal alerts_out
        for a in alerts:
            body = json.dumps(a.to_event(engine.tz), ensure_ascii=False, separators=(",", ":"))
            producer.send(ALERTS.name, key=a.matter_id.encode(), value=body.encode())
            echo(describe_alert(a, engine.tz))
            alerts_out += 1

    for e in events:
        alerts, rejected = replayer.feed(e)
        emit(alerts)
        if rejected is not None:
            bad += 1
            echo(f"rejected {e.type} for {e.subject}: {rejected.rejection.reason}")
    if events:
        horizon = until if until is not None else int(events[-1].time.timestamp()) + 3 * 86400
        emit(list(replayer.run_until(horizon, inclusive=True)))
    producer.flush(30)
    producer.close()
    return DevSummary(summary.produced, summary.rejected, len(raw), bad, alerts_out, time.monotonic() - t0)
