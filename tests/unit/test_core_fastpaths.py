"""The shortcuts of docs/decisions/0008-core-throughput.md ("Fewer instructions per event") give what the
plain code gave: the replay's due-matter queue pops in (instant, matter id) order like one heap of tuples,
event fields read from the model's dict are the attributes, the meter month read off the ISO time is
``strftime("%Y-%m")``, and the fast Stage builder makes ordinary equal stages."""

from __future__ import annotations

import heapq
import random
from dataclasses import FrozenInstanceError
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from waterwatch.core import engine as eng
from waterwatch.core.config import load_config
from waterwatch.core.replay import Replayer
from waterwatch.events import parse_event

ENGINE = load_config().engine()


@pytest.mark.parametrize("seed", range(20))
def test_the_due_queue_pops_like_a_heap_of_tuples(seed: int) -> None:
    rnd = random.Random(seed)
    r = Replayer(ENGINE)
    ref: list[tuple[int, str]] = []
    popped: list[tuple[int, str]] = []
    expected: list[tuple[int, str]] = []
    for _ in range(600):
        if ref and rnd.random() < 0.4:
            popped.append(r._pop())
            expected.append(heapq.heappop(ref))
        else:
            entry = (rnd.randrange(50), f"M-{rnd.randrange(30)}")  # many equal instants, repeated entries
            r._push(*entry)
            heapq.heappush(ref, entry)
    while ref:
        popped.append(r._pop())
        expected.append(heapq.heappop(ref))
    assert popped == expected
    assert r._heap == [] and r._at == {}


def test_event_fields_are_the_attributes() -> None:
    raw = (b'{"specversion":"1.0","id":"e1","source":"/t","type":"ticket.created","time":"2026-05-01T10:00:00+08:00",'
           b'"subject":"T-1","data":{"channel":"phone","category":"hydrant_fault"}}')  # fmt: skip
    ev = parse_event(raw)
    assert eng._event_fields(ev) == (ev.id, ev.type, ev.subject, ev.data)
    plain = SimpleNamespace(id="e2", type="ticket.closed", subject="T-2", data={})
    assert eng._event_fields(plain) == ("e2", "ticket.closed", "T-2", {})  # type: ignore[arg-type]

    class Slotted:
        __slots__ = ("data", "id", "subject", "type")

    s: Any = Slotted()
    s.id, s.type, s.subject, s.data = "e3", "leak.repaired", "L-3", None
    assert eng._event_fields(s) == ("e3", "leak.repaired", "L-3", None)


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu"])
def test_meter_month_is_strftime(zone: str) -> None:
    e = load_config().engine()
    e.tz = ZoneInfo(zone)
    rnd = random.Random(zone)
    stamps = [rnd.randrange(0, 4_000_000_000) for _ in range(3000)]
    # month ends and DST switches of 2026
    stamps += [int(datetime(2026, m, 1, tzinfo=e.tz).timestamp()) + d for m in range(1, 13) for d in (-1, 0, 1)]
    stamps += [1774746000 + d for d in range(-3700, 3700, 599)] + [1792890000 + d for d in range(-3700, 3700, 599)]
    for ts in stamps:
        period, due = e._month_of(ts)
        assert period == datetime.fromtimestamp(ts, e.tz).strftime("%Y-%m"), ts
        assert due == eng._next_month_start(ts, e.tz), ts


def test_fast_stages_are_ordinary_stages() -> None:
    s = eng._native_stage(10, "overdue", "overdue", ("unit", "ops"), None)
    plain = eng.Stage(10, "overdue", "overdue", ("unit", "ops"))
    assert type(s) is eng.Stage and s == plain and hash(s) == hash(plain) and repr(s) == repr(plain)
    with pytest.raises((FrozenInstanceError, AttributeError)):
        s.at = 11  # type: ignore[misc]
