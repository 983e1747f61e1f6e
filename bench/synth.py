"""A synthetic city-year of events: tickets, outages, leaks, damage reports and meters.

Deterministic (seeded). Each matter gets a plausible lifecycle; some go
overdue, some get extensions, some are returned and re-dispatched.  Used by the
benchmarks and, in small sizes, by tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

TZ = timezone(timedelta(hours=8))
UNITS = ["runda", "shuixing", "chengnan", "boyang_supply", "quality_lab"]
CATEGORIES = [
    "hydrant_fault", "manhole_cover", "compound_no_water", "water_quality", "pipe_damage",
    "meter_well_repair", "meter_calibration", "general_inquiry", "abnormal_usage_low_pressure",
    "construction_quality", "compensation", "complaint", "supply_restoration",
]  # fmt: skip
TIERS = ["life_safety", "basic_living", "general", "complex"]


def _iso(t: datetime) -> str:
    return t.isoformat()


def _event(n: int, typ: str, subject: str, t: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"e{n}", "source": "/bench", "type": typ,
        "time": _iso(t), "subject": subject, "data": data,
    }  # fmt: skip


def city_year(matters: int, *, seed: int = 7, year: int = 2026) -> Iterator[dict[str, Any]]:
    """Yield event dicts (not sorted by time; replay sorts), about 5.5 per matter."""
    rnd = random.Random(seed)
    start = datetime(year, 1, 1, tzinfo=TZ)
    span = 364 * 86400
    n = 0

    def nxt() -> int:
        nonlocal n
        n += 1
        return n

    for i in range(matters):
        t0 = start + timedelta(seconds=rnd.randrange(span))
        kind = rnd.random()
        if kind < 0.80:
            mid = f"T-{i}"
            unit = rnd.choice(UNITS)
            data: dict[str, Any] = {"channel": "phone", "category": rnd.choice(CATEGORIES)}
            if rnd.random() < 0.3:
                data = {"channel": "hotline_12345", "hotline_tier": rnd.choice(TIERS),
                        "category": data["category"], "urgency": "general"}  # fmt: skip
            yield _event(nxt(), "ticket.created", mid, t0, data)
            t = t0 + timedelta(minutes=rnd.randrange(1, 30))
            yield _event(nxt(), "ticket.dispatched", mid, t, {"unit": unit})
            t += timedelta(minutes=rnd.randrange(1, 75))
            yield _event(nxt(), "ticket.accepted", mid, t, {})
            t += timedelta(minutes=rnd.randrange(5, 90))
            yield _event(nxt(), "ticket.responded", mid, t, {})
            if rnd.random() < 0.1 and data["category"] != "complaint":  # complaints have no resolve deadline
                t += timedelta(hours=rnd.randrange(1, 10))
                yield _event(nxt(), "ticket.extension_requested", mid, t,
                             {"requested_due_at": _iso(t + timedelta(days=3)), "reason": "parts"})  # fmt: skip
                t += timedelta(minutes=30)
                yield _event(nxt(), "ticket.extension_granted", mid, t, {"due_at": _iso(t + timedelta(days=3))})
            # most matters are resolved well in time; a tail goes overdue
            t += timedelta(hours=rnd.expovariate(1 / 5))
            yield _event(nxt(), "ticket.resolved", mid, t, {})
            t += timedelta(hours=rnd.randrange(1, 48))
            yield _event(nxt(), "ticket.closed", mid, t, {})
        elif kind < 0.88:
            mid = f"L-{i}"
            yield _event(nxt(), "leak.reported", mid, t0,
                         {"pipe_diameter_mm": rnd.choice([100, 300, 600]), "unit": "runda"})  # fmt: skip
            t = t0 + timedelta(minutes=rnd.expovariate(1 / 40))
            yield _event(nxt(), "leak.crew_arrived", mid, t, {})
            t += timedelta(minutes=rnd.randrange(10, 120))
            yield _event(nxt(), "leak.repair_started", mid, t, {})
            t += timedelta(hours=rnd.expovariate(1 / 12))
            yield _event(nxt(), "leak.repaired", mid, t, {})
        elif kind < 0.93:
            mid = f"D-{i}"
            yield _event(nxt(), "damage.reported", mid, t0, {"summary": "digger hit a pipe"})
            yield _event(nxt(), "damage.inspector_arrived", mid, t0 + timedelta(minutes=rnd.expovariate(1 / 40)), {})
        elif kind < 0.98:
            mid = f"O-{i}"
            starts = t0 + timedelta(hours=rnd.choice([24, 49, 72]))
            end = starts + timedelta(hours=rnd.randrange(2, 10))
            yield _event(nxt(), "outage.planned", mid, t0, {
                "kind": "planned", "area": {"compounds": [f"C{rnd.randrange(500)}"]},
                "starts_at": _iso(starts), "expected_end_at": _iso(end), "cause": "valve replacement",
                "unit": rnd.choice(UNITS)})  # fmt: skip
            yield _event(nxt(), "outage.started", mid, starts, {})
            if rnd.random() < 0.2:
                yield _event(nxt(), "outage.delay_reported", mid, end - timedelta(minutes=45),
                             {"expected_end_at": _iso(end + timedelta(hours=2)), "reason": "pipe"})  # fmt: skip
                end += timedelta(hours=2)
            yield _event(nxt(), "outage.restored", mid, end - timedelta(minutes=rnd.randrange(0, 60)), {})
        else:
            mid = f"M-{i}"
            yield _event(nxt(), "meter.registered", mid, t0, {"meter_id": f"MT{i}", "account": f"A{i}"})
            month = t0.replace(day=20)
            yield _event(nxt(), "meter.read", mid, max(month, t0 + timedelta(hours=1)),
                         {"meter_id": f"MT{i}", "account": f"A{i}", "period": t0.strftime("%Y-%m")})  # fmt: skip
