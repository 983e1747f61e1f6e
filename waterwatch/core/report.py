"""The monthly assessment (Article 34): every deadline met or missed, per unit and rule.

Pure: it reads matter states produced by a replay (or the worker's table) and
counts.  A deadline *falls in* the month when its deadline in force lies in
the month.  It is *met* when its clock stopped at or before that deadline,
*missed* when it stopped later or is still running after it, and *pending*
when it is still running and the deadline has not come by ``as_of``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from waterwatch.core.engine import MatterState, Outcome

RESOLVE_CLOCKS = ("resolve", "feedback", "respond", "repair")


@dataclass(slots=True)
class Row:
    unit: str
    rule: str
    deadlines: int = 0
    met: int = 0
    missed: int = 0
    pending: int = 0
    extensions: int = 0
    returns: int = 0
    accept_seconds: list[int] = field(default_factory=list)
    resolve_seconds: list[int] = field(default_factory=list)

    @property
    def on_time_pct(self) -> float | None:
        decided = self.met + self.missed
        return round(100.0 * self.met / decided, 1) if decided else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        acc, res = d.pop("accept_seconds"), d.pop("resolve_seconds")
        d["on_time_pct"] = self.on_time_pct
        d["accept_median_s"], d["accept_p90_s"] = _median(acc), _p90(acc)
        d["resolve_median_s"], d["resolve_p90_s"] = _median(res), _p90(res)
        return d


def _median(xs: list[int]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _p90(xs: list[int]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    # nearest-rank p90
    k = max(0, -(-9 * len(s) // 10) - 1)
    return float(s[k])


def monthly(states: Iterable[MatterState], start: int, end: int, as_of: int) -> list[Row]:
    """Rows per (unit, rule) for deadlines in force falling in [start, end)."""
    rows: dict[tuple[str, str], Row] = {}

    def row(unit: str | None, rule: str) -> Row:
        key = (unit or "unassigned", rule)
        if key not in rows:
            rows[key] = Row(*key)
        return rows[key]

    for st in states:
        records: list[Outcome] = list(st.outcomes)
        running = [c for c in st.clocks.values() if c.stopped is None and c.due is not None
                   and c.kind in ("deadline", "overdue_only")]  # fmt: skip
        for o in records:
            if not (start <= o.due < end):
                continue
            r = row(o.unit, o.rule)
            r.deadlines += 1
            if o.met:
                r.met += 1
            else:
                r.missed += 1
            r.extensions += o.extensions
            if o.clock == "accept":
                r.accept_seconds.append(o.stopped - o.start)
            elif o.clock in RESOLVE_CLOCKS:
                r.resolve_seconds.append(o.stopped - o.start)
        for c in running:
            assert c.due is not None
            if not (start <= c.due < end):
                continue
            r = row(c.unit, c.rule)
            r.deadlines += 1
            r.extensions += len(c.extensions)
            if c.due < as_of:
                r.missed += 1
            else:
                r.pending += 1
        returns = sum(1 for t, e in st.history if e == "ticket.returned" and start <= t < end)
        if returns:
            row(st.unit, "R14.5").returns += returns
    return sorted(rows.values(), key=lambda r: (r.unit, _rule_key(r.rule)))


def _rule_key(rule: str) -> tuple[Any, ...]:
    parts: list[Any] = []
    for p in rule.lstrip("R").replace("(", ".").replace(")", "").split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return tuple(parts)


def per_unit(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Totals per unit (for the bar chart and the assessment)."""
    agg: dict[str, dict[str, int]] = defaultdict(lambda: {"deadlines": 0, "met": 0, "missed": 0, "pending": 0})
    for r in rows:
        a = agg[r.unit]
        a["deadlines"] += r.deadlines
        a["met"] += r.met
        a["missed"] += r.missed
        a["pending"] += r.pending
    out = []
    for unit, a in sorted(agg.items()):
        decided = a["met"] + a["missed"]
        out.append({"unit": unit, **a, "on_time_pct": round(100.0 * a["met"] / decided, 1) if decided else None})
    return out
