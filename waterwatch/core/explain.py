"""Explainable deadlines (DESIGN.md principle 5): how each deadline of a matter was computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from waterwatch.core.engine import Alert, Clock, Engine, MatterState
from waterwatch.core.policy import format_duration


@dataclass(slots=True)
class ClockExplanation:
    clock: str
    rule: str
    article: str
    what: str
    start: str
    counts: str
    limit: str | None
    due: str | None
    original_due: str | None
    version: int
    status: str
    extensions: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: list[dict[str, str]] = field(default_factory=list)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _iso(engine: Engine, ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, engine.tz).isoformat()


def explain_clock(engine: Engine, state: MatterState, clock: Clock) -> ClockExplanation:
    rule = engine.policy.rules.get(clock.rule)
    status = "running" if clock.stopped is None else f"{clock.outcome} (stopped {_iso(engine, clock.stopped)})"
    ex = ClockExplanation(
        clock=clock.name,
        rule=clock.rule,
        article=rule.article if rule else "",
        what=rule.what if rule else "",
        start=_iso(engine, clock.start) or "",
        counts="working time" if clock.counts == "working" else "wall clock",
        limit=format_duration(clock.limit) if clock.due is not None and clock.limit else None,
        due=_iso(engine, clock.due),
        original_due=_iso(engine, clock.original_due) if clock.original_due != clock.due else None,
        version=clock.version,
        status=status,
        extensions=[{"granted_at": _iso(engine, at) or "", "new_due": _iso(engine, due) or ""}
                    for at, due in clock.extensions],
    )
    if clock.due is None:
        ex.note = "no deadline yet: ops must set one (ticket.deadline_set)"
    elif clock.counts == "working":
        a = datetime.fromtimestamp(clock.start, engine.tz)
        b = datetime.fromtimestamp(clock.due, engine.tz)
        ex.skipped = [s.describe() for s in engine.calendar.skipped(a, b)]
        missing = sorted(engine.calendar.missing_years)
        if missing:
            ex.note = f"no official holiday data for {', '.join(map(str, missing))}: Mon-Fri assumed"
    else:
        ex.note = "wall clock: nights, weekends and holidays count"
    ex.stages = [
        {"stage": st.name, "level": st.level, "at": _iso(engine, st.at) or "", "notify": ", ".join(st.notify)}
        for st in engine.schedule(state, clock)
    ]
    return ex


def explain(engine: Engine, state: MatterState, alerts: list[Alert]) -> dict[str, Any]:
    return {
        "matter_id": state.matter_id,
        "kind": state.kind,
        "status": state.status,
        "unit": state.unit,
        "clocks": [explain_clock(engine, state, c).as_dict() for c in state.clocks.values()],
        "alerts": [
            {"alert_id": a.alert_id, "type": a.type, "fired_at": _iso(engine, a.fired_at)} for a in alerts
        ],
    }
