"""waterwatch.metrics: the worker's and the notifier's metrics, fed with real states of the engine.

States come from the real engine (``helpers_engine.ENGINE``, the project's own
config), applied with ``copy=True`` so that ``old`` and ``new`` are separate
objects, as the worker must pass them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers_engine import CONFIG, ENGINE, POLICY, ev, ts
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

import waterwatch
from waterwatch import metrics as M
from waterwatch.core.engine import MatterState
from waterwatch.metrics import (
    DURATION_BUCKETS,
    ERROR_CLASSES,
    LEAD_TIME_BUCKETS,
    OTHER,
    LabelValues,
    NotifierMetrics,
    WorkerMetrics,
    is_open,
    is_overdue,
)

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")

REPORTER_PHONE = "+8613912345678"
REPORTER_NAME = "张三"
LOCATION = "东昌路 88 号"
SUMMARY = "消火栓漏水 hydrant leaking"


def worker() -> WorkerMetrics:
    return WorkerMetrics.from_config(CONFIG)


def value(m: WorkerMetrics | NotifierMetrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


class Matter:
    """Steps one matter through the engine; each step returns (old, new) as separate objects."""

    def __init__(self) -> None:
        self.state: MatterState | None = None

    def apply(self, event_type: str, subject: str, time: str, **data: object) -> tuple[MatterState | None, MatterState]:
        step = ENGINE.apply(self.state, ev(event_type, subject, time, **data), ts(time), copy=True)
        assert step.rejection is None, step.rejection
        assert step.state is not None
        old, self.state = self.state, step.state
        return old, step.state

    def advance(self, until: str) -> tuple[MatterState, MatterState]:
        assert self.state is not None
        step = ENGINE.advance(self.state, ts(until), copy=True)
        assert step.state is not None
        old, self.state = self.state, step.state
        return old, step.state


def hydrant_ticket(m: WorkerMetrics, mid: str = "T-2026-1127-001", unit: str = "runda") -> Matter:
    """R15.2 (12 h, resolve) hydrant fault with a reporter's personal data, dispatched to ``unit`` at 09:20."""
    t = Matter()
    old, new = t.apply("ticket.created", mid, "2026-11-27T09:00", channel="phone", category="hydrant_fault",
                       summary=SUMMARY, location=LOCATION,
                       reporter={"name": REPORTER_NAME, "phone": REPORTER_PHONE})  # fmt: skip
    m.state_changed(old, new, ts("2026-11-27T09:00"))
    old, new = t.apply("ticket.dispatched", mid, "2026-11-27T09:20", unit=unit)
    m.state_changed(old, new, ts("2026-11-27T09:20"))
    return t


# ============================================================ registry and names


def test_each_instance_has_its_own_registry_not_the_global_one() -> None:
    a, b = worker(), worker()
    a.event("event")
    assert value(a, "waterwatch_records_processed_total", record="event") == 1
    assert value(b, "waterwatch_records_processed_total", record="event") == 0
    assert a.registry is not REGISTRY and b.registry is not a.registry
    assert REGISTRY.get_sample_value("waterwatch_records_processed_total", {"record": "event"}) is None


def test_every_metric_name_follows_the_conventions() -> None:
    names: dict[str, str] = {}
    for m in (worker(), NotifierMetrics.from_config(CONFIG)):
        for family in m.registry.collect():
            names[family.name] = family.type
    ours = {n: t for n, t in names.items() if n.startswith("waterwatch_")}
    assert len(ours) >= 20
    for name, kind in ours.items():
        assert re.fullmatch(r"waterwatch_[a-z][a-z0-9_]*", name), name
        assert not re.search(r"_(ms|milliseconds|minutes|hours|days|sec)(_|$)", name), f"{name}: not a base unit"
        if kind == "histogram":
            assert name.endswith("_seconds"), f"{name}: histograms here measure durations in seconds"
    exposed = worker().exposition().decode() + NotifierMetrics.from_config(CONFIG).exposition().decode()
    for line in exposed.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    assert "_created" not in exposed  # disabled: they would double the page


