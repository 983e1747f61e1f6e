"""Every bad input of the worker through ``Processor.on_event``, without Kafka.

The processor is the shell the Faust agent calls for each record of
``waterwatch.events`` and ``waterwatch.clock``; it must never raise, must
dead-letter whatever it cannot apply with the original bytes, the source
coordinates and a readable reason, and must ignore a repeated event id.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.processor import Processor, Result, decode_state, encode_state, stored_next_due
from waterwatch.core.config import load_config
from waterwatch.core.engine import Engine, MatterState
from waterwatch.events import INPUT_TYPES, MAX_EVENT_BYTES, DeadLetter, parse_event

TZ = ZoneInfo("Asia/Shanghai")
CONFIG = load_config()
ENGINE = CONFIG.engine()
TOPIC = "wwtest.events"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=TZ).timestamp() + 0.25  # a Wednesday morning, mid-second

PROPS = settings(
    max_examples=int(os.environ.get("WATERWATCH_PROPERTY_EXAMPLES", "150")),
    derandomize="WATERWATCH_PROPERTY_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).isoformat()


def event(
    type_: str = "ticket.created", subject: str = "WO-1", *, id_: str | None = None, at: float | None = None,
    **data: Any,
) -> dict[str, Any]:  # fmt: skip
    if not data and type_ == "ticket.created":
        data = {"channel": "phone", "category": "hydrant_fault", "unit": "runda"}
    return {
        "specversion": "1.0",
        "id": id_ or f"{subject}-{type_}",
        "source": "tests/unit",
        "type": type_,
        "time": iso(NOW - 60 if at is None else at),
        "subject": subject,
        "data": data,
    }


def raw(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def feed(
    value: bytes | None, key: bytes | None = b"WO-1", *, stored: bytes | None = None,
    processor: Processor | None = None, offset: int = 41, partition: int = 3, now: float = NOW,
) -> Result:  # fmt: skip
    p = processor or Processor(ENGINE, TOPIC)
    return p.on_event(key, value, topic=TOPIC, partition=partition, offset=offset, stored=stored, now=now)


def created_state(subject: str = "WO-1") -> bytes:
    result = feed(raw(event(subject=subject)), subject.encode())
    assert result.deadletter is None and result.state is not None
    return result.state


def dead(result: Result) -> dict[str, Any]:
    """The dead-letter record, checked against the DeadLetter model."""
    assert result.deadletter is not None, result
    body = json.loads(result.deadletter)
    DeadLetter.model_validate(body)
    return body


def assert_dead(result: Result, error: str, value: bytes, key: bytes | None = b"WO-1", *, offset: int = 41,
                partition: int = 3) -> dict[str, Any]:  # fmt: skip
    body = dead(result)
    assert result.error == error == body["error"], body["reason"]
    assert body["reason"] and "\n" not in body["reason"]
    assert base64.b64decode(body["value_b64"]) == value  # the original bytes, not a re-encoding
    assert body["key_b64"] == (None if key is None else base64.b64encode(key).decode())
    assert (body["source_topic"], body["partition"], body["offset"]) == (TOPIC, partition, offset)
    assert datetime.fromisoformat(body["rejected_at"]) == datetime.fromtimestamp(NOW, UTC)
    assert not result.alerts
    return body


# ------------------------------------------------------------------ bad input


def test_invalid_json_is_dead_lettered() -> None:
    value = b'{"specversion": "1.0", "id": '
    body = assert_dead(feed(value), "invalid_json", value)
    assert body["reason"].startswith("invalid JSON")
    assert body["event_type"] is None and body["matter_id"] is None


def test_bytes_that_are_not_utf8_are_dead_lettered() -> None:
    value = raw(event())[:-3] + b'\xe9"}}'
    body = assert_dead(feed(value), "not_utf8", value)
    assert body["reason"].startswith("not UTF-8")


def test_an_empty_and_a_null_value_are_dead_lettered_not_crashed_on() -> None:
    assert_dead(feed(b""), "invalid_json", b"")
    assert_dead(feed(None), "invalid_json", b"")  # a tombstone: nothing to re-drive but still recorded


def test_a_json_value_that_is_not_an_object_is_dead_lettered() -> None:
    for value in (b"[1, 2]", b'"text"', b"42", b"null"):
        body = assert_dead(feed(value), "schema", value)
        assert "JSON object" in body["reason"]


def test_a_missing_required_field_is_dead_lettered_naming_it() -> None:
    obj = event()
    del obj["id"]
    value = raw(obj)
    body = assert_dead(feed(value), "schema", value)
    assert body["reason"].startswith("id: is required")
    assert body["event_type"] == "ticket.created"


def test_a_missing_data_field_is_dead_lettered_naming_it() -> None:
    value = raw(event("ticket.created", "WO-1", category="hydrant_fault"))  # no channel
    body = assert_dead(feed(value), "schema", value)
    assert "data.channel: is required" in body["reason"]


def test_a_wrong_type_is_dead_lettered_naming_the_field() -> None:
    value = raw(event("leak.reported", "LK-1", pipe_diameter_mm="wide"))
    body = assert_dead(feed(value, b"LK-1"), "schema", value, b"LK-1")
    assert body["reason"].startswith("data.pipe_diameter_mm:")
    obj = event()
    obj["id"] = 42
    value = raw(obj)
    body = assert_dead(feed(value), "schema", value)
    assert body["reason"].startswith("id:")


def test_a_time_without_offset_is_dead_lettered() -> None:
    obj = event()
    obj["time"] = "2026-11-25T09:59:00"
    value = raw(obj)
    assert assert_dead(feed(value), "schema", value)["reason"].startswith("time:")


def test_an_unknown_event_type_is_dead_lettered_with_the_type() -> None:
    value = raw(event("ticket.teleported"))
    body = assert_dead(feed(value), "unknown_type", value)
    assert "ticket.teleported" in body["reason"]
    assert body["event_type"] == "ticket.teleported"


def test_an_output_type_on_the_input_topic_is_an_unknown_type() -> None:
    value = raw(event("alert.overdue"))
    assert_dead(feed(value), "unknown_type", value)


def test_an_unknown_unit_is_rejected_by_the_engine_and_dead_lettered() -> None:
    value = raw(event(channel="phone", category="hydrant_fault", unit="no_such_unit"))
    result = feed(value)
    body = assert_dead(result, "unknown_unit", value)
    assert "no_such_unit" in body["reason"]
    assert (body["event_type"], body["matter_id"]) == ("ticket.created", "WO-1")
    assert result.state is None  # nothing was created
    assert result.matter_id == "WO-1"


def test_an_unknown_unit_on_an_existing_matter_keeps_its_state() -> None:
    stored = created_state()
    value = raw(event("ticket.dispatched", unit="nobody", at=NOW - 30))
    result = feed(value, stored=stored)
    assert_dead(result, "unknown_unit", value)
    assert result.state is not None
    assert decode_state(result.state) == decode_state(stored)


def test_an_unknown_category_code_is_a_schema_error() -> None:
    value = raw(event(channel="phone", category="teleportation", unit="runda"))
    body = assert_dead(feed(value), "schema", value)
    assert body["reason"].startswith("data.category:") and "teleportation" in body["reason"]


def test_a_category_without_a_rule_in_the_policy_is_rejected_by_the_engine() -> None:
    """A known code the operator's policy does not cover: engine rejection ``unknown_category``."""
    policy = replace(CONFIG.policy, rules={k: r for k, r in CONFIG.policy.rules.items() if k != "R15.2"})
    processor = Processor(Engine(policy, CONFIG.units, CONFIG.calendar), TOPIC)
    value = raw(event(channel="phone", category="hydrant_fault", unit="runda"))
    body = assert_dead(feed(value, processor=processor), "unknown_category", value)
    assert "hydrant_fault" in body["reason"]


