"""The business calendar: exact-to-the-second working time on Chinese working days.

Some SLA clocks count *working time*: the configured working periods (default
08:30-12:00 and 13:30-17:30, i.e. with a lunch break) on Chinese working days,
in ``Asia/Shanghai``.  A working day is decided, in this order of precedence:

1. an operator override (``config/calendar.yaml`` ``days``) for that date;
2. the ``chinese_calendar`` package (statutory holidays are off, adjusted
   make-up working days -- 调休, usually on a weekend -- are on);
3. otherwise Monday-Friday.  For a year that neither the package covers nor the
   operator declared complete (``complete_years``) this is a *guess*, and it is
   loud: ``on_missing(date)`` is called and a warning is logged on
   ``waterwatch.calendar`` once per year, the year is recorded in
   :attr:`BusinessCalendar.missing_years`, and :attr:`DayInfo.has_data` is False.

This module is part of the pure core: it never reads the clock (``now`` is
always a parameter), does no I/O except :func:`load_calendar`, and keeps only
deterministic per-day caches.

Boundary semantics (all instants are tz-aware; any UTC offset is accepted):

* Instants are **floored to the whole second** before any computation;
  returned datetimes always have ``microsecond == 0`` and are in the
  calendar's time zone.
* A working period is half-open ``[start, end)``: 08:30:00 is working time,
  12:00:00 is not.
* ``working_seconds(a, b)`` counts working seconds in ``[a, b)``; 0 if b <= a.
  It is additive: ``ws(a, c) == ws(a, b) + ws(b, c)`` for ``a <= b <= c``.
* ``add_working(t, n)`` for ``n > 0`` is the *earliest* instant ``T`` with
  ``working_seconds(t, T) == n``.  It therefore may be the end of a period:
  one hour from 16:30 is 17:30 the same day, not 08:30 the next morning.
* ``add_working(t, 0) == next_working_instant(t)``: ``t`` itself if ``t`` is
  inside working time, else the start of the next working period.
* Hence for every ``t`` and ``n >= 0``: ``working_seconds(t, add_working(t, n)) == n``
  and ``add_working`` is monotonic in ``n``.

Hot path: per-date classification and per-date working periods (as epoch
seconds) are cached, so ``add_working``/``working_seconds`` cost O(days spanned)
with dictionary look-ups only.  :meth:`BusinessCalendar.add_working_ts` and
:meth:`BusinessCalendar.working_seconds_ts` take and return integer epoch
seconds and avoid building datetimes altogether (about 3x faster than
converting to datetime and back around the datetime API).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar
import yaml

from waterwatch.core.errors import ConfigError

__all__ = [
    "DEFAULT_PERIODS",
    "DEFAULT_TZ",
    "BusinessCalendar",
    "CalendarError",
    "ConfigError",
    "DayInfo",
    "DayKind",
    "DayOverride",
    "MissingHolidayData",
    "Skip",
    "SkipKind",
    "load_calendar",
]

log = logging.getLogger("waterwatch.calendar")

DEFAULT_TZ = "Asia/Shanghai"
DEFAULT_PERIODS: tuple[tuple[time, time], ...] = (
    (time(8, 30), time(12, 0)),
    (time(13, 30), time(17, 30)),
)

DayKind = Literal[
    "workday", "weekend", "holiday", "makeup_workday", "override_workday", "override_holiday"
]
SkipKind = Literal[
    # non-working stretches
    "night",  # after the last period of a working day until the first period of the next day
    "lunch",  # a gap between two working periods of the same day
    "before_hours",  # midnight .. first period, on a working day that follows a non-working day
    "after_hours",  # last period .. midnight, on a working day followed by a non-working day
    "weekend",
    "holiday",  # statutory holiday from chinese_calendar
    "override_holiday",  # operator-declared day off
    # annotations: working time that *was* counted, worth showing in "explain"
    "makeup_workday",  # 调休: a weekend day that is a working day
    "override_workday",  # operator-declared working day
    "unverified_workday",  # Mon-Fri guess in a year without holiday data
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_MAX_IDLE_DAYS = 2 * 366
"""Give up (CalendarError) after this many consecutive days without working time."""

_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YEAR_RE = re.compile(r"^\d{4}$")

# chinese_calendar's supported range, derived from its data (as the package's own
# validation does) so that an upgrade publishing a new year extends coverage.
_PKG_YEARS: frozenset[int] = frozenset(d.year for d in chinese_calendar.holidays)
_PKG_FIRST_YEAR: int = min(_PKG_YEARS)
_PKG_LAST_YEAR: int = max(_PKG_YEARS)
_C = TypeVar("_C")
_ZH_NAMES: dict[str, str] = {str(h.value): str(h.chinese) for h in chinese_calendar.Holiday}


@dataclass(frozen=True, slots=True)
class MissingHolidayData:
    """Record of a year for which Mon-Fri was guessed (no holiday data).

    One per year in :attr:`BusinessCalendar.missing`; also attached to the
    warning's log record as ``record.missing_holiday_data``.
    """

    year: int
    first_date: date
    """The first date of that year the calendar was asked about."""


def _python_class(cls: type[_C]) -> type[_C]:
    """No-op at run time; a class decorator mypyc does not know, so that it keeps the class a Python class."""
    return cls


@_python_class  # mypyc compiles no subclass of RuntimeError
class CalendarError(RuntimeError):
    """The calendar cannot answer (e.g. no working time for years on end)."""


@dataclass(frozen=True, slots=True)
class DayOverride:
    """An operator-declared holiday (``workday=False``) or working day for one date."""

    date: date
    workday: bool
    name: str = ""


@dataclass(frozen=True, slots=True)
class DayInfo:
    """What kind of day a date is, and where that knowledge comes from."""

    date: date
    workday: bool
    kind: DayKind
    name: str | None = None
    """Holiday name: chinese_calendar's English name (e.g. ``"National Day"``) or the
    operator's name; for a make-up workday, the holiday it makes up for."""
    name_zh: str | None = None
    """Chinese holiday name from chinese_calendar (e.g. ``"国庆节"``), if known."""
    has_data: bool = True
    """False when the day was guessed (Mon-Fri) for lack of holiday data."""


