"""Chaotic input for the byte-identity checks of the core (docs/decisions/0008-core-throughput.md).

    python bench/chaos.py MATTERS SEED > chaotic.jsonl

Deterministic (seeded).  Starts from :func:`synth.city_year` and adds every event type (reopened, returned,
extensions granted and denied, deadlines set, hotline tiers, due dates and return windows, user-caused,
maintenance and emergency outages, outage updates and cancellations, public notices, meters read late or
estimated), then mixes in trouble: duplicated ids, times moved back and forward, events for the wrong or an
unknown matter, a wrong type for the matter, unknown units, creating events sent twice.  A large share of
the events is rejected, on purpose: every rejection path runs too.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth import CATEGORIES, TIERS, TZ, UNITS, city_year

TYPES_BY_KIND = {
    "T": ["ticket.dispatched", "ticket.accepted", "ticket.responded", "ticket.resolved", "ticket.closed",
          "ticket.reopened", "ticket.returned", "ticket.extension_requested", "ticket.extension_granted",
          "ticket.extension_denied", "ticket.deadline_set"],
    "O": ["outage.updated", "outage.cancelled", "outage.started", "outage.delay_reported", "outage.restored",
          "outage.notice_approved"],
    "L": ["leak.crew_arrived", "leak.repair_started", "leak.repaired"],
    "D": ["damage.inspector_arrived"],
    "M": ["meter.read"],
}  # fmt: skip


def _iso(t: datetime) -> str:
    return t.isoformat()


def _data(rnd: random.Random, typ: str, t: datetime, mid: str) -> dict[str, Any]:
    """Plausible (mostly valid) data for an event of type ``typ`` at ``t``."""
    later = t + timedelta(hours=rnd.choice([-5, 2, 30, 72, 200]))
    unit = rnd.choice([*UNITS, "nowhere"]) if rnd.random() < 0.15 else rnd.choice(UNITS)
    n = mid.split("-", 1)[-1]
    if typ in ("ticket.accepted", "ticket.responded", "ticket.resolved", "ticket.closed", "ticket.reopened"):
        return {"unit": unit} if rnd.random() < 0.4 else {}
    if typ == "ticket.dispatched":
        return {"unit": unit}
    if typ == "ticket.returned":
        return {"unit": unit, "reason": "not our area"}
    if typ == "ticket.extension_requested":
        return {"requested_due_at": _iso(later), "reason": "parts"}
    if typ in ("ticket.extension_granted", "ticket.deadline_set"):
        return {"due_at": _iso(later)}
    if typ == "ticket.extension_denied":
        return {"reason": "no"}
    if typ == "outage.updated":
        d: dict[str, Any] = {"reason": "re-planned"}
        if rnd.random() < 0.6:
            d["starts_at"] = _iso(t + timedelta(hours=rnd.choice([1, 30, 60])))
        if rnd.random() < 0.6:
            d["expected_end_at"] = _iso(t + timedelta(hours=rnd.choice([-2, 40, 70])))
        if rnd.random() < 0.3:
            d["area"] = {"compounds": [f"C{rnd.randrange(500)}"]}
        return d
    if typ == "outage.cancelled":
        return {"reason": "not needed"}
    if typ == "outage.delay_reported":
        return {"expected_end_at": _iso(t + timedelta(minutes=rnd.choice([-10, 40, 200]))), "reason": "pipe"}
    if typ == "outage.notice_approved":
        return {"approved_by": rnd.choice(["office", "office", "runda"]), "channels": ["media"]}
    if typ == "leak.repair_started":
        return {"pipe_diameter_mm": rnd.choice([100, 300, 600])} if rnd.random() < 0.5 else {}
    if typ == "meter.read":
        period = (t - timedelta(days=rnd.choice([0, 0, 31]))).strftime("%Y-%m")
        d = {"meter_id": f"MT{n}" if rnd.random() < 0.9 else "MTX", "account": f"A{n}", "period": period}
        if rnd.random() < 0.4:
            d["estimated"] = True
            if rnd.random() < 0.5:
                d["evidence"] = "locked gate"
                d["explained_to_user"] = rnd.random() < 0.5
        return d
    return {}


def _creating(rnd: random.Random, kind: str, mid: str, t: datetime) -> tuple[str, dict[str, Any]]:
    n = mid.split("-", 1)[-1]
    if kind == "T":
        d: dict[str, Any] = {"channel": rnd.choice(["phone", "hotline_12345", "visit"])}
        r = rnd.random()
        if r < 0.85:
            d["category"] = rnd.choice(CATEGORIES)
        if rnd.random() < 0.3:
            d["hotline_tier"] = rnd.choice(TIERS)
        if rnd.random() < 0.15:
            d["due_at"] = _iso(t + timedelta(hours=rnd.choice([-1, 20, 80])))
        if rnd.random() < 0.3:
            d["urgency"] = rnd.choice(["general", "urgent", "extra_urgent", "consultation"])
        if rnd.random() < 0.2:
            d["unit"] = rnd.choice(UNITS)
        if rnd.random() < 0.2:
            d["summary"] = "no water"
        return "ticket.created", d
    if kind == "O":
        if rnd.random() < 0.25:
            d = {"area": {"zones": ["z1"]}, "cause": "burst", "unit": rnd.choice(UNITS)}
            if rnd.random() < 0.7:
                d["expected_end_at"] = _iso(t + timedelta(hours=rnd.choice([1, 5, 9])))
            return "outage.emergency", d
        starts = t + timedelta(hours=rnd.choice([-2, 3, 24, 49, 72]))
        return "outage.planned", {
            "kind": rnd.choice(["planned", "maintenance", "user_caused", "external"]),
            "area": {"compounds": [f"C{rnd.randrange(500)}"]}, "starts_at": _iso(starts),
            "expected_end_at": _iso(starts + timedelta(hours=rnd.randrange(2, 10))), "unit": rnd.choice(UNITS),
            "pressure_limited": rnd.random() < 0.2}  # fmt: skip
    if kind == "L":
        d = {"pipe_diameter_mm": rnd.choice([100, 300, 600])} if rnd.random() < 0.7 else {}
        if rnd.random() < 0.15:
            d["in_meter_well"] = True
        return "leak.reported", d
    if kind == "D":
        return "damage.reported", {"summary": "digger"}
    return "meter.registered", {"meter_id": f"MT{n}", "account": f"A{n}"}


def chaotic(matters: int, seed: int) -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    base = list(city_year(matters, seed=seed))
    subjects = sorted({e["subject"] for e in base})
    extra: list[dict[str, Any]] = []
    n = len(base)
    start = datetime(2026, 1, 1, tzinfo=TZ)
    # new matters of every creating type, with random follow-ups of their kind
    for i in range(matters // 2):
        kind = rnd.choice("TTTOOLDM")
        mid = f"{kind}-x{i}"
        t = start + timedelta(seconds=rnd.randrange(364 * 86400))
        typ, d = _creating(rnd, kind, mid, t)
        n += 1
        extra.append({"specversion": "1.0", "id": f"c{n}", "source": "/chaos", "type": typ, "time": _iso(t),
                      "subject": mid, "data": d})  # fmt: skip
        for _ in range(rnd.randrange(2, 9)):
            t += timedelta(minutes=rnd.choice([1, 20, 90, 600, 3000, 9000]))
            typ = rnd.choice(TYPES_BY_KIND[kind])
            n += 1
            extra.append({"specversion": "1.0", "id": f"c{n}", "source": "/chaos", "type": typ, "time": _iso(t),
                          "subject": mid, "data": _data(rnd, typ, t, mid)})  # fmt: skip
    events = base + extra
    out: list[dict[str, Any]] = []
    for e in events:
        r = rnd.random()
        e = dict(e)
        t = datetime.fromisoformat(e["time"])
        if r < 0.05:  # a duplicate, maybe later
            out.append(dict(e))
            e["time"] = _iso(t + timedelta(minutes=rnd.choice([0, 5, 600])))
        elif r < 0.10:  # time moved back or forward
            e["time"] = _iso(t + timedelta(hours=rnd.choice([-300, -30, -2, 2, 30, 300])))
        elif r < 0.13:  # the wrong matter, or one that does not exist
            e["subject"] = rnd.choice(subjects) if rnd.random() < 0.7 else "X-unknown"
        elif r < 0.17:  # another type of any kind
            kind = rnd.choice(list(TYPES_BY_KIND))
            e["type"] = rnd.choice(TYPES_BY_KIND[kind])
            e["data"] = _data(rnd, e["type"], t, e["subject"])
        elif r < 0.19:  # a creating event sent again
            kind = e["subject"][0] if e["subject"][0] in TYPES_BY_KIND else "T"
            e["type"], e["data"] = _creating(rnd, kind, e["subject"], t)
            e["id"] = e["id"] + "r"
        elif r < 0.22 and e["type"] in ("ticket.dispatched", "ticket.returned"):
            e["data"] = {**e["data"], "unit": "nowhere"}
        out.append(e)
    rnd.shuffle(out)
    yield from out


if __name__ == "__main__":
    for ev in chaotic(int(sys.argv[1]), int(sys.argv[2])):
        sys.stdout.write(json.dumps(ev, ensure_ascii=False) + "\n")