def test_an_event_for_a_matter_that_does_not_exist_is_dead_lettered() -> None:
    value = raw(event("ticket.accepted", "WO-404", unit="runda"))
    result = feed(value, b"WO-404")
    body = assert_dead(result, "unknown_matter", value, b"WO-404")
    assert "WO-404" in body["reason"]
    assert result.state is None


def test_an_event_far_in_the_future_is_dead_lettered() -> None:
    value = raw(event(at=NOW + 3 * 86400))
    body = assert_dead(feed(value), "time_in_future", value)
    assert "ahead of now" in body["reason"]
    # within the tolerance (10 min) it is accepted
    ok = feed(raw(event(at=NOW + 5 * 60)))
    assert ok.deadletter is None and ok.state is not None


def test_an_event_running_backwards_on_its_matter_is_dead_lettered() -> None:
    stored = created_state()
    value = raw(event("ticket.dispatched", unit="runda", at=NOW - 60 - 3600))
    assert_dead(feed(value, stored=stored), "time_backwards", value)


def test_a_2mb_payload_is_dead_lettered_whole() -> None:
    obj = event(channel="phone", category="hydrant_fault", unit="runda", summary="x")
    obj["padding"] = "水" * (2 * 1024 * 1024 // 3)
    value = raw(obj)
    assert len(value) > 2 * 1000 * 1000 > MAX_EVENT_BYTES
    body = assert_dead(feed(value), "too_large", value)
    assert str(len(value)) in body["reason"]


def test_a_key_that_differs_from_the_subject_is_dead_lettered() -> None:
    value = raw(event(subject="WO-1"))
    body = assert_dead(feed(value, b"WO-2"), "key_mismatch", value, b"WO-2")
    assert "WO-2" in body["reason"] and "WO-1" in body["reason"]
    assert body["matter_id"] == "WO-1"


def test_a_missing_key_is_dead_lettered() -> None:
    value = raw(event())
    assert_dead(feed(value, None), "key_mismatch", value, None)


def test_a_key_that_is_not_utf8_is_dead_lettered_not_crashed_on() -> None:
    value = raw(event())
    assert_dead(feed(value, b"WO-1\xff"), "key_mismatch", value, b"WO-1\xff")


def test_a_corrupt_stored_state_dead_letters_the_event() -> None:
    value = raw(event("ticket.accepted", unit="runda"))
    for stored in (b"not json", b"[]", b'{"matter_id": 1}'):
        result = feed(value, stored=stored)
        assert_dead(result, "state_corrupt", value)


def test_an_illegal_transition_is_dead_lettered_and_the_state_kept() -> None:
    stored = created_state()
    value = raw(event("ticket.accepted", unit="runda", at=NOW - 30))  # not dispatched yet
    result = feed(value, stored=stored)
    assert_dead(result, "illegal_transition", value)
    assert decode_state(result.state) == decode_state(stored)


# ----------------------------------------------------------- duplicates, good


def test_a_duplicate_event_id_is_ignored_without_a_dead_letter() -> None:
    stored = created_state()
    again = feed(raw(event()), stored=stored)
    assert again.duplicate is True
    assert again.deadletter is None and again.error is None
    assert again.alerts == []
    assert again.state is None  # the table is left alone
    assert again.matter_id == "WO-1"
    assert again.next_due == ENGINE.next_due(decode_state(stored))  # type: ignore[arg-type]


def test_a_duplicate_id_with_different_content_is_still_ignored() -> None:
    stored = created_state()
    other = event("ticket.dispatched", unit="runda", id_="WO-1-ticket.created", at=NOW - 30)
    result = feed(raw(other), stored=stored)
    assert result.duplicate and result.deadletter is None and result.state is None


def test_a_good_event_gives_state_next_due_and_no_dead_letter() -> None:
    result = feed(raw(event()))
    assert result.deadletter is None and result.error is None and not result.duplicate
    state = decode_state(result.state)
    assert isinstance(state, MatterState) and state.matter_id == "WO-1"
    assert result.matter_id == "WO-1"
    assert result.next_due == ENGINE.next_due(state)
    assert result.next_due is not None and result.next_due > NOW


def test_state_round_trips_through_its_encoding() -> None:
    state = decode_state(created_state())
    assert state is not None
    assert decode_state(encode_state(state)) == state


def test_a_tagged_state_carries_its_next_due_in_a_header_that_decoding_skips() -> None:
    p = Processor(ENGINE, TOPIC, state_tag="cfg1")
    result = p.on_event(b"WO-1", raw(event()), topic=TOPIC, partition=0, offset=1, stored=None, now=NOW)
    assert result.state is not None and result.state.startswith(b"#%d cfg1\n{" % result.next_due)
    assert stored_next_due(result.state, b"cfg1") == (True, result.next_due)
    assert stored_next_due(result.state, b"other") == (False, None)  # another configuration: decode instead
    assert decode_state(result.state) == decode_state(feed(raw(event())).state)
    assert stored_next_due(created_state(), b"cfg1") == (False, None)  # plain JSON (older states)
    state = decode_state(created_state())
    assert state is not None
    assert stored_next_due(encode_state(state, None, "cfg1"), b"cfg1") == (True, None)
    assert (
        stored_next_due(b"#12 cfg1", b"cfg1") == (False, None) and stored_next_due(b"#x cfg1\n{}", b"cfg1")[0] is False
    )


def test_a_check_writes_the_tagged_state_with_the_next_due() -> None:
    p = Processor(ENGINE, TOPIC, state_tag="t")
    stored = created_state()
    due = ENGINE.next_due(decode_state(stored))  # type: ignore[arg-type]
    assert due is not None
    fired = p.on_check(b"WO-1", stored, now=due)
    assert fired.state is not None and stored_next_due(fired.state, b"t") == (True, fired.next_due)


def test_an_event_on_an_overdue_matter_fires_the_due_stages_first() -> None:
    stored = created_state()  # hydrant_fault: R15.2, 12 h
    later = NOW + 13 * 3600
    value = raw(event("ticket.dispatched", unit="runda", at=later - 1))
    result = feed(value, stored=stored, now=later)
    assert result.deadletter is None
    stages = [a.stage for a in result.alerts if a.rule == "R15.2"]
    assert stages[:3] == ["warn_50", "warn_80", "overdue"]


# ------------------------------------------------------------------- on_check


def test_a_check_fires_what_is_due_and_an_early_check_nothing() -> None:
    p = Processor(ENGINE, TOPIC)
    stored = created_state()
    due = ENGINE.next_due(decode_state(stored))  # type: ignore[arg-type]
    assert due is not None
    early = p.on_check(b"WO-1", stored, now=due - 1)
    assert early.alerts == [] and early.state is None and early.next_due == due
    fired = p.on_check(b"WO-1", stored, now=due)
    assert [a.stage for a in fired.alerts] == ["warn_50"]
    assert fired.state is not None and fired.next_due is not None and fired.next_due > due
    # the same check again on the new state is a no-op (principle 2)
    again = p.on_check(b"WO-1", fired.state, now=due)
    assert again.alerts == [] and again.state is None


def test_a_check_for_a_missing_or_corrupt_matter_is_a_no_op() -> None:
    p = Processor(ENGINE, TOPIC)
    assert p.on_check(b"WO-1", None, now=NOW) == Result()
    assert p.on_check(None, b"{}", now=NOW) == Result()
    assert p.on_check(b"WO-1", b"\x00garbage", now=NOW) == Result()


# ------------------------------------------------------------- never raises

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
TYPES = sorted(INPUT_TYPES)


def _check_invariants(result: Result, value: bytes | None, key: bytes | None) -> None:
    if result.deadletter is not None:
        body = dead(result)
        assert base64.b64decode(body["value_b64"]) == (value or b"")
        assert body["key_b64"] == (None if key is None else base64.b64encode(key).decode())
        assert result.error == body["error"]
        assert not result.duplicate
    else:
        assert result.duplicate or result.state is not None
    if result.state is not None:
        assert decode_state(result.state) is not None


@PROPS
@given(value=st.binary(max_size=512), key=st.none() | st.binary(max_size=16))
def test_random_bytes_never_raise(value: bytes, key: bytes | None) -> None:
    result = feed(value, key)
    _check_invariants(result, value, key)


@PROPS
@given(obj=JSON, key=st.sampled_from([None, b"WO-1", b"\xff"]))
def test_random_json_never_raises(obj: Any, key: bytes | None) -> None:
    value = json.dumps(obj).encode()
    result = feed(value, key)
    _check_invariants(result, value, key)
    assert result.deadletter is not None  # random JSON is never a valid event


@PROPS
@given(
    type_=st.sampled_from([*TYPES, "ticket.nope", ""]),
    data=st.dictionaries(st.sampled_from(["unit", "channel", "category", "due_at", "reason", "area", "kind",
                                          "starts_at", "expected_end_at", "cause", "meter_id", "account",
                                          "period", "pipe_diameter_mm", "note", "requested_due_at"]),
                         JSON | st.sampled_from(["runda", "phone", "hydrant_fault", "2026-11-25T12:00:00+08:00",
                                                 "planned", {"districts": ["d1"]}]), max_size=6),
    offset_s=st.integers(-10 * 86400, 10 * 86400),
    existing=st.booleans(),
)  # fmt: skip
def test_random_event_shaped_json_never_raises(type_: str, data: dict[str, Any], offset_s: int, existing: bool) -> None:
    value = raw(event(type_, "WO-1", at=NOW + offset_s, id_="fuzz", **data) if data else
                {**event(type_, "WO-1", at=NOW + offset_s, id_="fuzz"), "data": {}})  # fmt: skip
    stored = created_state() if existing else None
    result = feed(value, b"WO-1", stored=stored)
    _check_invariants(result, value, b"WO-1")


@PROPS
@given(stored=st.binary(max_size=64) | JSON.map(lambda o: json.dumps(o).encode()))
def test_random_stored_state_never_raises(stored: bytes) -> None:
    p = Processor(ENGINE, TOPIC)
    result = feed(raw(event("ticket.dispatched", unit="runda")), stored=stored, processor=p)
    _check_invariants(result, raw(event("ticket.dispatched", unit="runda")), b"WO-1")
    p.on_check(b"WO-1", stored, now=NOW)


def test_every_input_type_parses_through_the_processor_as_the_contract_says() -> None:
    """Sanity for the fuzzers: a well-formed creating event of each kind applies."""
    cases = {
        "leak.reported": {"pipe_diameter_mm": 300, "unit": "runda"},
        "damage.reported": {"location": "x"},
        "meter.registered": {"meter_id": "m1", "account": "a1"},
        "ticket.created": {"channel": "phone", "category": "hydrant_fault"},
    }
    for i, (type_, data) in enumerate(cases.items()):
        subject = f"M-{i}"
        value = raw(event(type_, subject, **data))
        parse_event(value)
        result = feed(value, subject.encode())
        assert result.deadletter is None, json.loads(result.deadletter or b"{}").get("reason")


@pytest.mark.parametrize("size", [MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1])
def test_the_size_limit_is_exact(size: int) -> None:
    obj = event()
    obj["data"]["summary"] = ""
    base = raw(obj)
    obj["data"]["summary"] = "x" * (size - len(base))
    value = raw(obj)
    assert len(value) == size
    result = feed(value)
    if size > MAX_EVENT_BYTES:
        assert_dead(result, "too_large", value)
    else:
        assert result.deadletter is None or result.error != "too_large"


def test_a_kept_decoded_state_gives_what_decoding_the_stored_bytes_gives() -> None:
    """The worker keeps the decoded form of the states it wrote (``cached``) instead of decoding them again:
    events and checks applied to it produce byte for byte what the stored bytes produce."""
    p = Processor(ENGINE, TOPIC, state_tag="t")
    stored: bytes | None = None
    kept: MatterState | None = None
    fired = 0
    for kind, value in [
        ("event", raw(event())),
        ("event", raw(event())),  # a duplicate: no state written, the kept form is dropped
        ("event", raw(event("ticket.dispatched", unit="runda", at=NOW - 30))),
        ("check", None),
        ("event", raw(event("ticket.resolved", at=NOW + 60))),
    ]:
        if kind == "check":
            due = ENGINE.next_due(decode_state(stored))  # type: ignore[arg-type]
            assert due is not None
            plain = p.on_check(b"WO-1", stored, now=due)
            fast = p.on_check(b"WO-1", None if kept else stored, now=due, cached=kept)
            fired += len(plain.alerts)
        else:
            plain = p.on_event(b"WO-1", value, topic=TOPIC, partition=0, offset=1, stored=stored, now=NOW)
            fast = p.on_event(b"WO-1", value, topic=TOPIC, partition=0, offset=1,
                              stored=None if kept else stored, now=NOW, cached=kept)  # fmt: skip
        assert fast.state == plain.state and fast.alerts == plain.alerts and fast.next_due == plain.next_due
        assert fast.duplicate == plain.duplicate and fast.deadletter == plain.deadletter
        if plain.state is not None:
            stored, kept = plain.state, fast.new_state
            assert kept is not None and encode_state(kept, fast.next_due, "t") == stored
        else:
            kept = None  # as the worker does: decode the stored bytes next time
    assert fired > 0