@dataclass(frozen=True, slots=True)
class Skip:
    """A stretch between two instants, for "explain".

    Non-working kinds (night, lunch, weekend, holiday, ...) were *not* counted;
    the annotation kinds (makeup_workday, override_workday, unverified_workday)
    cover working time that *was* counted on an unusual day.
    """

    kind: SkipKind
    start: datetime
    end: datetime
    name: str | None = None
    has_data: bool = True

    @property
    def counted(self) -> bool:
        return self.kind in ("makeup_workday", "override_workday", "unverified_workday")

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        """Local date of the last second in the stretch."""
        return (self.end - _SECOND).date()

    def describe(self) -> str:
        """E.g. ``holiday National Day 2026-10-01..2026-10-07``."""
        first, last = self.first_day, self.last_day
        days = str(first) if first == last else f"{first}..{last}"
        label = f"{self.kind} {self.name}" if self.name else self.kind
        span = f"{self.start:%Y-%m-%d %H:%M:%S} - {self.end:%Y-%m-%d %H:%M:%S}"
        guess = " (no holiday data: guessed)" if not self.has_data else ""
        return f"{label} {days} [{span}]{guess}"


# (periods as absolute epoch seconds, total working seconds of the day)
_Plan = tuple[tuple[tuple[int, int], ...], int]
_NO_OVERRIDES: Mapping[date, DayOverride] = MappingProxyType({})


