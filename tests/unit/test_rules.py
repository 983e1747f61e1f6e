"""One or more tests per rule ID of RULES.md, named after the rule they prove.

Every expected instant below is worked out by hand in Asia/Shanghai (+08:00)
from the rule's limit (see the comments), never read back from the engine.
Working time is 08:30-12:00 and 13:30-17:30 on Chinese working days
(config/calendar.yaml + chinese_calendar).

A test marked ``xfail(strict=True, reason="engine bug: ...")`` states what the
rules require and the engine does not (yet) do; it turns into a failure as
soon as the engine is fixed, so the mark can be removed.
"""

from __future__ import annotations

import re
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from helpers_engine import (
    CALENDAR,
    ENGINE,
    POLICY,
    TZ,
    at,
    by_stage,
    ctx,
    ev,
    iso,
    run,
    ts,
    when,
)

from waterwatch.codes import Category, HotlineTier
from waterwatch.core.engine import Alert, MatterState, Outcome, month_bounds
from waterwatch.core.policy import load_policy
from waterwatch.core.replay import Replayer
from waterwatch.core.report import monthly
from waterwatch.events import CloudEvent, EventError, parse_event

AREA = {"districts": ["Dongchangfu"], "description": "Dongchangfu district"}
MIN, HOUR, DAY = 60, 3600, 86400

# The rule IDs of RULES.md (also parsed from the file itself when it is at hand).
RULE_IDS = (
    "R13.accept", "R13.resolve", "R14.1", "R14.2", "R14.3", "R14.4", "R14.5", "R14.due",
    "R15.1", "R15.2", "R15.3", "R15.4", "R15.5", "R15.6", "R15.7", "R16", "R17", "R18",
    "R19.1", "R19.2", "R19.3", "R19.4", "R20", "R22", "R23", "R24.arrive", "R24.repair",
    "R25", "R27", "R28", "R29", "R30", "R31", "R32", "R12", "R34", "R35(3)",
)  # fmt: skip


def pick(alerts: list[Alert], *, rule: str | None = None, stage: str | None = None,
         level: str | None = None, clock: str | None = None) -> list[Alert]:  # fmt: skip
    return [
        a for a in alerts
        if (rule is None or a.rule == rule) and (stage is None or a.stage == stage)
        and (level is None or a.level == level) and (clock is None or a.clock == clock)
    ]  # fmt: skip


def one(alerts: list[Alert], **kw: str) -> Alert:
    found = pick(alerts, **kw)
    assert len(found) == 1, f"expected one alert {kw}, got {[a.alert_id for a in found]}"
    return found[0]


def instants(alerts: list[Alert]) -> dict[str, str]:
    """stage -> fired_at (ISO) for alerts of one clock."""
    return {a.stage: when(a) for a in alerts}


def minutes_after(local: str, minutes: int) -> str:
    """A local time text ``minutes`` after another one."""
    return datetime.fromtimestamp(ts(local) + minutes * MIN, TZ).strftime("%Y-%m-%dT%H:%M")


def ticket(mid: str, time: str, **data: object) -> list[CloudEvent]:
    data.setdefault("channel", "phone")
    return [ev("ticket.created", mid, time, **data)]


def outcome(replayer: Replayer, mid: str, clock: str) -> Outcome:
    """The latest recorded outcome (met / missed) of a clock of a matter."""
    found = [o for o in replayer.states[mid].outcomes if o.clock == clock]
    assert found, f"no outcome recorded for {mid}/{clock}"
    return found[-1]


# ====================================================================== R13


def test_R13_accept_clock_skips_national_day_holiday() -> None:
    # 2026: National Day 10-01..10-07 off, 10-08 (Thu) is a working day.
    assert CALENDAR.is_workday(date(2026, 9, 30))
    assert not any(CALENDAR.is_workday(date(2026, 10, d)) for d in range(1, 8))
    assert CALENDAR.is_workday(date(2026, 10, 8))
    events = [
        *ticket("T-nd", "2026-09-30T16:00", category="general_inquiry"),
        ev("ticket.dispatched", "T-nd", "2026-09-30T17:00", unit="runda"),
    ]
    alerts, rejected, _ = run(events, "2026-10-08T12:00")
    assert not rejected
    accept = instants(pick(alerts, rule="R13.accept"))
    # 1 working hour: 17:00-17:30 on 09-30 (30 min), then 08:30-09:00 on 10-08.
    assert accept["overdue"] == "2026-10-08T09:00:00+08:00"
    # warned 15 working minutes before: 30 min on 09-30 + 15 min on 10-08.
    assert accept["warn_lead_15m"] == "2026-10-08T08:45:00+08:00"
    assert not [a for a in pick(alerts, rule="R13.accept") if a.fired_at < ts("2026-10-08T08:30")]


def test_R13_accept_one_working_hour_then_escalates_to_unit_head_and_ops() -> None:
    # Fri 2026-11-27 09:05 + 1 working hour = 10:05; +100 % (2 working hours) = 11:05.
    events = [
        *ticket("T-acc", "2026-11-27T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-acc", "2026-11-27T09:05", unit="runda"),
    ]
    alerts, _, _ = run(events, "2026-11-27T12:00")
    acc = by_stage(pick(alerts, rule="R13.accept"))
    assert when(acc["overdue"]) == "2026-11-27T10:05:00+08:00"
    assert acc["overdue"].unit == "runda"
    assert when(acc["escalate_1"]) == "2026-11-27T11:05:00+08:00"
    assert set(acc["escalate_1"].notify) == {"unit_head", "ops"}
    assert ctx(acc["escalate_1"])["cites"] == "R18"


def test_R13_accept_reminders_count_working_time_across_lunch() -> None:
    # Dispatched 09:05; reminders every working hour after the deadline (10:05):
    # 11:05, then 3 working hours = 09:05-12:00 (2h55) + 5 min after 13:30 = 13:35, 14:35.
    events = [
        *ticket("T-rem", "2026-11-27T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-rem", "2026-11-27T09:05", unit="runda"),
    ]
    alerts, _, _ = run(events, "2026-11-30T12:00")
    rem = instants(pick(alerts, rule="R13.accept", level="reminder"))
    assert rem == {
        "reminder_1": "2026-11-27T11:05:00+08:00",
        "reminder_2": "2026-11-27T13:35:00+08:00",
        "reminder_3": "2026-11-27T14:35:00+08:00",
    }


def test_R13_accept_on_time_stops_the_clock_and_is_met() -> None:
    events = [
        *ticket("T-ok", "2026-11-27T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-ok", "2026-11-27T09:05", unit="runda"),
        ev("ticket.accepted", "T-ok", "2026-11-27T10:05", unit="runda"),  # exactly at the deadline
    ]
    alerts, _, r = run(events, "2026-11-27T18:00")
    assert not pick(alerts, rule="R13.accept", level="overdue")
    o = outcome(r, "T-ok", "accept")
    assert o.met and o.due == ts("2026-11-27T10:05")


def test_R13_resolve_violation_at_deadline_when_no_extension_was_requested() -> None:
    events = [
        *ticket("T-r13", "2026-11-23T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-r13", "2026-11-23T09:10", unit="runda"),
        ev("ticket.accepted", "T-r13", "2026-11-23T09:20", unit="runda"),
    ]
    alerts, _, _ = run(events, "2026-11-23T22:00")
    v = one(alerts, rule="R13.resolve")
    assert v.level == "violation" and v.type == "alert.violation"
    assert when(v) == "2026-11-23T21:00:00+08:00"  # the R15.2 deadline: 09:00 + 12 h
    assert set(v.notify) >= {"unit", "ops"}
    assert v.unit == "runda"


def test_R13_resolve_not_checked_for_an_order_never_dispatched_by_ops() -> None:
    alerts, _, _ = run(ticket("T-nod", "2026-11-23T09:00", category="hydrant_fault"),
                       "2026-11-23T22:00")  # fmt: skip
    assert pick(alerts, rule="R15.2", stage="overdue")
    assert not pick(alerts, rule="R13.resolve")


def test_R13_resolve_extension_granted_moves_deadline_and_keeps_original_on_record() -> None:
    events = [
        *ticket("T-ext", "2026-11-23T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-ext", "2026-11-23T09:10", unit="runda"),
        ev("ticket.accepted", "T-ext", "2026-11-23T09:20", unit="runda"),
        ev("ticket.extension_requested", "T-ext", "2026-11-23T16:00", unit="runda",
           requested_due_at=at("2026-11-24T09:00"), reason="spare part on its way"),
        ev("ticket.extension_granted", "T-ext", "2026-11-23T17:00", due_at=at("2026-11-24T09:00")),
        ev("ticket.resolved", "T-ext", "2026-11-24T08:00", unit="runda"),
    ]  # fmt: skip
    alerts, _, r = run(events, "2026-11-25T12:00")
    assert not pick(alerts, level="overdue")
    assert not pick(alerts, rule="R13.resolve")
    # v1 warned at 15:00 (50 % of 12 h); its 80 % (18:36) was superseded by the extension
    # at 17:00. v2 (09:00 -> next day 09:00, 24 h): 50 % = 21:00, 80 % = 04:12.
    assert {a.alert_id: when(a) for a in pick(alerts, rule="R15.2")} == {
        "T-ext/R15.2/resolve/v1/warn_50": "2026-11-23T15:00:00+08:00",
        "T-ext/R15.2/resolve/v2/warn_50": "2026-11-23T21:00:00+08:00",
        "T-ext/R15.2/resolve/v2/warn_80": "2026-11-24T04:12:00+08:00",
    }
    v2 = [a for a in pick(alerts, rule="R15.2") if "/v2/" in a.alert_id]
    assert v2 and all(ctx(a)["original_due_at"] == iso("2026-11-23T21:00") for a in v2)
    o = outcome(r, "T-ext", "resolve")
    assert o.met
    assert o.due == ts("2026-11-24T09:00")  # the deadline in force
    assert o.original_due == ts("2026-11-23T21:00")  # kept on record
    assert o.extensions == 1