def test_duration_buckets_include_every_limit_of_the_policy() -> None:
    limits: set[int] = set()
    for rule in POLICY.rules.values():
        limits |= {x for x in (rule.limit, rule.lead, rule.window, rule.report_before) if x}
        limits |= {v.limit for v in rule.variants.values()}
        limits |= {b.limit for b in rule.bands}
    assert {3600, 2 * 3600, 12 * 3600, 24 * 3600, 36 * 3600, 48 * 3600, 72 * 3600, 5 * 86400, 15 * 86400} <= limits
    missing = sorted(limit for limit in limits if limit not in DURATION_BUCKETS)
    assert not missing, f"limits without a bucket edge: {missing}"
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_lead_time_buckets_have_the_48_hour_rule_and_its_alert_threshold() -> None:
    lead = POLICY.rules["R19.1"].lead
    assert lead == 48 * 3600
    assert lead in LEAD_TIME_BUCKETS and lead - M.PRE_NOTICE_TOLERANCE in LEAD_TIME_BUCKETS
    assert 0 in LEAD_TIME_BUCKETS  # notices after the start
    # the alert rule selects this bucket by its exposed le text
    text = (REPO / "deploy/prometheus/rules/waterwatch-alerts.yml").read_text()
    assert f'le="{float(lead - M.PRE_NOTICE_TOLERANCE)}"' in text


def test_error_classes_are_every_code_the_shell_and_the_core_reject_with() -> None:
    codes: set[str] = set()
    for path, pattern in [
        ("waterwatch/core/engine.py", r'_Reject\(\s*"([a-z_]+)"'),
        ("waterwatch/events.py", r'EventError\(\s*"([a-z_]+)"'),
        ("streams/processor.py", r'dead\(\s*"([a-z_]+)"'),
    ]:
        found = set(re.findall(pattern, (REPO / path).read_text()))
        assert found, f"no error code found in {path}: the pattern is stale"
        codes |= found
    assert codes <= set(ERROR_CLASSES), (
        f"error classes missing in waterwatch.metrics: {sorted(codes - set(ERROR_CLASSES))}"
    )


def test_resolve_clocks_are_the_reports() -> None:
    from waterwatch.core.report import RESOLVE_CLOCKS

    assert tuple(M.RESOLVE_CLOCKS) == tuple(RESOLVE_CLOCKS)


# ============================================================ bounded labels


def test_unknown_values_become_other_and_missing_ones_none_or_unassigned() -> None:
    m = worker()
    assert m.unit("runda") == "runda"
    assert m.unit("nosuchunit") == OTHER
    assert m.unit(None) == "unassigned"
    assert m.rule("R15.2") == "R15.2" and m.rule("R99") == OTHER
    assert m.category("hydrant_fault") == "hydrant_fault" and m.category(None) == "none"
    assert m.error("schema") == "schema" and m.error("SELECT * FROM users") == OTHER
    assert m.level("overdue") == "overdue" and m.level("panic") == OTHER
    assert m.kind(123) == OTHER


@pytest.mark.parametrize("bad", ["+8613800000010", "duty@runda.example.invalid", "东昌路 88 号", "a b", "1234567", ""])
def test_label_sets_refuse_configured_values_that_are_not_identifiers(bad: str) -> None:
    with pytest.raises(ValueError, match="identifiers"):
        LabelValues("unit", ["runda", bad])


@given(st.text(max_size=40))
def test_no_string_outside_the_allowed_set_reaches_a_label(text: str) -> None:
    m = WorkerMetrics(["runda", "chengnan"], ["R15.2"], process_metrics=False)
    for bound in (m.unit, m.rule, m.kind, m.category, m.level, m.clock, m.error, m.record, m.topic):
        got = bound(text)
        assert got in bound.allowed
        assert got == text or got in (OTHER, "none", "unassigned")


