"""The pure parts of the resident fan-out (notifiers/fanout.py): targeting, expansion, quiet hours, progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifiers import fanout as fo
from notifiers.quiet import QuietHours
from waterwatch.events import Resident
from waterwatch.residents import ResidentDirectory

TZ = ZoneInfo("Asia/Shanghai")
QUIET = QuietHours([("21:00", "08:00")], TZ)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


def notice(kind: str, starts: str = "2026-12-01T09:00:00", area: dict[str, Any] | None = None) -> dict[str, Any]:
    aid = f"O-1/R19.1/{kind}"
    return {"id": aid, "type": "notice.due",
            "data": {"alert_id": aid, "notice": kind, "unit": "runda", "level": "notice", "notify": ["residents"],
                     "context": {"area": area if area is not None else {"compounds": ["yinhe-garden"]},
                                 "starts_at": f"{starts}+08:00"}}}  # fmt: skip


def directory() -> ResidentDirectory:
    d = ResidentDirectory()
    rows = [
        Resident(account="a3", phone="+8613800000003", email="a3@x.invalid", compounds=["yinhe-garden"],
                 consent={"sms": False, "email": True}),
        Resident(account="a1", phone="+8613800000001", email="a1@x.invalid", compounds=["yinhe-garden"],
                 language="en", consent={"sms": True, "email": True}),
        Resident(account="a2", phone="+8613800000002", compounds=["yinhe-garden"], districts=["gulou"]),
        Resident(account="b1", phone="+8613800000011", email="b1@x.invalid", compounds=["fenghuang-yuan"]),
        Resident(account="b2", email="b2@x.invalid", zones=["zone-3"]),
    ]  # fmt: skip
    for r in rows:
        d.upsert(r)
    return d


def test_alert_fields() -> None:
    a = notice("pre_outage")
    assert fo.notice_kind(a) == "pre_outage"
    assert fo.outage_area(a) == {"compounds": ["yinhe-garden"]}
    assert fo.starts_at(a) == at("2026-12-01T09:00:00")
    assert fo.outage_area(notice("pre_outage", area={})) is None
    assert fo.outage_area({"data": {"context": {}}}) is None
    assert fo.unit_of(a) == "runda" and fo.alert_id_of(a) == "O-1/R19.1/pre_outage"
    assert fo.account_of(fo.recipient_key("100-1")) == "100-1"
    assert fo.account_of("unit:runda:duty") is None


def test_targets_are_the_union_each_once_sorted() -> None:
    d = directory()
    assert fo.target_accounts(d, {"compounds": ["yinhe-garden"]}) == ["a1", "a2", "a3"]
    assert fo.target_accounts(d, {"compounds": ["YINHE-GARDEN"], "districts": ["gulou"], "zones": ["zone-3"],
                                  "accounts": ["b1", "nobody"]}) == ["a1", "a2", "a3", "b1", "b2"]  # fmt: skip
    assert fo.target_accounts(d, {"compounds": ["nowhere"]}) == []


def test_expand_one_per_household_and_channel_with_an_address() -> None:
    d = directory()
    out = list(fo.expand(d, fo.target_accounts(d, {"compounds": ["yinhe-garden"]})))
    assert [(r.account, r.channel, r.consent) for r in out] == [
        ("a1", "sms", True), ("a1", "email", True), ("a2", "sms", True), ("a3", "sms", False), ("a3", "email", True),
    ]  # fmt: skip
    assert out[0].language == "en" and out[2].language == "zh"
    assert out[0].address == "+8613800000001"


def test_expand_resumes_and_skips_removed_households() -> None:
    d = directory()
    accounts = fo.target_accounts(d, {"compounds": ["yinhe-garden"]})
    d.remove("a2")
    assert [r.account for r in fo.expand(d, accounts, ("sms",))] == ["a1", "a3"]
    assert [r.account for r in fo.expand(d, accounts, ("sms",), start=2)] == ["a3"]


def test_expand_is_lazy() -> None:
    d = directory()
    it = fo.expand(d, ["a1", "a2"])
    assert next(it).account == "a1"
    d.remove("a2")
    assert [r.account for r in it] == ["a1"]  # a1's e-mail; a2 gone before it was reached


def test_consent_at_send_time() -> None:
    d = directory()
    assert fo.consents(d, "a1", "sms") and not fo.consents(d, "a3", "sms") and fo.consents(d, "a3", "email")
    assert not fo.consents(d, "ghost", "sms")
    d.upsert(Resident(account="a1", phone="+8613800000001", compounds=["yinhe-garden"], consent={"sms": False}))
    assert not fo.consents(d, "a1", "sms")


def test_quiet_outside_the_window_sends_now() -> None:
    for kind in ("pre_outage", "delay_update", "correction", "restoration", "emergency_outage"):
        assert fo.quiet_gate(notice(kind), QUIET, at("2026-11-29T12:00:00")) == (None, "")


def test_urgent_notices_are_not_held() -> None:
    for kind in ("restoration", "emergency_outage"):
        until, why = fo.quiet_gate(notice(kind), QUIET, at("2026-11-28T23:30:00"))
        assert until is None and "urgent" in why


def test_non_urgent_updates_wait_for_the_window_end() -> None:
    for kind in ("delay_update", "correction"):
        until, why = fo.quiet_gate(notice(kind), QUIET, at("2026-11-28T23:30:00"))
        assert until == at("2026-11-29T08:00:00") and "quiet hours" in why


def test_pre_notice_never_held_past_start_minus_48h() -> None:
    # due at 22:00, start − 48 h is 22:00 too: holding to 08:00 would be 10 h late → sent at once
    until, why = fo.quiet_gate(notice("pre_outage", starts="2026-12-01T22:00:00"), QUIET, at("2026-11-29T22:00:00"))
    assert until is None and "48 h" in why
    # an early pre-notice (start is 3 days away): waiting for 08:00 keeps R19.1 → held
    until, _ = fo.quiet_gate(notice("pre_outage", starts="2026-12-03T09:00:00"), QUIET, at("2026-11-29T22:00:00"))
    assert until == at("2026-11-30T08:00:00")
    # the window ends exactly at start − 48 h: held to then, not later
    until, _ = fo.quiet_gate(notice("pre_outage", starts="2026-12-02T08:00:00"), QUIET, at("2026-11-29T22:00:00"))
    assert until == at("2026-11-30T08:00:00")
    # no starts_at: the deadline is unknown, never hold
    a = notice("pre_outage")
    del a["data"]["context"]["starts_at"]
    assert fo.quiet_gate(a, QUIET, at("2026-11-29T22:00:00"))[0] is None


def test_no_quiet_hours_configured() -> None:
    none = QuietHours([], TZ)
    assert fo.quiet_gate(notice("delay_update"), none, at("2026-11-28T23:30:00")) == (None, "")


def test_progress_counts_each_delivery_once() -> None:
    p = fo.Progress("n1", "runda", "pre_outage", households=2, jobs=3, expanded=True)
    assert p.pending == 3 and not p.complete
    assert p.outcome("d1", "sent", "a1")
    assert not p.outcome("d1", "delivered", "a1")  # a receipt after sent: already counted
    assert not p.outcome("d2", "waiting", "a1")  # not terminal
    assert p.outcome("d2", "skipped", "a1")
    assert p.pending == 1
    assert p.outcome("d3", "in_doubt", "a2")
    assert p.complete and p.counts == {"sent": 1, "skipped": 1, "failed": 0, "in_doubt": 1}
    assert p.reached == {"a1"}
    assert "sent 1, pending 0, failed 0, skipped 1, in doubt 1" in p.line()


def test_progress_before_expansion_has_unknown_pending() -> None:
    p = fo.Progress("n1")
    p.outcome("d1", "failed", "a1")
    assert p.pending == -1 and not p.complete and "pending ?" in p.line() and "failed 1" in p.line()


def test_progress_eta_and_how_late_a_pre_notice_fan_out_would_finish() -> None:
    p = fo.Progress("a1", "runda", "pre_outage", starts_at=1_000_000.0 + 48 * 3600 + 60, started=1_000_000.0)
    p.households = p.jobs = 100
    assert p.eta(1_000_010.0) is None  # not expanded yet
    p.expanded = True
    for i in range(10):
        p.outcome(f"d{i}", "sent", f"A{i}")
    assert p.eta(1_000_010.0) == pytest.approx(90.0)  # 10 done in 10 s, 90 to go
    assert p.late_by(1_000_010.0) == pytest.approx(40.0)  # finishes at +100 s, deadline at +60 s
    assert p.late_by(1_000_001.0) is None or p.late_by(1_000_001.0) > 0
    on_time = fo.Progress("a2", "runda", "pre_outage", starts_at=1_000_000.0 + 50 * 3600, started=1_000_000.0)
    on_time.jobs, on_time.expanded = 100, True
    on_time.outcome("d", "sent", "A")
    assert on_time.late_by(1_000_001.0) is None
    other = fo.Progress("a3", "runda", "delay_update", starts_at=1_000_000.0, started=1_000_000.0)
    other.jobs, other.expanded = 10, True
    other.outcome("d", "sent", "A")
    assert other.late_by(1_000_100.0) is None  # only pre-outage notices have the 48 h deadline


def test_residents_quiet_hours_agree_between_the_policy_and_the_routing() -> None:
    """The engine schedules pre-notices before them (policy.yaml); the notifier holds other notices (routing.yaml)."""
    from pathlib import Path

    from notifiers.routing import load_routing
    from waterwatch.core.config import load_config

    cfg = load_config(None)
    routing = load_routing(Path(cfg.directory) / "routing.yaml", cfg.units)
    quiet = routing.quiet_hours("residents")
    t0 = datetime(2026, 11, 23, 0, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    for minute in range(0, 24 * 60, 15):
        t = t0 + minute * 60
        local = datetime.fromtimestamp(t, ZoneInfo("Asia/Shanghai")).time()
        in_policy = any((a <= local < b) if a < b else (local >= a or local < b)
                        for a, b in cfg.policy.resident_quiet_hours)  # fmt: skip
        assert quiet.is_quiet(t) == in_policy, local


def test_a_delivery_in_doubt_then_settled_counts_once_under_its_final_outcome() -> None:
    p = fo.Progress("n1", "runda", "pre_outage", households=2, jobs=2, expanded=True)
    assert p.outcome("d1", "in_doubt", "A1")
    assert p.counts["in_doubt"] == 1 and p.done == 1
    assert not p.outcome("d1", "in_doubt", "A1")  # seen again: nothing changes
    assert p.outcome("d1", "sent", "A1")  # settled (confirmed, or sent again)
    assert p.counts["in_doubt"] == 0 and p.counts["sent"] == 1 and p.done == 1 and "A1" in p.reached
    assert not p.outcome("d1", "sent", "A1")


def test_no_eta_alert_for_a_notice_whose_48_hours_had_passed_when_it_came() -> None:
    """The engine raises R19.1 for the late announcement; the fan-out's speed cannot change it."""
    p = fo.Progress("a1", "runda", "pre_outage", starts_at=1_000_000.0 + 3600, started=1_000_000.0,
                    households=10, jobs=10, expanded=True)  # fmt: skip
    p.outcome("d1", "sent", "A1")
    assert p.eta(1_000_010.0) is not None and p.late_by(1_000_010.0) is None
