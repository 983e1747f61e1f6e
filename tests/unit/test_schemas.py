"""The event contract: committed schemas match the models; validation errors are readable."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from waterwatch import codes, events, schema_gen
from waterwatch.events import EventError, parse_event
from waterwatch.topics import ALL_TOPICS

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schema_files_equal_what_the_models_generate() -> None:
    assert schema_gen.diff(SCHEMAS) == [], "run `waterwatch schemas write` and commit schemas/"


def test_there_is_a_schema_per_event_type_and_an_asyncapi_document() -> None:
    for type_name in events.ALL_MODELS:
        assert (SCHEMAS / f"{type_name}.json").exists(), type_name
    doc = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {t.name for t in ALL_TOPICS}
    assert {
        "waterwatch.events", "waterwatch.clock", "waterwatch.alerts", "waterwatch.deliveries",
        "waterwatch.residents", "waterwatch.deadletter",
    } <= addresses  # fmt: skip
    for ref in doc["components"]["messages"].values():
        assert (SCHEMAS / ref["payload"]["$ref"].removeprefix("./")).exists()


def test_stable_codes_of_rules_md_are_enums_in_the_schema() -> None:
    schema = json.loads((SCHEMAS / "ticket.created.json").read_text(encoding="utf-8"))
    cats = schema["$defs"]["Category"]["enum"]
    assert "hydrant_fault" in cats and "reputation_or_unforeseen" in cats
    assert set(schema["$defs"]["HotlineTier"]["enum"]) == {"life_safety", "basic_living", "general", "complex"}
    assert set(schema["$defs"]["Urgency"]["enum"]) == {"extra_urgent", "urgent", "consultation", "general"}
    assert len(codes.Category) == 29


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "demo-events.jsonl"


def test_demo_events_validate_against_both_the_models_and_the_json_schemas() -> None:
    for line in EXAMPLES.read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        parse_event(raw)
        schema = json.loads((SCHEMAS / f"{raw['type']}.json").read_text(encoding="utf-8"))
        jsonschema.validate(raw, schema)


def _event(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "specversion": "1.0", "id": "e1", "source": "/t", "type": "ticket.created",
        "time": "2026-11-27T10:00:00+08:00", "subject": "T-1",
        "data": {"channel": "phone", "category": "hydrant_fault"},
    }  # fmt: skip
    base.update(over)
    return base


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        (b"{not json", "invalid_json", "invalid JSON"),
        (b"\xff\xfe", "not_utf8", "not UTF-8"),
        (json.dumps(_event(type="ticket.exploded")).encode(), "unknown_type", "unknown event type"),
        (json.dumps(_event(time="2026-11-27T10:00:00")).encode(), "schema", "time: Input should have timezone"),
        (json.dumps(_event(data={"channel": "fax", "category": "hydrant_fault"})).encode(), "schema",
         "data.channel: 'fax' is not one of"),
        (json.dumps(_event(data={"category": "hydrant_fault"})).encode(), "schema", "data.channel: is required"),
        (json.dumps(_event(data={"channel": "phone", "category": 7})).encode(), "schema", "data.category"),
        (json.dumps(_event(subject="has space")).encode(), "schema", "subject:"),
        (b"x" * (events.MAX_EVENT_BYTES + 1), "too_large", "over the"),
    ],
)  # fmt: skip
def test_invalid_input_is_refused_with_one_readable_line(raw: bytes, error: str, fragment: str) -> None:
    with pytest.raises(EventError) as exc:
        parse_event(raw)
    assert exc.value.error == error
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_R19_3_maintenance_outage_without_cause_is_refused_with_the_rule_named() -> None:
    raw = _event(
        type="outage.planned", subject="O-1",
        data={"kind": "maintenance", "area": {"compounds": ["C1"]}, "unit": "runda",
              "starts_at": "2026-12-01T09:00:00+08:00", "expected_end_at": "2026-12-01T12:00:00+08:00"},
    )  # fmt: skip
    with pytest.raises(EventError, match=r"R19\.3"):
        parse_event(raw)


def test_output_alerts_are_valid_cloudevents_of_the_contract() -> None:
    from waterwatch.core.config import load_config
    from waterwatch.core.replay import Rejected, replay

    engine = load_config().engine()
    evs = [(i, parse_event(line)) for i, line in enumerate(EXAMPLES.read_text(encoding="utf-8").splitlines())]
    n = 0
    for item in replay(engine, evs, until=int(evs[-1][1].time.timestamp()) + 5 * 86400):
        assert not isinstance(item, Rejected)
        ce = item.to_event(engine.tz)
        parsed = parse_event(ce, allow_output=True)
        assert parsed.subject == item.matter_id
        jsonschema.validate(ce, json.loads((SCHEMAS / f"{ce['type']}.json").read_text(encoding="utf-8")))
        n += 1
    assert n > 20
