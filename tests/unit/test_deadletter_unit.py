"""``waterwatch deadletter list|replay`` without Kafka: decoding, selection, masking, the CLI."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.processor import Processor, deadletter_record
from waterwatch import deadletter as dl
from waterwatch.cli_deadletter import deadletter_app
from waterwatch.core.config import load_config

PHONE = "13912345678"
EMAIL = "zhang.san@example.com"
SECRET = "张三住在幸福小区3号楼"  # personal data inside the original payload


def record(
    error: str, reason: str, value: bytes, key: bytes | None = b"WO-1", *, event_type: str | None = "ticket.created",
    matter_id: str | None = "WO-1", offset: int = 7,
) -> bytes:  # fmt: skip
    return deadletter_record(reason=reason, error=error, topic="p.events", partition=2, offset=offset, key=key,
                             value=value, now=1_764_036_000.5, event_type=event_type, matter_id=matter_id)  # fmt: skip


def payload(unit: str = "new_unit") -> bytes:
    return json.dumps({"type": "ticket.created", "subject": "WO-1", "data": {"unit": unit, "summary": SECRET,
                                                                          "reporter": {"phone": PHONE}}},
                      ensure_ascii=False).encode()  # fmt: skip


def entries() -> list[dl.DeadLetterEntry]:
    raws = [
        record("unknown_unit", "unit: unknown unit 'new_unit' (not in the units directory)", payload()),
        record(
            "invalid_json",
            "invalid JSON: Expecting value at line 1 column 1",
            b"{oops " + PHONE.encode(),
            event_type=None,
            matter_id=None,
        ),
        record("schema", f"data.reporter.phone: {PHONE!r} is not valid; contact {EMAIL}", payload("x")),
        record("unknown_unit", "unit: unknown unit 'new_unit'", payload(), key=b"WO-2", matter_id="WO-2"),
        record("not_utf8", "not UTF-8 text", b"\xff\xfe", key=None, event_type=None, matter_id=None),
    ]
    out = [dl.parse_entry(100 + i, 0, r) for i, r in enumerate(raws)]
    out.append(dl.parse_entry(105, 0, b"garbage that is not a dead letter"))
    return out


# ------------------------------------------------------------------ decoding


def test_parse_entry_recovers_the_original_bytes_and_coordinates() -> None:
    value = payload()
    e = dl.parse_entry(12, 0, record("unknown_unit", "r", value, key=b"WO-9", offset=41))
    assert (e.offset, e.partition, e.error, e.reason) == (12, 0, "unknown_unit", "r")
    assert e.value == value and e.key == b"WO-9" and e.size == len(value)
    assert (e.source_topic, e.source_partition, e.source_offset) == ("p.events", 2, 41)
    assert e.rejected_at is not None and e.rejected_at.startswith("2025-11-25T02:00:00.5")
    assert (e.event_type, e.matter_id) == ("ticket.created", "WO-1")
    assert e.replayable


def test_parse_entry_of_a_worker_dead_letter() -> None:
    """What the worker's Processor writes is what ``deadletter`` reads."""
    processor = Processor(load_config().engine(), "p.events")
    value = b'{"not": "an event"'
    result = processor.on_event(b"K", value, topic="p.events", partition=5, offset=99, stored=None, now=1e9)
    assert result.deadletter is not None
    e = dl.parse_entry(0, 0, result.deadletter)
    assert (e.error, e.key, e.value, e.source_partition, e.source_offset) == ("invalid_json", b"K", value, 5, 99)


def test_a_key_less_dead_letter_keeps_no_key() -> None:
    e = dl.parse_entry(0, 0, record("not_utf8", "r", b"\xff", key=None))
    assert e.key is None and e.value == b"\xff" and e.replayable


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"\xff", b"[1]", b'{"error": "x"}', b'{"value_b64": "***"}',
     b'{"value_b64": "AA==", "key_b64": "%%"}'],
)  # fmt: skip
def test_an_unreadable_record_is_listed_but_not_replayable(raw: bytes | None) -> None:
    e = dl.parse_entry(3, 0, raw)
    assert e.error == dl.UNREADABLE and e.value is None and not e.replayable and e.size == 0


# ----------------------------------------------------------------- selection


def test_select_needs_an_explicit_choice() -> None:
    with pytest.raises(dl.SelectionError, match="--offset"):
        dl.select(entries())


def test_select_by_offsets_errors_and_all() -> None:
    es = entries()
    assert [e.offset for e in dl.select(es, offsets=[101, 103, 999])] == [101, 103]
    assert [e.offset for e in dl.select(es, errors=["unknown_unit"])] == [100, 103]
    assert [e.offset for e in dl.select(es, errors=["unknown_unit", "schema"])] == [100, 102, 103]
    assert [e.offset for e in dl.select(es, offsets=[100, 101], errors=["unknown_unit"])] == [100]  # both hold
    assert [e.offset for e in dl.select(es, all_=True)] == [100, 101, 102, 103, 104, 105]
    assert [e.offset for e in dl.select(es, all_=True, errors=["schema"])] == [102]


def test_filter_entries_for_list_keeps_the_most_recent() -> None:
    es = entries()
    assert [e.offset for e in dl.filter_entries(es)] == [100, 101, 102, 103, 104, 105]
    assert [e.offset for e in dl.filter_entries(es, limit=2)] == [104, 105]
    assert [e.offset for e in dl.filter_entries(es, errors=["unknown_unit"], limit=1)] == [103]
    assert dl.filter_entries(es, limit=0) == []


# ------------------------------------------------------------------- masking