def _fmt(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def period_problems(periods: Sequence[tuple[time, time]]) -> list[tuple[int, str]]:
    """Problems with a list of working periods, as ``(index, message)``; empty if valid."""
    problems: list[tuple[int, str]] = []
    if not periods:
        problems.append((-1, "at least one working period is required"))
    prev_end: time | None = None
    for i, (start, end) in enumerate(periods):
        if start.tzinfo is not None or end.tzinfo is not None:
            problems.append((i, "times must be wall-clock times without a time zone"))
        elif start.microsecond or end.microsecond:
            problems.append((i, "times must be whole seconds"))
        elif end <= start:
            problems.append((i, f"end {_fmt(end)} is not after start {_fmt(start)}"))
        elif prev_end is not None and start < prev_end:
            problems.append(
                (i, f"start {_fmt(start)} is before the previous period's end {_fmt(prev_end)}")
            )
        prev_end = end if prev_end is None or end > prev_end else prev_end
    return problems


class BusinessCalendar:
    """Working-time arithmetic over Chinese working days (see module docstring)."""

    def __init__(
        self,
        periods: Sequence[tuple[time, time]] = DEFAULT_PERIODS,
        tz: str = DEFAULT_TZ,
        overrides: Mapping[date, DayOverride] = _NO_OVERRIDES,
        on_missing: Callable[[date], None] | None = None,
        complete_years: Iterable[int] = (),
    ) -> None:
        problems = period_problems(periods)
        if problems:
            i, msg = problems[0]
            raise ValueError(f"working_hours[{i}]: {msg}" if i >= 0 else f"working_hours: {msg}")
        try:
            self._zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        for key, ov in overrides.items():
            if key != ov.date:
                raise ValueError(f"override keyed {key} is for {ov.date}")
        self.tz = tz
        self.periods: tuple[tuple[time, time], ...] = tuple(periods)
        self.overrides: Mapping[date, DayOverride] = MappingProxyType(dict(overrides))
        self.complete_years: frozenset[int] = frozenset(complete_years)
        self.on_missing = on_missing
        self.missing_years: set[int] = set()
        """Years for which a date was guessed (Mon-Fri) for lack of holiday data."""
        self.missing: list[MissingHolidayData] = []
        self._days: dict[date, DayInfo] = {}
        self._plans: dict[int, _Plan] = {}  # keyed by date ordinal
        self._hours: dict[int, tuple[int, int | None]] = {}  # UTC hour -> (ordinal, midnight)

    def __repr__(self) -> str:
        hours = ", ".join(f"{_fmt(a)}-{_fmt(b)}" for a, b in self.periods)
        return f"BusinessCalendar({hours}, tz={self.tz}, overrides={len(self.overrides)})"

    # ----------------------------------------------------------------- days

    def horizon(self) -> date:
        """Last date up to which holiday data exists without a gap.

        The package's last year, extended by each directly following year that
        the operator declared complete.  (A complete year after a gap does not
        extend it: the gap year would still be guessed.)
        """
        year = _PKG_LAST_YEAR
        while year + 1 in self.complete_years:
            year += 1
        return date(year, 12, 31)

    def has_data(self, year: int) -> bool:
        """True if every day of ``year`` is known (package or complete operator year)."""
        return _PKG_FIRST_YEAR <= year <= _PKG_LAST_YEAR or year in self.complete_years

    def day_kind(self, d: date) -> DayInfo:
        """Classify a local date (a tz-aware datetime is converted to its local date)."""
        if isinstance(d, datetime):
            d = self._local(d).date()
        info = self._days.get(d)
        if info is None:
            info = self._classify(d)
            self._days[d] = info
            if not info.has_data:
                self._note_missing(d)
        return info

    def is_workday(self, d: date) -> bool:
        return self.day_kind(d).workday

    def _classify(self, d: date) -> DayInfo:
        ov = self.overrides.get(d)
        if ov is not None:
            kind: DayKind = "override_workday" if ov.workday else "override_holiday"
            return DayInfo(d, ov.workday, kind, ov.name or None)
        weekend = d.weekday() >= 5
        if _PKG_FIRST_YEAR <= d.year <= _PKG_LAST_YEAR:
            try:
                off, raw_name = chinese_calendar.get_holiday_detail(d)
            except NotImplementedError:  # pragma: no cover - range derived from the data
                pass
            else:
                name = None if raw_name is None else str(raw_name)
                zh = _ZH_NAMES.get(name) if name else None
                if not off:
                    kind = "makeup_workday" if weekend else "workday"
                    return DayInfo(d, True, kind, name, zh)
                kind = "holiday" if name or not weekend else "weekend"
                return DayInfo(d, False, kind, name, zh)
        return DayInfo(
            d,
            not weekend,
            "weekend" if weekend else "workday",
            has_data=d.year in self.complete_years,
        )

    def _note_missing(self, d: date) -> None:
        if d.year in self.missing_years:
            return
        self.missing_years.add(d.year)
        record = MissingHolidayData(d.year, d)
        self.missing.append(record)
        log.warning(
            "no holiday data for %d (chinese_calendar covers %d..%d): treating Mon-Fri as "
            "working days, which is a guess; add the official schedule to calendar.yaml "
            "`days` and list %d under `complete_years`",
            d.year,
            _PKG_FIRST_YEAR,
            _PKG_LAST_YEAR,
            d.year,
            extra={"missing_holiday_data": record},
        )
        if self.on_missing is not None:
            self.on_missing(d)

    def _plan(self, ordinal: int) -> _Plan:
        plan = self._plans.get(ordinal)
        if plan is None:
            d = date.fromordinal(ordinal)
            if self.day_kind(d).workday:
                zone = self._zone
                periods = tuple(
                    (
                        (datetime.combine(d, s, zone) - _EPOCH) // _SECOND,
                        (datetime.combine(d, e, zone) - _EPOCH) // _SECOND,
                    )
                    for s, e in self.periods
                )
                plan = (periods, sum(e - s for s, e in periods))
            else:
                plan = ((), 0)
            self._plans[ordinal] = plan
        return plan

    # -------------------------------------------------------------- instants

    def _local(self, t: datetime) -> datetime:
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"naive datetime {t.isoformat()}: a time zone is required")
        return t.astimezone(self._zone)

    def _split(self, t: datetime) -> tuple[int, int]:
        """(epoch seconds floored, local date ordinal) of an aware datetime.

        Computed from the local wall clock and its UTC offset, which is exact and
        about twice as fast as ``(t - epoch) // second``.
        """
        zone = self._zone
        if t.tzinfo is not zone and (t.tzinfo is None or t.utcoffset() is None):
            raise ValueError(f"naive datetime {t.isoformat()}: a time zone is required")
        local = t.astimezone(zone)
        o = local.toordinal()
        off = local.utcoffset()
        assert off is not None
        return (
            (o - _EPOCH_ORDINAL) * 86400
            + local.hour * 3600
            + local.minute * 60
            + local.second
            - off.days * 86400
            - off.seconds
        ), o

    def _at(self, ts: int) -> datetime:
        return datetime.fromtimestamp(ts, self._zone)

    def is_working_time(self, t: datetime) -> bool:
        """True if the (floored) instant lies inside a working period."""
        ts, o = self._split(t)
        return any(s <= ts < e for s, e in self._plan(o)[0])

    def next_working_instant(self, t: datetime) -> datetime:
        """``t`` (floored) if inside working time, else the start of the next working period."""
        return self.add_working(t, 0)

    def add_working(self, start: datetime, seconds: int) -> datetime:
        """The earliest instant at which ``seconds`` of working time have elapsed since ``start``.

        ``add_working(t, 0)`` is :meth:`next_working_instant`.  Raises ValueError
        for a naive ``start`` or negative ``seconds``.
        """
        ts, o = self._split(start)
        return datetime.fromtimestamp(self._add(ts, o, seconds), self._zone)

    def working_seconds(self, a: datetime, b: datetime) -> int:
        """Working seconds in ``[a, b)`` (both floored to the second); 0 if ``b <= a``."""
        ta, oa = self._split(a)
        tb, ob = self._split(b)
        return self._measure(ta, oa, tb, ob)

    def add_working_ts(self, start: int, seconds: int) -> int:
        """:meth:`add_working` on integer epoch seconds (the engine's representation)."""
        return self._add(start, self._ordinal_of(start), seconds)

    def working_seconds_ts(self, a: int, b: int) -> int:
        """:meth:`working_seconds` on integer epoch seconds."""
        if b <= a:
            return 0
        return self._measure(a, self._ordinal_of(a), b, self._ordinal_of(b))

    def _ordinal_of(self, ts: int) -> int:
        """Local date ordinal of epoch second ``ts`` (cached per UTC hour)."""
        hour = ts // 3600
        entry = self._hours.get(hour)
        if entry is None:
            entry = self._hour_entry(hour)
        o, boundary = entry
        if boundary is None:  # the UTC offset changes within this hour
            return datetime.fromtimestamp(ts, self._zone).toordinal()
        return o if ts < boundary else o + 1

    def _hour_entry(self, hour: int) -> tuple[int, int | None]:
        zone = self._zone
        begin = hour * 3600
        first = datetime.fromtimestamp(begin, zone)
        last = datetime.fromtimestamp(begin + 3599, zone)
        entry: tuple[int, int | None]
        if first.utcoffset() != last.utcoffset():
            entry = (0, None)
        else:  # constant offset: the local date changes at most once, at midnight
            sod = first.hour * 3600 + first.minute * 60 + first.second
            entry = (first.toordinal(), begin + 86400 - sod)
        if len(self._hours) >= 100_000:
            self._hours.clear()
        self._hours[hour] = entry
        return entry

    def _add(self, ts: int, o: int, seconds: int) -> int:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        remaining = seconds
        plans = self._plans
        idle = 0
        while idle <= _MAX_IDLE_DAYS:
            plan = plans.get(o)
            if plan is None:
                plan = self._plan(o)
            periods, total = plan
            if not total:
                idle += 1
                o += 1
                continue
            idle = 0
            if remaining > total and ts <= periods[0][0]:
                remaining -= total  # the whole day is consumed
            else:
                for s, e in periods:
                    if ts < e:
                        if ts < s:
                            ts = s
                        avail = e - ts
                        if remaining <= avail:
                            return ts + remaining
                        remaining -= avail
                        ts = e
            o += 1
        raise CalendarError(
            f"no working time within {_MAX_IDLE_DAYS} days after {date.fromordinal(o - idle)}"
        )

    def _measure(self, ta: int, oa: int, tb: int, ob: int) -> int:
        if tb <= ta:
            return 0
        plans = self._plans
        total = 0
        o = oa
        while True:
            plan = plans.get(o)
            if plan is None:
                plan = self._plan(o)
            if oa < o < ob:
                total += plan[1]
            else:
                for s, e in plan[0]:
                    lo = s if s > ta else ta
                    hi = e if e < tb else tb
                    if hi > lo:
                        total += hi - lo
            if o >= ob:
                return total
            o += 1

    # --------------------------------------------------------------- explain

    def skipped(self, a: datetime, b: datetime) -> list[Skip]:
        """The stretches of ``[a, b)`` that were not counted, plus counted unusual days.

        Non-working stretches: ``lunch`` (between periods of a day), ``night``
        (from the end of one working day to the start of the next, when they are
        consecutive days), ``after_hours``/``before_hours`` (the evening before /
        the morning after a run of non-working days), and whole days ``weekend``,
        ``holiday``, ``override_holiday``; consecutive whole days of the same kind
        and name are merged (e.g. one ``holiday National Day`` for 2026-10-01..07).
        Annotations for working time that was counted: ``makeup_workday`` (调休),
        ``override_workday`` and ``unverified_workday`` (no holiday data).
        Every stretch is clipped to ``[a, b)``; the list is in chronological order.
        """
        ta, oa = self._split(a)
        tb, ob = self._split(b)
        if tb <= ta:
            return []
        Row = tuple[SkipKind, int, int, str | None, bool]
        gaps: list[Row] = []
        notes: list[Row] = []
        for o in range(oa, ob + 1):
            d = date.fromordinal(o)
            info = self.day_kind(d)
            periods = self._plan(o)[0]
            midnight = self._midnight(d)
            next_midnight = self._midnight(d + timedelta(days=1))
            prev = gaps[-1] if gaps else None
            if not periods:
                kind: SkipKind = (
                    "holiday"
                    if info.kind == "holiday"
                    else "override_holiday"
                    if info.kind == "override_holiday"
                    else "weekend"
                )
                row: Row = (kind, midnight, next_midnight, info.name, info.has_data)
                if (
                    prev is not None
                    and prev[0] == kind
                    and prev[2] == midnight
                    and (prev[3:] == row[3:])
                ):
                    gaps[-1] = (kind, prev[1], next_midnight, info.name, info.has_data)
                else:
                    gaps.append(row)
                continue
            first, last = periods[0][0], periods[-1][1]
            if self._peek_workday(o - 1):
                if prev is not None and prev[0] == "night" and prev[2] == midnight:
                    gaps[-1] = ("night", prev[1], first, None, True)
                else:
                    gaps.append(("night", midnight, first, None, True))
            else:
                gaps.append(("before_hours", midnight, first, None, True))
            for (_, e1), (s2, _) in pairwise(periods):
                gaps.append(("lunch", e1, s2, None, True))
            evening: SkipKind = "night" if self._peek_workday(o + 1) else "after_hours"
            gaps.append((evening, last, next_midnight, None, True))
            if info.kind == "makeup_workday":
                notes.append(("makeup_workday", first, last, info.name, True))
            elif info.kind == "override_workday":
                notes.append(("override_workday", first, last, info.name, True))
            elif not info.has_data:
                notes.append(("unverified_workday", first, last, None, False))
        out: list[tuple[int, int, SkipKind, str | None, bool]] = []
        for kind, s, e, name, has_data in gaps + notes:
            s, e = max(s, ta), min(e, tb)
            if e > s:
                out.append((s, e, kind, name, has_data))
        out.sort(key=lambda r: (r[0], r[1]))
        return [Skip(kind, self._at(s), self._at(e), name, hd) for s, e, kind, name, hd in out]

    def _peek_workday(self, ordinal: int) -> bool:
        """Is the day a working day, without caching or missing-data side effects."""
        plan = self._plans.get(ordinal)
        if plan is not None:
            return plan[1] > 0
        d = date.fromordinal(ordinal)
        info = self._days.get(d)
        return (info if info is not None else self._classify(d)).workday

    def _midnight(self, d: date) -> int:
        return (datetime.combine(d, time(0), self._zone) - _EPOCH) // _SECOND


