"""The SLA engine: a pure state machine per matter (事项).

Theory of operation
===================

Two rules hold everywhere in this module:

1. **Nothing here reads a clock or does I/O.**  Every function takes ``now``
   (or the event's own time) as a parameter and returns the new state plus
   what it implies.  The Faust worker, ``waterwatch replay``, ``explain``,
   ``report`` and the tests all run this same code, so they cannot disagree.
2. **An event either applies completely or is rejected with one readable
   reason** (:class:`Rejection`); no exception escapes :meth:`Engine.apply`
   for any input event.  A duplicate event ``id`` is a no-op, not an error.

A *matter* is a ticket (工单), an outage (停水), a leak, an outside-damage
report or a billing meter.  Its state holds a set of *clocks*.  A clock has a
rule (``RULES.md`` ID), a start, a deadline in force (``due``), the allowed
time in clock seconds (``limit``: wall seconds, or working seconds when the
rule counts working time), and a *version* that changes whenever the deadline
moves.  From these the policy derives the clock's *schedule*: the instants of
its stages, in order::

    start ── warn_50 ── warn_80 ── due (overdue) ── escalate_1 ── escalate_2 ── reminders…

Which clocks exist, and what starts, stops, pauses or moves them:

=============  ===============================  ==============================  ==========================
clock          starts                           stops                           moves
=============  ===============================  ==============================  ==========================
accept         ticket.dispatched (R13.accept)   accepted, returned, resolved,   re-dispatch (new version)
                                                closed
respond        ticket.created (R15.1)           responded, resolved, closed     -
feedback       ticket.created (R14.1-4, .due)   responded, resolved, closed     -
resolve        ticket.created (R15.2-7)         resolved, closed                extension granted,
                                                                                deadline set (R15.7),
                                                                                reopened (restarts)
return         ticket.created (R14.5, window)   returned (late → violation);    -
                                                accepted/responded/... close it
pre_notice     outage.planned (R19.1)           fires once: notice.due          outage.updated (if unsent)
ops_notice     outage.planned user_caused       fires once                      outage.updated
               (R19.4)
delay_report   a reminder 30 min before the     fires once; delay_reported,     new expected end
               R23 reporting point (R23)        restored
restore        outage start (R23); overdue      restored                        delay_reported (new end)
               also means no delay report
peak           outage in progress (R22)         restored, cancelled             re-armed each peak period
arrive         leak.reported (R24.arrive),      crew_arrived / repair_started   -
               damage.reported (R30)            / inspector_arrived
repair         leak.repair_started (R24.repair) repaired                        -
read:YYYY-MM   meter.registered, then each      meter.read for that period      a missed month opens the
               month (R31)                                                      next one
=============  ===============================  ==============================  ==========================

When a clock's deadline moves (a new version), the warnings whose instants
already passed are skipped, never fired late; the overdue stage of the new
deadline fires at once if the new deadline is already past.

Stages fire in time order.  Before an event with time ``t`` is applied, every
stage strictly before ``t`` fires (so an event at exactly the deadline is on
time).  A stage fired more than ``late_after`` after its instant carries
``late_by`` (R16: deadlines that passed while the service was down still fire
after recovery, marked late).

Each alert has a deterministic ``alert_id``:
``{matter}/{rule}/{clock}/v{version}/{stage}``; re-running the same events
gives the same ids, so the runtime can deduplicate.

A stopped clock records its *outcome* (met or missed, against the deadline in
force when it stopped, the original deadline kept on record); the monthly
report (R34) counts those.
"""

from __future__ import annotations

import calendar as _stdcal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from waterwatch.codes import AlertLevel, NoticeKind, OutageKind
from waterwatch.core.calendar import BusinessCalendar
from waterwatch.core.policy import Policy, Rule, format_duration
from waterwatch.core.units import UnitsDirectory
from waterwatch.events import (
    INPUT_TYPES,
    CloudEvent,
    DamageReportedData,
    DeadlineSetData,
    ExtensionGrantedData,
    ExtensionRequestedData,
    LeakRepairStartedData,
    LeakReportedData,
    MeterReadData,
    MeterRegisteredData,
    NoticeApprovedData,
    OutageDelayData,
    OutageEmergencyData,
    OutagePlannedData,
    OutageUpdatedData,
    TicketCreatedData,
    TicketDispatchedData,
    TicketReturnedData,
    UnitNoteData,
)

Level = Literal["warning", "overdue", "escalation", "reminder", "violation", "notice"]

ALERT_TYPE: dict[str, str] = {
    "warning": "alert.warning",
    "overdue": "alert.overdue",
    "escalation": "alert.escalation",
    "reminder": "alert.reminder",
    "violation": "alert.violation",
    "notice": "notice.due",
}

# Template entry modes (see Engine._stage_at)
# ``Final``: compiled, mypyc inlines or keeps these in C statics instead of looking them up in the module's dict
_ABSOLUTE: Final = 0
_AT_DUE: Final = 1
_OFFSET: Final = 2
_AFTER_DUE: Final = 3
_SKIPPABLE: Final = frozenset({"warning", "escalation", "reminder"})
"""Stage levels skipped when their instant passed before a new deadline version existed."""
_NO_NEXT: Final[tuple[None, None]] = (None, None)
_TICKET_OPEN: Final = ("created", "dispatched", "accepted", "returned", "reopened")
"""Ticket states in which the unit still works on it."""
_NO_OUTCOME_KINDS: Final = frozenset({"notice", "once", "recurring", "window"})
"""Clock kinds whose stop is not a met/missed deadline."""

_KIND_OF: Final[dict[str, str]] = {name: name.split(".", 1)[0] for name in INPUT_TYPES}

MAX_PEAK_ALERTS: Final = 9
"""R22 peak-hour alerts per outage at most (three days of three peaks)."""

OUTCOMES_KEPT: Final = 48
"""Stopped deadlines a matter keeps on record for the monthly report (R34)."""

SEEN_IDS_KEPT: Final = 32
"""How many recent event ids a matter remembers for de-duplication."""

CREATING_TYPES: Final = frozenset(
    {"ticket.created", "outage.planned", "outage.emergency", "leak.reported",
     "damage.reported", "meter.registered"}
)  # fmt: skip


# =========================================================================== data