def test_an_unknown_unit_is_counted_as_other() -> None:
    m = worker()
    t = Matter()
    old, new = t.apply("ticket.created", "T-x", "2026-11-27T09:00", channel="phone", category="hydrant_fault")
    new.unit = "a-unit-removed-from-the-directory"
    m.state_changed(old, new, ts("2026-11-27T09:00"))
    assert value(m, "waterwatch_open_matters", unit=OTHER, kind="ticket", category="hydrant_fault",
                 overdue="false") == 1  # fmt: skip


def test_no_id_or_personal_data_reaches_the_page() -> None:
    m = worker()
    n = NotifierMetrics.from_config(CONFIG)
    mid = "T-2026-1127-PII"
    t = hydrant_ticket(m, mid)
    old, new = t.apply("ticket.accepted", mid, "2026-11-27T09:30", unit="runda")
    m.state_changed(old, new, ts("2026-11-27T09:30"))
    old, new = t.apply("ticket.resolved", mid, "2026-11-27T15:00", unit="runda")
    m.state_changed(old, new, ts("2026-11-27T15:00"))
    step = ENGINE.advance(new, ts("2026-11-28T00:00"))
    m.alerts(step.alerts)
    # the notifier is handed whatever a caller has: ids and contacts must not pass either
    n.delivery("sms", REPORTER_PHONE, "sent", 0.2)
    n.delivery(REPORTER_NAME, "twilio", mid, 0.2)
    n.notice_coverage(mid, "pre_outage", 3, 4)
    n.notice_lead("runda", 49 * 3600)
    page = m.exposition().decode() + n.exposition().decode()
    for secret in (
        mid,
        "T-2026",
        REPORTER_PHONE,
        "13912345678",
        REPORTER_NAME,
        LOCATION,
        "东昌路",
        SUMMARY,
        "hydrant leaking",
    ):
        assert secret not in page, secret
    assert 'provider="other"' in page and 'channel="other"' in page and 'unit="other"' in page


# ============================================================ records


def test_records_rejections_duplicates_alerts_and_fire_lag() -> None:
    m = worker()
    m.event("event")
    m.event("event")
    m.event("check")
    m.event("something")
    m.rejected("schema")
    m.rejected("no_such_class")
    m.rejected(None)
    m.duplicate()
    t = Matter()
    _, new = t.apply("ticket.created", "T-a", "2026-11-27T09:00", channel="phone", category="hydrant_fault")
    step = ENGINE.advance(new, ts("2026-11-28T06:00"))  # due 21:00, first escalation at +6 h
    m.alerts(step.alerts)
    m.fire_lag(0.3)
    m.fire_lag(-1)
    assert value(m, "waterwatch_records_processed_total", record="event") == 2
    assert value(m, "waterwatch_records_processed_total", record="check") == 1
    assert value(m, "waterwatch_records_processed_total", record=OTHER) == 1
    m.event("event", 498)  # a batch's records, counted once (the worker's path)
    m.event("check", 2)
    assert value(m, "waterwatch_records_processed_total", record="event") == 500
    assert value(m, "waterwatch_records_processed_total", record="check") == 3
    assert value(m, "waterwatch_events_rejected_total", error="schema") == 1
    assert value(m, "waterwatch_events_rejected_total", error=OTHER) == 1
    assert value(m, "waterwatch_events_rejected_total", error="none") == 1
    assert value(m, "waterwatch_events_duplicate_total") == 1
    levels = {a.level for a in step.alerts}
    assert {"warning", "overdue", "escalation"} <= levels
    for level in levels:
        assert value(m, "waterwatch_alerts_total", rule="R15.2", level=level) == sum(
            1 for a in step.alerts if a.level == level and a.rule == "R15.2"
        )
    assert value(m, "waterwatch_timer_fire_lag_seconds_count") == 2
    assert value(m, "waterwatch_timer_fire_lag_seconds_bucket", le="0.05") == 1  # the negative one, clamped
    assert value(m, "waterwatch_timer_fire_lag_seconds_bucket", le="0.5") == 2


