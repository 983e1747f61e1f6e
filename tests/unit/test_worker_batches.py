"""The worker's batch path without Kafka: the batch inbox (streams/faust_fixes.py), states encoded once per
matter and batch (``Processor(..., encode=False)``), and the state encoder (streams/processor.py)."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from streams.faust_fixes import BatchInbox
from streams.processor import Processor, _dumps, decode_state, encode_alert, encode_state
from waterwatch.core.config import load_config

TZ = ZoneInfo("Asia/Shanghai")
ENGINE = load_config().engine()
TOPIC = "wwtest.events"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=TZ).timestamp() + 0.25


def ev(type_: str, subject: str = "WO-1", *, at: float, id_: str | None = None, **data: Any) -> bytes:
    if type_ == "ticket.created" and not data:
        data = {"channel": "phone", "category": "hydrant_fault", "unit": "runda"}
    body = {"specversion": "1.0", "id": id_ or f"{subject}-{type_}", "source": "tests/unit", "type": type_,
            "time": datetime.fromtimestamp(at, TZ).isoformat(), "subject": subject, "data": data}  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


# ------------------------------------------------------------------ the state encoder


def test_the_state_encoder_writes_what_json_dumps_writes() -> None:
    samples: list[Any] = [
        {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": 'ü 水 \u2028 "q" \\ \n'}},
        {"f": 1e300, "g": -0.0, "h": 1 / 3, "i": float("nan"), "j": float("inf"), "k": 2**70},
        {"nested": [[[]], {}, [{"x": "y"}]], "": ""},
        [1, "two", 3.0],
        "just a string \x00",
    ]
    p = Processor(ENGINE, TOPIC, state_tag="t")
    r = p.on_event(b"WO-1", ev("ticket.created", at=NOW - 60), topic=TOPIC, partition=0, offset=0, stored=None,
                   now=NOW)  # fmt: skip
    assert r.new_state is not None
    samples.append(r.new_state.to_dict())
    for obj in samples:
        assert _dumps(obj) == json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------ encoded once per matter and batch


def test_a_batch_s_newest_state_encoded_once_is_what_encoding_every_record_stores() -> None:
    """The worker applies a batch's records of a matter to one live state (``encode=False``) and encodes it
    once at the end: the bytes are those the last record stores when every record encodes (``encode=True``),
    duplicates and checks with nothing due in between included, and the alerts are the same."""
    records: list[tuple[str, bytes | None, float]] = [
        ("event", ev("ticket.created", at=NOW - 600), NOW),
        ("event", ev("ticket.created", at=NOW - 600), NOW),  # a duplicate: nothing stored
        ("event", ev("ticket.dispatched", at=NOW - 500, unit="runda"), NOW),
        ("check", None, NOW),  # nothing due yet: nothing stored
        ("event", ev("ticket.accepted", at=NOW - 400), NOW),
    ]
    due: int | None = None
    plain = Processor(ENGINE, TOPIC, state_tag="t")
    deferred = Processor(ENGINE, TOPIC, state_tag="t")
    stored: bytes | None = None
    live = None
    live_due: int | None = None
    alerts_plain: list[Any] = []
    alerts_deferred: list[Any] = []
    for kind, value, now in [*records, ("check", None, float("inf"))]:
        if kind == "check":
            if now == float("inf"):  # a check at the matter's next due: fires
                due = ENGINE.next_due(decode_state(stored))  # type: ignore[arg-type]
                assert due is not None
                now = float(due)
            a = plain.on_check(b"WO-1", stored, now=now)
            before = copy.deepcopy(live.to_dict()) if live is not None else None
            b = deferred.on_check(b"WO-1", None, now=now, cached=live, encode=False)
        else:
            a = plain.on_event(b"WO-1", value, topic=TOPIC, partition=0, offset=1, stored=stored, now=now)
            before = copy.deepcopy(live.to_dict()) if live is not None else None
            b = deferred.on_event(b"WO-1", value, topic=TOPIC, partition=0, offset=1, stored=None, now=now,
                                  cached=live, encode=False)  # fmt: skip
        assert b.state is None and b.alerts == a.alerts and b.next_due == a.next_due
        assert b.duplicate == a.duplicate and b.deadletter == a.deadletter
        alerts_plain += a.alerts
        alerts_deferred += b.alerts
        if a.state is not None:
            assert b.new_state is not None
            stored, live, live_due = a.state, b.new_state, b.next_due
        else:  # nothing stored: the live state is left as it was
            assert b.new_state is None
            assert live is not None and live.to_dict() == before
    assert live is not None and encode_state(live, live_due, "t") == stored
    assert alerts_plain and alerts_plain == alerts_deferred
    for a in alerts_plain:  # the alert records: what json.dumps wrote before
        assert encode_alert(a) == json.dumps(a.to_event(), ensure_ascii=False, separators=(",", ":")).encode()


# ------------------------------------------------------------------ the batch inbox


@dataclass(eq=False)
class _Msg:
    offset: int
    generation_id: int = 1
    tp: tuple[str, int] = ("t.events", 0)
    tracked: bool = False


@dataclass
class _Monitor:
    stream_inbound_time: dict[Any, float] = field(default_factory=dict)


class _FlowControl:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class _Consumer:
    unacked: set[Any] = field(default_factory=set)


@dataclass
class _App:
    consumer: _Consumer = field(default_factory=_Consumer)
    flow_control: _FlowControl = field(default_factory=_FlowControl)
    monitor: _Monitor = field(default_factory=_Monitor)
    consumer_generation_id: int = 1


def test_the_inbox_hands_messages_out_in_order_and_tracks_them_as_unacked() -> None:
    async def go() -> None:
        app = _App()
        box = BatchInbox({"t.events"}, limit=4)
        msgs = [_Msg(i) for i in range(6)]
        box.put(msgs[:3])
        assert box.arrived.is_set() and box.room.is_set()
        box.put(msgs[3:])
        assert not box.room.is_set()  # the fetcher waits
        got = box.take(3, app)
        assert got == msgs[:3] and all(m.tracked for m in got) and app.consumer.unacked == set(got)
        assert box.room.is_set()  # fewer than the limit left
        assert box.take(10, app) == msgs[3:]
        assert app.consumer.unacked == set(msgs) and not box.items
        assert ("t.events", 0) in app.monitor.stream_inbound_time

    asyncio.run(go())


def test_the_inbox_drops_what_faust_would_drop() -> None:
    async def go() -> None:
        app = _App(consumer_generation_id=2)
        box = BatchInbox({"t.events"}, limit=100)
        box.put([_Msg(0, generation_id=1), _Msg(1, generation_id=2)])
        got = box.take(10, app)  # a message of an older generation is not handed out (read again after the seek)
        assert [m.offset for m in got] == [1] and box.dropped == 1
        box.put([_Msg(2, generation_id=2)])
        app.flow_control.active = False  # a rebalance under way: nothing is handed out
        assert box.take(10, app) == [] and box.dropped == 2
        box.put([_Msg(3, generation_id=2), _Msg(4, generation_id=2)])
        box.clear()  # Faust's flow_control.clear() at a revocation
        assert not box.items and box.dropped == 4 and box.room.is_set()
        assert {m.offset for m in app.consumer.unacked} == {1}  # only what was handed out waits for its ack

    asyncio.run(go())