def test_R13_resolve_outcome_counts_against_the_deadline_in_force() -> None:
    events = [
        *ticket("T-ext2", "2026-11-23T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-ext2", "2026-11-23T09:10", unit="runda"),
        ev("ticket.extension_requested", "T-ext2", "2026-11-23T16:00", unit="runda",
           requested_due_at=at("2026-11-24T09:00"), reason="spare part"),
        ev("ticket.extension_granted", "T-ext2", "2026-11-23T17:00", due_at=at("2026-11-24T09:00")),
        ev("ticket.resolved", "T-ext2", "2026-11-24T10:00", unit="runda"),
    ]  # fmt: skip
    alerts, _, r = run(events, "2026-11-25T12:00")
    overdue = one(alerts, rule="R15.2", stage="overdue")
    assert when(overdue) == "2026-11-24T09:00:00+08:00"
    assert overdue.alert_id == "T-ext2/R15.2/resolve/v2/overdue"
    assert not pick(alerts, rule="R13.resolve")  # the extension was asked for in time
    o = outcome(r, "T-ext2", "resolve")
    assert not o.met and o.due == ts("2026-11-24T09:00")
    assert o.original_due == ts("2026-11-23T21:00")


def test_R13_resolve_extension_after_the_deadline_skips_warnings_already_past() -> None:
    # v1 overdue at 21:00; ops extends at 22:00 to 09:00 next day (v2 limit 24 h from 09:00):
    # v2's 50 % (21:00) has passed when v2 exists: skipped, never fired late; its 80 % (04:12)
    # and its overdue (09:00) fire.
    events = [
        *ticket("T-ext3", "2026-11-23T09:00", category="hydrant_fault", unit="runda"),
        ev("ticket.extension_granted", "T-ext3", "2026-11-23T22:00", due_at=at("2026-11-24T09:00")),
    ]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-24T09:30")
    v2 = {a.stage: when(a) for a in pick(alerts, rule="R15.2") if "/v2/" in a.alert_id}
    assert v2 == {"warn_80": "2026-11-24T04:12:00+08:00", "overdue": "2026-11-24T09:00:00+08:00"}
    assert [a.alert_id for a in pick(alerts, stage="overdue")] == [
        "T-ext3/R15.2/resolve/v1/overdue", "T-ext3/R15.2/resolve/v2/overdue"]
    assert all(a.late_by is None for a in alerts)


def test_R13_resolve_applies_to_the_12345_feedback_deadline() -> None:
    events = [
        *ticket("T-h13", "2026-11-23T09:00", channel="hotline_12345",
                    hotline_tier="life_safety"),
        ev("ticket.dispatched", "T-h13", "2026-11-23T09:10", unit="runda"),
        ev("ticket.accepted", "T-h13", "2026-11-23T09:20", unit="runda"),
    ]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-23T12:00")
    assert when(one(alerts, rule="R14.1", stage="overdue")) == "2026-11-23T11:00:00+08:00"
    v = one(alerts, rule="R13.resolve")
    assert when(v) == "2026-11-23T11:00:00+08:00"


def test_R13_resolve_request_by_a_previous_unit_does_not_excuse_the_new_unit() -> None:
    events = [
        *ticket("T-r13b", "2026-11-23T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-r13b", "2026-11-23T09:10", unit="shuixing"),
        ev("ticket.extension_requested", "T-r13b", "2026-11-23T10:00", unit="shuixing",
           requested_due_at=at("2026-11-24T09:00"), reason="needs excavation"),
        ev("ticket.returned", "T-r13b", "2026-11-23T10:30", unit="shuixing",
           reason="hydrants are Runda's"),
        ev("ticket.dispatched", "T-r13b", "2026-11-23T11:00", unit="runda"),
        ev("ticket.accepted", "T-r13b", "2026-11-23T11:10", unit="runda"),
    ]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-23T22:00")
    v = one(alerts, rule="R13.resolve")
    assert when(v) == "2026-11-23T21:00:00+08:00" and v.unit == "runda"


# ====================================================================== R14


def hotline(mid: str, time: str, **data: object) -> list[CloudEvent]:
    return ticket(mid, time, channel="hotline_12345", **data)


def test_R14_1_life_safety_feedback_within_2_hours() -> None:
    alerts, _, _ = run(hotline("H1", "2026-11-23T09:00", hotline_tier="life_safety"),
                       "2026-11-23T12:00")  # fmt: skip
    got = instants(pick(alerts, rule="R14.1"))
    assert got["warn_lead_30m"] == "2026-11-23T10:30:00+08:00"
    assert got["warn_lead_10m"] == "2026-11-23T10:50:00+08:00"
    assert got["overdue"] == "2026-11-23T11:00:00+08:00"


def test_R14_1_feedback_stopped_by_response_is_met() -> None:
    events = [
        *hotline("H1b", "2026-11-23T09:00", hotline_tier="life_safety"),
        ev("ticket.responded", "H1b", "2026-11-23T10:59"),
    ]
    alerts, _, r = run(events, "2026-11-24T12:00")
    assert not pick(alerts, rule="R14.1", level="overdue")
    assert outcome(r, "H1b", "feedback").met


def test_R14_2_basic_living_feedback_within_24_hours_wall_clock() -> None:
    # Sat 2026-11-28 10:00 + 24 h: weekends count (wall clock).
    alerts, _, _ = run(hotline("H2", "2026-11-28T10:00", hotline_tier="basic_living"),
                       "2026-11-29T11:00")  # fmt: skip
    got = instants(pick(alerts, rule="R14.2"))
    assert got["warn_50"] == "2026-11-28T22:00:00+08:00"
    assert got["overdue"] == "2026-11-29T10:00:00+08:00"


def test_R14_3_general_warns_at_3_days_due_at_5_days() -> None:
    alerts, _, _ = run(hotline("H3", "2026-11-02T09:00", hotline_tier="general"),
                       "2026-11-07T10:00")  # fmt: skip
    warnings = [when(a) for a in pick(alerts, rule="R14.3", level="warning")]
    assert warnings == [
        "2026-11-05T09:00:00+08:00",  # 3 days: the lower end of "3 to 5 days"
        "2026-11-06T09:00:00+08:00",  # 80 % of 5 days
    ]
    assert when(one(alerts, rule="R14.3", stage="overdue")) == "2026-11-07T09:00:00+08:00"


def test_R14_4_complex_feedback_within_15_days() -> None:
    alerts, _, _ = run(hotline("H4", "2026-11-02T09:00", hotline_tier="complex"),
                       "2026-11-17T10:00")  # fmt: skip
    got = instants(pick(alerts, rule="R14.4"))
    assert got["warn_50"] == "2026-11-09T21:00:00+08:00"  # 7.5 days
    assert got["overdue"] == "2026-11-17T09:00:00+08:00"


def test_R14_5_general_return_window_counts_working_time() -> None:
    # Created Fri 2026-11-27 16:30; 2 working hours = 16:30-17:30 + Mon 08:30-09:30.
    base = [
        *hotline("H5", "2026-11-27T16:30", hotline_tier="basic_living", urgency="general"),
        ev("ticket.dispatched", "H5", "2026-11-27T16:35", unit="shuixing"),
    ]
    on_time = [*base, ev("ticket.returned", "H5", "2026-11-30T09:30", unit="shuixing",
                         reason="not ours", basis="Art. 6")]  # fmt: skip
    alerts, _, _ = run(on_time, "2026-11-30T10:00")
    assert not pick(alerts, rule="R14.5")
    late = [*base, ev("ticket.returned", "H5", "2026-11-30T09:31", unit="shuixing",
                      reason="not ours")]  # fmt: skip
    alerts, _, _ = run(late, "2026-11-30T10:00")
    v = one(alerts, rule="R14.5")
    assert v.type == "alert.violation" and when(v) == "2026-11-30T09:31:00+08:00"
    assert v.due_at == ts("2026-11-30T09:30")