def test_series_alerts_and_dashboards_rely_on_exist_at_zero_from_the_start() -> None:
    m = worker()
    for err in ERROR_CLASSES:
        assert m.registry.get_sample_value("waterwatch_events_rejected_total", {"error": err}) == 0
    assert m.registry.get_sample_value("waterwatch_alerts_total", {"rule": "R19.1", "level": "violation"}) == 0
    assert (
        m.registry.get_sample_value(
            "waterwatch_deadlines_total",
            {"unit": "chengnan", "rule": "R13.accept", "clock": "accept", "outcome": "met"},
        )
        == 0
    )
    assert m.registry.get_sample_value("waterwatch_time_to_accept_seconds_count", {"unit": "runda"}) == 0
    assert m.registry.get_sample_value("waterwatch_time_to_resolve_seconds_count", {"rule": "R15.2"}) == 0
    assert m.registry.get_sample_value("waterwatch_consumer_lag_messages", {"topic": "events"}) == 0


def test_consumer_lag_by_topic_role() -> None:
    m = worker()
    m.consumer_lag_messages("waterwatch.events", 120)
    m.consumer_lag_messages("wwtest.x-1.clock", 3)
    m.consumer_lag_messages("orders", 7)
    assert value(m, "waterwatch_consumer_lag_messages", topic="events") == 120
    assert value(m, "waterwatch_consumer_lag_messages", topic="clock") == 3
    assert value(m, "waterwatch_consumer_lag_messages", topic=OTHER) == 7


# ============================================================ open matters


def test_open_matters_follow_the_state_and_overdue_follows_the_deadline() -> None:
    m = worker()
    t = hydrant_ticket(m)
    labels = {"unit": "runda", "kind": "ticket", "category": "hydrant_fault"}
    assert value(m, "waterwatch_open_matters", **labels, overdue="false") == 1
    # R15.2: 12 h from 09:00; at 21:00 the overdue stage fires and changes the state
    old, new = t.advance("2026-11-27T21:00")
    m.state_changed(old, new, ts("2026-11-27T21:00"))
    assert value(m, "waterwatch_open_matters", **labels, overdue="false") == 0
    assert value(m, "waterwatch_open_matters", **labels, overdue="true") == 1
    old, new = t.apply("ticket.resolved", "T-2026-1127-001", "2026-11-27T22:00", unit="runda")
    m.state_changed(old, new, ts("2026-11-27T22:00"))
    assert value(m, "waterwatch_open_matters", **labels, overdue="true") == 0
    assert m.open_count() == 0
    old, new = t.apply("ticket.reopened", "T-2026-1127-001", "2026-11-28T08:00", unit="runda")
    m.state_changed(old, new, ts("2026-11-28T08:00"))
    assert value(m, "waterwatch_open_matters", **labels, overdue="false") == 1


def test_a_unit_change_moves_the_matter_between_units() -> None:
    m = worker()
    t = hydrant_ticket(m, unit="runda")
    old, new = t.apply("ticket.returned", "T-2026-1127-001", "2026-11-27T09:25", unit="runda", reason="not ours")
    m.state_changed(old, new, ts("2026-11-27T09:25"))
    old, new = t.apply("ticket.dispatched", "T-2026-1127-001", "2026-11-27T09:40", unit="chengnan")
    m.state_changed(old, new, ts("2026-11-27T09:40"))
    base = {"kind": "ticket", "category": "hydrant_fault", "overdue": "false"}
    assert value(m, "waterwatch_open_matters", unit="runda", **base) == 0
    assert value(m, "waterwatch_open_matters", unit="chengnan", **base) == 1


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("ticket", "created", True), ("ticket", "accepted", True), ("ticket", "resolved", False),
        ("ticket", "closed", False), ("ticket", "reopened", True), ("outage", "planned", True),
        ("outage", "active", True), ("outage", "restored", False), ("outage", "cancelled", False),
        ("leak", "on_site", True), ("leak", "repaired", False), ("damage", "reported", True),
        ("damage", "on_site", False), ("meter", "active", True),
    ],
)  # fmt: skip
def test_what_counts_as_open(kind: str, status: str, expected: bool) -> None:
    state = MatterState(matter_id="X", kind=kind, status=status, created=0, last_time=0)
    assert is_open(state) is expected


