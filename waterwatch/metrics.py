"""Prometheus metrics of the workers: what the worker and the notifier expose on ``/metrics``.

Theory of operation
===================

Each worker process owns one :class:`WorkerMetrics` (or :class:`NotifierMetrics`)
with its **own** ``CollectorRegistry`` -- never prometheus-client's global one --
so tests build as many as they like and nothing else can leak into the page.
The runtime calls a handful of methods from its loop; the methods turn the
core's objects (:class:`~waterwatch.core.engine.MatterState`, ``Alert``) into
metric updates.  ``now`` is always a parameter (only :meth:`WorkerMetrics.watch_calendar`
reads a clock, at scrape time, for the holiday-data horizon).

Two rules hold for every metric:

1. **Names follow Prometheus conventions** (STYLE.md): prefix ``waterwatch_``,
   base units (``_seconds``, never days or hours), counters end in ``_total``,
   ratios in ``_ratio``, ``_info`` gauges carry build facts with value 1.
2. **Every label value comes from a bounded set** (:class:`LabelValues`):
   units from the units directory, rules from the policy, categories, kinds,
   levels and notice kinds from the enums of the event contract, error classes
   from the list below.  Anything else becomes ``other`` (a missing value
   ``none``, a matter without a unit ``unassigned``).  Matter ids, event ids,
   phone numbers, names, addresses, free text never reach a label: the only
   strings that can are the allowed values, and those are checked to look like
   identifiers when the set is built.

Open matters
------------
``waterwatch_open_matters{unit,kind,category,overdue}`` is kept incrementally:
the metrics remember, per open matter, the label set it is counted under, and
:meth:`WorkerMetrics.state_changed` moves it when the state changes (or drops
it when the matter is finished).  *Overdue* means a running deadline whose due
instant is at or before ``now``; the engine fires the overdue stage at that
instant, which changes the state, so the flag follows without a timer of its
own.  After a rebalance the runtime rebuilds the gauge from its table
(:meth:`reset_open` + :meth:`track`) and drops revoked partitions
(:meth:`drop_partitions`).

Deadlines met and breached
--------------------------
The engine appends an :class:`~waterwatch.core.engine.Outcome` to the state
when a deadline stops: met when it stopped at or before the deadline in force,
missed otherwise -- the definition of the monthly assessment (R34,
``waterwatch report``), so Grafana and the report agree.  ``state_changed``
counts the outcomes that ``new`` has and ``old`` had not: each deadline is
counted once, when it is decided, as ``met`` or ``breached``, and its duration
(stop minus start, wall seconds) is observed once in the time-to-accept or
time-to-resolve histogram, whose bucket edges include every limit of the
policy, so "share within the limit" is one bucket divided by the count.
A caller that snapshots the outcome list before the record can skip decoding
the old state: :func:`newly_decided` gives the new outcomes, then
:meth:`WorkerMetrics.deadlines_decided` and :meth:`WorkerMetrics.track`.
"""

from __future__ import annotations

import errno
import re
import sys
import time as _time
from collections import Counter as _Multiset
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from datetime import time as _daytime
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from waterwatch.codes import AlertLevel, Category, NoticeKind

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from waterwatch.core.calendar import BusinessCalendar
    from waterwatch.core.config import Config
    from waterwatch.core.engine import MatterState, Outcome

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "ERROR_CLASSES",
    "FIRE_LAG_BUCKETS",
    "LEAD_TIME_BUCKETS",
    "OTHER",
    "LabelValues",
    "NotifierMetrics",
    "WorkerMetrics",
    "is_open",
    "is_overdue",
    "newly_decided",
    "serve_metrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :meth:`WorkerMetrics.exposition` (for a Faust ``/metrics`` page)."""

OTHER = "other"
NONE = "none"
UNASSIGNED = "unassigned"

_MIN, _H, _D = 60, 3600, 86400

DURATION_BUCKETS: tuple[float, ...] = (
    5 * _MIN, 10 * _MIN, 15 * _MIN, 30 * _MIN, 1 * _H, 2 * _H, 4 * _H, 8 * _H, 12 * _H,
    24 * _H, 36 * _H, 48 * _H, 72 * _H, 5 * _D, 7 * _D, 10 * _D, 15 * _D, 30 * _D,
)  # fmt: skip
"""Time to accept / resolve: every limit of the policy is an edge (10 min ... 15 d)."""

