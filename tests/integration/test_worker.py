"""``waterwatch worker`` as a subprocess on the real broker: alerts equal the replay, whatever happens.

Every test runs the worker with its own topic prefix and app id (from
``unique_topic_prefix``), at time scale 3600 (one policy hour = one second),
and compares the alerts topic with ``Replayer`` run over the same events with
the same scaled config (what ``waterwatch replay`` prints), ignoring only
``late_by``.  Only wall-clock rules are waited for (R15.2 12 h -> 12 s, R24.arrive
1 h -> 1 s, R30 1 h -> 1 s): working-time rules do not scale with the calendar.

An event stamped in the same wall-clock second as a stage of its own matter is
avoided on purpose: the engine floors event times to the second and lets an
event win a tie with a stage (replay), while the worker fires the stage as soon
as the wall clock reaches it.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from worker_harness import (
    REPO,
    Producer,
    TopicReader,
    WorkerPool,
    WorkerProcess,
    alert_id,
    compare_alerts,
    dedupe,
    duplicates,
    encode,
    end_offsets,
    fired_ts,
    group_offsets,
    has_all,
    make_event,
    replay_alerts,
    sleep_to_second_start,
)

from streams.worker import partition_for
from waterwatch import deadletter as dl
from waterwatch.cli_deadletter import deadletter_app

pytestmark = pytest.mark.integration

SCALE = 3600
PHONE = "13912345678"


@pytest.fixture
def pool(kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path) -> Iterator[WorkerPool]:
    p = WorkerPool(kafka_bootstrap, unique_topic_prefix, tmp_path)
    try:
        yield p
    finally:
        p.close()  # no worker outlives its test (the prefix fixture then deletes topics and groups)


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[Producer]:
    p = Producer(kafka_bootstrap)
    try:
        yield p
    finally:
        p.close()


def create_topics(bootstrap: str, prefix: str) -> None:
    """The worker's topics, created before any worker ran (as ``run_worker`` would)."""
    from streams.worker import WorkerSettings
    from waterwatch.admin import ensure_topics

    ensure_topics(bootstrap, WorkerSettings(bootstrap=bootstrap, topic_prefix=prefix, app_id=f"{prefix}-app")
                  .topic_specs())  # fmt: skip