def test_R14_5_extra_urgent_return_window_is_10_minutes_wall_clock() -> None:
    # 17:25 Friday: 10 wall minutes end at 17:35 even though working time ends at 17:30.
    base = [
        *hotline("H6", "2026-11-27T17:25", hotline_tier="life_safety", urgency="extra_urgent"),
        ev("ticket.dispatched", "H6", "2026-11-27T17:26", unit="shuixing"),
    ]
    alerts, _, _ = run([*base, ev("ticket.returned", "H6", "2026-11-27T17:35", unit="shuixing",
                                  reason="not ours")], "2026-11-27T18:00")  # fmt: skip
    assert not pick(alerts, rule="R14.5")
    alerts, _, _ = run([*base, ev("ticket.returned", "H6", "2026-11-27T17:36", unit="shuixing",
                                  reason="not ours")], "2026-11-27T18:00")  # fmt: skip
    v = one(alerts, rule="R14.5")
    assert v.level == "violation" and v.due_at == ts("2026-11-27T17:35")
    assert when(v) == "2026-11-27T17:36:00+08:00"


@pytest.mark.parametrize(("urgency", "deadline"), [
    ("urgent", "2026-11-27T17:30"),  # 17:20 + 10 min
    ("consultation", "2026-11-27T18:20"),  # 17:20 + 1 h of wall clock (after hours)
])  # fmt: skip
def test_R14_5_urgent_and_consultation_windows_are_wall_clock(urgency: str, deadline: str) -> None:
    mid = f"H7-{urgency}"
    base = [
        *hotline(mid, "2026-11-27T17:20", hotline_tier="basic_living", urgency=urgency),
        ev("ticket.dispatched", mid, "2026-11-27T17:21", unit="shuixing"),
    ]
    alerts, _, _ = run([*base, ev("ticket.returned", mid, deadline, unit="shuixing",
                                  reason="not ours")], "2026-11-28T00:00")  # fmt: skip
    assert not pick(alerts, rule="R14.5")
    alerts, _, _ = run([*base, ev("ticket.returned", mid, minutes_after(deadline, 1), unit="shuixing",
                                  reason="not ours")], "2026-11-28T00:00")  # fmt: skip
    assert one(alerts, rule="R14.5").due_at == ts(deadline)


def test_R14_5_return_is_violation_only_when_late_never_an_overdue_alert() -> None:
    # The return window is a window: nothing fires while it is open or after it closed.
    alerts, _, _ = run(hotline("H8", "2026-11-27T09:00", hotline_tier="basic_living",
                               urgency="extra_urgent"), "2026-11-27T12:00")  # fmt: skip
    assert not pick(alerts, rule="R14.5")


def test_R14_due_explicit_due_at_replaces_the_tier_limit() -> None:
    # complex would be 15 days; the 12345 centre says 24 h.
    events = hotline("H9", "2026-11-23T10:00", hotline_tier="complex", due_at=at("2026-11-24T10:00"))
    alerts, _, _ = run(events, "2026-11-24T11:00")
    assert not pick(alerts, rule="R14.4")
    got = instants(pick(alerts, rule="R14.due"))
    assert got["overdue"] == "2026-11-24T10:00:00+08:00"
    assert got["warn_50"] == "2026-11-23T22:00:00+08:00"


def test_R14_due_before_the_order_is_rejected() -> None:
    events = hotline("H10", "2026-11-23T10:00", hotline_tier="complex",
                     due_at=at("2026-11-23T09:00"))  # fmt: skip
    _, rejected, _ = run(events)
    assert [r.rejection.code for r in rejected] == ["bad_deadline"]


def test_R14_due_hotline_tier_only_for_the_12345_channel() -> None:
    with pytest.raises(EventError, match="hotline_tier"):
        ev("ticket.created", "H11", "2026-11-23T10:00", channel="phone", hotline_tier="general")


# ====================================================================== R15


def _categories_of(rule_id: str) -> list[str]:
    return list(POLICY.rules[rule_id].categories)


@pytest.mark.parametrize("category", ["emergency", "major_event", "complaint"])
def test_R15_1_emergencies_and_complaints_respond_within_2_hours(category: str) -> None:
    mid = f"C-{category}"
    alerts, _, _ = run(ticket(mid, "2026-11-02T09:00", category=category), "2026-11-02T12:00")
    got = instants(pick(alerts, rule="R15.1"))
    assert got["overdue"] == "2026-11-02T11:00:00+08:00"
    assert got["warn_lead_30m"] == "2026-11-02T10:30:00+08:00"
    assert one(alerts, rule="R15.1", stage="overdue").clock == "respond"
    responded = [
        *ticket(mid, "2026-11-02T09:00", category=category),
        ev("ticket.responded", mid, "2026-11-02T09:40"),
    ]
    alerts, _, _ = run(responded, "2026-11-02T12:00")
    assert not pick(alerts, rule="R15.1", level="overdue")


def test_R15_2_hydrant_fault_due_in_12_hours() -> None:
    alerts, _, _ = run(ticket("T-hyd", "2026-11-27T09:00", category="hydrant_fault", unit="runda"),
                       "2026-11-29T12:00")  # fmt: skip
    s = by_stage(pick(alerts, rule="R15.2"))
    assert when(s["warn_50"]) == "2026-11-27T15:00:00+08:00"  # 6 h
    assert when(s["warn_80"]) == "2026-11-27T18:36:00+08:00"  # 9 h 36 min
    overdue = s["overdue"]
    assert when(overdue) == "2026-11-27T21:00:00+08:00"
    assert overdue.type == "alert.overdue" and overdue.due_at == ts("2026-11-27T21:00")
    assert overdue.alert_id == "T-hyd/R15.2/resolve/v1/overdue"
    assert set(overdue.notify) >= {"unit", "ops"} and overdue.unit == "runda"
    # escalation: +50 % of 12 h after the deadline to the unit head (R18) ...
    assert when(s["escalate_1"]) == "2026-11-28T03:00:00+08:00"
    assert s["escalate_1"].notify == ("unit_head",) and ctx(s["escalate_1"])["cites"] == "R18"
    # ... and +100 % to ops and the leaders (R35(3))
    assert when(s["escalate_2"]) == "2026-11-28T09:00:00+08:00"
    assert set(s["escalate_2"].notify) == {"ops", "leaders"}
    assert ctx(s["escalate_2"])["cites"] == "R35(3)"
    # reminders every 4 h while overdue, capped at 3
    rem = sorted(when(a) for a in pick(alerts, rule="R15.2", level="reminder"))
    assert rem == [iso("2026-11-28T01:00"), iso("2026-11-28T05:00"), iso("2026-11-28T09:00")]
    assert len(pick(alerts, rule="R15.2")) == 8  # nothing more, ever


def test_R15_2_resolved_before_deadline_no_overdue_and_met() -> None:
    events = [
        *ticket("T-hyd2", "2026-11-27T09:00", category="hydrant_fault", unit="runda"),
        ev("ticket.resolved", "T-hyd2", "2026-11-27T20:59", unit="runda"),
    ]
    alerts, _, r = run(events, "2026-11-29T12:00")
    assert [a.stage for a in pick(alerts, rule="R15.2")] == ["warn_50", "warn_80"]
    o = outcome(r, "T-hyd2", "resolve")
    assert o.met and o.rule == "R15.2" and o.unit == "runda"


def test_R15_2_resolved_exactly_at_the_deadline_is_on_time() -> None:
    events = [
        *ticket("T-hyd3", "2026-11-27T09:00", category="hydrant_fault", unit="runda"),
        ev("ticket.resolved", "T-hyd3", "2026-11-27T21:00", unit="runda"),
    ]
    alerts, _, r = run(events, "2026-11-29T12:00")
    assert not pick(alerts, level="overdue")
    assert outcome(r, "T-hyd3", "resolve").met


def test_R15_2_reopened_ticket_gets_12_hours_again_not_the_extended_limit() -> None:
    events = [
        *ticket("T-reo", "2026-11-23T09:00", category="hydrant_fault", unit="runda"),
        ev("ticket.extension_granted", "T-reo", "2026-11-23T17:00", due_at=at("2026-11-25T09:00")),
        ev("ticket.resolved", "T-reo", "2026-11-23T18:00", unit="runda"),
        ev("ticket.reopened", "T-reo", "2026-11-24T09:00"),
    ]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-24T21:00")
    overdue = one(alerts, rule="R15.2", stage="overdue")
    assert when(overdue) == "2026-11-24T21:00:00+08:00"  # reopened 09:00 + 12 h


def test_R15_2_reopened_ticket_restarts_the_12_hour_clock() -> None:
    events = [
        *ticket("T-reo2", "2026-11-23T09:00", category="hydrant_fault", unit="runda"),
        ev("ticket.resolved", "T-reo2", "2026-11-23T12:00", unit="runda"),
        ev("ticket.reopened", "T-reo2", "2026-11-23T14:00"),
    ]
    alerts, _, _ = run(events, "2026-11-24T03:00")
    overdue = one(alerts, rule="R15.2", stage="overdue")
    assert overdue.alert_id == "T-reo2/R15.2/resolve/v2/overdue"
    assert when(overdue) == "2026-11-24T02:00:00+08:00"  # 14:00 + 12 h


