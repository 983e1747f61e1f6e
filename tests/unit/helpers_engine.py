"""Shared builders for the engine tests (test_rules.py, test_engine_properties.py).

``ev`` builds a validated input event the way other systems send it (through
``parse_event``, so a builder mistake fails like a bad producer would);
``run`` replays events with the virtual clock of :class:`Replayer` and returns
every alert, every rejection and the replayer (for its matter states).
``ENGINE`` is built once from the project's own ``config/`` directory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from waterwatch.core.config import load_config
from waterwatch.core.engine import Alert, Engine
from waterwatch.core.replay import Rejected, Replayer
from waterwatch.events import CloudEvent, parse_event

TZ = ZoneInfo("Asia/Shanghai")
CONFIG = load_config()
ENGINE: Engine = CONFIG.engine()
POLICY = CONFIG.policy
CALENDAR = CONFIG.calendar

_ids = itertools.count(1)


def at(text: str) -> datetime:
    """``2026-11-27T09:00`` → an aware datetime (Asia/Shanghai unless the text has an offset)."""
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=TZ)


def ts(text: str) -> int:
    """POSIX seconds of a local time text, like the engine's internal instants."""
    return int(at(text).timestamp())


def iso(text: str) -> str:
    """A local time text in full ISO form with its +08:00 offset."""
    return at(text).isoformat()


def ev(type: str, subject: str, time_iso: str, id: str | None = None, **data: Any) -> CloudEvent:
    """One input event, validated by ``parse_event`` (datetimes in ``data`` may be local texts)."""
    payload = {k: _jsonable(v) for k, v in data.items() if v is not None}
    return parse_event({
        "specversion": "1.0",
        "id": id or f"{subject}-{type}-{next(_ids)}",
        "source": "tests/unit",
        "type": type,
        "time": iso(time_iso),
        "subject": subject,
        "data": payload,
    })


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def run(
    events: Iterable[CloudEvent], until_iso: str | None = None, engine: Engine | None = None
) -> tuple[list[Alert], list[Rejected], Replayer]:
    """Feed ``events`` in the given order (sorted by time, stably), then run the clock to ``until``."""
    r = Replayer(engine or ENGINE)
    alerts: list[Alert] = []
    rejections: list[Rejected] = []
    ordered = sorted(events, key=lambda e: e.time.timestamp())
    for i, e in enumerate(ordered):
        got, rej = r.feed(e, i)
        alerts += got
        if rej is not None:
            rejections.append(rej)
    if until_iso is not None:
        alerts += list(r.run_until(ts(until_iso), inclusive=True))
    return alerts, rejections, r


def when(a: Alert) -> str:
    """An alert's firing instant as ISO text with offset (for exact comparisons)."""
    return datetime.fromtimestamp(a.fired_at, TZ).isoformat()


def by_stage(alerts: Iterable[Alert], clock: str | None = None, rule: str | None = None) -> dict[str, Alert]:
    """Alerts keyed by stage (optionally of one clock or rule); a repeated stage is an error."""
    out: dict[str, Alert] = {}
    for a in alerts:
        if (clock is None or a.clock == clock) and (rule is None or a.rule == rule):
            assert a.stage not in out, f"stage {a.stage} fired twice: {a.alert_id}"
            out[a.stage] = a
    return out


def ctx(a: Alert) -> dict[str, Any]:
    return dict(a.context)