def wait_and_compare(reader: TopicReader, events: list[dict[str, Any]], until: float, pool: WorkerPool,
                     *, settle: float = 1.5, config_dir: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Wait (bounded) for every alert the replay fires up to ``until``, then compare; return the topic."""
    expected = replay_alerts(events, SCALE, until, config_dir)
    assert expected, "the scenario fires nothing: the test would prove nothing"
    budget = max(0.0, until - time.time()) + 20
    started = time.time()
    ok = reader.wait_until(has_all(expected), timeout=budget)
    waited = time.time() - started
    reader.settle(settle)
    got = reader.values()
    problems = compare_alerts(got, expected, until)
    summary = (
        f"all {len(expected)} expected alerts arrived: {ok} (waited {waited:.1f} s of {budget:.1f}, "
        f"until was {until - started:+.1f} s from the start of the wait); {len(problems)} problem(s)"
    )
    if not (ok and not problems):
        group = pool.workers[0].app_id
        extra = [
            f"committed offsets of {group}: {group_offsets(pool.bootstrap, group)}",
            f"end offsets of {pool.prefix}.events: {end_offsets(pool.bootstrap, pool.prefix + '.events')}",
        ]
        raise AssertionError("\n".join([summary, *problems[:40], *extra, pool.logs()]))
    return got


def wait_deadletters(bootstrap: str, prefix: str, n: int, timeout: float = 20) -> list[dl.DeadLetterEntry]:
    deadline = time.monotonic() + timeout
    letters = dl.read_deadletters(bootstrap, prefix)
    while len(letters) < n and time.monotonic() < deadline:
        time.sleep(0.5)
        letters = dl.read_deadletters(bootstrap, prefix)
    return letters


def assert_never_early(reader: TopicReader) -> None:
    """No alert left the worker before the instant it is for (broker timestamps, ms)."""
    early = [(alert_id(json.loads(r.value)), r.timestamp / 1000 - fired_ts(json.loads(r.value)))
             for r in reader.records if r.timestamp / 1000 < fired_ts(json.loads(r.value))]  # fmt: skip
    assert not early, f"alerts sent before their instant (id, seconds): {early}"


def no_traceback(pool: WorkerPool) -> None:
    for w in pool.workers:
        assert "Traceback" not in w.log_text(), w.log_tail(120)


def leak(subject: str, **data: Any) -> dict[str, Any]:
    return make_event("leak.reported", subject, {"pipe_diameter_mm": 300, "unit": "runda", **data})


def damage(subject: str) -> dict[str, Any]:
    return make_event("damage.reported", subject, {"location": "东昌路 12 号"})


def ticket(subject: str, category: str = "hydrant_fault", unit: str = "runda", **data: Any) -> dict[str, Any]:
    return make_event("ticket.created", subject, {"channel": "phone", "category": category, "unit": unit,
                                                   "summary": "消防栓漏水", **data})  # fmt: skip


def story(prefix: str, i: int) -> dict[str, Any]:
    """The i-th creating event of a mixed load: only wall-clock rules, all with alerts within seconds."""
    kinds = (lambda s: leak(s), lambda s: damage(s), lambda s: ticket(s), lambda s: leak(s, pipe_diameter_mm=800))
    return kinds[i % len(kinds)](f"{prefix}-{i:03d}")


# ----------------------------------------------------------------------------- (a)


def test_a_ticket_lifecycle_fires_warnings_overdue_and_escalations_like_replay(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    w = pool.new()
    w.start().wait_ready()
    events_topic = f"{unique_topic_prefix}.events"
    reader = TopicReader(kafka_bootstrap, f"{unique_topic_prefix}.alerts")
    try:
        sleep_to_second_start()
        created = ticket("WO-A1", location="光岳路 3 号", reporter={"name": "张三", "phone": PHONE})
        producer.send_events(events_topic, [created])
        t0 = int(time.time())
        time.sleep(max(0.0, t0 + 2.02 - time.time()))
        # dispatched and accepted in the same second: the (working-time) accept clock stops at once
        later = producer.send_events(
            events_topic,
            [
                make_event("ticket.dispatched", "WO-A1", {"unit": "runda"}),
                make_event("ticket.accepted", "WO-A1", {"unit": "runda"}),
            ],
        )
        events = [created, *later]
        until = t0 + 25  # overdue at +12 s, escalations at +18 s and +24 s
        got = wait_and_compare(reader, events, until, pool)
        mine = [a for a in dedupe(got) if a["subject"] == "WO-A1" and fired_ts(a) <= until]
        assert [(a["type"], a["data"]["rule"], a["data"]["stage"], int(fired_ts(a)) - t0) for a in mine] == [
            ("alert.warning", "R15.2", "warn_50", 6),
            ("alert.warning", "R15.2", "warn_80", 10),
            ("alert.overdue", "R15.2", "overdue", 12),
            ("alert.violation", "R13.resolve", "no_extension_request", 12),
            ("alert.reminder", "R15.2", "reminder_1", 16),
            ("alert.escalation", "R15.2", "escalate_1", 18),
            ("alert.reminder", "R15.2", "reminder_2", 20),
            ("alert.escalation", "R15.2", "escalate_2", 24),
            ("alert.reminder", "R15.2", "reminder_3", 24),
        ]
        assert all(a["data"]["unit"] == "runda" and a["data"]["due_at"] for a in mine)
        assert not duplicates(got), duplicates(got)
        assert_never_early(reader)
        _, health = w.health() or (0, {})
        assert health.get("events") == 3 and health.get("deadletters") == 0, health
    finally:
        reader.close()
    w.stop()
    no_traceback(pool)


# ----------------------------------------------------------------------------- (b)


def bad_inputs(prefix: str) -> list[tuple[bytes | None, bytes, str]]:
    """(key, value, expected error class) of every bad input the worker must dead-letter."""
    missing = ticket(f"{prefix}-missing")
    del missing["id"]
    wrong_type = leak(f"{prefix}-wrongtype", pipe_diameter_mm="wide")
    future = ticket(f"{prefix}-future")
    future["time"] = time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(time.time() + 8 * 3600 + 3 * 86400))
    huge = leak(f"{prefix}-huge")
    huge["padding"] = "x" * (2 * 1024 * 1024)
    mismatch = leak(f"{prefix}-subject")
    cases: list[tuple[str, dict[str, Any] | bytes, bytes | None]] = [
        ("invalid_json", b'{"specversion": "1.0", "id": "call ' + PHONE.encode() + b'", ', b"BAD-json"),
        ("not_utf8", encode(ticket(f"{prefix}-latin1"))[:-2] + b"\xe9\xff}", f"{prefix}-latin1".encode()),
        ("schema", missing, None),  # a missing required field
        ("schema", wrong_type, None),  # a wrong type
        ("unknown_type", make_event("ticket.teleported", f"{prefix}-teleport", {}), None),
        ("unknown_unit", ticket(f"{prefix}-unit", unit="no_such_unit", reporter={"phone": PHONE}), None),
        ("schema", ticket(f"{prefix}-category", category=PHONE), None),  # an unknown category code
        ("unknown_matter", make_event("leak.crew_arrived", f"{prefix}-nomatter", {"unit": "runda"}), None),
        ("time_in_future", future, None),
        ("too_large", huge, None),
        ("key_mismatch", mismatch, b"SOMEONE-ELSE"),
    ]
    out = []
    for error, obj, key in cases:
        value = obj if isinstance(obj, bytes) else encode(obj)
        if key is None and isinstance(obj, dict):
            key = str(obj["subject"]).encode()
        out.append((key, value, error))
    return out


def test_b_bad_inputs_are_dead_lettered_and_good_events_between_them_processed(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    prefix = unique_topic_prefix
    w = pool.new()
    w.start().wait_ready()
    events_topic = f"{prefix}.events"
    reader = TopicReader(kafka_bootstrap, f"{prefix}.alerts")
    try:
        sleep_to_second_start()
        goods = [leak("LK-B1"), damage("DM-B1"), ticket("WO-B1"), leak("LK-B2", pipe_diameter_mm=900)]
        bads = bad_inputs("X-B")
        duplicate = {**leak("LK-B1", pipe_diameter_mm=1200), "id": goods[0]["id"]}  # same id, other content
        records: list[tuple[bytes | None, bytes]] = []
        for i, (key, value, _) in enumerate(bads):  # good, bad, bad, good, bad, ... duplicate
            if i % 3 == 0 and i // 3 < len(goods):
                records.append((str(goods[i // 3]["subject"]).encode(), encode(goods[i // 3])))
            records.append((key, value))
        records.append((b"LK-B1", encode(duplicate)))
        t0 = int(time.time())
        producer.send(events_topic, records)
        # what the replay sees: the good events, the engine's rejections and the duplicate
        engine_rejected = [json.loads(v) for _, v, e in bads if e in ("unknown_unit", "unknown_matter")]
        until = t0 + 7  # leaks and damage: +1..+5 s; the ticket's warn_50 at +6 s
        wait_and_compare(reader, [*goods, *engine_rejected, duplicate], until, pool)

        # every bad input is on the dead-letter topic, with its original bytes and a reason
        letters = wait_deadletters(kafka_bootstrap, prefix, len(bads))
        got = sorted((e.value or b"", e.key, e.error) for e in letters)
        assert got == sorted((v, k, e) for k, v, e in bads), [(e.error, e.reason) for e in letters]
        for e in letters:
            assert e.reason and e.source_topic == events_topic and e.source_offset is not None
            assert e.rejected_at is not None
        reasons = {e.error: e.reason for e in letters}
        assert "no_such_unit" in reasons["unknown_unit"] and "ahead of now" in reasons["time_in_future"]

        # `waterwatch deadletter list --json` shows them masked, without the bytes
        monkeypatch.setenv("WATERWATCH_KAFKA", kafka_bootstrap)
        r = CliRunner().invoke(deadletter_app, ["list", "--topic-prefix", prefix, "--json"])
        assert r.exit_code == 0, r.output
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert sorted(x["error"] for x in rows) == sorted(e for _, _, e in bads)
        assert PHONE not in r.output
        assert all(base64.b64encode(v).decode()[:40] not in r.output for _, v, _ in bads)
        assert next(x for x in rows if x["error"] == "too_large")["size"] > 2 * 1024 * 1024

        _, health = w.health() or (0, {})
        assert health.get("deadletters") == len(bads) and health.get("duplicates") == 1, health
    finally:
        reader.close()
    w.stop()
    no_traceback(pool)


def test_b2_a_dead_letter_is_re_driven_after_the_fix(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """unknown_unit -> the unit is added to units.yaml -> `deadletter replay --error unknown_unit` applies it."""
    prefix = unique_topic_prefix
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    w = pool.new(config_dir=config)
    w.start().wait_ready()
    events_topic = f"{prefix}.events"
    monkeypatch.setenv("WATERWATCH_KAFKA", kafka_bootstrap)
    reader = TopicReader(kafka_bootstrap, f"{prefix}.alerts")
    try:
        rejected = leak("LK-R1", unit="xinhe")
        producer.send_events(events_topic, [rejected, leak("LK-R2")])
        assert reader.wait_until(lambda rs: any(json.loads(r.value)["subject"] == "LK-R2" for r in rs), 20), pool.logs()
        letters = wait_deadletters(kafka_bootstrap, prefix, 1)
        assert [(e.error, e.matter_id) for e in letters] == [("unknown_unit", "LK-R1")]
        w.stop()

        with (config / "units.yaml").open("a", encoding="utf-8") as fh:
            fh.write("  xinhe:\n    name: 新河供水\n    name_en: Xinhe Water\n"
                     "    escalation: [unit_head, ops, leaders]\n")  # fmt: skip
        w.start().wait_ready()
        dry = CliRunner().invoke(deadletter_app, ["replay", "--error", "unknown_unit", "--dry-run",
                                                  "--topic-prefix", prefix])  # fmt: skip
        assert dry.exit_code == 0 and "dry run: 1 dead letter(s) would be re-driven" in dry.stdout, dry.output
        r = CliRunner().invoke(deadletter_app, ["replay", "--error", "unknown_unit", "--topic-prefix", prefix])
        assert r.exit_code == 0 and f"re-drove 1 dead letter(s) to {events_topic}" in r.stdout, r.output
        redriven = time.time()

        until = time.time() + 1
        expected = [a for a in replay_alerts([rejected], SCALE, until, config) if a["subject"] == "LK-R1"]
        assert reader.wait_until(has_all(expected), 20), pool.logs()
        reader.settle(1.0)
        mine = [a for a in dedupe(reader.values()) if a["subject"] == "LK-R1"]
        assert all(a["data"]["unit"] == "xinhe" for a in mine)
        assert mine and all(a["data"].get("late_by", 0) > 0 for a in mine if fired_ts(a) < redriven - 2)
        assert len(dl.read_deadletters(kafka_bootstrap, prefix)) == 1  # applied, not rejected again
    finally:
        reader.close()
    w.stop()


def test_b3_an_event_just_under_the_topic_limit_is_dead_lettered_whole(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    w = pool.new()
    w.start().wait_ready()
    big = leak("LK-BIG")
    big["padding"] = "x" * (7 * 1024 * 1024)  # under the events topic's 8 MiB max.message.bytes
    value = encode(big)
    producer.send(f"{unique_topic_prefix}.events", [(b"LK-BIG", value)])
    letters = wait_deadletters(kafka_bootstrap, unique_topic_prefix, 1, timeout=6)
    w.stop()
    assert [(e.error, e.value == value) for e in letters] == [("too_large", True)], pool.logs()


def test_b4_a_mis_keyed_event_does_not_silence_the_matter_it_names(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    w = pool.new()
    w.start().wait_ready()
    events_topic = f"{unique_topic_prefix}.events"
    reader = TopicReader(kafka_bootstrap, f"{unique_topic_prefix}.alerts")
    try:
        sleep_to_second_start()
        good = leak("LK-K1")
        stray = leak("LK-K1")  # same subject, another id, keyed by something else: dead-lettered
        producer.send(events_topic, [(b"LK-K1", encode(good))])
        time.sleep(0.4)  # applied by now; the stray comes after it, well before the overdue at +1 s
        producer.send(events_topic, [(b"SOMETHING-ELSE", encode(stray))])
        until = time.time() + 3
        expected = replay_alerts([good], SCALE, until)
        ok = reader.wait_until(has_all(expected), timeout=until - time.time() + 3)
        letters = wait_deadletters(kafka_bootstrap, unique_topic_prefix, 1)
        health = w.health()
    finally:
        reader.close()
    w.stop()
    assert [e.error for e in letters] == ["key_mismatch"]
    assert ok, f"LK-K1's alerts: {[a['data']['stage'] for a in reader.values()]}; /healthz {health}"


# ----------------------------------------------------------------------------- (c)


def test_c_sigkill_mid_stream_and_restart_loses_no_alert(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    w = pool.new()
    w.start().wait_ready()
    events_topic = f"{unique_topic_prefix}.events"
    reader = TopicReader(kafka_bootstrap, f"{unique_topic_prefix}.alerts")
    try:
        # a ticket resolved while the worker is dead, before its warn_50 (+6 s) that passes before the restart:
        # the backlog's resolve must win over the deadline check the rebuilt index sends at once
        events = producer.send_events(events_topic, [ticket("C-T")])
        created = time.time()
        killed_at = None
        for i in range(16):
            events += producer.send_events(events_topic, [story("C", i)])
            time.sleep(0.35)
            if i == 7:
                reader.poll()
                assert reader.records, "nothing fired before the crash: the test would prove little"
                w.kill()  # SIGKILL: nothing flushed, nothing committed
                killed_at = time.time()
                events += producer.send_events(events_topic, [make_event("ticket.resolved", "C-T", {"unit": "runda"})])
        assert killed_at is not None and killed_at - created < 4.5  # resolved well before +6 s
        time.sleep(max(0.0, created + 7 - time.time()))
        w.start().wait_ready()
        until = time.time() + 3
        got = wait_and_compare(reader, events, until, pool)
        assert not [a for a in got if a["subject"] == "C-T"], "alerts for a ticket resolved before its deadline"
        print(f"duplicates after the crash (allowed, same alert_id): {len(duplicates(got))}")
        assert_never_early(reader)
    finally:
        reader.close()
    w.stop()


# ----------------------------------------------------------------------------- (d)

ALL_PARTITIONS = list(range(8))


def start_pair(pool: WorkerPool) -> tuple[WorkerProcess, WorkerProcess, list[int], list[int]]:
    """Two workers of one app (own data dirs and ports), each owning a share of the partitions."""
    w1, w2 = pool.new("w1"), pool.new("w2")
    assert w1.app_id == w2.app_id and w1.data_dir != w2.data_dir and w1.web_port != w2.web_port
    w1.start().wait_ready()
    w2.start().wait_ready()
    p2 = w2.wait_assigned(lambda ps: 0 < len(ps) < 8)
    p1 = w1.wait_assigned(lambda ps: sorted(ps + p2) == ALL_PARTITIONS)
    return w1, w2, p1, p2


@pytest.mark.takeover
def test_d_two_workers_one_stopped_mid_run_fire_each_alert_once(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    w1, w2, p1, _ = start_pair(pool)
    events_topic = f"{unique_topic_prefix}.events"
    reader = TopicReader(kafka_bootstrap, f"{unique_topic_prefix}.alerts")
    try:
        events: list[dict[str, Any]] = []
        for i in range(8):  # both workers run; deadlines pending on both when w1 stops
            events += producer.send_events(events_topic, [story("D", i)])
            time.sleep(0.35)
        assert {partition_for(str(e["subject"]).encode(), 8) for e in events} & set(p1), "w1 got nothing to hand over"
        w1.stop()  # SIGTERM: graceful; its partitions and their pending deadlines move to w2
        w2.wait_assigned(lambda ps: ps == ALL_PARTITIONS)
        time.sleep(0.5)  # past the takeover itself: see test_d2 for events that arrive during it
        for i in range(8, 16):
            events += producer.send_events(events_topic, [story("D", i)])
            time.sleep(0.35)
        until = time.time() + 3
        got = wait_and_compare(reader, events, until, pool)
        assert not duplicates(got), f"alert_ids on the topic more than once: {duplicates(got)}"
        assert_never_early(reader)
        _, h2 = w2.health() or (0, {})
        assert h2.get("alerts", 0) > 0, h2
    finally:
        reader.close()
    w2.stop()
    assert w1.returncode == 0 and w2.returncode == 0, pool.logs()


TAKEOVER_ROUNDS = 5


def takeover_round(pool: WorkerPool, producer: Producer, prefix: str, tag: str) -> list[str]:
    """Stop one of two workers while new matters keep arriving; return the matters that never got an alert."""
    w1 = pool.new(f"{tag}-w1", app_id=f"{prefix}-{tag}-app", topic_prefix=f"{prefix}.{tag}")
    w2 = pool.new(f"{tag}-w2", app_id=f"{prefix}-{tag}-app", topic_prefix=f"{prefix}.{tag}")
    w1.start().wait_ready()
    w2.start().wait_ready()
    p2 = w2.wait_assigned(lambda ps: 0 < len(ps) < 8)
    w1.wait_assigned(lambda ps: sorted(ps + p2) == ALL_PARTITIONS)
    stop_failed: list[BaseException] = []

    def stop_w1() -> None:
        try:
            w1.stop()
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            stop_failed.append(exc)

    stopper = threading.Thread(target=stop_w1, daemon=True)
    stopper.start()  # SIGTERM while events keep coming
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    taken_over: float | None = None
    while time.monotonic() < deadline:
        events += producer.send_events(f"{prefix}.{tag}.events", [leak(f"{tag}-{len(events):04d}")])
        if taken_over is None and w2.assigned() == ALL_PARTITIONS and (w2.health(timeout=0.2) or (0,))[0] == 200:
            taken_over = time.monotonic()
        if taken_over is not None and time.monotonic() > taken_over + 1:
            break
        time.sleep(0.03)
    stopper.join(timeout=40)
    assert not stopper.is_alive() and not stop_failed and w1.returncode == 0, (
        f"round {tag}: the stopped worker did not exit cleanly: {stop_failed} rc={w1.returncode}\n{pool.logs()}"
    )
    reader = TopicReader(pool.bootstrap, f"{prefix}.{tag}.alerts")
    try:
        wanted = {str(e["subject"]) for e in events}
        reader.wait_until(lambda rs: wanted <= {json.loads(r.value)["subject"] for r in rs}, timeout=5)
        seen = {a["subject"] for a in reader.values()}
    finally:
        reader.close()
    w2.stop()
    return sorted(wanted - seen)


@pytest.mark.takeover
def test_d2_events_arriving_while_one_of_two_workers_stops_are_not_lost(
    pool: WorkerPool, producer: Producer, unique_topic_prefix: str
) -> None:
    """Up to TAKEOVER_ROUNDS fresh rounds (the loss is a race): every matter must get its alerts in every round."""
    for k in range(TAKEOVER_ROUNDS):
        lost = takeover_round(pool, producer, unique_topic_prefix, f"r{k}")
        assert not lost, f"round {k}: {len(lost)} matters never processed: {lost}\n{pool.logs()}"


# ------------------------------------------------------------------------- late_by


def test_deadlines_passed_while_no_worker_ran_fire_late_on_start(
    pool: WorkerPool, producer: Producer, kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    create_topics(kafka_bootstrap, unique_topic_prefix)
    events = producer.send_events(f"{unique_topic_prefix}.events", [leak("LK-L1"), damage("DM-L1"), ticket("WO-L1")])
    produced = time.time()
    time.sleep(4.5)  # R24.arrive / R30 overdue (+1 s) and escalations (+2 s) pass with no worker
    w = pool.new()
    started = time.time()
    w.start().wait_ready()
    reader = TopicReader(kafka_bootstrap, f"{unique_topic_prefix}.alerts")
    try:
        got = wait_and_compare(reader, events, produced + 4, pool)
        passed = [a for a in dedupe(got) if fired_ts(a) <= int(started) - 2]
        assert len(passed) >= 4, passed
        for a in passed:
            late = a["data"].get("late_by")
            assert late is not None and late >= int(started) - fired_ts(a) > 0, a["data"]
    finally:
        reader.close()
    w.stop()
    no_traceback(pool)