def test_R15_2_resolved_at_the_deadline_right_after_another_event_is_on_time() -> None:
    events = [
        *ticket("T-tie", "2026-11-23T09:00", category="hydrant_fault", unit="runda"),
        ev("ticket.dispatched", "T-tie", "2026-11-23T09:10", unit="runda"),
        ev("ticket.accepted", "T-tie", "2026-11-23T09:20", unit="runda"),
        ev("ticket.responded", "T-tie", "2026-11-23T21:00", unit="runda"),
        ev("ticket.resolved", "T-tie", "2026-11-23T21:00", unit="runda"),
    ]
    alerts, _, r = run(events, "2026-11-24T12:00")
    assert outcome(r, "T-tie", "resolve").met
    assert not pick(alerts, level="overdue") and not pick(alerts, rule="R13.resolve")


@pytest.mark.parametrize("category", _categories_of("R15.2"))
def test_R15_2_every_category_is_due_in_12_hours(category: str) -> None:
    _check_limit("R15.2", category, 12)


@pytest.mark.parametrize("category", _categories_of("R15.3"))
def test_R15_3_categories_due_in_24_hours(category: str) -> None:
    _check_limit("R15.3", category, 24)


@pytest.mark.parametrize("category", _categories_of("R15.4"))
def test_R15_4_categories_due_in_36_hours(category: str) -> None:
    _check_limit("R15.4", category, 36)


@pytest.mark.parametrize("category", _categories_of("R15.5"))
def test_R15_5_categories_due_in_48_hours(category: str) -> None:
    _check_limit("R15.5", category, 48)


@pytest.mark.parametrize("category", _categories_of("R15.6"))
def test_R15_6_categories_due_in_72_hours(category: str) -> None:
    _check_limit("R15.6", category, 72)


def test_R15_every_category_code_of_RULES_md_has_its_rule() -> None:
    expected = {
        "R15.1": {"emergency", "major_event", "complaint"},
        "R15.2": {"important_party_urgent", "injury_or_property_risk", "manhole_cover",
                  "pipe_locating", "hydrant_fault", "compound_no_water"},
        "R15.3": {"illegal_use_or_damage", "warranty_repair", "water_quality",
                  "meter_location_check", "supply_restoration", "meter_reading_recheck",
                  "pipe_damage"},
        "R15.4": {"meter_well_repair", "meter_calibration", "retrofit_repair"},
        "R15.5": {"construction_report", "valve_well_collapse", "abnormal_usage_low_pressure",
                  "general_inquiry", "meter_well_multi_dept_repair"},
        "R15.6": {"construction_quality", "meter_idle_running", "compensation",
                  "long_coordination"},
        "R15.7": {"reputation_or_unforeseen"},
    }  # fmt: skip
    for rid, cats in expected.items():
        assert set(POLICY.rules[rid].categories) == cats, rid
    assert set().union(*expected.values()) == {c.value for c in Category}
    tiers = {"R14.1": "life_safety", "R14.2": "basic_living", "R14.3": "general", "R14.4": "complex"}
    for rid, tier in tiers.items():
        assert POLICY.rules[rid].tiers == (tier,)
    assert set(tiers.values()) == {t.value for t in HotlineTier}


def _check_limit(rule_id: str, category: str, hours: int) -> None:
    mid = f"C-{category}"
    created = "2026-11-02T09:00"
    due = ts(created) + hours * HOUR
    alerts, _, _ = run(ticket(mid, created, category=category), "2026-11-09T12:00")
    overdue = one(alerts, rule=rule_id, stage="overdue")
    assert overdue.fired_at == due and overdue.due_at == due and overdue.clock == "resolve"
    warn50 = one(alerts, rule=rule_id, stage="warn_50")
    assert warn50.fired_at == ts(created) + hours * HOUR // 2
    just_before = minutes_after(created, hours * 60 - 1)
    resolved = [*ticket(mid, created, category=category), ev("ticket.resolved", mid, just_before)]
    alerts, _, r = run(resolved, "2026-11-09T12:00")
    assert not pick(alerts, rule=rule_id, level="overdue")
    assert outcome(r, mid, "resolve").met


def test_R15_7_warns_ops_at_creation_that_no_deadline_is_set() -> None:
    alerts, _, _ = run(ticket("T-r157", "2026-11-23T10:00", channel="media",
                              category="reputation_or_unforeseen"), "2026-11-24T10:00")  # fmt: skip
    first = one(alerts, rule="R15.7", stage="deadline_unset")
    assert first.level == "warning" and first.notify == ("ops",)
    assert when(first) == "2026-11-23T10:00:00+08:00"
    assert first.due_at is None
    # reminders to ops every 2 h while unset, at most 6
    rem = [when(a) for a in pick(alerts, rule="R15.7", level="reminder")]
    assert rem == [iso(f"2026-11-23T{h:02d}:00") for h in (12, 14, 16, 18, 20, 22)]
    assert not pick(alerts, rule="R15.7", level="overdue")


def test_R15_7_deadline_set_by_ops_arms_the_real_deadline() -> None:
    events = [
        *ticket("T-r157b", "2026-11-23T10:00", channel="media",
                    category="reputation_or_unforeseen"),
        ev("ticket.deadline_set", "T-r157b", "2026-11-23T13:00", due_at=at("2026-11-24T10:00"),
           reason="ops: one day"),
    ]  # fmt: skip
    alerts, _, r = run(events, "2026-11-24T11:00")
    # one unset reminder (12:00) came before ops acted, none after
    assert [when(a) for a in pick(alerts, rule="R15.7", level="reminder")] == [iso("2026-11-23T12:00")]
    s = by_stage([a for a in pick(alerts, rule="R15.7") if "/v2/" in a.alert_id])
    assert when(s["overdue"]) == "2026-11-24T10:00:00+08:00"
    assert s["overdue"].due_at == ts("2026-11-24T10:00")
    assert when(s["warn_50"]) == "2026-11-23T22:00:00+08:00"  # half of 10:00 -> 10:00 next day
    clock = r.states["T-r157b"].clocks["resolve"]
    assert clock.original_due == ts("2026-11-24T10:00")  # setting is not an extension


def test_R15_7_unset_deadline_reminders_say_no_deadline_is_set() -> None:
    alerts, _, _ = run(ticket("T-r157c", "2026-11-23T10:00", channel="media",
                              category="reputation_or_unforeseen"), "2026-11-23T12:00")  # fmt: skip
    rem = one(alerts, rule="R15.7", stage="deadline_unset_1")
    assert "None" not in rem.message and "overdue" not in rem.message


def test_R15_7_deadline_before_the_ticket_existed_is_rejected() -> None:
    events = [
        *hotline("T-r157d", "2026-11-23T09:00", hotline_tier="general"),
        ev("ticket.deadline_set", "T-r157d", "2026-11-23T10:00", due_at=at("2026-11-22T11:00")),
    ]
    alerts, rejected, _ = run(events, "2026-11-23T13:00")
    assert [r.rejection.code for r in rejected] == ["bad_deadline"]
    assert all(a.fired_at >= ts("2026-11-23T09:00") for a in alerts)


# ====================================================================== R16 - R18


def test_R16_deadline_passed_while_down_fires_late_never_skipped() -> None:
    step = ENGINE.apply(None, ev("ticket.created", "T-r16", "2026-11-27T09:00", channel="phone",
                                 category="hydrant_fault", unit="runda"), at("2026-11-27T09:00"))
    assert step.rejection is None and step.state is not None
    # the service was down from 14:00 to 23:00: on recovery everything due up to 22:00 fires
    late = ENGINE.advance(step.state, at("2026-11-27T22:00"), now=at("2026-11-27T23:00"))
    s = by_stage(late.alerts)
    assert set(s) == {"warn_50", "warn_80", "overdue"}
    assert when(s["overdue"]) == "2026-11-27T21:00:00+08:00"  # the threshold, not the firing
    assert s["overdue"].late_by == 2 * HOUR
    assert s["warn_50"].late_by == 8 * HOUR
    assert s["warn_80"].late_by == ts("2026-11-27T23:00") - ts("2026-11-27T18:36")
    assert late.alerts[0].to_event(TZ)["data"]["late_by"] == 8 * HOUR


def test_R16_a_stage_fired_on_time_carries_no_late_by() -> None:
    step = ENGINE.apply(None, ev("ticket.created", "T-r16b", "2026-11-27T09:00", channel="phone",
                                 category="hydrant_fault"), at("2026-11-27T09:00"))
    assert step.state is not None
    on_time = ENGINE.advance(step.state, at("2026-11-27T21:00"), now=ts("2026-11-27T21:00") + 5)
    assert all(a.late_by is None for a in on_time.alerts if a.stage == "overdue")
    # and an event after the downtime fires the missed stages first, marked late
    after = ENGINE.apply(step.state, ev("ticket.resolved", "T-r16b", "2026-11-27T21:30"),
                         at("2026-11-27T21:30"))  # fmt: skip
    assert after.rejection is None
    assert [a.stage for a in after.alerts] == ["warn_50", "warn_80", "overdue"]
    assert after.alerts[-1].late_by == 30 * MIN