@dataclass(slots=True)
class Clock:
    """One clock of a matter. Times are POSIX seconds; ``limit`` is in clock seconds."""

    name: str
    rule: str
    start: int
    due: int | None
    limit: int
    counts: str = "wall"
    version: int = 1
    fired: int = 0  # stages of the current schedule already handled
    armed_at: int = 0  # warnings at or before this instant are skipped
    original_due: int | None = None
    stopped: int | None = None
    outcome: str | None = None  # met, missed, closed (stopped before it mattered)
    unit: str | None = None
    extensions: list[tuple[int, int]] = field(default_factory=list)  # (granted at, new due)
    kind: str = "deadline"  # deadline, window, notice, once, recurring, overdue_only
    sched: tuple[tuple[int, int, Stage], ...] | None = field(default=None, repr=False, compare=False)
    # Derived cache: the next stage of the current schedule, valid while ``nxt_known``: its instant
    # ``nxt_at`` and prototype ``nxt_stage``, or ``nxt_stage`` None when none is left.  The engine
    # resets it whenever ``fired`` or the version changes (Engine._find_next fills it).  Three fields
    # instead of one ``(instant, prototype)`` tuple: compiled, ``nxt_at`` is a machine integer inside
    # the clock, so looking for a matter's next stage reads no tuple and no boxed int per clock (each a
    # likely cache miss at 200,000 matters; docs/decisions/0008-core-throughput.md).  ``nxt`` gives the
    # old tuple form.
    nxt_at: int = field(default=0, repr=False, compare=False)
    nxt_stage: Stage | None = field(default=None, repr=False, compare=False)
    nxt_known: bool = field(default=False, repr=False, compare=False)

    # Written out (dataclass keeps a class's own __init__): compiled by mypyc, it sets the fields natively;
    # the one dataclass generates would run as interpreted Python (docs/decisions/0008-core-throughput.md).
    def __init__(
        self, name: str, rule: str, start: int, due: int | None, limit: int, counts: str = "wall",
        version: int = 1, fired: int = 0, armed_at: int = 0, original_due: int | None = None,
        stopped: int | None = None, outcome: str | None = None, unit: str | None = None,
        extensions: list[tuple[int, int]] | None = None, kind: str = "deadline",
        sched: tuple[tuple[int, int, Stage], ...] | None = None,
        nxt: tuple[int | None, Stage | None] | None = None,
    ) -> None:
        self.name = name
        self.rule = rule
        self.start = start
        self.due = due
        self.limit = limit
        self.counts = counts
        self.version = version
        self.fired = fired
        self.armed_at = armed_at
        self.original_due = original_due
        self.stopped = stopped
        self.outcome = outcome
        self.unit = unit
        self.extensions = [] if extensions is None else extensions
        self.kind = kind
        self.sched = sched
        if nxt is None:
            self.nxt_at = 0
            self.nxt_stage = None
            self.nxt_known = False
        else:
            self.nxt_at = nxt[0] or 0
            self.nxt_stage = nxt[1]
            self.nxt_known = True

    @property
    def nxt(self) -> tuple[int | None, Stage | None] | None:
        """The next stage as ``(instant, prototype)``, ``(None, None)`` when none is left, None if not known."""
        if not self.nxt_known:
            return None
        if self.nxt_stage is None:
            return _NO_NEXT
        return (self.nxt_at, self.nxt_stage)

    def copy(self) -> Clock:
        c = Clock(self.name, self.rule, self.start, self.due, self.limit, self.counts,
                  self.version, self.fired, self.armed_at, self.original_due, self.stopped,
                  self.outcome, self.unit, list(self.extensions), self.kind, self.sched)  # fmt: skip
        c.nxt_at = self.nxt_at
        c.nxt_stage = self.nxt_stage
        c.nxt_known = self.nxt_known
        return c

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "rule": self.rule, "start": self.start, "due": self.due,
            "limit": self.limit, "counts": self.counts, "version": self.version,
            "fired": self.fired, "armed_at": self.armed_at, "original_due": self.original_due,
            "stopped": self.stopped, "outcome": self.outcome, "unit": self.unit,
            "extensions": [list(x) for x in self.extensions], "kind": self.kind,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Clock:
        d = dict(d)
        d["extensions"] = [tuple(x) for x in d.get("extensions", [])]
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A deadline that was stopped: met or missed against the deadline in force (R34)."""

    rule: str
    clock: str
    unit: str | None
    start: int
    due: int
    original_due: int | None
    stopped: int
    met: bool
    extensions: int

    @classmethod
    def of(cls, c: Clock) -> Outcome:
        assert c.due is not None and c.stopped is not None
        return cls(c.rule, c.name, c.unit, c.start, c.due, c.original_due, c.stopped,
                   c.stopped <= c.due, len(c.extensions))  # fmt: skip

    def to_list(self) -> list[Any]:
        return [self.rule, self.clock, self.unit, self.start, self.due, self.original_due,
                self.stopped, self.met, self.extensions]  # fmt: skip


@dataclass(slots=True)
class MatterState:
    """Everything the engine keeps about one matter; JSON-serializable via ``to_dict``."""

    matter_id: str
    kind: str  # ticket, outage, leak, damage, meter
    status: str
    created: int
    last_time: int
    unit: str | None = None
    clocks: dict[str, Clock] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)  # kind-specific facts for context
    seen: list[str] = field(default_factory=list)
    history: list[tuple[int, str]] = field(default_factory=list)  # (time, event type)
    outcomes: list[Outcome] = field(default_factory=list)
    outcomes_total: int = 0  # outcomes ever recorded (the list keeps the last OUTCOMES_KEPT)
    # Derived, not serialized: the earliest due stage, valid while next_known is True.
    next_at: int | None = field(default=None, repr=False, compare=False)
    next_known: bool = field(default=False, repr=False, compare=False)
    # The replay's bookkeeping (waterwatch.core.replay.Replayer), not serialized: ``queued`` while the matter
    # is in its queue of due matters, at instant ``queue_at``.  Kept here rather than in a dict keyed by
    # matter id: a look-up in a dict of 200,000 ids touches its tables and the stored id string, each a
    # likely cache miss; the state is touched anyway.
    queue_at: int = field(default=0, repr=False, compare=False)
    queued: bool = field(default=False, repr=False, compare=False)

    # written out for mypyc, as Clock.__init__
    def __init__(
        self, matter_id: str, kind: str, status: str, created: int, last_time: int, unit: str | None = None,
        clocks: dict[str, Clock] | None = None, attrs: dict[str, Any] | None = None,
        seen: list[str] | None = None, history: list[tuple[int, str]] | None = None,
        outcomes: list[Outcome] | None = None, outcomes_total: int = 0, next_at: int | None = None,
        next_known: bool = False,
    ) -> None:
        self.matter_id = matter_id
        self.kind = kind
        self.status = status
        self.created = created
        self.last_time = last_time
        self.unit = unit
        self.clocks = {} if clocks is None else clocks
        self.attrs = {} if attrs is None else attrs
        self.seen = [] if seen is None else seen
        self.history = [] if history is None else history
        self.outcomes = [] if outcomes is None else outcomes
        self.outcomes_total = outcomes_total
        self.next_at = next_at
        self.next_known = next_known
        self.queue_at = 0
        self.queued = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "matter_id": self.matter_id, "kind": self.kind, "status": self.status,
            "created": self.created, "last_time": self.last_time, "unit": self.unit,
            "clocks": {k: c.to_dict() for k, c in self.clocks.items()},
            "attrs": self.attrs, "seen": self.seen,
            "history": [list(h) for h in self.history],
            "outcomes": [o.to_list() for o in self.outcomes],
            "outcomes_total": self.outcomes_total,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MatterState:
        return cls(
            matter_id=d["matter_id"], kind=d["kind"], status=d["status"], created=d["created"],
            last_time=d["last_time"], unit=d.get("unit"),
            clocks={k: Clock.from_dict(c) for k, c in d.get("clocks", {}).items()},
            attrs=d.get("attrs", {}), seen=list(d.get("seen", [])),
            history=[(int(t), str(e)) for t, e in d.get("history", [])],
            outcomes=[Outcome(*o) for o in d.get("outcomes", [])],
            outcomes_total=int(d.get("outcomes_total", len(d.get("outcomes", [])))),
        )  # fmt: skip

    def copy(self) -> MatterState:
        """A copy that shares nothing mutable with this state (cheaper than a dict round trip)."""
        return MatterState(
            self.matter_id, self.kind, self.status, self.created, self.last_time, self.unit,
            {k: c.copy() for k, c in self.clocks.items()}, dict(self.attrs), list(self.seen),
            list(self.history), list(self.outcomes), self.outcomes_total, self.next_at, self.next_known,
        )  # fmt: skip

    @property
    def open(self) -> bool:
        """Does work remain (a leak until repaired, a damage report until the inspector is on site)?"""
        if self.kind == "damage":
            return self.status == "reported"
        return self.status not in ("closed", "resolved", "restored", "cancelled", "done", "repaired")


@dataclass(frozen=True, slots=True)
class Stage:
    at: int
    name: str
    level: Level
    notify: tuple[str, ...]
    cites: str | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert the engine decided to fire (pure data; ``to_event`` makes the CloudEvent).

    The human-readable parts (``message``, ``context``) are formatted only when
    asked for: most alerts of a replay are counted or compared by id, and the
    runtimes format each alert once, when they publish it.
    """

    alert_id: str
    matter_id: str
    matter_kind: str
    rule: str
    clock: str
    level: Level
    stage: str
    due_at: int | None
    fired_at: int
    late_by: int | None
    unit: str | None
    notify: tuple[str, ...]
    notice: str | None
    tz: ZoneInfo = field(repr=False, compare=False)
    attrs: Mapping[str, Any] = field(repr=False, compare=False)  # snapshot of the matter's facts
    clock_info: tuple[int, int, str, int | None] | None = field(repr=False, compare=False)
    extra: Mapping[str, Any] | None = field(repr=False, compare=False)
    text: str | None = field(repr=False, compare=False)  # None: derive from rule_what
    rule_what: str = field(default="", repr=False, compare=False)

    @property
    def type(self) -> str:
        return ALERT_TYPE[self.level]

    @property
    def message(self) -> str:
        """A one-line English explanation (for logs and operators, not residents)."""
        if self.text is not None:
            return self.text
        due = _iso(self.due_at, self.tz)
        if self.level == "warning" and self.due_at is None:
            return f"{self.rule}: no deadline set yet for {self.matter_id}; ops must set one"
        if self.level == "warning":
            return f"{self.rule} {self.clock} due {due}: {self.rule_what}"
        if self.level == "overdue":
            return f"{self.rule} {self.clock} overdue since {due}: {self.rule_what}"
        if self.level == "escalation":
            return f"{self.rule} {self.clock} overdue since {due}: escalated to {', '.join(self.notify)}"
        if self.level == "reminder":
            if self.due_at is None:
                return f"{self.rule}: still no deadline for {self.matter_id}; ops must set one"
            return f"{self.rule} {self.clock} still overdue since {due}"
        if self.level == "notice":
            return f"{self.rule}: resident notice {self.notice} due"
        return f"{self.rule}: {self.rule_what}"

    @property
    def context(self) -> dict[str, Any]:
        """Values for the templates: the matter's facts, the clock, and alert-specific extras."""
        ctx: dict[str, Any] = {k: v for k, v in self.attrs.items() if not k.startswith("_")}
        if self.clock_info is not None:
            start, limit, counts, original_due = self.clock_info
            ctx["started_at"] = _iso(start, self.tz)
            if self.due_at is not None:
                ctx["limit"] = format_duration(limit) if limit else None
                ctx["counts"] = counts
            if original_due is not None and original_due != self.due_at:
                ctx["original_due_at"] = _iso(original_due, self.tz)
        if self.extra:
            ctx.update(self.extra)
        return dict(sorted(ctx.items()))

    def to_event(self, tz: ZoneInfo | None = None) -> dict[str, Any]:
        tz = tz or self.tz
        data: dict[str, Any] = {
            "alert_id": self.alert_id,
            "matter_id": self.matter_id,
            "matter_kind": self.matter_kind,
            "rule": self.rule,
            "clock": self.clock,
            "level": self.level,
            "stage": self.stage,
            "due_at": _iso(self.due_at, tz),
            "fired_at": _iso(self.fired_at, tz),
        }
        if self.late_by is not None:
            data["late_by"] = self.late_by
        if self.unit is not None:
            data["unit"] = self.unit
        data["notify"] = list(self.notify)
        if self.notice is not None:
            data["notice"] = self.notice
        data["message"] = self.message
        data["context"] = self.context
        return {
            "specversion": "1.0",
            "id": self.alert_id,
            "source": "waterwatch/engine",
            "type": self.type,
            "time": _iso(self.fired_at, tz),
            "subject": self.matter_id,
            "datacontenttype": "application/json",
            "data": data,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was not applied. ``str()`` is one readable line."""

    code: str  # unknown_matter, illegal_transition, duplicate_matter, time_backwards, ...
    reason: str

    def __str__(self) -> str:
        return self.reason


def _frozen_builder(cls: type[Any]) -> Callable[..., Any]:
    """A positional constructor for a frozen slots dataclass, about 3-6x faster than calling it.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``
    (a C call per field: most of the cost of making an :class:`Alert` or an
    :class:`Outcome`, which a replay makes hundreds of thousands of).  The
    builder fills an instance of a twin class with the very same ``__slots__`` by
    plain attribute stores, then makes it an instance of ``cls`` (the layouts are
    identical, so CPython allows the ``__class__`` assignment).  The result is an
    ordinary, frozen ``cls`` instance, equal to ``cls(*args)``.
    """
    names = tuple(f.name for f in fields(cls))
    if tuple(cls.__slots__) != names:  # pragma: no cover - guards a change of the class
        raise TypeError(f"{cls.__name__}: slots {cls.__slots__} are not its fields {names}")
    twin = type(f"_{cls.__name__}Builder", (), {"__slots__": names})
    src = (f"def build({', '.join(names)}):\n    o = new(twin)\n"
           + "".join(f"    o.{n} = {n}\n" for n in names)
           + "    set_class(o, '__class__', cls)\n    return o\n")  # fmt: skip
    namespace: dict[str, Any] = {"new": object.__new__, "twin": twin, "set_class": object.__setattr__, "cls": cls}
    exec(src, namespace)  # generated from the field names only, as dataclasses itself does
    build: Callable[..., Any] = namespace["build"]
    return build


# When this module is compiled by mypyc, Alert and Outcome are native classes: no __slots__, no __class__
# assignment, and a frozen dataclass's __init__ runs as interpreted Python.  Compiled code may store into
# their fields directly (mypy's read-only check is silenced, the frozen __setattr__ is bypassed), so the
# builders below are just that; _frozen_builder serves the pure-Python module.


def _native_alert(
    alert_id: str, matter_id: str, matter_kind: str, rule: str, clock: str, level: Level, stage: str,
    due_at: int | None, fired_at: int, late_by: int | None, unit: str | None, notify: tuple[str, ...],
    notice: str | None, tz: ZoneInfo, attrs: Mapping[str, Any], clock_info: tuple[int, int, str, int | None] | None,
    extra: Mapping[str, Any] | None, text: str | None, rule_what: str,
) -> Alert:
    o = Alert.__new__(Alert)
    o.alert_id = alert_id  # type: ignore[misc]
    o.matter_id = matter_id  # type: ignore[misc]
    o.matter_kind = matter_kind  # type: ignore[misc]
    o.rule = rule  # type: ignore[misc]
    o.clock = clock  # type: ignore[misc]
    o.level = level  # type: ignore[misc]
    o.stage = stage  # type: ignore[misc]
    o.due_at = due_at  # type: ignore[misc]
    o.fired_at = fired_at  # type: ignore[misc]
    o.late_by = late_by  # type: ignore[misc]
    o.unit = unit  # type: ignore[misc]
    o.notify = notify  # type: ignore[misc]
    o.notice = notice  # type: ignore[misc]
    o.tz = tz  # type: ignore[misc]
    o.attrs = attrs  # type: ignore[misc]
    o.clock_info = clock_info  # type: ignore[misc]
    o.extra = extra  # type: ignore[misc]
    o.text = text  # type: ignore[misc]
    o.rule_what = rule_what  # type: ignore[misc]
    return o


def _native_stage(at: int, name: str, level: Level, notify: tuple[str, ...], cites: str | None) -> Stage:
    o = Stage.__new__(Stage)
    o.at = at  # type: ignore[misc]
    o.name = name  # type: ignore[misc]
    o.level = level  # type: ignore[misc]
    o.notify = notify  # type: ignore[misc]
    o.cites = cites  # type: ignore[misc]
    return o


def _native_outcome(
    rule: str, clock: str, unit: str | None, start: int, due: int, original_due: int | None, stopped: int,
    met: bool, extensions: int,
) -> Outcome:
    o = Outcome.__new__(Outcome)
    o.rule = rule  # type: ignore[misc]
    o.clock = clock  # type: ignore[misc]
    o.unit = unit  # type: ignore[misc]
    o.start = start  # type: ignore[misc]
    o.due = due  # type: ignore[misc]
    o.original_due = original_due  # type: ignore[misc]
    o.stopped = stopped  # type: ignore[misc]
    o.met = met  # type: ignore[misc]
    o.extensions = extensions  # type: ignore[misc]
    return o


COMPILED: Final = not hasattr(Alert, "__slots__")
"""Is this module compiled by mypyc (see waterwatch.core.native_status)?"""
if not COMPILED:
    # The engine calls _native_alert / _native_outcome / _native_stage by name.  Compiled, those are direct
    # native calls (the names are bound at compile time); as pure Python the module's globals are looked up at
    # each call, so they are pointed at the faster builders here (see :func:`_frozen_builder`).
    globals()["_native_alert"] = _frozen_builder(Alert)
    globals()["_native_outcome"] = _frozen_builder(Outcome)
    globals()["_native_stage"] = _frozen_builder(Stage)


@dataclass(slots=True)
class Step:
    """What one call to the engine returns."""

    state: MatterState | None
    alerts: list[Alert] = field(default_factory=list)
    rejection: Rejection | None = None
    duplicate: bool = False


class _Reject(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.rejection = Rejection(code, reason)


class _IsoFormat:
    """``datetime.fromtimestamp(ts, tz).isoformat()`` for integer seconds, from per-hour and per-day tables.

    Alerts carry several ISO times each and the handlers record some; building a
    datetime for each costs more than the rest of the alert.  Within a UTC hour
    whose offset is constant the local time is ``ts + offset``; an hour in which
    the offset changes (a DST switch) falls back to datetime.
    """

    __slots__ = ("_days", "_hours", "tz")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._hours: dict[int, tuple[int, str]] = {}
        self._days: dict[int, str] = {}

    def __call__(self, ts: int) -> str:
        return self.format(ts)

    def format(self, ts: int) -> str:
        hour = ts // 3600
        entry = self._hours.get(hour)
        if entry is None:
            entry = self._hour(hour)
        offset, suffix = entry
        if not suffix:  # the UTC offset changes within this hour
            return datetime.fromtimestamp(ts, self.tz).isoformat()
        local = ts + offset
        day = local // 86400
        sod = local % 86400  # floor division and modulo, as divmod
        ds = self._days.get(day)
        if ds is None:
            ds = self._days[day] = date.fromordinal(day + _EPOCH_ORDINAL).isoformat() + "T"
        # one f-string: the string is built once, not by six concatenations
        return f"{ds}{_TWO_DIGITS[sod // 3600]}:{_TWO_DIGITS[sod // 60 % 60]}:{_TWO_DIGITS[sod % 60]}{suffix}"

    def _hour(self, hour: int) -> tuple[int, str]:
        """``(UTC offset in seconds, ISO suffix)`` of a UTC hour; ``(0, "")`` if the offset changes within it."""
        first = datetime.fromtimestamp(hour * 3600, self.tz)
        offset = first.utcoffset()
        entry = (0, "")
        if offset is not None and offset == datetime.fromtimestamp(hour * 3600 + 3599, self.tz).utcoffset():
            entry = (offset.days * 86400 + offset.seconds, first.isoformat()[19:])
        if len(self._hours) >= 100_000:
            self._hours.clear()
            self._days.clear()
        self._hours[hour] = entry
        return entry


_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_TWO_DIGITS: Final = tuple(f"{i:02d}" for i in range(60))
_ISO_FORMATS: Final[dict[ZoneInfo, _IsoFormat]] = {}


def _iso(ts: int | None, tz: ZoneInfo) -> str | None:
    if ts is None:
        return None
    if type(ts) is not int:
        return datetime.fromtimestamp(ts, tz).isoformat()
    fmt = _ISO_FORMATS.get(tz)
    if fmt is None:
        fmt = _ISO_FORMATS[tz] = _IsoFormat(tz)
    return fmt.format(ts)  # a direct (native) call when compiled


def _event_fields(event: CloudEvent) -> tuple[str, str, str, Any]:
    """The event's ``(id, type, subject, data)``.

    A pydantic model keeps its field values in its instance ``__dict__``.  Reading that dict once is
    cheaper than reading the four fields as attributes: every attribute read of a pydantic model goes
    through ``BaseModel``'s ``__getattr__`` hook (several hundred machine instructions each).
    """
    try:
        d = event.__dict__
        return d["id"], d["type"], d["subject"], d["data"]
    except (AttributeError, KeyError):  # not a pydantic model: the attributes
        return event.id, event.type, event.subject, event.data


def _ts(dt: datetime) -> int:
    return int(dt.timestamp() // 1)


# ========================================================================= engine


class Engine:
    """Applies events to matter states and fires the stages that are due."""

    def __init__(self, policy: Policy, units: UnitsDirectory, calendar: BusinessCalendar) -> None:
        self.policy = policy
        self.units = units
        # ``unit in units`` without UnitsDirectory.__contains__ (a Python call): the very same mapping
        self._unit_ids: Mapping[str, Any] = units.units if type(units) is UnitsDirectory else units
        self.calendar = calendar
        self.tz = ZoneInfo(policy.timezone)
        self._handlers: dict[str, Callable[[MatterState, Any, int], list[Alert]]] = {
            "ticket.dispatched": self._ticket_dispatched,
            "ticket.accepted": self._ticket_accepted,
            "ticket.responded": self._ticket_responded,
            "ticket.resolved": self._ticket_resolved,
            "ticket.closed": self._ticket_closed,
            "ticket.reopened": self._ticket_reopened,
            "ticket.returned": self._ticket_returned,
            "ticket.extension_requested": self._ticket_extension_requested,
            "ticket.extension_granted": self._ticket_extension_granted,
            "ticket.extension_denied": self._ticket_extension_denied,
            "ticket.deadline_set": self._ticket_deadline_set,
            "outage.updated": self._outage_updated,
            "outage.cancelled": self._outage_cancelled,
            "outage.started": self._outage_started,
            "outage.delay_reported": self._outage_delay_reported,
            "outage.restored": self._outage_restored,
            "outage.notice_approved": self._outage_notice_approved,
            "leak.crew_arrived": self._leak_crew_arrived,
            "leak.repair_started": self._leak_repair_started,
            "leak.repaired": self._leak_repaired,
            "damage.inspector_arrived": self._damage_inspector_arrived,
            "meter.read": self._meter_read,
        }
        self._creators: dict[str, Callable[[MatterState, Any, int], list[Alert]]] = {
            "ticket.created": self._ticket_created,
            "outage.planned": self._outage_planned,
            "outage.emergency": self._outage_emergency,
            "leak.reported": self._leak_reported,
            "damage.reported": self._damage_reported,
            "meter.registered": self._meter_registered,
        }
        assert set(self._creators) == CREATING_TYPES
        self._future_tolerance = policy.future_tolerance
        self._backwards_tolerance = policy.backwards_tolerance
        self._late_after = policy.late_after
        self._rule_what = {rid: r.what for rid, r in policy.rules.items()}
        self._notify_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._offset_cache: dict[tuple[str, int], tuple[tuple[int, int, Stage], ...]] = {}
        self._peak_cache: dict[int, tuple[tuple[float, float], ...]] = {}
        self._month_cache: dict[str, int] = {}
        self._by_category: dict[str, list[Rule]] = {}
        self._by_tier: dict[str, list[Rule]] = {}
        for r in policy.rules.values():
            if r.kind == "deadline":
                for c in r.categories:
                    self._by_category.setdefault(c, []).append(r)
                for tier in r.tiers:
                    self._by_tier.setdefault(tier, []).append(r)

    # ------------------------------------------------------------------ public

    def apply(
        self, state: MatterState | None, event: CloudEvent, now: datetime | int, *, copy: bool = True,
        t: int | None = None,
    ) -> Step:  # fmt: skip
        """Apply one validated input event at wall time ``now``; never raises for input.

        With ``copy=False`` the given state object is updated in place (the
        runtimes own their states and skip the copy for speed); the returned
        ``Step.state`` is then that same object.
        """
        now_ts = now if isinstance(now, int) else _ts(now)
        if t is None:
            t = _ts(event.time)
        new, alerts, rejection = self._apply(state, event, now_ts, t, copy)
        if alerts is None:
            return Step(new, duplicate=True)
        return Step(new, alerts, rejection)

    def _apply(
        self, state: MatterState | None, event: CloudEvent, now_ts: int, t: int, copy: bool
    ) -> tuple[MatterState | None, list[Alert] | None, Rejection | None]:
        """:meth:`apply` without its :class:`Step`: ``(state, alerts, rejection)``, alerts None for a duplicate.

        The replay calls :meth:`_apply_fields` directly (one object less per event).
        """
        event_id, etype, subject, data = _event_fields(event)
        return self._apply_fields(state, event_id, etype, subject, data, now_ts, t, copy)

    def _apply_fields(
        self, state: MatterState | None, event_id: str, etype: str, subject: str, data: Any, now_ts: int, t: int,
        copy: bool,
    ) -> tuple[MatterState | None, list[Alert] | None, Rejection | None]:
        """:meth:`_apply` with the event's fields read once (:func:`_event_fields`)."""
        if state is not None and event_id in state.seen:
            return state, None, None
        pre: list[Alert] = []
        try:
            if t > now_ts + self._future_tolerance:
                raise _Reject(
                    "time_in_future",
                    f"event time {_iso(t, self.tz)} is {format_duration(t - now_ts)} ahead of now",
                )
            if state is None:
                creator = self._creators.get(etype)
                if creator is None:
                    raise _Reject(
                        "unknown_matter",
                        f"{etype} for matter {subject}, which does not exist "
                        "(no creating event seen)",
                    )
                created = MatterState(subject, _KIND_OF[etype], "open", t, t)
                # a rejection leaves ``state`` None
                if etype == "ticket.created":
                    alerts = self._ticket_created(created, data, t)
                else:
                    alerts = creator(created, data, t)
                state = created
            else:
                if etype in CREATING_TYPES:
                    raise _Reject(
                        "duplicate_matter",
                        f"{etype}: matter {subject} already exists ({state.kind}, {state.status})",
                    )
                if _KIND_OF.get(etype) != state.kind:
                    raise _Reject(
                        "wrong_kind", f"{etype} does not apply to matter {subject}, a {state.kind}"
                    )
                if t < state.last_time - self._backwards_tolerance:
                    raise _Reject(
                        "time_backwards",
                        f"event time {_iso(t, self.tz)} runs backwards: the matter's last event was "
                        f"at {_iso(state.last_time, self.tz)}",
                    )
                if copy:
                    state = state.copy()  # never mutate the caller's state
                # Stages due before the event fire first, whatever the event turns out to be.
                if not state.next_known or (state.next_at is not None and state.next_at < t):
                    pre = self._advance(state, t, now_ts, strict=True)
                # Handlers validate everything before they change anything, so a
                # rejection leaves the state as the advance left it.
                state.next_known = False
                alerts = self._handle(etype, state, data, t)
                if pre:
                    alerts = pre + alerts
            # What the event made due before its own time (an overdue set in the past).  Stages at
            # exactly t fire after every event at t (an event at the deadline is on time): the
            # runtime's next advance or the replay clock fires them.
            more = self._advance(state, t, now_ts, strict=True)
            if more:
                alerts += more
        except _Reject as rej:
            return state, pre, rej.rejection
        if t > state.last_time:
            state.last_time = t
        seen = state.seen
        seen.append(event_id)
        if len(seen) > SEEN_IDS_KEPT:
            del seen[0]
        state.history.append((t, etype))
        return state, alerts, None

    def _handle(self, etype: str, s: MatterState, d: Any, t: int) -> list[Alert]:
        """``self._handlers[etype](s, d, t)``, the five commonest types as direct calls (native when compiled)."""
        if etype == "ticket.accepted":
            return self._ticket_accepted(s, d, t)
        if etype == "ticket.responded":
            return self._ticket_responded(s, d, t)
        if etype == "ticket.resolved":
            return self._ticket_resolved(s, d, t)
        if etype == "ticket.closed":
            return self._ticket_closed(s, d, t)
        if etype == "ticket.dispatched":
            return self._ticket_dispatched(s, d, t)
        return self._handlers[etype](s, d, t)

    def advance(
        self, state: MatterState, until: datetime | int, now: datetime | int | None = None, *,
        copy: bool = True,
    ) -> Step:  # fmt: skip
        """Fire every stage at or before ``until``; ``now`` (default: ``until``) decides lateness."""
        until_ts = until if isinstance(until, int) else _ts(until)
        now_ts = until_ts if now is None else (now if isinstance(now, int) else _ts(now))
        if copy:
            state = state.copy()
        alerts = self._advance(state, until_ts, now_ts, strict=False)
        return Step(state, alerts)

    def next_due(self, state: MatterState) -> int | None:
        """The earliest instant (POSIX seconds) at which a stage of this matter is due."""
        if state.next_known:
            return state.next_at
        best = 0
        found = False
        for clock in state.clocks.values():
            if clock.stopped is not None:
                continue
            if not clock.nxt_known:
                self._find_next(clock)
            if clock.nxt_stage is not None:
                at = clock.nxt_at
                if not found or at < best:
                    best = at
                    found = True
        return best if found else None

    def schedule(self, state: MatterState, clock: Clock) -> tuple[Stage, ...]:
        """All stages of a clock's current version, in time order."""
        return tuple(self._stage_at(clock, e) for e in self._template_of(clock))

    # --------------------------------------------------------------- firing

    def _advance(self, state: MatterState, until: int, now: int, *, strict: bool) -> list[Alert]:
        """Fire every stage before ``until`` (strict) or at or before it, in time order."""
        if state.next_known:
            na = state.next_at
            if na is None or na > until or (strict and na == until):
                return []
        clocks = state.clocks
        # Most calls fire nothing: find the earliest stage first, and loop only if it is due.
        # (``earliest`` is meaningful only when ``found``: machine integers when compiled, not boxed ints.)
        earliest = 0
        found = False
        for clock in clocks.values():
            if clock.stopped is None:
                if not clock.nxt_known:
                    self._find_next(clock)
                if clock.nxt_stage is not None:
                    at = clock.nxt_at
                    if not found or at < earliest:
                        earliest = at
                        found = True
        if not found or earliest > until or (strict and earliest == until):
            state.next_at = earliest if found else None
            state.next_known = True
            return []
        alerts: list[Alert] = []
        while True:
            found = False
            best_at = 0
            best_stage: Stage | None = None
            best_clock: Clock | None = None
            best_name = ""
            for clock in clocks.values():
                if clock.stopped is not None:
                    continue
                if not clock.nxt_known:
                    self._find_next(clock)
                stage = clock.nxt_stage
                if stage is None:
                    continue
                at = clock.nxt_at
                if not found or at < earliest:
                    earliest = at
                    found = True
                if at > until or (strict and at == until):
                    continue
                if best_clock is None or at < best_at or (at == best_at and clock.name < best_name):
                    best_at, best_stage, best_clock, best_name = at, stage, clock, clock.name
            if best_clock is None:
                state.next_at = earliest if found else None
                state.next_known = True
                return alerts
            assert best_stage is not None
            best_clock.fired += 1
            best_clock.nxt_known = False
            state.next_known = False
            alerts += self._fire(state, best_clock, best_at, best_stage, now)

    def _find_next(self, clock: Clock) -> None:
        """Find the clock's next stage: ``clock.nxt_at`` and ``clock.nxt_stage`` (None if none is left).

        Stages whose instant passed before this deadline version existed are
        skipped (``fired`` moves past them), never fired late.
        """
        tmpl = clock.sched
        if tmpl is None:
            kind = clock.kind
            if kind == "deadline" and clock.due is not None:  # _template_of's common case, cached
                tmpl = self._offset_cache.get((clock.rule, clock.limit))
            elif kind == "window":  # no stages: the stopping event decides (_template_of returns ())
                tmpl = ()
            if tmpl is None:
                tmpl = self._template_of(clock)
            clock.sched = tmpl
        n = len(tmpl)
        fired = clock.fired
        skip_passed = clock.version > 1 and clock.kind == "deadline"
        while fired < n:
            value, mode, proto = tmpl[fired]
            at = self._entry_at(clock, value, mode, proto)
            if skip_passed and at <= clock.armed_at and proto.level in _SKIPPABLE:
                fired += 1  # passed before this deadline version existed: skip, never late
                continue
            clock.fired = fired
            clock.nxt_at = at
            clock.nxt_stage = proto
            clock.nxt_known = True
            return
        clock.fired = fired
        clock.nxt_stage = None
        clock.nxt_known = True

    def _entry_at(self, clock: Clock, value: int, mode: int, proto: Stage) -> int:
        """The instant of one template entry of a clock (epoch seconds)."""
        if mode == _ABSOLUTE:
            return proto.at
        due = clock.due
        assert due is not None
        if mode == _AT_DUE:
            return due
        at = self.calendar.add_working_ts(clock.start, value) if clock.counts == "working" else clock.start + value
        if mode == _AFTER_DUE and at <= due:
            at = due + 1
        return at

    def _stage_at(self, clock: Clock, entry: tuple[int, int, Stage]) -> Stage:
        """Resolve one template entry of a clock to a stage with its instant."""
        value, mode, proto = entry
        if mode == _ABSOLUTE:
            return proto
        return _native_stage(self._entry_at(clock, value, mode, proto), proto.name, proto.level, proto.notify,
                             proto.cites)  # Stage(...), fast

    def _fire(self, state: MatterState, clock: Clock, at: int, stage: Stage, now: int) -> list[Alert]:
        """Fire one stage (``stage`` is its prototype; ``at`` its instant for this clock)."""
        late = now - at
        late_by = late if late > self._late_after else None
        level = stage.level
        name = stage.name
        cites = stage.cites
        attrs = state.attrs
        alert = _native_alert(
            f"{state.matter_id}/{clock.rule}/{clock.name}/v{clock.version}/{name}", state.matter_id, state.kind,
            clock.rule, clock.name, level, name, clock.due, at, late_by, clock.unit or state.unit,
            self._dedup(stage.notify), NoticeKind.PRE_OUTAGE.value if level == "notice" else None, self.tz,
            dict(attrs), (clock.start, clock.limit, clock.counts, clock.original_due),
            {"cites": cites} if cites else None, None, self._rule_what.get(clock.rule, ""),
        )  # the same as self._alert(state, clock, level, name, at, late_by, stage.notify, None, cites=cites, ...)
        out = [alert]
        # Follow-ups that a fired stage implies.
        if name == "overdue":
            cname = clock.name
            if state.kind == "ticket" and (
                cname == "resolve" or (cname == "feedback" and "resolve" not in state.clocks)
            ):  # the matter's planned limit (R14/R15): R13 asks for an extension request before it
                out += self._r13_resolve_check(state, clock, at, late_by)
            if cname == "restore":
                out.append(self._alert(
                    state, clock, "violation", "no_delay_report", at, late_by,
                    self.policy.notify.get("violation", ("unit", "ops")),
                    "R23: the expected restoration time passed without a delay report in the warning group",
                ))  # fmt: skip
        kind = clock.kind
        if kind == "notice" or kind == "once":
            clock.stopped = at
            clock.outcome = "done"
            if clock.name == "pre_notice":
                attrs["pre_notice_sent"] = alert.alert_id
        elif kind == "recurring":  # R22: re-arm for the next peak period
            attrs["_peak_done_until"] = self._peak_end(at)
            attrs["peak_alerts"] = int(attrs.get("peak_alerts", 0)) + 1
            if attrs["peak_alerts"] < MAX_PEAK_ALERTS:
                self._arm_peak(state, after=self._peak_end(at))
            else:
                clock.stopped = at
                clock.outcome = "closed"
        if name == "overdue" and clock.name.startswith("read:"):
            self._open_meter_cycle(state, clock.due if clock.due is not None else at)
        return out

    def _dedup(self, notify: tuple[str, ...]) -> tuple[str, ...]:
        """``notify`` without repeats, in order (cached: a handful of distinct tuples)."""
        out = self._notify_cache.get(notify)
        if out is None:
            out = self._notify_cache[notify] = tuple(dict.fromkeys(notify))
        return out

    def _alert(
        self, state: MatterState, clock: Clock | None, level: Level, stage: str, at: int,
        late_by: int | None, notify: Iterable[str], message: str | None, *, rule: str | None = None,
        notice: str | None = None, cites: str | None = None, extra: dict[str, Any] | None = None,
        clock_name: str | None = None,
    ) -> Alert:  # fmt: skip
        rule_id = rule or (clock.rule if clock else "")
        cname = clock_name or (clock.name if clock else "event")
        version = clock.version if clock else 1
        if cites:
            extra = {**(extra or {}), "cites": cites}
        return _native_alert(
            f"{state.matter_id}/{rule_id}/{cname}/v{version}/{stage}",
            state.matter_id,
            state.kind,
            rule_id,
            cname,
            level,
            stage,
            clock.due if clock else None,
            at,
            late_by,
            clock.unit if clock and clock.unit else state.unit,
            self._dedup(notify) if type(notify) is tuple else tuple(dict.fromkeys(notify)),
            notice,
            self.tz,
            dict(state.attrs),
            None if clock is None else (clock.start, clock.limit, clock.counts, clock.original_due),
            extra,
            message,
            self._rule_what.get(rule_id, ""),
        )

    # -------------------------------------------------------------- schedule

    def _instant(self, counts: str, start: int, offset: int) -> int:
        # ``offset`` is a limit: an int (round() of an int is the int; the builtin's look-up and call cost)
        if counts == "working":
            return self.calendar.add_working_ts(start, offset)
        return start + offset

    def _measure(self, counts: str, start: int, end: int) -> int:
        if counts == "working":
            return self.calendar.working_seconds_ts(start, end)
        return max(0, end - start)

    def _offsets(self, rule: Rule, limit: int) -> tuple[tuple[int, int, Stage], ...]:
        """A deadline rule's stages as (offset from start in clock seconds, mode, prototype), sorted.

        Cached per (rule, limit): most clocks of a rule share its default
        limit, so a clock's schedule is a shared tuple, and a stage's instant
        is one addition (or one working-time addition) when it is needed.
        """
        key = (rule.id, limit)
        cached = self._offset_cache.get(key)
        if cached is not None:
            return cached
        notify = self.policy.notify
        warn_to = tuple(notify.get("warning", ("unit",)))
        out: list[tuple[int, int, int, Stage]] = []  # (offset, order, mode, proto)
        for frac in rule.warn.fractions:
            out.append((round(limit * frac), 0, _OFFSET, Stage(0, f"warn_{round(frac * 100)}", "warning", warn_to)))
        for lead in rule.warn.leads:
            if lead < limit:
                name = f"warn_lead_{format_duration(lead).replace(' ', '')}"
                out.append((limit - lead, 0, _OFFSET, Stage(0, name, "warning", warn_to)))
        for after in rule.warn.after:
            if after < limit:
                name = f"warn_after_{format_duration(after).replace(' ', '')}"
                out.append((after, 0, _OFFSET, Stage(0, name, "warning", warn_to)))
        overdue_to = tuple(rule.notify or notify.get("overdue", ("unit", "ops")))
        out.append((limit, 1, _AT_DUE, Stage(0, "overdue", "overdue", overdue_to)))
        for i, step in enumerate(rule.escalate, start=1):
            out.append((round(limit * (1 + step.after)), 2, _AFTER_DUE,
                        Stage(0, f"escalate_{i}", "escalation", step.notify, step.cites)))  # fmt: skip
        if rule.reminder is not None:
            rem_to = tuple(notify.get("reminder", ("unit", "ops")))
            for k in range(1, rule.reminder.max + 1):
                out.append((limit + k * rule.reminder.every, 3, _AFTER_DUE,
                            Stage(0, f"reminder_{k}", "reminder", rem_to)))  # fmt: skip
        out.sort(key=lambda x: (x[0], x[1], x[3].name))
        result = tuple((off, mode, proto) for off, _, mode, proto in out)
        if len(self._offset_cache) > 100_000:
            self._offset_cache.clear()
        self._offset_cache[key] = result
        return result

    def _template_of(self, clock: Clock) -> tuple[tuple[int, int, Stage], ...]:
        """The clock's schedule as template entries (see :meth:`_stage_at`)."""
        rule = self.policy.rules[clock.rule]
        notify = self.policy.notify
        if clock.kind in ("notice", "once", "recurring"):
            assert clock.due is not None
            level: Level = "notice" if clock.kind == "notice" else "warning"
            to = rule.notify or tuple(notify.get("warning", ()))
            return ((0, _ABSOLUTE, _native_stage(clock.due, clock.name, level, to, None)),)
        if clock.kind == "window":
            return ()
        if clock.kind == "overdue_only":
            to = tuple(rule.notify or notify.get("overdue", ()))
            return ((0, _ABSOLUTE, _native_stage(clock.due or 0, "overdue", "overdue", to, None)),)
        if clock.due is None:  # R15.7 until ops sets the deadline
            rem = rule.unset_reminder
            out = [(0, _ABSOLUTE, Stage(clock.start, "deadline_unset", "warning", ("ops",)))]
            if rem is not None:
                out += [(0, _ABSOLUTE, Stage(clock.start + rem.every * k, f"deadline_unset_{k}", "reminder",
                                             ("ops",))) for k in range(1, rem.max + 1)]  # fmt: skip
            return tuple(out)
        return self._offsets(rule, clock.limit)

    # ------------------------------------------------------------ clock ops

    def _start_clock(
        self, state: MatterState, name: str, rule: Rule, start: int, *, limit: int | None = None,
        counts: str | None = None, due: int | None = None, kind: str = "deadline",
        unit: str | None = None, armed_at: int | None = None,
    ) -> Clock:  # fmt: skip
        counts = counts or rule.counts
        old = state.clocks.get(name)
        if due is None and limit is not None:
            due = self._instant(counts, start, limit)
        if due is not None and limit is None:
            limit = self._measure(counts, start, due)
        clock = Clock(
            name, rule.id, start, due, limit or 0, counts, (old.version + 1) if old else 1, 0,
            start if armed_at is None else armed_at, due, None, None, unit or state.unit, [], kind,
        )  # fmt: skip
        state.clocks[name] = clock
        return clock

    def _move(self, state: MatterState, clock: Clock, new_due: int, at: int) -> None:
        """A new deadline for a running clock: a new version; warnings already past are skipped."""
        clock.due = new_due
        clock.limit = self._measure(clock.counts, clock.start, new_due)
        clock.sched = None
        clock.nxt_known = False
        clock.version += 1
        clock.fired = 0
        clock.armed_at = at
        if clock.original_due is None:
            clock.original_due = new_due

    def _stop(self, state: MatterState, clock: Clock | None, t: int, *, count: bool = True) -> None:
        if clock is None or clock.stopped is not None:
            return
        clock.stopped = t
        due = clock.due
        if not count or due is None or clock.kind in _NO_OUTCOME_KINDS:
            clock.outcome = "closed"
            return
        met = t <= due
        clock.outcome = "met" if met else "missed"
        outcomes = state.outcomes
        outcomes.append(_native_outcome(clock.rule, clock.name, clock.unit, clock.start, due, clock.original_due, t,
                                        met, len(clock.extensions)))  # Outcome.of(clock)  # fmt: skip
        state.outcomes_total += 1
        if len(outcomes) > OUTCOMES_KEPT:
            del outcomes[: len(outcomes) - OUTCOMES_KEPT]

    def _stop_clocks(self, state: MatterState, names: Iterable[str], t: int) -> None:
        for name in names:
            self._stop(state, state.clocks.get(name), t)

    # ============================================================ creation

    def _unit(self, unit: str | None) -> str | None:
        if unit is not None and unit not in self._unit_ids:
            raise _Reject("unknown_unit", f"unit: unknown unit {unit!r} (not in the units directory)")
        return unit

    # ============================================================ tickets

    def _ticket_created(self, s: MatterState, d: TicketCreatedData, t: int) -> list[Alert]:
        alerts: list[Alert] = []
        # each field read once, from the model's instance dict (see _event_fields)
        try:
            f = d.__dict__
            unit, channel, summary, location = f["unit"], f["channel"], f["summary"], f["location"]
            category, hotline_tier, due_at, urgency = f["category"], f["hotline_tier"], f["due_at"], f["urgency"]
        except (AttributeError, KeyError):
            unit, channel, summary, location = d.unit, d.channel, d.summary, d.location
            category, hotline_tier, due_at, urgency = d.category, d.hotline_tier, d.due_at, d.urgency
        s.unit = self._unit(unit) if unit is not None else None
        s.status = "created"
        attrs = s.attrs
        attrs["channel"] = channel._value_  # ``_value_``: ``value`` without the enum property's call
        if summary:
            attrs["summary"] = summary
        if location:
            attrs["location"] = location
        if category is not None:
            cat = category._value_
            attrs["category"] = cat
            rules = self._by_category.get(cat, [])
            if not rules:
                raise _Reject("unknown_category", f"data.category: {cat!r} has no rule in the policy")
            r28 = self.policy.rules.get("R28")
            if r28 is not None and cat in r28.categories:
                if s.unit is None and r28.default_unit:
                    s.unit = r28.default_unit
                s.attrs["assist"] = list(r28.assist)
            for rule in rules:
                assert rule.clock is not None
                self._start_clock(s, rule.clock, rule, t, limit=rule.limit)
        if hotline_tier is not None or due_at is not None:
            if due_at is not None:
                rule = self.policy.rules["R14.due"]
                due = _ts(due_at)
                if due <= t:
                    raise _Reject("bad_deadline", "data.due_at: the due time is not after the order's time")
                self._start_clock(s, "feedback", rule, t, due=due)
            else:
                assert hotline_tier is not None
                tier_rules = self._by_tier.get(hotline_tier.value, [])
                if not tier_rules:
                    raise _Reject("unknown_category", f"data.hotline_tier: {hotline_tier.value!r} has no rule")
                self._start_clock(s, "feedback", tier_rules[0], t, limit=tier_rules[0].limit)
            if hotline_tier is not None:
                s.attrs["hotline_tier"] = hotline_tier.value
        if urgency is not None:
            rule = self.policy.rules["R14.5"]
            variant = rule.variants.get(urgency.value)
            if variant is not None:
                s.attrs["urgency"] = urgency.value
                self._start_clock(s, "return", rule, t, limit=variant.limit, counts=variant.counts,
                                  kind="window")  # fmt: skip
        r12 = self.policy.rules.get("R12")
        if r12 is not None and category is not None and category._value_ in r12.categories:
            alerts.append(self._alert(s, None, "escalation", "immediate", t, None, r12.notify,
                                      f"R12: {category._value_} reported to the leaders at once",
                                      rule="R12", clock_name="report"))  # fmt: skip
        return alerts

    def _require(self, s: MatterState, allowed: Iterable[str], what: str) -> None:
        if s.status not in allowed:
            raise _Reject("illegal_transition", f"{what}: not allowed while the ticket is {s.status}")

    def _ticket_dispatched(self, s: MatterState, d: TicketDispatchedData, t: int) -> list[Alert]:
        if s.status not in ("created", "returned", "dispatched"):
            self._require(s, ("created", "returned", "dispatched"), "ticket.dispatched")
        unit = self._unit(d.unit)
        if unit != s.unit:  # R13's duty to ask for an extension is the newly responsible unit's
            s.attrs.pop("_extension_requested_at", None)
        s.unit = unit
        for c in s.clocks.values():
            if c.stopped is None:
                c.unit = unit
        s.status = "dispatched"
        s.attrs["dispatched_at"] = _iso(t, self.tz)
        rule = self.policy.rules["R13.accept"]
        self._start_clock(s, "accept", rule, t, limit=rule.limit)
        return []

    def _ticket_accepted(self, s: MatterState, d: UnitNoteData, t: int) -> list[Alert]:
        if s.status != "dispatched":
            if s.status in ("created", "returned"):
                raise _Reject("illegal_transition", "ticket.accepted: the ticket has not been dispatched yet")
            self._require(s, ("dispatched",), "ticket.accepted")
        if d.unit is not None:
            self._unit(d.unit)
        s.status = "accepted"
        clocks = s.clocks
        self._stop(s, clocks.get("accept"), t)
        c = clocks.get("return")
        if c is not None and c.stopped is None:
            self._stop(s, c, t, count=False)
        return []

    def _ticket_responded(self, s: MatterState, d: UnitNoteData, t: int) -> list[Alert]:
        if s.status not in _TICKET_OPEN:
            self._require(s, _TICKET_OPEN, "ticket.responded")
        if d.unit is not None:
            self._unit(d.unit)
        clocks = s.clocks
        for name in ("respond", "feedback"):
            c = clocks.get(name)
            if c is not None and c.stopped is None:
                self._stop(s, c, t)
        c = clocks.get("return")
        if c is not None and c.stopped is None:
            self._stop(s, c, t, count=False)
        return []

    def _ticket_resolved(self, s: MatterState, d: UnitNoteData, t: int) -> list[Alert]:
        if s.status not in _TICKET_OPEN:
            self._require(s, _TICKET_OPEN, "ticket.resolved")
        if d.unit is not None:
            self._unit(d.unit)
        s.status = "resolved"
        clocks = s.clocks
        for name in ("resolve", "respond", "feedback", "accept"):
            c = clocks.get(name)
            if c is not None and c.stopped is None:
                self._stop(s, c, t)
        c = clocks.get("return")
        if c is not None and c.stopped is None:
            self._stop(s, c, t, count=False)
        return []

    def _ticket_closed(self, s: MatterState, d: UnitNoteData, t: int) -> list[Alert]:
        if s.status == "closed":
            raise _Reject("illegal_transition", "ticket.closed: the ticket is already closed")
        if d.unit is not None:
            self._unit(d.unit)
        s.status = "closed"
        for c in s.clocks.values():
            if c.stopped is None:
                self._stop(s, c, t, count=c.kind == "deadline")
        return []

    def _ticket_reopened(self, s: MatterState, d: UnitNoteData, t: int) -> list[Alert]:
        self._require(s, ("resolved", "closed"), "ticket.reopened")
        self._unit(d.unit)
        s.status = "reopened"
        old = s.clocks.get("resolve")
        if old is not None and old.due is not None:
            rule = self.policy.rules[old.rule]
            # the rule's own limit again (an extension granted before does not carry over);
            # for a limit set per matter (R15.7, R14.due) the one first set
            first_due = old.original_due if old.original_due is not None else old.due
            limit = rule.limit if rule.limit is not None else self._measure(old.counts, old.start, first_due)
            self._start_clock(s, "resolve", rule, t, limit=limit, counts=old.counts)
            s.attrs["reopened_at"] = _iso(t, self.tz)
        return []

    def _ticket_returned(self, s: MatterState, d: TicketReturnedData, t: int) -> list[Alert]:
        self._require(s, ("dispatched", "accepted"), "ticket.returned")
        self._unit(d.unit)
        s.status = "returned"
        s.attrs["returns"] = int(s.attrs.get("returns", 0)) + 1
        self._stop(s, s.clocks.get("accept"), t)
        alerts: list[Alert] = []
        window = s.clocks.get("return")
        if window is not None and window.stopped is None:
            self._stop(s, window, t)
            if window.due is not None and t > window.due:
                alerts.append(self._alert(
                    s, window, "violation", "late_return", t, None,
                    self.policy.notify.get("violation", ("unit", "ops")),
                    f"R14.5: returned {format_duration(t - window.due)} after the "
                    f"{s.attrs.get('urgency', '')} return window closed",
                    extra={"returned_by": d.unit, "reason": d.reason},
                ))  # fmt: skip
        return alerts

    def _ticket_extension_requested(self, s: MatterState, d: ExtensionRequestedData, t: int) -> list[Alert]:
        self._require(s, ("created", "dispatched", "accepted", "returned", "reopened"),
                      "ticket.extension_requested")  # fmt: skip
        self._unit(d.unit)
        if _ts(d.requested_due_at) <= t:
            raise _Reject("bad_deadline", "data.requested_due_at: must be in the future")
        s.attrs["_extension_pending"] = _ts(d.requested_due_at)
        s.attrs.setdefault("_extension_requested_at", t)
        s.attrs["extensions_requested"] = int(s.attrs.get("extensions_requested", 0)) + 1
        return []

    def _deadline_clock(self, s: MatterState) -> Clock | None:
        for name in ("resolve", "feedback", "respond"):
            c = s.clocks.get(name)
            if c is not None and c.stopped is None:
                return c
        return None

    def _ticket_extension_granted(self, s: MatterState, d: ExtensionGrantedData, t: int) -> list[Alert]:
        self._require(s, ("created", "dispatched", "accepted", "returned", "reopened"),
                      "ticket.extension_granted")  # fmt: skip
        clock = self._deadline_clock(s)
        if clock is None:
            raise _Reject("illegal_transition", "ticket.extension_granted: no running deadline to extend")
        new_due = _ts(d.due_at)
        if new_due <= clock.start:
            raise _Reject("bad_deadline", "data.due_at: before the clock started")
        original = clock.original_due
        clock.extensions.append((t, new_due))
        self._move(s, clock, new_due, t)
        clock.original_due = original if original is not None else new_due
        s.attrs.pop("_extension_pending", None)
        s.attrs["extensions_granted"] = int(s.attrs.get("extensions_granted", 0)) + 1
        return []

    def _ticket_extension_denied(self, s: MatterState, d: Any, t: int) -> list[Alert]:
        if "_extension_pending" not in s.attrs:
            raise _Reject("illegal_transition", "ticket.extension_denied: no extension request is pending")
        s.attrs.pop("_extension_pending")
        return []

    def _ticket_deadline_set(self, s: MatterState, d: DeadlineSetData, t: int) -> list[Alert]:
        self._require(s, ("created", "dispatched", "accepted", "returned", "reopened"),
                      "ticket.deadline_set")  # fmt: skip
        due = _ts(d.due_at)
        if due <= s.created:
            raise _Reject("bad_deadline", "data.due_at: before the ticket was created")
        clock = s.clocks.get("resolve")
        if clock is None or clock.stopped is not None:
            clock = self._start_clock(s, "resolve", self.policy.rules["R15.7"], s.created, due=due,
                                      armed_at=t)  # fmt: skip
            return []
        if due <= clock.start:
            raise _Reject("bad_deadline", "data.due_at: before the clock started")
        first = clock.due is None
        self._move(s, clock, due, t)
        if first:
            clock.original_due = due
        return []

    def _r13_resolve_check(self, s: MatterState, clock: Clock, at: int, late_by: int | None) -> list[Alert]:
        """Article 13: a unit that cannot finish in time must apply for an extension beforehand."""
        if "dispatched_at" not in s.attrs:
            return []
        asked = s.attrs.get("_extension_requested_at")
        if asked is not None and asked <= at:
            return []
        return [self._alert(
            s, clock, "violation", "no_extension_request", at, late_by,
            self.policy.notify.get("violation", ("unit", "ops")),
            "R13: deadline passed without an extension request to ops",
            rule="R13.resolve",
        )]  # fmt: skip

    # ============================================================ outages

    def _outage_attrs(self, s: MatterState, **kw: Any) -> None:
        for k, v in kw.items():
            if v is None:
                continue
            if isinstance(v, datetime):
                s.attrs[k] = _iso(_ts(v), self.tz)
                s.attrs["_" + k] = _ts(v)
            elif hasattr(v, "model_dump"):
                s.attrs[k] = v.model_dump(exclude_defaults=True)
            else:
                s.attrs[k] = v.value if hasattr(v, "value") else v

    def _outage_planned(self, s: MatterState, d: OutagePlannedData, t: int) -> list[Alert]:
        s.unit = self._unit(d.unit)
        s.status = "planned"
        self._outage_attrs(s, outage_kind=d.kind, area=d.area, starts_at=d.starts_at,
                           expected_end_at=d.expected_end_at, cause=d.cause,
                           pressure_limited=d.pressure_limited)  # fmt: skip
        starts = _ts(d.starts_at)
        alerts: list[Alert] = []
        if d.kind is OutageKind.USER_CAUSED:
            alerts += self._arm_ops_notice(s, t)
        else:
            alerts += self._arm_pre_notice(s, t)
            if d.kind is OutageKind.MAINTENANCE and t >= starts:
                r = self.policy.rules["R19.3"]
                alerts.append(self._alert(
                    s, None, "violation", "not_in_advance", t, None, r.notify or ("ops",),
                    "R19.3: maintenance outage reported to ops only after it started",
                    rule="R19.3", clock_name="report",
                ))  # fmt: skip
        self._arm_outage_progress(s, t)
        return alerts

    def _arm_pre_notice(self, s: MatterState, t: int) -> list[Alert]:
        rule = self.policy.rules["R19.1"]
        if s.attrs.get("outage_kind") not in rule.outage_kinds:
            return []
        starts = int(s.attrs["_starts_at"])
        lead = rule.lead or 0
        due = starts - lead
        alerts: list[Alert] = []
        if t <= due:
            due = max(t, self._before_quiet(due))  # never in residents' quiet hours, never later
        if t > due:  # announced too late: send at once, and it is a violation
            alerts.append(self._alert(
                s, None, "violation", "late_notice", t, None,
                self.policy.notify.get("violation", ("unit", "ops")),
                f"R19.1: outage announced {format_duration(starts - t)} before it starts, "
                f"less than {format_duration(lead)}",
                rule="R19.1", clock_name="pre_notice",
            ))  # fmt: skip
            due = t
        self._start_clock(s, "pre_notice", rule, t, due=due, kind="notice", armed_at=t)
        return alerts

    def _before_quiet(self, due: int) -> int:
        """``due``, or the last second before the residents' quiet window it falls in (R19.1: a notice due at
        02:00 goes out at 20:59:59 the evening before, so it is never later than start − 48 h)."""
        local = datetime.fromtimestamp(due, self.tz)
        for a, b in self.policy.resident_quiet_hours:
            for day in (local.date(), local.date() - timedelta(days=1)):
                start = datetime.combine(day, a, self.tz)
                end = datetime.combine(day + timedelta(days=1) if b <= a else day, b, self.tz)
                if start.timestamp() <= due < end.timestamp():
                    return _ts(start) - 1
        return due

    def _arm_ops_notice(self, s: MatterState, t: int) -> list[Alert]:
        rule = self.policy.rules["R19.4"]
        starts = int(s.attrs["_starts_at"])
        window = rule.window or 0
        alerts: list[Alert] = []
        if t > starts:
            alerts.append(self._alert(
                s, None, "violation", "late_ops_notice", t, None, rule.notify or ("ops",),
                "R19.4: ops was told of a user-caused stop only after it started",
                rule="R19.4", clock_name="ops_notice",
            ))  # fmt: skip
        self._start_clock(s, "ops_notice", rule, t, due=max(t, starts - window), kind="once", armed_at=t)
        return alerts

    def _outage_start_ts(self, s: MatterState) -> int:
        return int(s.attrs.get("_started_at") or s.attrs["_starts_at"])

    def _arm_outage_progress(self, s: MatterState, t: int) -> None:
        """(Re)arm the R23 reminder and restore deadline and the R22 peak watch.

        R23: a unit that cannot restore supply by the expected time reports it
        in the warning group at least ``report_before`` (30 min) ahead.  The
        service reminds the unit ``warn.leads`` before that point
        (``delay_report``, a one-off warning); if the expected time then passes
        without restoration and without a delay report, the ``restore``
        deadline is missed and that is also a violation of R23.
        """
        start = self._outage_start_ts(s)
        end = s.attrs.get("_expected_end_at")
        r23 = self.policy.rules["R23"]
        if end is not None:
            end = int(end)
            lead = r23.warn.leads[0] if r23.warn.leads else 0
            remind_at = end - (r23.report_before or 0) - lead
            old = s.clocks.get("delay_report")
            if remind_at > t and not (old is not None and old.stopped is None and old.due == remind_at):
                self._start_clock(s, "delay_report", r23, t, due=remind_at, kind="once", armed_at=t)
            old = s.clocks.get("restore")
            if end > start and not (old is not None and old.stopped is None and old.due == end):
                if old is not None and old.stopped is None:
                    self._move(s, old, end, t)
                else:
                    self._start_clock(s, "restore", r23, start, due=end, kind="overdue_only")
        self._arm_peak(s, after=max(start, t))

    def _arm_peak(self, s: MatterState, after: int) -> None:
        if "R22" not in self.policy.rules or not self.policy.peak_hours:
            return
        if s.status in ("restored", "cancelled"):
            return
        after = max(after, int(s.attrs.get("_peak_done_until", 0)))  # one alert per peak period
        at = self._next_peak(after)
        self._start_clock(s, "peak", self.policy.rules["R22"], after, due=at, kind="recurring", armed_at=after)

    def _peaks_of(self, t: int) -> tuple[int, tuple[tuple[float, float], ...]]:
        """The local date ordinal of ``t`` and that date's peak periods as ``(start, end)`` timestamps (cached)."""
        o = datetime.fromtimestamp(t, self.tz).toordinal()
        return o, self._peaks_on(o)

    def _peaks_on(self, o: int) -> tuple[tuple[float, float], ...]:
        """The peak periods of local date ordinal ``o`` as ``(start, end)`` timestamps (cached per date)."""
        cached = self._peak_cache.get(o)
        if cached is None:
            d = date.fromordinal(o)
            cached = tuple((datetime.combine(d, a, self.tz).timestamp(), datetime.combine(d, b, self.tz).timestamp())
                           for a, b in self.policy.peak_hours)  # fmt: skip
            if len(self._peak_cache) >= 10_000:
                self._peak_cache.clear()
            self._peak_cache[o] = cached
        return cached

    def _next_peak(self, t: int) -> int:
        """The first instant ≥ t inside a peak period."""
        o, peaks = self._peaks_of(t)
        for day in range(0, 3):
            if day:
                peaks = self._peaks_on(o + day)
            for pa, pb in peaks:
                if pb > t:
                    return max(t, int(pa // 1))
        raise AssertionError("no peak period within three days")  # pragma: no cover

    def _peak_end(self, t: int) -> int:
        for pa, pb in self._peaks_of(t)[1]:
            if pa <= t < pb:
                return int(pb // 1)
        return t + 1

    def _outage_emergency(self, s: MatterState, d: OutageEmergencyData, t: int) -> list[Alert]:
        s.unit = self._unit(d.unit)
        s.status = "active"
        s.attrs["emergency"] = True
        self._outage_attrs(s, area=d.area, cause=d.cause, expected_end_at=d.expected_end_at)
        s.attrs["starts_at"] = _iso(t, self.tz)
        s.attrs["_starts_at"] = t
        s.attrs["_started_at"] = t
        r192 = self.policy.rules["R19.2"]
        alerts = [self._alert(s, None, "warning", "warning_group", t, None, r192.notify,
                              "R19.2: unforeseen outage - first-level warning group alerted",
                              rule="R19.2", clock_name="report"),
                  self._alert(s, None, "notice", "emergency_outage", t, None, ("residents",),
                              "R19.2: residents told of the emergency outage (direct channels)",
                              rule="R19.2", clock_name="notice",
                              notice=NoticeKind.EMERGENCY_OUTAGE.value)]  # fmt: skip
        r12 = self.policy.rules.get("R12")
        if r12 is not None and "outage.emergency" in r12.triggers:
            alerts.append(self._alert(s, None, "escalation", "immediate", t, None, r12.notify,
                                      "R12: emergency outage reported to the leaders at once",
                                      rule="R12", clock_name="report"))  # fmt: skip
        self._arm_outage_progress(s, t)
        return alerts

    def _outage_notice_approved(self, s: MatterState, d: NoticeApprovedData, t: int) -> list[Alert]:
        if s.status in ("cancelled",):
            raise _Reject("illegal_transition", "outage.notice_approved: the outage was cancelled")
        if self._unit(d.approved_by) != "office":
            raise _Reject("not_authorised", "data.approved_by: public notices are approved by office (R19.2)")
        n = int(s.attrs.get("approvals", 0)) + 1
        s.attrs["approvals"] = n
        kind = NoticeKind.EMERGENCY_OUTAGE if s.attrs.get("emergency") else NoticeKind.PRE_OUTAGE
        return [self._alert(s, None, "notice", f"public_{n}", t, None, ("public",),
                            "R19.2: public-channel notice approved by office",
                            rule="R19.2", clock_name="public_notice", notice=kind.value,
                            extra={"public_channels": [c.value for c in d.channels]})]  # fmt: skip

    def _outage_updated(self, s: MatterState, d: OutageUpdatedData, t: int) -> list[Alert]:
        if s.status in ("restored", "cancelled"):
            raise _Reject("illegal_transition", f"outage.updated: the outage is {s.status}")
        old = {k: s.attrs.get(k) for k in ("starts_at", "expected_end_at", "area")}
        if d.starts_at is not None and s.attrs.get("emergency"):
            raise _Reject("illegal_transition", "outage.updated: an emergency outage has no planned start")
        if d.starts_at is not None and s.status == "active":
            raise _Reject("illegal_transition", "outage.updated: the outage already started")
        new_start = _ts(d.starts_at) if d.starts_at else int(s.attrs["_starts_at"])
        new_end = _ts(d.expected_end_at) if d.expected_end_at else s.attrs.get("_expected_end_at")
        if new_end is not None and int(new_end) <= new_start:
            raise _Reject("bad_deadline", "data.expected_end_at: must be after the start")
        self._outage_attrs(s, starts_at=d.starts_at, expected_end_at=d.expected_end_at, area=d.area)
        s.attrs["version"] = int(s.attrs.get("version", 1)) + 1
        alerts: list[Alert] = []
        if d.starts_at is not None or d.area is not None:
            sent = s.attrs.get("pre_notice_sent")
            if sent:  # residents were told the old plan: correct it, never re-send stale notices
                alerts.append(self._correction(s, t, sent, old, d.reason))
                if d.starts_at is not None and t > new_start - (self.policy.rules["R19.1"].lead or 0):
                    alerts.append(self._alert(
                        s, None, "violation", f"late_change_v{s.attrs['version']}", t, None,
                        self.policy.notify.get("violation", ("unit", "ops")),
                        "R19.1: outage moved with less than 48 h notice", rule="R19.1",
                        clock_name="pre_notice"))  # fmt: skip
            elif s.attrs.get("outage_kind") == OutageKind.USER_CAUSED.value:
                if "ops_notice" in s.clocks and s.clocks["ops_notice"].stopped is None:
                    alerts += self._arm_ops_notice(s, t)
            elif "pre_notice" in s.clocks:
                alerts += self._arm_pre_notice(s, t)
        self._arm_outage_progress(s, t)
        return alerts

    def _correction(self, s: MatterState, t: int, sent: str, old: dict[str, Any], reason: str | None) -> Alert:
        n = int(s.attrs.get("corrections", 0)) + 1
        s.attrs["corrections"] = n
        return self._alert(
            s, None, "notice", f"correction_{n}", t, None, ("residents_notified",),
            "R19.1: correction to residents who got the earlier notice", rule="R19.1",
            clock_name="notice", notice=NoticeKind.CORRECTION.value,
            extra={"supersedes": sent, "previous": {k: v for k, v in old.items() if v is not None},
                   "reason": reason},
        )  # fmt: skip

    def _outage_cancelled(self, s: MatterState, d: Any, t: int) -> list[Alert]:
        if s.status in ("restored", "cancelled", "active"):
            raise _Reject("illegal_transition", f"outage.cancelled: the outage is {s.status}")
        alerts: list[Alert] = []
        sent = s.attrs.get("pre_notice_sent")
        s.status = "cancelled"
        s.attrs["cancelled"] = True
        if sent:
            alerts.append(self._correction(s, t, sent, {}, d.reason))
        for c in s.clocks.values():
            self._stop(s, c, t, count=False)
        return alerts

    def _outage_started(self, s: MatterState, d: Any, t: int) -> list[Alert]:
        if s.status != "planned":
            raise _Reject("illegal_transition", f"outage.started: the outage is {s.status}")
        s.status = "active"
        s.attrs["_started_at"] = t
        s.attrs["started_at"] = _iso(t, self.tz)
        self._stop(s, s.clocks.get("pre_notice"), t, count=False)  # a notice not yet sent is stale now
        self._stop(s, s.clocks.get("ops_notice"), t, count=False)
        self._arm_outage_progress(s, t)
        return []

    def _outage_delay_reported(self, s: MatterState, d: OutageDelayData, t: int) -> list[Alert]:
        if s.status in ("restored", "cancelled"):
            raise _Reject("illegal_transition", f"outage.delay_reported: the outage is {s.status}")
        new_end = _ts(d.expected_end_at)
        if new_end <= t:
            raise _Reject("bad_deadline", "data.expected_end_at: the new expected end is not in the future")
        rule = self.policy.rules["R23"]
        current_end = s.attrs.get("_expected_end_at")
        self._stop(s, s.clocks.get("delay_report"), t, count=False)
        n = int(s.attrs.get("delays", 0)) + 1
        s.attrs["delays"] = n
        previous = s.attrs.get("expected_end_at")
        alerts: list[Alert] = []
        if current_end is not None and t > int(current_end) - (rule.report_before or 0):
            alerts.append(self._alert(
                s, None, "violation", f"late_delay_report_{n}", t, None,
                self.policy.notify.get("violation", ("unit", "ops")),
                f"R23: delay reported {format_duration(max(0, int(current_end) - t))} before the expected "
                f"restoration, less than {format_duration(rule.report_before or 0)}",
                rule="R23", clock_name="delay",
            ))  # fmt: skip
        self._outage_attrs(s, expected_end_at=d.expected_end_at)
        alerts += [
            self._alert(s, None, "warning", f"delay_reported_{n}", t, None, rule.notify,
                        "R23: restoration delayed - reported in the warning group", rule="R23",
                        clock_name="delay", extra={"previous_expected_end_at": previous,
                                                   "reason": d.reason}),
            self._alert(s, None, "notice", f"delay_update_{n}", t, None, ("residents",),
                        "R23: residents told of the new expected restoration time", rule="R23",
                        clock_name="notice", notice=NoticeKind.DELAY_UPDATE.value,
                        extra={"previous_expected_end_at": previous}),
        ]  # fmt: skip
        self._arm_outage_progress(s, t)
        return alerts

    def _outage_restored(self, s: MatterState, d: Any, t: int) -> list[Alert]:
        if s.status not in ("active", "planned"):
            raise _Reject("illegal_transition", f"outage.restored: the outage is {s.status}")
        s.status = "restored"
        s.attrs["restored_at"] = _iso(t, self.tz)
        self._stop(s, s.clocks.get("restore"), t)
        for c in s.clocks.values():
            self._stop(s, c, t, count=False)
        return [self._alert(s, None, "notice", "restoration", t, None, ("residents",),
                            "R23: residents told that supply is restored", rule="R23",
                            clock_name="notice", notice=NoticeKind.RESTORATION.value)]  # fmt: skip

    # ============================================================ leaks, damage, meters

    def _leak_reported(self, s: MatterState, d: LeakReportedData, t: int) -> list[Alert]:
        s.status = "reported"
        if d.pipe_diameter_mm is not None:
            s.attrs["pipe_diameter_mm"] = d.pipe_diameter_mm
        if d.location:
            s.attrs["location"] = d.location
        if d.in_meter_well:
            r25 = self.policy.rules["R25"]
            s.unit = self._unit(d.unit) or r25.default_unit
            s.attrs["in_meter_well"] = True
            return [self._alert(s, None, "warning", "contact_user", t, None, ("unit",),
                                "R25: leak in the meter well or behind the meter - contact the user promptly",
                                rule="R25", clock_name="contact")]  # fmt: skip
        rule = self.policy.rules["R24.arrive"]
        s.unit = self._unit(d.unit) or rule.default_unit
        self._start_clock(s, "arrive", rule, t, limit=rule.limit)
        return []

    def _leak_crew_arrived(self, s: MatterState, d: Any, t: int) -> list[Alert]:
        if s.status != "reported":
            raise _Reject("illegal_transition", f"leak.crew_arrived: the leak is {s.status}")
        s.status = "on_site"
        self._stop(s, s.clocks.get("arrive"), t)
        return []

    def _leak_repair_started(self, s: MatterState, d: LeakRepairStartedData, t: int) -> list[Alert]:
        if s.status not in ("reported", "on_site"):
            raise _Reject("illegal_transition", f"leak.repair_started: the leak is {s.status}")
        s.status = "repairing"
        self._stop(s, s.clocks.get("arrive"), t)
        if d.pipe_diameter_mm is not None:
            s.attrs["pipe_diameter_mm"] = d.pipe_diameter_mm
        rule = self.policy.rules["R24.repair"]
        diameter = s.attrs.get("pipe_diameter_mm")
        band = rule.bands[0]
        if diameter is None:
            s.attrs["diameter_unknown"] = True  # the stricter limit applies until known
        else:
            for b in rule.bands:
                if b.max_diameter_mm is None or int(diameter) <= b.max_diameter_mm:
                    band = b
                    break
        self._start_clock(s, "repair", rule, t, limit=band.limit)
        return []

    def _leak_repaired(self, s: MatterState, d: Any, t: int) -> list[Alert]:
        if s.status == "repaired":
            raise _Reject("illegal_transition", "leak.repaired: already repaired")
        s.status = "repaired"
        self._stop_clocks(s, ("arrive", "repair"), t)
        return []

    def _damage_reported(self, s: MatterState, d: DamageReportedData, t: int) -> list[Alert]:
        rule = self.policy.rules["R30"]
        s.unit = self._unit(d.unit) or rule.default_unit
        s.status = "reported"
        if d.location:
            s.attrs["location"] = d.location
        if d.summary:
            s.attrs["summary"] = d.summary
        self._start_clock(s, "arrive", rule, t, limit=rule.limit)
        return []

    def _damage_inspector_arrived(self, s: MatterState, d: Any, t: int) -> list[Alert]:
        if s.status != "reported":
            raise _Reject("illegal_transition", f"damage.inspector_arrived: the report is {s.status}")
        s.status = "on_site"
        self._stop(s, s.clocks.get("arrive"), t)
        return []

    def _meter_registered(self, s: MatterState, d: MeterRegisteredData, t: int) -> list[Alert]:
        rule = self.policy.rules["R31"]
        s.unit = self._unit(d.unit) or rule.default_unit
        s.status = "active"
        s.attrs.update({"meter_id": d.meter_id, "account": d.account})
        self._open_meter_cycle(s, t)
        return []

    def _open_meter_cycle(self, s: MatterState, start: int) -> None:
        period, due = self._month_of(start)
        name = f"read:{period}"
        if name in s.clocks:
            return
        rule = self.policy.rules["R31"]
        if self.policy.time_scale != 1:
            due = start + max(1, round((due - start) / self.policy.time_scale))
        self._start_clock(s, name, rule, start, due=due)
        # keep the state small: forget cycles closed long ago
        closed = sorted(k for k, c in s.clocks.items() if k.startswith("read:") and c.stopped is not None)
        for k in closed[:-2]:
            del s.clocks[k]

    def _month_of(self, ts: int) -> tuple[str, int]:
        """``(YYYY-MM, first instant of the next month)`` of ``ts``'s local month (the next-month start is
        cached per month; the month is read off the ISO time instead of a ``datetime.strftime``)."""
        iso = _iso(ts, self.tz)
        assert iso is not None
        # a four-digit year >= 1000: strftime("%Y-%m") gives the same (it does not pad smaller years)
        period = iso[:7] if iso[4:5] == "-" and iso[0] != "0" else datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m")
        due = self._month_cache.get(period)
        if due is None:
            due = _next_month_start(ts, self.tz)
            if len(self._month_cache) >= 10_000:
                self._month_cache.clear()
            self._month_cache[period] = due
        return period, due

    def _meter_read(self, s: MatterState, d: MeterReadData, t: int) -> list[Alert]:
        if d.meter_id != s.attrs.get("meter_id"):
            raise _Reject("wrong_matter", "data.meter_id: does not match the registered meter")
        clock = s.clocks.get(f"read:{d.period}")
        if clock is None:
            raise _Reject("illegal_transition", f"meter.read: no open reading cycle for {d.period}")
        if clock.stopped is not None:
            raise _Reject("illegal_transition", f"meter.read: {d.period} was already read")
        self._stop(s, clock, t)
        alerts: list[Alert] = []
        if d.estimated and not (d.evidence and d.explained_to_user):
            missing = "evidence" if not d.evidence else "an explanation to the user"
            alerts.append(self._alert(
                s, clock, "violation", "estimate_unexplained", t, None,
                self.policy.notify.get("violation", ("unit", "ops")),
                f"R31: estimated reading for {d.period} without {missing}",
                extra={"period": d.period},
            ))  # fmt: skip
        if clock.due is not None and t <= clock.due:
            self._open_meter_cycle(s, clock.due)
        return alerts


def _next_month_start(ts: int, tz: ZoneInfo) -> int:
    local = datetime.fromtimestamp(ts, tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return _ts(datetime(year, month, 1, tzinfo=tz))


def month_bounds(month: str, tz: ZoneInfo) -> tuple[int, int]:
    """``YYYY-MM`` → (first instant, first instant of the next month) in POSIX seconds."""
    year, mon = (int(x) for x in month.split("-"))
    first = datetime(year, mon, 1, tzinfo=tz)
    days = _stdcal.monthrange(year, mon)[1]
    return _ts(first), _ts(first + timedelta(days=days))


__all__ = [
    "ALERT_TYPE",
    "UTC",
    "Alert",
    "AlertLevel",
    "Clock",
    "Engine",
    "MatterState",
    "Rejection",
    "Stage",
    "Step",
    "month_bounds",
]  # fmt: skip