# ------------------------------------------------------------------ loading


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


class _Reader:
    """Validates a composed YAML node tree, raising ConfigError with line numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: Any, where: str, problem: str) -> ConfigError:
        msg = f"{where}: {problem}" if where else problem
        return ConfigError(self.path, _line(node) if node is not None else None, msg)

    def mapping(self, node: Any, where: str, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, "expected a mapping")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value not in allowed:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex>"
                raise self.fail(
                    key_node, where, f"unknown key {shown!r} (expected one of {', '.join(allowed)})"
                )
            key = str(key_node.value)
            if key in out:
                raise self.fail(key_node, where, f"duplicate key {key!r}")
            out[key] = value_node
        return out

    def sequence(self, node: Any, where: str) -> list[Any]:
        if _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, where, "expected a list")
        return list(node.value)

    def scalar(self, node: Any, where: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or _is_null(node):
            raise self.fail(node, where, "expected a single value")
        return str(node.value)

    def time(self, node: Any, where: str) -> time:
        raw = self.scalar(node, where)
        m = _TIME_RE.match(raw)
        if m is None:
            raise self.fail(node, where, f"{raw!r} is not a time HH:MM or HH:MM:SS")
        h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if h > 23 or mi > 59 or s > 59:
            raise self.fail(node, where, f"{raw!r} is not a valid time of day")
        return time(h, mi, s)


def _is_null(node: Any) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def load_calendar(
    path: Path | str,
    *,
    on_missing: Callable[[date], None] | None = None,
) -> BusinessCalendar:
    """Read and validate ``calendar.yaml``; errors are ConfigError ``path:line: problem``.

    Keys: ``timezone`` (default Asia/Shanghai), ``working_hours`` (list of
    ``[start, end]``, default 08:30-12:00, 13:30-17:30), ``days`` (list of
    ``{date, kind: holiday|workday, name}``; win over chinese_calendar) and
    ``complete_years`` (years fully described by ``days``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(path, line, f"invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"invalid YAML: {exc}") from exc
    if root is None:
        raise ConfigError(path, 1, "the file is empty")
    r = _Reader(path)
    top = r.mapping(root, "", ("timezone", "working_hours", "days", "complete_years"))

    tz = DEFAULT_TZ
    if "timezone" in top:
        tz = r.scalar(top["timezone"], "timezone")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.fail(top["timezone"], "timezone", f"unknown time zone {tz!r}") from None

    periods: list[tuple[time, time]] = list(DEFAULT_PERIODS)
    if "working_hours" in top:
        hours_node = top["working_hours"]
        items = r.sequence(hours_node, "working_hours")
        periods = []
        for i, item in enumerate(items):
            where = f"working_hours[{i}]"
            if not isinstance(item, yaml.SequenceNode) or len(item.value) != 2:
                raise r.fail(item, where, 'expected a pair ["HH:MM", "HH:MM"]')
            periods.append((r.time(item.value[0], where), r.time(item.value[1], where)))
        for i, problem in period_problems(periods):
            if i < 0:
                raise r.fail(hours_node, "working_hours", problem)
            raise r.fail(items[i], f"working_hours[{i}]", problem)

    overrides: dict[date, DayOverride] = {}
    day_lines: dict[date, int] = {}
    for i, item in enumerate(r.sequence(top.get("days"), "days") if "days" in top else []):
        where = f"days[{i}]"
        fields = r.mapping(item, where, ("date", "kind", "name"))
        for required in ("date", "kind"):
            if required not in fields:
                raise r.fail(item, where, f"missing {required!r}")
        raw_date = r.scalar(fields["date"], f"{where}.date")
        try:
            if not _DATE_RE.match(raw_date):
                raise ValueError
            d = date.fromisoformat(raw_date)
        except ValueError:
            raise r.fail(
                fields["date"], f"{where}.date", f"{raw_date!r} is not a date YYYY-MM-DD"
            ) from None
        kind = r.scalar(fields["kind"], f"{where}.kind")
        if kind not in ("holiday", "workday"):
            raise r.fail(fields["kind"], f"{where}.kind", f"{kind!r} is not 'holiday' or 'workday'")
        name = r.scalar(fields["name"], f"{where}.name") if "name" in fields else ""
        if d in overrides:
            raise r.fail(item, where, f"{d} is already declared on line {day_lines[d]}")
        overrides[d] = DayOverride(d, kind == "workday", name)
        day_lines[d] = _line(item)

    complete: list[int] = []
    if "complete_years" in top:
        for i, item in enumerate(r.sequence(top["complete_years"], "complete_years")):
            where = f"complete_years[{i}]"
            raw = r.scalar(item, where)
            if not _YEAR_RE.match(raw):
                raise r.fail(item, where, f"{raw!r} is not a year")
            year = int(raw)
            if not any(d.year == year for d in overrides):
                raise r.fail(
                    item, where, f"{year} is declared complete but `days` has no entry in {year}"
                )
            complete.append(year)

    return BusinessCalendar(
        periods=periods,
        tz=tz,
        overrides=overrides,
        on_missing=on_missing,
        complete_years=complete,
    )