def test_R17_return_then_redispatch_starts_a_new_accept_clock_version() -> None:
    events = [
        *ticket("T-r17", "2026-11-23T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-r17", "2026-11-23T09:10", unit="shuixing"),
        ev("ticket.returned", "T-r17", "2026-11-23T09:30", unit="shuixing",
           reason="hydrants are Runda's", basis="units directory"),
        ev("ticket.dispatched", "T-r17", "2026-11-23T09:40", unit="runda"),
    ]  # fmt: skip
    alerts, rejected, r = run(events, "2026-11-23T22:00")
    assert not rejected
    accept = by_stage(pick(alerts, rule="R13.accept"))
    assert accept["overdue"].alert_id == "T-r17/R13.accept/accept/v2/overdue"
    assert when(accept["overdue"]) == "2026-11-23T10:40:00+08:00"  # 09:40 + 1 working hour
    assert accept["overdue"].unit == "runda"
    assert not [a for a in alerts if "/accept/v1/" in a.alert_id]  # v1 was stopped by the return
    # the resolve clock was not restarted: still 09:00 + 12 h, version 1
    overdue = one(alerts, rule="R15.2", stage="overdue")
    assert overdue.alert_id == "T-r17/R15.2/resolve/v1/overdue"
    assert when(overdue) == "2026-11-23T21:00:00+08:00" and overdue.unit == "runda"
    # the first unit's return is on record as an accept outcome of shuixing
    shuixing = [o for o in r.states["T-r17"].outcomes if o.unit == "shuixing"]
    assert [o.clock for o in shuixing] == ["accept"]