FIRE_LAG_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
"""Timer fire lag: from a stage's instant to its alert leaving the worker."""

SEND_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""One provider call (SMS, e-mail, WeCom robot)."""

PRE_NOTICE_TOLERANCE = 1 * _H
"""R19.1 asks for 48 h; the engine fires the notice at exactly 48 h before the start, so
delivery takes a little of it. The alert threshold (an edge of its own) allows one hour."""

LEAD_TIME_BUCKETS: tuple[float, ...] = (
    0, 1 * _H, 6 * _H, 12 * _H, 24 * _H, 36 * _H, 48 * _H - PRE_NOTICE_TOLERANCE, 48 * _H,
    72 * _H, 5 * _D, 7 * _D, 15 * _D,
)  # fmt: skip
"""Resident notice lead time (R19.1: at least 48 h); ``le="0"`` counts notices after the start."""

MATTER_KINDS = ("ticket", "outage", "leak", "damage", "meter")
RECORDS = ("event", "check")
"""What the worker's agent consumes: an input event or a clock check command."""
TOPIC_ROLES = ("events", "clock")
OUTCOMES = ("met", "breached")
CLOCKS = (
    "accept", "respond", "feedback", "resolve", "return", "arrive", "repair", "read", "restore",
    "delay_report", "pre_notice", "ops_notice", "peak",
)  # fmt: skip
"""Clock names of the engine (``read:YYYY-MM`` is counted as ``read``)."""
RESOLVE_CLOCKS = ("resolve", "feedback", "respond", "repair")
"""Clocks whose duration is a time to resolve (the same as ``waterwatch report``)."""

ERROR_CLASSES = (
    # the shell (streams/processor.py) and the event contract (waterwatch/events.py)
    "too_large", "not_utf8", "invalid_json", "schema", "unknown_type", "key_mismatch", "state_corrupt",
    # the core's rejections (waterwatch/core/engine.py)
    "unknown_matter", "duplicate_matter", "wrong_kind", "wrong_matter", "time_backwards", "time_in_future",
    "illegal_transition", "bad_deadline", "unknown_category", "unknown_unit", "not_authorised",
)  # fmt: skip
"""Dead-letter error classes; a test keeps this list in step with the code that raises them."""

CHANNEL_PROVIDERS: Mapping[str, tuple[str, ...]] = {
    "sms": ("twilio",),
    "email": ("sendgrid",),
    "wecom": ("wecom_robot",),
    "console": ("console",),
    "file": ("file",),
}
"""Delivery channels and the providers behind each (DESIGN.md)."""
DELIVERY_OUTCOMES = ("sent", "retried", "failed", "dead_lettered", "skipped", "in_doubt")
"""``sent``: the provider accepted it; ``retried``: a retryable error, tried again later;
``failed``: a permanent error (not retried); ``dead_lettered``: given up after retries;
``skipped``: already delivered (idempotency); ``in_doubt``: outcome unknown after a crash."""
FAILED_OUTCOMES = ("failed", "dead_lettered")
WEBHOOK_OUTCOMES = ("accepted", "forged", "bad")

_FINAL_STATUS: Mapping[str, frozenset[str]] = {
    "ticket": frozenset({"resolved", "closed"}),
    "outage": frozenset({"restored", "cancelled"}),
    "leak": frozenset({"repaired"}),
    "damage": frozenset({"on_site"}),  # the inspector arrived: the last step the product tracks
    "meter": frozenset(),  # a billing meter is read every month, for ever
}
_DEADLINE_KINDS = ("deadline", "overdue_only")

_SAFE_VALUE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:()\-]{0,63}$")
_VERSION = re.compile(r"^v?[0-9][0-9A-Za-z.+\-]{0,39}$")


# ===================================================================== labels