def test_overdue_means_a_running_deadline_past_due() -> None:
    t = Matter()
    _, new = t.apply("ticket.created", "T-o", "2026-11-27T09:00", channel="phone", category="hydrant_fault")
    assert not is_overdue(new, ts("2026-11-27T20:59"))
    assert is_overdue(new, ts("2026-11-27T21:00"))


def test_rebuild_after_recovery_and_revoked_partitions() -> None:
    m = worker()
    states = []
    for i in range(6):
        t = Matter()
        _, new = t.apply("ticket.created", f"T-r{i}", "2026-11-27T09:00", channel="phone",
                         category="hydrant_fault", unit="runda")  # fmt: skip
        states.append(new)
    labels = {"unit": "runda", "kind": "ticket", "category": "hydrant_fault", "overdue": "false"}
    for i, s in enumerate(states):
        m.state_changed(None, s, ts("2026-11-27T09:00"), partition=i % 2)
    assert value(m, "waterwatch_open_matters", **labels) == 6
    assert m.drop_partitions([1]) == 3
    assert value(m, "waterwatch_open_matters", **labels) == 3
    m.reset_open()
    assert value(m, "waterwatch_open_matters", **labels) == 0
    for i, s in enumerate(states):
        m.track(s, ts("2026-11-27T09:00"), partition=i % 2)
    assert value(m, "waterwatch_open_matters", **labels) == 6
    # track() never counts outcomes, even of states that have some
    assert sum(s.value for f in m.registry.collect() if f.name == "waterwatch_deadlines" for s in f.samples) == 0


# ============================================================ deadlines decided


def test_deadlines_are_counted_once_when_decided_with_their_durations() -> None:
    m = worker()
    mid = "T-2026-1127-001"
    t = hydrant_ticket(m, mid)
    old, new = t.apply("ticket.accepted", mid, "2026-11-27T09:50", unit="runda")  # 30 min: R13.accept met
    m.state_changed(old, new, ts("2026-11-27T09:50"))
    old, new = t.apply("ticket.responded", mid, "2026-11-27T10:00", unit="runda")  # nothing new decided
    m.state_changed(old, new, ts("2026-11-27T10:00"))
    old, new = t.apply("ticket.resolved", mid, "2026-11-27T23:00", unit="runda")  # 14 h: R15.2 (12 h) breached
    m.state_changed(old, new, ts("2026-11-27T23:00"))
    accept = {"unit": "runda", "rule": "R13.accept", "clock": "accept"}
    assert value(m, "waterwatch_deadlines_total", **accept, outcome="met") == 1
    assert value(m, "waterwatch_deadlines_total", **accept, outcome="breached") == 0
    resolve = {"unit": "runda", "rule": "R15.2", "clock": "resolve"}
    assert value(m, "waterwatch_deadlines_total", **resolve, outcome="breached") == 1
    assert value(m, "waterwatch_deadlines_total", **resolve, outcome="met") == 0
    assert value(m, "waterwatch_time_to_accept_seconds_count", unit="runda") == 1
    assert value(m, "waterwatch_time_to_accept_seconds_sum", unit="runda") == 30 * 60
    assert value(m, "waterwatch_time_to_accept_seconds_bucket", unit="runda", le="1800.0") == 1
    assert value(m, "waterwatch_time_to_resolve_seconds_count", rule="R15.2") == 1
    assert value(m, "waterwatch_time_to_resolve_seconds_sum", rule="R15.2") == 14 * 3600
    assert value(m, "waterwatch_time_to_resolve_seconds_bucket", rule="R15.2", le="43200.0") == 0
    assert value(m, "waterwatch_time_to_resolve_seconds_bucket", rule="R15.2", le="86400.0") == 1


