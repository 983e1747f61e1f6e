"""Round trips through the real Kafka broker: kafka-python, Faust, publish, topic checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from kafka_helpers import consume_all, produce
from typer.testing import CliRunner

from waterwatch.admin import TopicMismatch, describe, ensure_topics
from waterwatch.cli_publish import publish
from waterwatch.events import parse_event
from waterwatch.publish import publish_file
from waterwatch.topics import EVENTS, TopicSpec

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def spec(name: str, partitions: int | None) -> TopicSpec:
    return TopicSpec(
        name=name,
        key="matter id",
        description="test topic",
        messages=("input",),
        partitions=partitions,
        configs={"retention.ms": str(3600 * 1000), "cleanup.policy": "delete"},
    )


def event(i: int, subject: str | None = None) -> dict[str, object]:
    """A valid input event; alternates types so several data models travel."""
    subject = subject or f"WO-{i % 7:03d}"
    base: dict[str, object] = {
        "specversion": "1.0",
        "id": f"evt-{i:05d}",
        "source": "test/roundtrip",
        "time": f"2025-03-03T09:{i % 60:02d}:00+08:00",
        "subject": subject,
    }
    if i % 2:
        return {
            **base,
            "type": "meter.read",
            "data": {"meter_id": f"m{i}", "account": f"a{i}", "period": "2025-03"},
        }
    return {
        **base,
        "type": "ticket.dispatched",
        "data": {"unit": "runda", "note": "派发 dispatch 水表"},
    }


def encode(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


# ----------------------------------------------------------------- (a) kafka-python


def test_kafka_python_round_trip(kafka_bootstrap: str, unique_topic_prefix: str) -> None:
    topic = f"{unique_topic_prefix}.events"
    assert ensure_topics(kafka_bootstrap, [spec(topic, 3)]) == [topic]
    assert describe(kafka_bootstrap, [topic]) == {topic: 3}

    sent = [event(i) for i in range(30)]
    produce(kafka_bootstrap, topic, [(str(e["subject"]).encode(), encode(e)) for e in sent])

    records = consume_all(kafka_bootstrap, topic, len(sent), timeout=30)
    assert len(records) == len(sent)
    got = {}
    for rec in records:
        parsed = parse_event(rec.value)
        assert rec.key == parsed.subject.encode("utf-8")
        got[parsed.id] = parsed
    expected = {str(e["id"]): parse_event(encode(e)) for e in sent}
    assert got == expected
    # same key, same partition: per-matter order holds
    by_subject: dict[bytes, set[int]] = {}
    for rec in records:
        by_subject.setdefault(rec.key, set()).add(rec.partition)
    assert all(len(parts) == 1 for parts in by_subject.values())


# ------------------------------------------------------------------------ (b) Faust


def test_faust_agent_forwards_every_event_id(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    partitions = 4
    source, sink = f"{unique_topic_prefix}.in", f"{unique_topic_prefix}.out"
    ensure_topics(kafka_bootstrap, [spec(source, partitions), spec(sink, partitions)])
    sent = [event(i) for i in range(40)]
    produce(kafka_bootstrap, source, [(str(e["subject"]).encode(), encode(e)) for e in sent])

    log_path = tmp_path / "faust.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "WW_BROKER": kafka_bootstrap,
        "WW_APP_ID": f"{unique_topic_prefix}-app",
        "WW_SOURCE": source,
        "WW_SINK": sink,
        "WW_PARTITIONS": str(partitions),
        "WW_DATADIR": str(tmp_path / "faust-data"),
        "WW_MAX_SECONDS": "150",
    }
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faust_forwarder"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            records = consume_all(
                kafka_bootstrap,
                sink,
                len(sent),
                timeout=120,
                give_up=lambda: proc.poll() is not None,
                settle=1.0,
            )
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    log_tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])

    ids = [rec.value.decode() for rec in records]
    assert sorted(set(ids)) == sorted(str(e["id"]) for e in sent), (
        f"after {elapsed:.1f}s got {len(ids)} of {len(sent)}; worker log:\n{log_tail}"
    )
    assert len(ids) == len(sent), f"duplicates: {len(ids) - len(set(ids))}"
    subject_of = {str(e["id"]): str(e["subject"]).encode() for e in sent}
    assert all(rec.key == subject_of[rec.value.decode()] for rec in records)
    assert "Traceback" not in log_path.read_text(errors="replace"), log_tail


# ------------------------------------------------------------------ (c) publish_file

GOOD_LINES = 5


def _publish_input(path: Path) -> dict[int, bytes]:
    """Write the mixed file; return the good lines by line number (original bytes)."""
    good = {
        1: encode(event(1, "WO-A")),
        2: b' {"specversion": "1.0", "id": "spaced", "source": "s", "type": "meter.read",'
        b' "time": "2025-03-03T09:00:00+08:00", "subject": "WO-B",'
        b' "data": {"meter_id": "m", "account": "a", "period": "2025-03"}}',
        5: encode(event(2, "WO-A")),
        9: encode(event(3, "WO-C")),
        11: encode(event(4, "WO-B")),
    }
    bad = {
        3: b'{"specversion": "1.0", "id": ',  # invalid JSON
        4: b'{"id": "caf\xe9", "subject": "WO-X"}',  # not UTF-8
        7: encode({**event(5, "WO-D"), "type": "ticket.teleported"}),  # unknown type
        8: encode({k: v for k, v in event(7, "WO-E").items() if k != "subject"}),  # missing
    }
    lines = {**good, **bad, 6: b"", 10: b"   "}  # 6 and 10 are blank
    path.write_bytes(b"".join(lines[n] + b"\n" for n in range(1, 12)))
    assert len(good) == GOOD_LINES
    return good


def test_publish_file_counts_rejects_and_keys(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{unique_topic_prefix}.pub"
    ensure_topics(kafka_bootstrap, [spec(topic, 2)])  # a custom topic is taken as it is
    path = tmp_path / "mixed.jsonl"
    good = _publish_input(path)

    summary = publish_file(path, kafka_bootstrap, topic=topic, progress=False)

    assert (summary.produced, summary.rejected, summary.failed) == (GOOD_LINES, 4, 0)
    assert summary.stopped_at is None
    assert [n for n, _ in summary.rejects] == [3, 4, 7, 8]
    reasons = dict(summary.rejects)
    assert reasons[3].startswith("invalid JSON")
    assert reasons[4].startswith("not UTF-8")
    assert "ticket.teleported" in reasons[7]
    assert reasons[8].startswith("subject: is required")

    records = consume_all(kafka_bootstrap, topic, GOOD_LINES, timeout=30, settle=1.0)
    assert sorted(r.value for r in records) == sorted(good.values())  # original bytes
    for rec in records:
        assert rec.key == parse_event(rec.value).subject.encode()
    assert describe(kafka_bootstrap, [topic]) == {topic: 2}


def test_publish_file_creates_a_missing_topic(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATERWATCH_PARTITIONS", "3")
    topic = f"{unique_topic_prefix}.new"
    path = tmp_path / "two.jsonl"
    path.write_bytes(encode(event(1)) + b"\n" + encode(event(2)) + b"\n")
    summary = publish_file(path, kafka_bootstrap, topic=topic, progress=False)
    assert (summary.produced, summary.rejected) == (2, 0)
    assert describe(kafka_bootstrap, [topic]) == {topic: 3}


def test_publish_command_output_and_exit_code(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATERWATCH_KAFKA", kafka_bootstrap)
    topic = f"{unique_topic_prefix}.cli"
    ensure_topics(kafka_bootstrap, [spec(topic, 1)])
    path = tmp_path / "mixed.jsonl"
    _publish_input(path)
    app = typer.Typer()
    app.command()(publish)
    app.command("noop")(lambda: None)  # keep `publish` a named subcommand

    result = CliRunner().invoke(app, ["publish", str(path), "--topic", topic])

    assert result.exit_code == 2, result.output
    out = result.stdout
    err = result.stderr
    assert out.strip() == "produced 5, rejected 4"
    assert [ln.split(":")[0] for ln in err.strip().splitlines()] == [
        "line 3",
        "line 4",
        "line 7",
        "line 8",
    ]
    assert "caf" not in err  # the content of a line is never printed


# ------------------------------------------------------------ (d) partition mismatch


def test_ensure_topics_refuses_a_mis_partitioned_topic(
    kafka_bootstrap: str, unique_topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATERWATCH_PARTITIONS", "8")
    name = f"{unique_topic_prefix}.events"
    other = f"{unique_topic_prefix}.clock"
    assert ensure_topics(kafka_bootstrap, [spec(name, 4)]) == [name]

    with pytest.raises(TopicMismatch) as info:
        ensure_topics(kafka_bootstrap, [spec(name, None), spec(other, None)])
    assert str(info.value) == (
        f"topic {name} has 4 partitions, waterwatch expects 8: "
        "set WATERWATCH_PARTITIONS=4 or recreate the topic"
    )
    assert describe(kafka_bootstrap, [name, other]) == {name: 4}  # nothing created

    # with the matching count it is accepted and only the missing topic is created
    assert ensure_topics(kafka_bootstrap, [spec(name, None), spec(other, None)], 4) == [other]
    assert describe(kafka_bootstrap, [name, other]) == {name: 4, other: 4}
    # idempotent
    assert ensure_topics(kafka_bootstrap, [spec(name, None), spec(other, None)], 4) == []

    with pytest.raises(TopicMismatch) as fixed:
        ensure_topics(kafka_bootstrap, [spec(name, 2)])
    assert str(fixed.value).endswith("waterwatch expects 2: recreate the topic")


def test_ensure_topics_sets_configs(kafka_bootstrap: str, unique_topic_prefix: str) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    from waterwatch.admin import admin_client

    name = f"{unique_topic_prefix}.cfg"
    wanted = {**EVENTS.configs}
    ensure_topics(kafka_bootstrap, [TopicSpec(name, "k", "d", ("input",), 2, wanted)])
    with admin_client(kafka_bootstrap) as client:
        result = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    text = json.dumps(result, default=str)
    for key, value in wanted.items():
        assert key in text and value in text


def test_ensure_topics_tolerates_a_creation_race(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    specs = [spec(f"{unique_topic_prefix}.race{i}", 2) for i in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: ensure_topics(kafka_bootstrap, specs), range(3)))
    created = sorted(name for names in results for name in names)
    assert created == sorted(s.name for s in specs)  # each created once, nobody failed
    assert describe(kafka_bootstrap, [s.name for s in specs]) == {s.name: 2 for s in specs}