class LabelValues:
    """A bounded set of values for one label: anything outside it becomes ``other``.

    The allowed values must look like identifiers (a letter, then letters,
    digits and ``_ . : ( ) -``, at most 64): a phone number, an e-mail address
    or a sentence cannot be configured into a label by mistake.
    """

    __slots__ = ("allowed", "missing", "name")

    def __init__(self, name: str, allowed: Iterable[str], *, missing: str = NONE) -> None:
        values = frozenset(allowed)
        bad = sorted(v for v in values if not isinstance(v, str) or not _SAFE_VALUE.match(v))
        if bad:
            raise ValueError(f"label {name}: values must look like identifiers, not {bad[:3]!r}")
        self.name = name
        self.missing = missing
        self.allowed = values | {OTHER, missing}

    def __call__(self, value: object) -> str:
        if value is None or value == "":
            return self.missing
        if isinstance(value, str) and value in self.allowed:
            return value
        return OTHER

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.allowed))

    def __contains__(self, value: object) -> bool:
        return value in self.allowed

    def __repr__(self) -> str:
        return f"LabelValues({self.name!r}, {len(self.allowed)} values)"


def clock_family(name: str) -> str:
    """``read:2026-11`` -> ``read``: the month is data, not a label."""
    return name.split(":", 1)[0]


def is_open(state: MatterState) -> bool:
    """Does the matter still count as open (work remains for someone)?"""
    final = _FINAL_STATUS.get(state.kind)
    if final is None:
        return state.open
    return state.status not in final


def is_overdue(state: MatterState, now: float) -> bool:
    """Is a deadline of the matter running past its due instant at ``now``?"""
    return any(
        c.stopped is None and c.due is not None and c.kind in _DEADLINE_KINDS and c.due <= now
        for c in state.clocks.values()
    )


class _AlertLike(Protocol):
    rule: str
    level: str


# ===================================================================== base


class _Metrics:
    """The registry, build info, the HTTP endpoint and the exposition, shared by both workers."""

    component = "worker"

    def __init__(self, registry: CollectorRegistry | None, process_metrics: bool) -> None:
        # No ``*_created`` series: they double the page and nothing here reads them. (A
        # process-wide switch of prometheus-client; the worker processes are ours.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        if process_metrics:
            ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, ..._resident_memory_bytes
            PlatformCollector(registry=self.registry)  # python_info
        self._build_info = Gauge(
            "waterwatch_build_info",
            "Build of the running process (value 1): waterwatch version, component, Python version.",
            ["component", "version", "python"],
            registry=self.registry,
        )

    def build_info(self, version: str) -> None:
        """Set ``waterwatch_build_info`` (call once at start with ``waterwatch.__version__``)."""
        v = version if _VERSION.match(version) else OTHER
        py = "{}.{}.{}".format(*sys.version_info[:3])
        self._build_info.clear()
        self._build_info.labels(self.component, v, py).set(1)

    def exposition(self) -> bytes:
        """The text exposition of this registry (what ``/metrics`` returns, as :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve ``/metrics`` of this registry on ``addr:port`` in a daemon thread.

        Returns the server (``shutdown()`` stops it). ``port=0`` picks a free
        port: read it from ``server.server_port``. Bind ``0.0.0.0`` only in a
        container, where Prometheus scrapes from another host.
        """
        server, _thread = start_http_server(port, addr, registry=self.registry)
        return server


def serve_metrics(metrics: _Metrics, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, str | None]:
    """Serve ``metrics`` on ``addr:port`` or, when another process holds that port, on a free one.

    Returns the server (``server.server_port`` is the port actually served)
    and, after a fallback, why (``"127.0.0.1:9464: Address already in use"``)
    for the caller to log as a warning; ``None`` when ``port`` itself was
    bound. So a second worker on one host keeps a metrics page instead of
    losing it; Prometheus scrapes it once told the port (the worker logs it
    and reports it in ``/healthz``). Any other error (a bad address, a
    privileged port) is raised.
    """
    try:
        return metrics.serve(port, addr), None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        reason = f"{addr}:{port}: {exc.strerror}"
    return metrics.serve(0, addr), reason


# ===================================================================== worker