def test_outcomes_already_in_the_old_state_are_not_counted_again_even_when_trimmed() -> None:
    m = worker()
    t = hydrant_ticket(m)
    old, new = t.apply("ticket.accepted", "T-2026-1127-001", "2026-11-27T09:50", unit="runda")
    m.state_changed(old, new, ts("2026-11-27T09:50"))
    # a later record on a state whose outcome list was trimmed at the front (OUTCOMES_KEPT)
    later = new.copy()
    later.outcomes = later.outcomes[1:] + later.outcomes[:0]
    m.state_changed(new, later, ts("2026-11-27T10:00"))
    total = sum(s.value for f in m.registry.collect() if f.name == "waterwatch_deadlines" for s in f.samples)
    assert total == 1


def test_a_new_matter_counts_every_outcome_it_has() -> None:
    m = worker()
    t = hydrant_ticket(WorkerMetrics.from_config(CONFIG))
    _, new = t.apply("ticket.accepted", "T-2026-1127-001", "2026-11-27T09:50", unit="runda")
    m.state_changed(None, new, ts("2026-11-27T09:50"))
    assert value(m, "waterwatch_deadlines_total", unit="runda", rule="R13.accept", clock="accept", outcome="met") == 1


def test_old_and_new_must_be_separate_objects() -> None:
    m = worker()
    t = Matter()
    _, new = t.apply("ticket.created", "T-s", "2026-11-27T09:00", channel="phone", category="hydrant_fault")
    with pytest.raises(ValueError, match="same object"):
        m.state_changed(new, new, ts("2026-11-27T09:00"))


def test_a_deleted_matter_leaves_the_gauge() -> None:
    m = worker()
    t = hydrant_ticket(m)
    assert m.open_count() == 1
    assert t.state is not None
    m.state_changed(t.state, None, ts("2026-11-27T10:00"))
    assert m.open_count() == 0


# ============================================================ calendar, build, serving


def test_holiday_horizon_in_seconds_and_from_the_calendar() -> None:
    m = worker()
    m.holiday_horizon(34)
    assert value(m, "waterwatch_holiday_data_horizon_seconds") == 34 * 86400
    cal = CONFIG.calendar
    horizon = cal.horizon()
    noon_before = M.datetime(horizon.year, horizon.month, horizon.day, 12, tzinfo=TZ).timestamp() - 10 * 86400
    m.watch_calendar(cal, clock=lambda: noon_before)
    assert value(m, "waterwatch_holiday_data_horizon_seconds") == 10 * 86400 + 12 * 3600
    m.watch_calendar(cal, clock=lambda: noon_before + 30 * 86400)
    assert value(m, "waterwatch_holiday_data_horizon_seconds") == 0
    assert value(m, "waterwatch_holiday_data_missing_years") == len(cal.missing_years)


def test_missing_holiday_years_are_counted_when_the_calendar_guesses() -> None:
    from waterwatch.core.calendar import BusinessCalendar

    cal = BusinessCalendar()
    m = worker()
    m.watch_calendar(cal)
    assert value(m, "waterwatch_holiday_data_missing_years") == 0
    cal.is_workday(date(cal.horizon().year + 2, 3, 2))
    assert value(m, "waterwatch_holiday_data_missing_years") == 1


def test_build_info() -> None:
    m = worker()
    m.build_info(waterwatch.__version__)
    m.build_info(waterwatch.__version__)
    samples = [s for f in m.registry.collect() if f.name == "waterwatch_build_info" for s in f.samples]
    assert len(samples) == 1 and samples[0].value == 1
    assert samples[0].labels["version"] == waterwatch.__version__ and samples[0].labels["component"] == "worker"
    m.build_info("1.0 <script>")
    samples = [s for f in m.registry.collect() if f.name == "waterwatch_build_info" for s in f.samples]
    assert samples[0].labels["version"] == OTHER