def test_R17_disputed_order_continued_keeps_the_same_clocks() -> None:
    events = [
        *ticket("T-r17b", "2026-11-23T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "T-r17b", "2026-11-23T09:10", unit="runda"),
        ev("ticket.accepted", "T-r17b", "2026-11-23T09:30", unit="runda"),
        ev("ticket.resolved", "T-r17b", "2026-11-23T20:00", unit="runda"),
    ]
    alerts, _, _ = run(events, "2026-11-24T12:00")
    assert not pick(alerts, level="overdue")
    assert POLICY.rules["R17"].kind == "runtime"


def test_R18_first_escalation_step_tells_the_unit_head() -> None:
    assert POLICY.rules["R18"].notify == ("unit_head",)
    assert POLICY.rules["R24.arrive"].escalate[0].notify == ("unit_head",)
    # a leak crew not on site: 10:00 + 1 h = 11:00 overdue, +50 % = 11:30 to the unit head
    alerts, _, _ = run([ev("leak.reported", "L-r18", "2026-11-25T10:00", pipe_diameter_mm=300)],
                       "2026-11-25T12:00")  # fmt: skip
    esc = one(alerts, rule="R24.arrive", stage="escalate_1")
    assert when(esc) == "2026-11-25T11:30:00+08:00"
    assert esc.notify == ("unit_head",) and ctx(esc)["cites"] == "R18"


# ====================================================================== outages


def planned(mid: str, time: str, starts: str, ends: str, kind: str = "planned",
            unit: str = "runda", **data: object) -> CloudEvent:
    return ev("outage.planned", mid, time, kind=kind, area=AREA, starts_at=at(starts),
              expected_end_at=at(ends), unit=unit, **data)  # fmt: skip


def test_R19_1_resident_notice_exactly_48_hours_before_the_start() -> None:
    events = [planned("O-191", "2026-11-20T10:00", "2026-11-25T09:00", "2026-11-25T10:30")]
    alerts, _, _ = run(events, "2026-11-25T08:59")
    n = one(alerts, rule="R19.1")
    assert n.type == "notice.due" and n.notice == "pre_outage"
    assert when(n) == "2026-11-23T09:00:00+08:00"
    assert "residents" in n.notify
    assert not pick(alerts, level="violation")


def test_R19_1_notice_due_in_residents_quiet_hours_goes_out_the_evening_before() -> None:
    # start 02:00 on the 25th: start - 48 h is 02:00 on the 23rd, inside 21:00-08:00 (policy.yaml)
    events = [planned("O-191q", "2026-11-20T10:00", "2026-11-25T02:00", "2026-11-25T06:00")]
    alerts, _, _ = run(events, "2026-11-25T01:00")
    n = one(alerts, rule="R19.1")
    assert when(n) == "2026-11-22T20:59:59+08:00"  # the last second before the quiet hours, never later
    assert not pick(alerts, level="violation")


def test_R19_1_announced_inside_quiet_hours_close_to_the_deadline_is_sent_at_once() -> None:
    # announced at 22:00 on the 22nd: the evening's last quiet-free second has passed, 02:00 is too late
    events = [planned("O-191r", "2026-11-22T22:00", "2026-11-25T02:00", "2026-11-25T06:00")]
    alerts, _, _ = run(events, "2026-11-25T01:00")
    assert when(one(alerts, rule="R19.1")) == "2026-11-22T22:00:00+08:00"
    assert not pick(alerts, level="violation")


def test_R19_1_pressure_limited_supply_is_notified_too() -> None:
    events = [planned("O-191p", "2026-11-20T10:00", "2026-11-25T09:00", "2026-11-25T10:30",
                      pressure_limited=True)]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T08:00")
    assert when(one(alerts, rule="R19.1")) == "2026-11-23T09:00:00+08:00"


def test_R19_1_late_announcement_sends_at_once_and_is_a_violation() -> None:
    events = [planned("O-191l", "2026-11-24T10:00", "2026-11-25T09:00", "2026-11-25T10:30")]
    alerts, _, _ = run(events, "2026-11-25T08:00")
    v = one(alerts, rule="R19.1", level="violation")
    n = one(alerts, rule="R19.1", level="notice")
    assert when(v) == when(n) == "2026-11-24T10:00:00+08:00"
    assert n.notice == "pre_outage"
    assert set(v.notify) >= {"unit", "ops"}


def test_R19_1_outage_moved_before_notice_reschedules_the_notice() -> None:
    events = [
        planned("O-191m", "2026-11-20T10:00", "2026-11-25T09:00", "2026-11-25T10:30"),
        ev("outage.updated", "O-191m", "2026-11-21T10:00", starts_at=at("2026-11-26T09:00"),
           expected_end_at=at("2026-11-26T10:30"), reason="crew moved"),
    ]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-26T08:00")
    assert [when(a) for a in pick(alerts, rule="R19.1")] == ["2026-11-24T09:00:00+08:00"]


def test_R19_1_outage_moved_after_the_notice_sends_a_correction() -> None:
    events = [
        planned("O-191c", "2026-11-20T10:00", "2026-11-25T09:00", "2026-11-25T12:00"),
        ev("outage.updated", "O-191c", "2026-11-24T10:00", starts_at=at("2026-11-24T20:00"),
           expected_end_at=at("2026-11-24T22:00"), reason="crew available earlier"),
    ]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-24T19:00")
    notices = pick(alerts, rule="R19.1", level="notice")
    assert [(when(a), a.notice) for a in notices] == [
        ("2026-11-23T09:00:00+08:00", "pre_outage"),
        ("2026-11-24T10:00:00+08:00", "correction"),
    ]
    assert ctx(notices[1])["supersedes"] == notices[0].alert_id
    # the new start is only 10 h away: less than 48 h notice
    v = one(alerts, rule="R19.1", level="violation")
    assert when(v) == "2026-11-24T10:00:00+08:00"


def test_R19_1_cancelled_after_the_notice_sends_a_correction_only() -> None:
    events = [
        planned("O-191x", "2026-11-20T10:00", "2026-11-25T09:00", "2026-11-25T12:00"),
        ev("outage.cancelled", "O-191x", "2026-11-24T10:00", reason="no longer needed"),
    ]
    alerts, _, _ = run(events, "2026-11-26T00:00")
    assert [(when(a), a.notice) for a in alerts] == [
        ("2026-11-23T09:00:00+08:00", "pre_outage"),
        ("2026-11-24T10:00:00+08:00", "correction"),
    ]


def test_R19_2_emergency_alerts_warning_group_escalates_and_tells_residents() -> None:
    events = [ev("outage.emergency", "O-192", "2026-11-25T14:20", area=AREA, cause="main burst",
                 unit="shuixing")]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T14:30")
    group = one(alerts, rule="R19.2", level="warning")
    assert "warning_group" in group.notify and when(group) == "2026-11-25T14:20:00+08:00"
    assert when(one(alerts, rule="R12")) == "2026-11-25T14:20:00+08:00"
    assert "leaders" in one(alerts, rule="R12").notify
    resident = one(alerts, rule="R19.2", level="notice")
    assert resident.notice == "emergency_outage" and "residents" in resident.notify
    assert not [a for a in alerts if "public" in a.notify]


def test_R19_2_public_notice_only_after_office_approval() -> None:
    events = [
        ev("outage.emergency", "O-192b", "2026-11-25T14:20", area=AREA, cause="main burst",
           unit="shuixing"),
        ev("outage.notice_approved", "O-192b", "2026-11-25T14:50", approved_by="runda"),
        ev("outage.notice_approved", "O-192b", "2026-11-25T15:05", approved_by="office"),
    ]  # fmt: skip
    alerts, rejected, _ = run(events, "2026-11-25T15:10")
    assert [r.rejection.code for r in rejected] == ["not_authorised"]
    public = [a for a in alerts if "public" in a.notify]
    assert [when(a) for a in public] == ["2026-11-25T15:05:00+08:00"]
    assert public[0].rule == "R19.2" and public[0].type == "notice.due"


def test_R19_3_maintenance_outage_without_cause_is_rejected_with_reason() -> None:
    raw = {
        "specversion": "1.0", "id": "o193", "source": "oa", "type": "outage.planned",
        "time": iso("2026-11-20T10:00"), "subject": "O-193",
        "data": {"kind": "maintenance", "area": AREA, "starts_at": iso("2026-11-25T09:00"),
                 "expected_end_at": iso("2026-11-25T11:00"), "unit": "shuixing"},
    }  # fmt: skip
    with pytest.raises(EventError) as err:
        parse_event(raw)
    assert "R19.3" in str(err.value) and "cause" in str(err.value)
    for missing in ("expected_end_at", "area"):
        incomplete = {**raw, "data": {k: v for k, v in raw["data"].items() if k != missing}}
        incomplete["data"]["cause"] = "valve replacement"
        with pytest.raises(EventError, match=f"data.{missing}: is required"):
            parse_event(incomplete)
    raw["data"]["cause"] = "valve replacement"
    assert parse_event(raw).type == "outage.planned"


def test_R19_3_maintenance_reported_after_it_started_is_a_violation() -> None:
    events = [planned("O-193b", "2026-11-25T09:05", "2026-11-25T09:00", "2026-11-25T11:00",
                      kind="maintenance", unit="shuixing", cause="valve")]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T09:10")
    v = one(alerts, rule="R19.3")
    assert v.level == "violation" and "ops" in v.notify


def test_R19_4_user_caused_stop_ops_notified_within_2_hours_before() -> None:
    events = [ev("outage.planned", "O-194", "2026-11-20T10:00", kind="user_caused",
                 area={"accounts": ["A-1001"]}, starts_at=at("2026-11-25T14:00"),
                 expected_end_at=at("2026-11-26T10:00"), unit="runda", cause="arrears")]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T13:59")
    n = one(alerts, rule="R19.4")
    assert "ops" in n.notify
    assert ts("2026-11-25T12:00") <= n.fired_at <= ts("2026-11-25T14:00")
    assert when(n) == "2026-11-25T12:00:00+08:00"
    assert not pick(alerts, rule="R19.1")  # no 48 h resident notice for a user-caused stop


def test_R19_4_announced_inside_the_window_notifies_ops_at_once() -> None:
    events = [ev("outage.planned", "O-194b", "2026-11-25T13:00", kind="user_caused",
                 area={"accounts": ["A-1001"]}, starts_at=at("2026-11-25T14:00"),
                 expected_end_at=at("2026-11-26T10:00"), unit="runda")]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T13:59")
    assert when(one(alerts, rule="R19.4")) == "2026-11-25T13:00:00+08:00"
    assert not pick(alerts, rule="R19.4", level="violation")


def test_R20_external_outage_gets_the_planned_pre_notice() -> None:
    assert POLICY.rules["R20"].outage_kinds == ("external",)
    assert "external" in POLICY.rules["R19.1"].outage_kinds
    events = [planned("O-20", "2026-11-20T10:00", "2026-11-25T09:00", "2026-11-25T12:00",
                      kind="external")]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T08:00")
    n = one(alerts, rule="R19.1")
    assert n.notice == "pre_outage" and when(n) == "2026-11-23T09:00:00+08:00"


def test_R22_outage_spanning_a_peak_period_alerts_at_the_peak_start() -> None:
    events = [
        planned("O-22", "2026-11-20T10:00", "2026-11-25T14:00", "2026-11-25T18:00"),
        ev("outage.started", "O-22", "2026-11-25T14:00"),
    ]
    alerts, _, _ = run(events, "2026-11-25T16:59")
    assert not pick(alerts, rule="R22")
    alerts, _, _ = run(events, "2026-11-25T17:30")
    peak = one(alerts, rule="R22")
    assert when(peak) == "2026-11-25T17:00:00+08:00"
    assert set(peak.notify) >= {"unit", "runda"}


def test_R22_no_peak_alert_when_restored_before_the_peak() -> None:
    events = [
        planned("O-22b", "2026-11-20T10:00", "2026-11-25T14:00", "2026-11-25T16:00"),
        ev("outage.started", "O-22b", "2026-11-25T14:00"),
        ev("outage.restored", "O-22b", "2026-11-25T16:30"),
    ]
    alerts, _, _ = run(events, "2026-11-26T00:00")
    assert not pick(alerts, rule="R22")


def test_R22_outage_started_during_a_peak_still_alerts_at_the_next_peak() -> None:
    events = [
        planned("O-22c", "2026-11-20T10:00", "2026-11-25T06:30", "2026-11-25T15:00"),
        ev("outage.started", "O-22c", "2026-11-25T07:00"),
    ]
    alerts, _, _ = run(events, "2026-11-25T16:00")
    assert "2026-11-25T11:00:00+08:00" in [when(a) for a in pick(alerts, rule="R22")]


def _r23_base(mid: str) -> list[CloudEvent]:
    return [
        planned(mid, "2026-11-20T10:00", "2026-11-25T14:00", "2026-11-25T18:00",
                kind="maintenance", unit="shuixing", cause="valve replacement"),
        ev("outage.started", mid, "2026-11-25T14:05"),
    ]  # fmt: skip


def test_R23_unit_reminded_before_the_report_deadline_then_violation_at_expected_time() -> None:
    # Report deadline: 30 min before the expected restoration (18:00) = 17:30;
    # the unit is reminded 30 min before that (policy warn.leads) = 17:00.
    r23 = POLICY.rules["R23"]
    assert r23.report_before == 30 * MIN and r23.warn.leads == (30 * MIN,)
    alerts, _, _ = run(_r23_base("O-23"), "2026-11-25T18:30")
    warn = [a for a in pick(alerts, rule="R23") if a.level == "warning"]
    assert [when(a) for a in warn] == ["2026-11-25T17:00:00+08:00"]
    assert set(warn[0].notify) >= {"unit", "warning_group"}
    assert warn[0].fired_at <= ts("2026-11-25T17:30")
    at_end = [a for a in pick(alerts, rule="R23") if a.fired_at == ts("2026-11-25T18:00")]
    assert {a.level for a in at_end} >= {"violation"}


def test_R23_delay_report_updates_residents_and_moves_the_restore_deadline() -> None:
    events = [*_r23_base("O-23b"),
              ev("outage.delay_reported", "O-23b", "2026-11-25T17:00",
                 expected_end_at=at("2026-11-25T21:00"), reason="second leak found")]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T20:59")
    update = one(alerts, rule="R23", level="notice")
    assert update.notice == "delay_update" and when(update) == "2026-11-25T17:00:00+08:00"
    assert ctx(update)["previous_expected_end_at"] == iso("2026-11-25T18:00")
    # the old expected end (18:00) passes quietly: the delay was reported in time
    assert not [a for a in pick(alerts, rule="R23") if a.level in ("overdue", "violation")]
    # reminded again 30 min before the new report deadline (21:00 - 30 min - 30 min)
    assert [when(a) for a in pick(alerts, rule="R23", clock="delay_report")] == [
        "2026-11-25T20:00:00+08:00"]
    alerts, _, _ = run(events, "2026-11-25T21:00")
    overdue = one(alerts, rule="R23", level="overdue")
    assert when(overdue) == "2026-11-25T21:00:00+08:00"
    assert overdue.due_at == ts("2026-11-25T21:00")


def test_R23_restoration_sends_a_restoration_notice() -> None:
    events = [*_r23_base("O-23c"), ev("outage.restored", "O-23c", "2026-11-25T16:40")]
    alerts, _, r = run(events, "2026-11-26T12:00")
    n = one(alerts, rule="R23", level="notice")
    assert n.notice == "restoration" and when(n) == "2026-11-25T16:40:00+08:00"
    assert "residents" in n.notify
    assert not pick(alerts, level="violation") and not pick(alerts, rule="R22")
    assert outcome(r, "O-23c", "restore").met


def test_R23_late_delay_report_is_a_violation() -> None:
    events = [*_r23_base("O-23d"),
              ev("outage.delay_reported", "O-23d", "2026-11-25T17:50",
                 expected_end_at=at("2026-11-25T20:00"), reason="late")]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-25T18:00")
    v = one(alerts, rule="R23", level="violation")
    assert when(v) == "2026-11-25T17:50:00+08:00"
    assert one(alerts, rule="R23", level="notice").notice == "delay_update"


# ====================================================================== leaks etc.


def test_R24_arrive_crew_on_site_within_1_hour() -> None:
    alerts, _, _ = run([ev("leak.reported", "L-a", "2026-11-25T10:00", pipe_diameter_mm=300)],
                       "2026-11-25T11:10")  # fmt: skip
    got = instants(pick(alerts, rule="R24.arrive"))
    assert got == {"warn_lead_20m": iso("2026-11-25T10:40"), "overdue": iso("2026-11-25T11:00")}
    assert one(alerts, rule="R24.arrive", stage="overdue").unit == "runda"
    events = [ev("leak.reported", "L-b", "2026-11-25T10:00"),
              ev("leak.crew_arrived", "L-b", "2026-11-25T10:45")]  # fmt: skip
    alerts, _, r = run(events, "2026-11-25T13:00")
    assert not pick(alerts, rule="R24.arrive", level="overdue")
    assert outcome(r, "L-b", "arrive").met


@pytest.mark.parametrize(("diameter", "due"), [
    (300, "2026-11-26T11:00"),
    (500, "2026-11-26T11:00"),  # ≤ 500 mm: 24 h
    (501, "2026-11-27T11:00"),  # > 500 mm: 48 h
    (None, "2026-11-26T11:00"),  # unknown: the stricter limit
])  # fmt: skip
def test_R24_repair_within_24_or_48_hours_by_diameter(diameter: int | None, due: str) -> None:
    mid = f"L-{diameter}"
    events = [ev("leak.reported", mid, "2026-11-25T10:00"),
              ev("leak.repair_started", mid, "2026-11-25T11:00", pipe_diameter_mm=diameter)]  # fmt: skip
    alerts, _, _ = run(events, "2026-11-28T00:00")
    overdue = one(alerts, rule="R24.repair", stage="overdue")
    assert when(overdue) == iso(due) and overdue.due_at == ts(due)


def test_R24_repair_diameter_from_the_report_is_used() -> None:
    events = [ev("leak.reported", "L-800", "2026-11-25T10:00", pipe_diameter_mm=800),
              ev("leak.repair_started", "L-800", "2026-11-25T11:00"),
              ev("leak.repaired", "L-800", "2026-11-27T10:59")]  # fmt: skip
    alerts, _, r = run(events, "2026-11-29T00:00")
    assert not pick(alerts, rule="R24.repair", level="overdue")
    assert outcome(r, "L-800", "repair").due == ts("2026-11-27T11:00")


def test_R25_meter_well_leak_has_no_clock_and_tells_runda() -> None:
    alerts, _, r = run([ev("leak.reported", "L-25", "2026-11-25T10:00", in_meter_well=True)],
                       "2026-12-25T10:00")  # fmt: skip
    a = one(alerts, rule="R25")
    assert a.unit == "runda" and when(a) == "2026-11-25T10:00:00+08:00"
    assert len(alerts) == 1  # no deadline, no reminders, a month later still nothing
    assert r.states["L-25"].clocks == {}
    assert POLICY.rules["R25"].kind == "no_limit" and POLICY.rules["R25"].limit is None


def _informational(rule_id: str) -> None:
    rule = POLICY.rules[rule_id]
    assert rule.kind == "informational"
    assert rule.clock is None and rule.limit is None and not rule.starts
    for code in [c.value for c in Category]:
        assert rule_id not in [r.id for r in POLICY.for_category(code)]
    for tier in [t.value for t in HotlineTier]:
        assert rule_id not in [r.id for r in POLICY.for_tier(tier)]


def test_R27_informational_entry_creates_no_clock() -> None:
    _informational("R27")


def test_R29_informational_entry_creates_no_clock() -> None:
    _informational("R29")


def test_R32_informational_entry_creates_no_clock() -> None:
    _informational("R32")


def test_R28_water_quality_defaults_to_runda_with_lab_and_inspection_assisting() -> None:
    alerts, _, r = run(ticket("Q-28", "2026-11-25T10:00", category="water_quality"),
                       "2026-11-26T10:00")  # fmt: skip
    st = r.states["Q-28"]
    assert st.unit == "runda"
    assert st.attrs["assist"] == ["quality_lab", "inspection"]
    overdue = one(alerts, rule="R15.3", stage="overdue")  # R15.3(4): 24 h
    assert when(overdue) == "2026-11-26T10:00:00+08:00" and overdue.unit == "runda"
    assert ctx(overdue)["assist"] == ["quality_lab", "inspection"]
    # an explicit unit wins over the default
    _, _, r = run(ticket("Q-28b", "2026-11-25T10:00", category="water_quality", unit="chengnan"))
    assert r.states["Q-28b"].unit == "chengnan"


def test_R30_inspection_on_site_within_1_hour() -> None:
    alerts, _, r = run([ev("damage.reported", "D-30", "2026-11-25T10:00", summary="excavator")],
                       "2026-11-25T11:00")  # fmt: skip
    overdue = one(alerts, rule="R30", stage="overdue")
    assert when(overdue) == "2026-11-25T11:00:00+08:00" and overdue.unit == "inspection"
    events = [ev("damage.reported", "D-30b", "2026-11-25T10:00"),
              ev("damage.inspector_arrived", "D-30b", "2026-11-25T10:59")]  # fmt: skip
    alerts, _, r = run(events, "2026-11-25T18:00")
    assert not pick(alerts, rule="R30", level="overdue")
    assert outcome(r, "D-30b", "arrive").met


METER = {"meter_id": "MT-1", "account": "ACC-1"}


def test_R31_monthly_read_cycle_opens_the_next_month_when_read() -> None:
    events = [ev("meter.registered", "M-31", "2026-09-10T10:00", **METER),
              ev("meter.read", "M-31", "2026-09-20T10:00", period="2026-09", **METER),
              ev("meter.read", "M-31", "2026-10-15T10:00", period="2026-10", **METER)]  # fmt: skip
    alerts, rejected, r = run(events, "2026-11-30T23:00")
    assert not rejected
    assert not pick(alerts, rule="R31", level="overdue")
    # November was opened by the October read; it is due at the start of December
    clock = r.states["M-31"].clocks["read:2026-11"]
    assert clock.due == ts("2026-12-01T00:00")
    # warned at 80 % of November (30 days): 24 days = 11-25 00:00
    warn = one(alerts, rule="R31", stage="warn_80")
    assert when(warn) == "2026-11-25T00:00:00+08:00"


def test_R31_missed_month_is_overdue_at_the_month_end() -> None:
    events = [ev("meter.registered", "M-31b", "2026-10-10T10:00", **METER)]
    alerts, _, _ = run(events, "2026-11-01T00:00")
    overdue = one(alerts, rule="R31", stage="overdue")
    assert overdue.clock == "read:2026-10" and when(overdue) == "2026-11-01T00:00:00+08:00"


def test_R31_missed_month_opens_the_next_month() -> None:
    events = [ev("meter.registered", "M-31c", "2026-10-10T10:00", **METER),
              ev("meter.read", "M-31c", "2026-11-20T10:00", period="2026-11", **METER)]  # fmt: skip
    _, rejected, r = run(events, "2026-11-30T00:00")
    assert not rejected
    assert "read:2026-11" in r.states["M-31c"].clocks


def test_R31_estimate_without_evidence_is_a_violation() -> None:
    events = [ev("meter.registered", "M-31d", "2026-10-10T10:00", **METER),
              ev("meter.read", "M-31d", "2026-10-20T10:00", period="2026-10", estimated=True,
                 explained_to_user=True, **METER)]  # fmt: skip
    alerts, _, _ = run(events, "2026-10-21T00:00")
    v = one(alerts, rule="R31", level="violation")
    assert when(v) == "2026-10-20T10:00:00+08:00" and "evidence" in v.message
    assert ctx(v)["period"] == "2026-10"
    ok = [ev("meter.registered", "M-31e", "2026-10-10T10:00", **METER),
          ev("meter.read", "M-31e", "2026-10-20T10:00", period="2026-10", estimated=True,
             evidence="gate locked, photo 123", explained_to_user=True, **METER)]  # fmt: skip
    alerts, _, _ = run(ok, "2026-10-21T00:00")
    assert not pick(alerts, level="violation")


# ====================================================================== R12, R34, R35(3)


def test_R12_emergency_category_escalates_to_leaders_at_once() -> None:
    alerts, _, _ = run(ticket("T-12", "2026-11-25T10:00", category="emergency"), "2026-11-25T10:00")
    esc = one(alerts, rule="R12")
    assert esc.level == "escalation" and esc.type == "alert.escalation"
    assert "leaders" in esc.notify and when(esc) == "2026-11-25T10:00:00+08:00"
    alerts, _, _ = run(ticket("T-12b", "2026-11-25T10:00", category="hydrant_fault"),
                       "2026-11-25T10:00")  # fmt: skip
    assert not pick(alerts, rule="R12")


def test_R34_monthly_report_counts_met_and_missed_per_unit() -> None:
    events = [
        # runda: R15.2 met (A), R15.2 missed (B); accept met (A), missed (B)
        *ticket("A", "2026-11-02T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "A", "2026-11-02T09:10", unit="runda"),
        ev("ticket.accepted", "A", "2026-11-02T09:20", unit="runda"),
        ev("ticket.resolved", "A", "2026-11-02T20:00", unit="runda"),
        *ticket("B", "2026-11-03T09:00", category="hydrant_fault"),
        ev("ticket.dispatched", "B", "2026-11-03T09:10", unit="runda"),
        ev("ticket.accepted", "B", "2026-11-03T11:20", unit="runda"),
        ev("ticket.resolved", "B", "2026-11-03T22:00", unit="runda"),
        # shuixing: R15.3 still open after its deadline = missed; accept met
        *ticket("C", "2026-11-04T09:00", category="pipe_damage"),
        ev("ticket.dispatched", "C", "2026-11-04T09:10", unit="shuixing"),
        ev("ticket.accepted", "C", "2026-11-04T09:20", unit="shuixing"),
        # due in December: not in November's report
        *ticket("D", "2026-11-30T20:00", category="pipe_damage", unit="shuixing"),
    ]
    _, rejected, r = run(events, "2026-12-01T00:00")
    assert not rejected
    start, end = month_bounds("2026-11", TZ)
    rows = {(x.unit, x.rule): x for x in monthly(r.states.values(), start, end, ts("2026-12-01T00:00"))}
    got = {k: (x.deadlines, x.met, x.missed, x.pending) for k, x in rows.items()}
    assert got == {
        ("runda", "R13.accept"): (2, 1, 1, 0),
        ("runda", "R15.2"): (2, 1, 1, 0),
        ("shuixing", "R13.accept"): (1, 1, 0, 0),
        ("shuixing", "R15.3"): (1, 0, 1, 0),
    }
    start, end = month_bounds("2026-12", TZ)
    dec = monthly(r.states.values(), start, end, ts("2026-12-01T00:00"))
    assert [(x.unit, x.rule, x.pending) for x in dec] == [("shuixing", "R15.3", 1)]


def test_R35_3_final_escalation_step_names_the_leaders() -> None:
    for rid, rule in POLICY.rules.items():
        cited = [s for s in rule.escalate if s.cites == "R35(3)"]
        if cited:
            assert rule.escalate[-1] is cited[-1], rid
            assert "leaders" in cited[-1].notify, rid
    assert POLICY.rules["R35(3)"].notify == ("leaders",)
    alerts, _, _ = run(ticket("T-353", "2026-11-27T09:00", category="pipe_damage"),
                       "2026-11-30T12:00")  # fmt: skip
    escalations = pick(alerts, rule="R15.3", level="escalation")
    last = max(escalations, key=lambda a: a.fired_at)
    assert "leaders" in last.notify and ctx(last)["cites"] == "R35(3)"
    assert when(last) == "2026-11-29T09:00:00+08:00"  # deadline 11-28 09:00 + 100 % of 24 h


# ====================================================================== illegal input


def _created(mid: str = "X") -> MatterState:
    step = ENGINE.apply(None, ev("ticket.created", mid, "2026-11-02T09:00", id=f"{mid}-c",
                                 channel="phone", category="hydrant_fault"), at("2026-11-02T09:00"))
    assert step.rejection is None and step.state is not None
    return step.state


def test_illegal_accept_before_dispatch_is_a_rejection() -> None:
    step = ENGINE.apply(_created(), ev("ticket.accepted", "X", "2026-11-02T09:10"),
                        at("2026-11-02T09:10"))  # fmt: skip
    assert step.rejection is not None and step.rejection.code == "illegal_transition"
    assert "dispatched" in str(step.rejection)


def test_illegal_resolve_after_close_is_a_rejection() -> None:
    st = _created()
    for typ, t in (("ticket.resolved", "10:00"), ("ticket.closed", "10:05")):
        step = ENGINE.apply(st, ev(typ, "X", f"2026-11-02T{t}"), at(f"2026-11-02T{t}"))
        assert step.rejection is None
        st = step.state
    step = ENGINE.apply(st, ev("ticket.resolved", "X", "2026-11-02T10:10"), at("2026-11-02T10:10"))
    assert step.rejection is not None and step.rejection.code == "illegal_transition"
    assert "closed" in step.rejection.reason


def test_illegal_event_for_an_unknown_matter_is_a_rejection() -> None:
    step = ENGINE.apply(None, ev("ticket.resolved", "NOPE", "2026-11-02T10:00"), at("2026-11-02T10:00"))
    assert step.rejection is not None and step.rejection.code == "unknown_matter"
    assert "NOPE" in str(step.rejection)


def test_illegal_duplicate_matter_is_a_rejection() -> None:
    step = ENGINE.apply(_created(), ev("ticket.created", "X", "2026-11-02T09:30", channel="phone",
                                       category="pipe_damage"), at("2026-11-02T09:30"))  # fmt: skip
    assert step.rejection is not None and step.rejection.code == "duplicate_matter"


def test_illegal_time_running_backwards_beyond_tolerance_is_a_rejection() -> None:
    st = _created()
    st = ENGINE.apply(st, ev("ticket.dispatched", "X", "2026-11-02T10:00", unit="runda"),
                      at("2026-11-02T10:00")).state  # fmt: skip
    assert POLICY.backwards_tolerance == 10 * MIN
    late = ENGINE.apply(st, ev("ticket.accepted", "X", "2026-11-02T09:49"), at("2026-11-02T10:01"))
    assert late.rejection is not None and late.rejection.code == "time_backwards"
    within = ENGINE.apply(st, ev("ticket.accepted", "X", "2026-11-02T09:51"), at("2026-11-02T10:01"))
    assert within.rejection is None


def test_illegal_time_far_in_the_future_is_a_rejection() -> None:
    assert POLICY.future_tolerance == 10 * MIN
    step = ENGINE.apply(_created(), ev("ticket.dispatched", "X", "2026-11-02T12:00", unit="runda"),
                        at("2026-11-02T09:30"))  # fmt: skip
    assert step.rejection is not None and step.rejection.code == "time_in_future"
    new = ENGINE.apply(None, ev("ticket.created", "Y", "2026-11-03T09:00", channel="phone",
                                category="pipe_damage"), at("2026-11-02T09:00"))  # fmt: skip
    assert new.rejection is not None and new.rejection.code == "time_in_future"


def test_illegal_unknown_unit_and_wrong_kind_are_rejections() -> None:
    st = _created()
    step = ENGINE.apply(st, ev("ticket.dispatched", "X", "2026-11-02T09:15", unit="nobody"),
                        at("2026-11-02T09:15"))  # fmt: skip
    assert step.rejection is not None and step.rejection.code == "unknown_unit"
    step = ENGINE.apply(st, ev("leak.crew_arrived", "X", "2026-11-02T09:15"), at("2026-11-02T09:15"))
    assert step.rejection is not None and step.rejection.code == "wrong_kind"


def test_duplicate_event_id_is_a_no_op() -> None:
    st = _created()
    again = ev("ticket.created", "X", "2026-11-02T09:00", id="X-c", channel="phone",
               category="hydrant_fault")  # fmt: skip
    step = ENGINE.apply(st, again, at("2026-11-02T09:30"))
    assert step.duplicate and step.rejection is None and not step.alerts
    d = ev("ticket.dispatched", "X", "2026-11-02T09:10", id="X-d", unit="runda")
    st2 = ENGINE.apply(st, d, at("2026-11-02T09:10")).state
    step = ENGINE.apply(st2, d, at("2026-11-02T09:11"))
    assert step.duplicate and step.state.to_dict() == st2.to_dict()
    # through the replayer too
    twice = ev("ticket.dispatched", "Z", "2026-11-02T09:10", id="Z-d", unit="runda")
    _, rejected, r = run([*ticket("Z", "2026-11-02T09:00", category="hydrant_fault"), twice, twice])
    assert not rejected and r.stats.duplicates == 1 and r.stats.applied == 2


# ====================================================================== meta


def _rules_md() -> Path | None:
    here = Path(__file__).resolve()
    # shared/ lies beside the checkout (../shared), for developers and CI alike
    for candidate in (here.parents[2] / "RULES.md", here.parents[2] / "docs" / "RULES.md",
                      here.parents[3] / "shared" / "docs" / "RULES.md"):  # fmt: skip
        if candidate.is_file():
            return candidate
    return None


def rule_ids_of_rules_md(text: str) -> list[str]:
    """The backticked R-prefixed IDs of RULES.md's tables and lists, in order."""
    ids: list[str] = []
    for line in text.splitlines():
        if not (line.startswith("|") or line.lstrip().startswith("- ")):
            continue
        for rid in re.findall(r"`(R\d+[^`\s]*)`", line):
            if rid not in ids:
                ids.append(rid)
    return ids


def _test_prefix(rid: str) -> str:
    return "test_" + re.sub(r"[.()]", "_", rid).rstrip("_") + "_"




def test_every_rule_id_has_a_test_and_a_policy_entry() -> None:
    path = _rules_md()
    ids = list(RULE_IDS)
    if path is not None:
        parsed = rule_ids_of_rules_md(path.read_text(encoding="utf-8"))
        assert len(parsed) >= 36, f"{path}: found only {parsed}"
        ids += [r for r in parsed if r not in ids]
    policy = load_policy(Path(ENGINE.policy.path or ""))
    tests = [name for name, obj in vars(sys.modules[__name__]).items()
             if name.startswith("test_") and callable(obj)]  # fmt: skip
    missing_policy = [r for r in ids if r not in policy.rules]
    missing_test = [r for r in ids if not any(t.startswith(_test_prefix(r)) for t in tests)]
    untested_policy = [r for r in policy.rules
                       if not any(t.startswith(_test_prefix(r)) for t in tests)]  # fmt: skip
    assert not missing_policy, f"rule IDs without a policy entry: {missing_policy}"
    assert not missing_test, f"rule IDs without a test named after them: {missing_test}"
    assert not untested_policy, f"policy rules without a test: {untested_policy}"