class WorkerMetrics(_Metrics):
    """The stream processor's metrics; one instance per worker process.

    ``units``: the units directory's ids; ``rules``: the policy's rule ids;
    ``rule_clocks`` (optional): deadline rule id -> clock name, used only to
    create the met/breached series at zero so that the first deadline of a
    kind is seen by ``increase()``. :meth:`from_config` fills all three.
    """

    component = "worker"

    def __init__(
        self,
        units: Iterable[str],
        rules: Iterable[str],
        *,
        rule_clocks: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> None:
        super().__init__(registry, process_metrics)
        r = self.registry
        self.unit = LabelValues("unit", units, missing=UNASSIGNED)
        self.rule = LabelValues("rule", rules)
        self.kind = LabelValues("kind", MATTER_KINDS)
        self.category = LabelValues("category", [c.value for c in Category])
        self.level = LabelValues("level", [lv.value for lv in AlertLevel])
        self.clock = LabelValues("clock", CLOCKS)
        self.error = LabelValues("error", ERROR_CLASSES)
        self.record = LabelValues("record", RECORDS)
        self.topic = LabelValues("topic", TOPIC_ROLES)

        self.open_matters = Gauge(
            "waterwatch_open_matters",
            "Matters not finished yet, by responsible unit, kind, ticket category and whether a deadline is overdue.",
            ["unit", "kind", "category", "overdue"],
            registry=r,
        )
        self.deadlines = Counter(
            "waterwatch_deadlines",
            "Deadlines decided, once each when their clock stops: met (on time against the deadline in force) "
            "or breached (R34).",
            ["unit", "rule", "clock", "outcome"],
            registry=r,
        )
        self.time_to_accept = Histogram(
            "waterwatch_time_to_accept_seconds",
            "From dispatch to acceptance by the unit (R13, wall seconds; the limit counts working time).",
            ["unit"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.time_to_resolve = Histogram(
            "waterwatch_time_to_resolve_seconds",
            "From the start of a respond/feedback/resolve/repair clock to its stop, by rule (wall seconds).",
            ["rule"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.alerts_fired = Counter(
            "waterwatch_alerts",
            "Alerts published to waterwatch.alerts, by rule and level.",
            ["rule", "level"],
            registry=r,
        )
        self.fire_lag_seconds = Histogram(
            "waterwatch_timer_fire_lag_seconds",
            "From a stage's instant (fired_at) to its alert leaving the worker, for alerts fired by a clock check.",
            buckets=FIRE_LAG_BUCKETS,
            registry=r,
        )
        self.records = Counter(
            "waterwatch_records_processed",
            "Records consumed by the worker's agent: input events and clock check commands.",
            ["record"],
            registry=r,
        )
        self.rejected_events = Counter(
            "waterwatch_events_rejected",
            "Input events rejected and written to the dead-letter topic, by error class.",
            ["error"],
            registry=r,
        )
        self.duplicate_events = Counter(
            "waterwatch_events_duplicate",
            "Input events ignored because their id was seen before for the matter.",
            registry=r,
        )
        self.holiday_horizon_seconds = Gauge(
            "waterwatch_holiday_data_horizon_seconds",
            "How far ahead holiday data exists: from now to the end of the last day with data.",
            registry=r,
        )
        self.holiday_missing_years = Gauge(
            "waterwatch_holiday_data_missing_years",
            "Calendar years in which working days were guessed (Mon-Fri) for lack of holiday data.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "waterwatch_consumer_lag_messages",
            "Records on the worker's assigned partitions not yet processed (highwater minus committed offset).",
            ["topic"],
            registry=r,
        )

        # series that exist from the start, at zero (the per-record ones kept at hand: hot path)
        self._records = {rec: self.records.labels(rec) for rec in self.record}
        self._rejected = {err: self.rejected_events.labels(err) for err in self.error}
        for unit in self.unit:
            self.time_to_accept.labels(unit)
        for rule_id, clock in (rule_clocks or {}).items():
            rl, cl = self.rule(rule_id), self.clock(clock_family(clock))
            if cl in RESOLVE_CLOCKS:
                self.time_to_resolve.labels(rl)
            for unit in self.unit:
                if unit != OTHER:
                    for outcome in OUTCOMES:
                        self.deadlines.labels(unit, rl, cl, outcome)
        for rule_id in self.rule:
            if rule_id != OTHER and rule_id != NONE:
                for lv in (AlertLevel.OVERDUE, AlertLevel.VIOLATION):
                    self.alerts_fired.labels(rule_id, lv.value)
        for role in TOPIC_ROLES:
            self.consumer_lag.labels(role)

        # open matters: matter id -> (label set it is counted under, partition)
        self._open: dict[str, tuple[tuple[str, str, str, str], int | None]] = {}
        self._interned: dict[tuple[str, str, str, str], tuple[str, str, str, str]] = {}
        # children of the per-record series by the raw values they are for (``labels()`` costs ~3 us a call: hot
        # path); no series of these metrics is ever removed, so a child kept stays the one the registry exposes
        self._open_children: dict[tuple[str, ...], Any] = {}
        self._alert_children: dict[tuple[str, str], Any] = {}
        self._deadline_children: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> WorkerMetrics:
        """Label sets from a loaded configuration: its units, its rules, its deadline clocks."""
        rules = config.policy.rules
        clocks = {r.id: r.clock for r in rules.values() if r.kind == "deadline" and r.clock}
        return cls(list(config.units), list(rules), rule_clocks=clocks, **kwargs)

    # ----------------------------------------------------------- records

    def event(self, record: str = "event", n: int = 1) -> None:
        """``n`` records consumed by the agent: ``"event"`` (waterwatch.events) or ``"check"`` (waterwatch.clock)."""
        self._records[self.record(record)].inc(n)

    def rejected(self, error: str | None) -> None:
        """An input event dead-lettered, with its error class (``Result.error``)."""
        self._rejected[self.error(error)].inc()

    def duplicate(self) -> None:
        """An input event ignored as a duplicate (``Result.duplicate``)."""
        self.duplicate_events.inc()

    def alerts(self, alerts: Iterable[_AlertLike]) -> None:
        """Alerts published (after the producer flush)."""
        children = self._alert_children
        for a in alerts:
            child = children.get((a.rule, a.level))
            if child is None:
                child = children[(a.rule, a.level)] = self.alerts_fired.labels(self.rule(a.rule), self.level(a.level))
            child.inc()

    def fire_lag(self, seconds: float) -> None:
        """Seconds from an alert's ``fired_at`` to its publication (negative clamps to 0)."""
        self.fire_lag_seconds.observe(max(0.0, float(seconds)))

    def consumer_lag_messages(self, topic: str, messages: int) -> None:
        """Lag of the worker's partitions of one input topic (``events`` or ``clock``, or the full topic name)."""
        role = topic.rsplit(".", 1)[-1]
        self.consumer_lag.labels(self.topic(role)).set(max(0, messages))

    # ----------------------------------------------------------- calendar

    def holiday_horizon(self, days: float) -> None:
        """Days ahead for which holiday data exists (stored in seconds, the base unit)."""
        self.holiday_horizon_seconds.set(float(days) * _D)

    def watch_calendar(self, calendar: BusinessCalendar, clock: Callable[[], float] = _time.time) -> None:
        """Compute the horizon and the guessed years from ``calendar`` at every scrape.

        Use this instead of :meth:`holiday_horizon` in a long-running worker:
        the horizon shrinks every day without any event.
        """
        tz = ZoneInfo(calendar.tz)

        def horizon() -> float:
            return horizon_seconds(calendar.horizon(), clock(), tz)

        self.holiday_horizon_seconds.set_function(horizon)
        self.holiday_missing_years.set_function(lambda: float(len(calendar.missing_years)))

    # ----------------------------------------------------------- matters

    def state_changed(
        self, old: MatterState | None, new: MatterState | None, now: float, *, partition: int | None = None
    ) -> None:
        """A matter's state was written: count its newly decided deadlines and move it in the open gauge.

        ``old`` is the state from before the record (``None`` for a new
        matter) and must be a separate object from ``new`` -- the processor
        updates states in place, so decode the stored bytes for it. ``new`` is
        the state written (``None``: the matter was deleted).
        """
        if old is not None and old is new:
            raise ValueError("old and new are the same object: pass the state from before the record")
        if new is None:
            if old is not None:
                self._untrack(old.matter_id)
            return
        self._count_outcomes(old, new)
        self.track(new, now, partition=partition)

    def track(self, state: MatterState, now: float, *, partition: int | None = None) -> None:
        """Count ``state`` in the open-matters gauge (or drop it when finished); counts no outcomes.

        For the rebuild after recovery: :meth:`reset_open`, then ``track`` each stored state.
        """
        mid = state.matter_id
        prev = self._open.get(mid)
        if not is_open(state):
            if prev is not None:
                self._untrack(mid)
            return
        labels = (
            self.unit(state.unit),
            self.kind(state.kind),
            self.category(state.attrs.get("category")),
            "true" if is_overdue(state, now) else "false",
        )
        labels = self._interned.setdefault(labels, labels)
        if prev is not None:
            if prev[0] == labels:
                if prev[1] != partition:
                    self._open[mid] = (labels, partition)
                return
            self._open_child(prev[0]).dec()
        self._open_child(labels).inc()
        self._open[mid] = (labels, partition)

    def _open_child(self, labels: tuple[str, ...]) -> Any:
        child = self._open_children.get(labels)
        if child is None:
            child = self._open_children[labels] = self.open_matters.labels(*labels)
        return child

    def reset_open(self) -> None:
        """Forget every open matter (the gauge's series stay, at zero)."""
        for labels, _p in self._open.values():
            self._open_child(labels).dec()
        self._open.clear()

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the open matters of revoked partitions; returns how many."""
        parts = set(partitions)
        gone = [mid for mid, (_labels, p) in self._open.items() if p in parts]
        for mid in gone:
            self._untrack(mid)
        return len(gone)

    def open_count(self) -> int:
        """How many matters the gauge counts (for tests and /healthz)."""
        return len(self._open)

    def _untrack(self, matter_id: str) -> None:
        prev = self._open.pop(matter_id, None)
        if prev is not None:
            self._open_child(prev[0]).dec()

    def _count_outcomes(self, old: MatterState | None, new: MatterState) -> None:
        if new.outcomes:
            self.deadlines_decided(newly_decided(old.outcomes if old is not None else None, new.outcomes))

    def deadlines_decided(self, outcomes: Iterable[Outcome]) -> None:
        """Count deadlines decided by one record (what :func:`newly_decided` returns), with their durations.

        ``state_changed`` calls this; a caller that already knows which
        outcomes are new calls it directly, with :meth:`track` for the gauge.
        """
        deadline_children = self._deadline_children
        for o in outcomes:
            key = (o.unit, o.rule, o.clock, o.met)
            found = deadline_children.get(key)
            if found is None:  # the label values of these raw values, once
                unit, rule = self.unit(o.unit), self.rule(o.rule)
                family = clock_family(o.clock)
                duration = None
                if family == "accept":
                    duration = self.time_to_accept.labels(unit)
                elif family in RESOLVE_CLOCKS:
                    duration = self.time_to_resolve.labels(rule)
                counter = self.deadlines.labels(unit, rule, self.clock(family), "met" if o.met else "breached")
                found = deadline_children[key] = (counter, duration)
            found[0].inc()
            if found[1] is not None:
                found[1].observe(max(0, o.stopped - o.start))


def newly_decided(before: Sequence[Outcome] | None, after: Sequence[Outcome]) -> list[Outcome]:
    """The outcomes in ``after`` (a state's outcomes after a record) that ``before`` had not.

    The engine trims the list at the front (``OUTCOMES_KEPT``), so it is
    compared as a multiset, not by length. ``before=None``: a new matter.
    """
    if not after:
        return []
    if not before:
        return list(after)
    if len(before) == len(after) and before[-1] == after[-1]:
        return []  # nothing decided by this record: the common case
    seen = _Multiset(before)
    fresh = []
    for o in after:
        if seen[o] > 0:
            seen[o] -= 1
        else:
            fresh.append(o)
    return fresh


def horizon_seconds(horizon: date, now: float, tz: ZoneInfo) -> float:
    """Seconds from ``now`` to the end of the local day ``horizon`` (0 once it has passed)."""
    end = datetime.combine(horizon + timedelta(days=1), _daytime(0), tz).timestamp()
    return max(0.0, end - now)


# ===================================================================== notifier


class NotifierMetrics(_Metrics):
    """The notifier's metrics (delivery of alerts and resident notices); one per notifier process."""

    component = "notifier"

    def __init__(
        self,
        units: Iterable[str],
        *,
        channel_providers: Mapping[str, Iterable[str]] = CHANNEL_PROVIDERS,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> None:
        super().__init__(registry, process_metrics)
        r = self.registry
        pairs = {ch: tuple(ps) for ch, ps in channel_providers.items()}
        self.unit = LabelValues("unit", units, missing=UNASSIGNED)
        self.channel = LabelValues("channel", pairs)
        self.provider = LabelValues("provider", [p for ps in pairs.values() for p in ps])
        self.outcome = LabelValues("outcome", DELIVERY_OUTCOMES)
        self.notice = LabelValues("notice", [n.value for n in NoticeKind])

        self.deliveries = Counter(
            "waterwatch_deliveries",
            "Delivery attempts to one recipient on one channel, by outcome.",
            ["channel", "provider", "outcome"],
            registry=r,
        )
        self.send_duration = Histogram(
            "waterwatch_delivery_send_duration_seconds",
            "Duration of one provider call (any outcome).",
            ["channel", "provider"],
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.in_doubt_deliveries = Gauge(
            "waterwatch_deliveries_in_doubt",
            "Deliveries whose outcome is unknown (intent recorded, no result) awaiting an operator.",
            ["channel", "provider"],
            registry=r,
        )
        self.notice_lead_time = Histogram(
            "waterwatch_notice_lead_time_seconds",
            "Pre-outage notices (R19.1): from residents reached to the outage start; le=0 means after the start.",
            ["unit"],
            buckets=LEAD_TIME_BUCKETS,
            registry=r,
        )
        self.households_targeted = Counter(
            "waterwatch_notice_households_targeted",
            "Households a resident notice was meant to reach.",
            ["unit", "notice"],
            registry=r,
        )
        self.households_reached = Counter(
            "waterwatch_notice_households_reached",
            "Households a resident notice reached on at least one channel.",
            ["unit", "notice"],
            registry=r,
        )
        self.coverage = Gauge(
            "waterwatch_notice_coverage_ratio",
            "Share of households reached by the latest resident notice of each unit and kind (0..1).",
            ["unit", "notice"],
            registry=r,
        )
        self.webhooks = Counter(
            "waterwatch_webhook_requests",
            "Provider webhook requests (receipts, inbound SMS) by outcome: accepted, forged (bad signature), bad.",
            ["provider", "outcome"],
            registry=r,
        )
        for p in ("twilio", "sendgrid"):
            for o in WEBHOOK_OUTCOMES:
                self.webhooks.labels(p, o)
        # every unit's notice series from zero, so that increase() counts the first notice
        for u in self.unit:
            self.notice_lead_time.labels(u)
            for kind in (n.value for n in NoticeKind):
                self.households_targeted.labels(u, kind)
                self.households_reached.labels(u, kind)
        for ch, providers in pairs.items():
            for p in providers:
                self.in_doubt_deliveries.labels(ch, p)
                for outcome in DELIVERY_OUTCOMES:
                    self.deliveries.labels(ch, p, outcome)

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> NotifierMetrics:
        return cls(list(config.units), **kwargs)

    def delivery(self, channel: str, provider: str, outcome: str, seconds: float | None = None) -> None:
        """One attempt: its outcome, and how long the provider call took (when one was made)."""
        ch, pr = self.channel(channel), self.provider(provider)
        self.deliveries.labels(ch, pr, self.outcome(outcome)).inc()
        if seconds is not None:
            self.send_duration.labels(ch, pr).observe(max(0.0, float(seconds)))

    def webhook(self, provider: str, outcome: str) -> None:
        """One provider webhook request: ``accepted``, ``forged`` (403) or ``bad`` (400)."""
        if provider in ("twilio", "sendgrid") and outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(provider, outcome).inc()

    def in_doubt(self, channel: str, provider: str, count: int) -> None:
        """How many deliveries of this channel/provider are in doubt now."""
        self.in_doubt_deliveries.labels(self.channel(channel), self.provider(provider)).set(max(0, count))

    def notice_lead(self, unit: str | None, seconds: float) -> None:
        """A pre-outage notice reached residents ``seconds`` before the outage start (negative: after it)."""
        self.notice_lead_time.labels(self.unit(unit)).observe(float(seconds))

    def notice_coverage(self, unit: str | None, notice: str, reached: int, targeted: int) -> None:
        """A resident notice finished: ``reached`` of ``targeted`` households got it."""
        u, n = self.unit(unit), self.notice(notice)
        reached, targeted = max(0, reached), max(0, targeted)
        self.households_targeted.labels(u, n).inc(targeted)
        self.households_reached.labels(u, n).inc(min(reached, targeted))
        if targeted:
            self.coverage.labels(u, n).set(min(reached, targeted) / targeted)