def test_serve_answers_with_the_exposition_on_loopback() -> None:
    m = worker()
    m.event("event")
    server = m.serve(0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/plain")
        assert 'waterwatch_records_processed_total{record="event"} 1.0' in body
    finally:
        server.shutdown()
        server.server_close()
    assert M.CONTENT_TYPE.startswith("text/plain")


# ============================================================ notifier


def test_notifier_deliveries_latency_in_doubt_lead_time_and_coverage() -> None:
    n = NotifierMetrics.from_config(CONFIG)
    n.delivery("sms", "twilio", "sent", 0.4)
    n.delivery("sms", "twilio", "retried", 1.2)
    n.delivery("email", "sendgrid", "failed", 0.1)
    n.delivery("wecom", "wecom_robot", "skipped")
    n.delivery("pigeon", "twilio", "sent", 0.1)
    n.in_doubt("sms", "twilio", 2)
    n.notice_lead("runda", 50 * 3600)
    n.notice_lead("runda", 30 * 3600)
    n.notice_lead(None, -600)
    n.notice_coverage("chengnan", "pre_outage", 180, 200)
    n.notice_coverage("chengnan", "pre_outage", 90, 100)
    n.notice_coverage("chengnan", "restoration", 5, 0)
    assert value(n, "waterwatch_deliveries_total", channel="sms", provider="twilio", outcome="sent") == 1
    assert value(n, "waterwatch_deliveries_total", channel="sms", provider="twilio", outcome="retried") == 1
    assert value(n, "waterwatch_deliveries_total", channel="email", provider="sendgrid", outcome="failed") == 1
    assert value(n, "waterwatch_deliveries_total", channel="wecom", provider="wecom_robot", outcome="skipped") == 1
    assert value(n, "waterwatch_deliveries_total", channel=OTHER, provider="twilio", outcome="sent") == 1
    assert value(n, "waterwatch_delivery_send_duration_seconds_count", channel="sms", provider="twilio") == 2
    assert value(n, "waterwatch_deliveries_in_doubt", channel="sms", provider="twilio") == 2
    assert value(n, "waterwatch_deliveries_in_doubt", channel="email", provider="sendgrid") == 0
    assert value(n, "waterwatch_notice_lead_time_seconds_count", unit="runda") == 2
    assert value(n, "waterwatch_notice_lead_time_seconds_bucket", unit="runda", le="169200.0") == 1
    assert value(n, "waterwatch_notice_lead_time_seconds_bucket", unit="unassigned", le="0.0") == 1
    assert value(n, "waterwatch_notice_households_targeted_total", unit="chengnan", notice="pre_outage") == 300
    assert value(n, "waterwatch_notice_households_reached_total", unit="chengnan", notice="pre_outage") == 270
    assert value(n, "waterwatch_notice_coverage_ratio", unit="chengnan", notice="pre_outage") == 0.9
    assert value(n, "waterwatch_notice_households_reached_total", unit="chengnan", notice="restoration") == 0


# ============================================================ promtool


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (scripts/install-prometheus)")
def test_promtool_check_metrics_accepts_both_expositions() -> None:
    m = worker()
    m.build_info(waterwatch.__version__)
    m.watch_calendar(CONFIG.calendar)
    hydrant_ticket(m)
    n = NotifierMetrics.from_config(CONFIG)
    n.build_info(waterwatch.__version__)
    n.notice_coverage("runda", "pre_outage", 1, 2)
    for page in (m.exposition(), n.exposition()):
        done = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, timeout=60)
        assert done.returncode == 0, (done.stdout + done.stderr).decode()


def test_newly_decided_and_deadlines_decided_are_the_two_halves_of_state_changed() -> None:
    m = worker()
    t = hydrant_ticket(WorkerMetrics.from_config(CONFIG))
    old, new = t.apply("ticket.accepted", "T-2026-1127-001", "2026-11-27T09:50", unit="runda")
    assert old is not None
    fresh = M.newly_decided(old.outcomes, new.outcomes)
    assert [(o.rule, o.clock, o.met) for o in fresh] == [("R13.accept", "accept", True)]
    assert M.newly_decided(new.outcomes, list(new.outcomes)) == []
    assert M.newly_decided(None, new.outcomes) == fresh
    m.deadlines_decided(fresh)
    m.track(new, ts("2026-11-27T09:50"))
    assert value(m, "waterwatch_deadlines_total", unit="runda", rule="R13.accept", clock="accept", outcome="met") == 1
    assert m.open_count() == 1