def test_masked_row_masks_reasons_and_never_carries_the_bytes() -> None:
    rows = [dl.masked_row(e) for e in entries()]
    text = json.dumps(rows, ensure_ascii=False)
    assert PHONE not in text and EMAIL not in text and SECRET not in text
    for e in entries():
        if e.value:
            assert base64.b64encode(e.value).decode() not in text
    schema_row = rows[2]
    assert "139****5678" in schema_row["reason"] and "z***@example.com" in schema_row["reason"]
    assert rows[0]["size"] == len(payload()) and rows[0]["key_size"] == 4
    assert rows[4]["key_size"] is None and rows[5]["replayable"] is False
    assert set(rows[0]) == {"offset", "partition", "rejected_at", "error", "event_type", "matter_id", "reason",
                            "source_topic", "source_partition", "source_offset", "size", "key_size",
                            "replayable"}  # fmt: skip


def test_masked_row_masks_producer_supplied_type_and_matter_texts() -> None:
    e = dl.parse_entry(0, 0, record("unknown_type", "type: unknown", b"{}", event_type=f"call {PHONE}",
                                    matter_id=PHONE))  # fmt: skip
    row = dl.masked_row(e)
    assert PHONE not in json.dumps(row)


# ----------------------------------------------------------------------- CLI

runner = CliRunner()


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {"read": [], "redrive": []}

    def read(bootstrap: str, prefix: str = "waterwatch", *, timeout: float = 30) -> list[dl.DeadLetterEntry]:
        calls["read"].append(prefix)
        return entries()

    def redrive(
        bootstrap: str, chosen: Sequence[dl.DeadLetterEntry], prefix: str = "waterwatch", *, timeout: float = 30
    ) -> dl.RedriveResult:
        calls["redrive"].append((prefix, list(chosen)))
        ok = [e for e in chosen if e.replayable]
        return dl.RedriveResult(len(ok), [e for e in chosen if not e.replayable], f"{prefix}.events")

    monkeypatch.setattr(dl, "read_deadletters", read)
    monkeypatch.setattr(dl, "redrive", redrive)
    monkeypatch.setenv("WATERWATCH_KAFKA", "127.0.0.1:1")
    return calls


def test_list_shows_masked_rows(fake_kafka: dict[str, Any]) -> None:
    r = runner.invoke(deadletter_app, ["list", "--topic-prefix", "p"])
    assert r.exit_code == 0, r.output
    assert fake_kafka["read"] == ["p"]
    assert PHONE not in r.output and SECRET not in r.output and EMAIL not in r.output
    assert "unknown_unit" in r.output and "invalid_json" in r.output
    assert "6 shown of 6 dead letters in p.deadletter" in r.stderr


def test_list_json_with_error_and_limit(fake_kafka: dict[str, Any]) -> None:
    r = runner.invoke(deadletter_app, ["list", "--json", "--error", "unknown_unit", "--error", "schema",
                                       "--limit", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["offset"] for x in rows] == [102, 103]
    assert all("value_b64" not in x and "key_b64" not in x for x in rows)
    assert PHONE not in r.stdout and SECRET not in r.stdout


def test_replay_without_a_selection_is_refused(fake_kafka: dict[str, Any]) -> None:
    r = runner.invoke(deadletter_app, ["replay"])
    assert r.exit_code == 1
    assert "--all" in r.stderr
    assert fake_kafka["read"] == [] and fake_kafka["redrive"] == []


def test_replay_by_error_re_drives_the_original_bytes(fake_kafka: dict[str, Any]) -> None:
    r = runner.invoke(deadletter_app, ["replay", "--error", "unknown_unit", "--topic-prefix", "p"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "re-drove 2 dead letter(s) to p.events"
    [(prefix, chosen)] = fake_kafka["redrive"]
    assert prefix == "p"
    assert [(e.key, e.value) for e in chosen] == [(b"WO-1", payload()), (b"WO-2", payload())]


def test_replay_by_offsets_warns_about_missing_ones(fake_kafka: dict[str, Any]) -> None:
    r = runner.invoke(deadletter_app, ["replay", "--offset", "101", "--offset", "104", "--offset", "7"])
    assert r.exit_code == 0, r.output
    assert "re-drove 2 dead letter(s) to waterwatch.events" in r.stdout
    assert "no dead letter at offset(s) 7" in r.stderr


def test_replay_all_skips_unreadable_records(fake_kafka: dict[str, Any]) -> None:
    r = runner.invoke(deadletter_app, ["replay", "--all"])
    assert r.exit_code == 0, r.output
    assert "re-drove 5 dead letter(s)" in r.stdout
    assert "offset 105: unreadable record" in r.stderr


def test_replay_dry_run_produces_nothing_and_prints_no_payload(fake_kafka: dict[str, Any]) -> None:
    r = runner.invoke(deadletter_app, ["replay", "--all", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert fake_kafka["redrive"] == []
    assert "dry run: 5 dead letter(s) would be re-driven to waterwatch.events" in r.stdout
    assert "would re-drive offset 100: unknown_unit ticket.created WO-1" in r.stdout
    assert PHONE not in r.output and SECRET not in r.output


def test_an_unreachable_broker_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from waterwatch.admin import BrokerUnavailable

    def read(*_: Any, **__: Any) -> list[dl.DeadLetterEntry]:
        raise BrokerUnavailable("127.0.0.1:1", "no TCP connection")

    monkeypatch.setattr(dl, "read_deadletters", read)
    r = runner.invoke(deadletter_app, ["list"])
    assert r.exit_code == 1
    assert r.stderr.startswith("error: cannot reach the Kafka broker")
