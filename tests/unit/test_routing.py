"""Routing: roles of an alert → targets (recipient, channel, address), from config/routing.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from notifiers.routing import (
    Plan,
    Routing,
    Target,
    delivery_id,
    load_routing,
    masked,
)
from waterwatch.core.errors import ConfigError
from waterwatch.core.policy import load_policy
from waterwatch.core.units import UnitsDirectory, load_units

CONFIG = Path(__file__).resolve().parents[2] / "config"
ROUTING_TEXT = (CONFIG / "routing.yaml").read_text(encoding="utf-8")
UNITS_TEXT = (CONFIG / "units.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def units() -> UnitsDirectory:
    return load_units(CONFIG / "units.yaml")


@pytest.fixture(scope="module")
def routing(units: UnitsDirectory) -> Routing:
    policy = load_policy(CONFIG / "policy.yaml")
    return load_routing(CONFIG / "routing.yaml", units, known_rules=policy.rules.keys())


def alert(
    level: str = "warning",
    *,
    rule: str = "R15.2",
    unit: str | None = "runda",
    notify: list[str] | None = None,
    envelope: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "alert_id": f"M-1/{rule}/{level}",
        "matter_id": "M-1",
        "matter_kind": "ticket",
        "rule": rule,
        "clock": "resolve",
        "level": level,
        "stage": level,
        "due_at": "2026-11-27T12:00:00+08:00",
        "fired_at": "2026-11-27T09:00:00+08:00",
        "notify": ["unit"] if notify is None else notify,
        "message": "test",
        "context": {},
        **extra,
    }
    if unit is not None:
        data["unit"] = unit
    if not envelope:
        return data
    kind = "notice.due" if level == "notice" else f"alert.{level}"
    return {"specversion": "1.0", "id": data["alert_id"], "type": kind, "subject": "M-1", "data": data}


def pairs(plan: Plan) -> list[tuple[str, str]]:
    return [(t.recipient_key, t.channel) for t in plan.targets]


def write(tmp_path: Path, text: str, name: str = "routing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def replaced(old: str, new: str, base: str = ROUTING_TEXT) -> tuple[str, int]:
    """``base`` with the one line holding ``old`` rewritten; also that line's number (1-based)."""
    assert base.count(old) == 1, old
    line = base[: base.index(old)].count("\n") + 1
    return base.replace(old, new), line


# --------------------------------------------------------------------------- the shipped file


def test_the_shipped_routing_loads_and_knows_every_role_the_policy_and_engine_use(routing: Routing) -> None:
    policy = load_policy(CONFIG / "policy.yaml")
    roles = {r for rule in policy.rules.values() for r in rule.notify}
    roles |= {r for rule in policy.rules.values() for step in rule.escalate for r in step.notify}
    roles |= {r for level_roles in policy.notify.values() for r in level_roles}
    roles |= {"public", "residents"}  # the engine's own: approved public notice, resident notices
    assert routing.unknown_roles(roles) == []
    assert routing.unknown_roles(["unit", "nobody", "nobody"]) == ["nobody"]


def test_a_warning_reaches_the_units_duty_phone_and_mailbox_not_urgently(routing: Routing) -> None:
    plan = routing.plan(alert("warning"))
    assert pairs(plan) == [("unit:runda:duty", "sms"), ("unit:runda:duty", "email")]
    sms, email = plan.targets
    assert sms.address == "+8613800000010" and email.address == "duty@runda.example.invalid"
    assert sms.role == "unit" and sms.language == "zh"
    assert not plan.urgent and not plan.residents and plan.unresolved == ()
    assert plan.alert_id == "M-1/R15.2/warning" and plan.level == "warning" and plan.rule == "R15.2"


def test_overdue_adds_ops_and_the_warning_group_robot_with_the_unit_head_mentioned(routing: Routing) -> None:
    plan = routing.plan(alert("overdue", notify=["unit", "ops", "warning_group"]))
    assert pairs(plan) == [
        ("unit:runda:duty", "sms"),
        ("unit:runda:duty", "email"),
        ("unit:ops:duty", "sms"),
        ("unit:ops:duty", "email"),
        ("group:warning_group", "wecom"),
    ]
    robot = plan.targets[-1]
    assert robot.address == "WATERWATCH_WECOM_WARNING_GROUP_KEY"
    assert robot.mentions == ("13800000011",)  # runda's head, national format for WeCom
    assert all(t.mentions == () for t in plan.targets[:-1])
    assert plan.urgent


def test_escalation_reaches_the_unit_head_and_the_leaders(routing: Routing) -> None:
    plan = routing.plan(alert("escalation", notify=["unit_head", "leaders"]))
    assert pairs(plan) == [
        ("unit:runda:head", "sms"),
        ("unit:runda:head", "email"),
        ("role:leaders", "sms"),
        ("role:leaders", "email"),
    ]
    assert plan.targets[0].address == "+8613800000011"
    assert plan.targets[2].address == "+8613800000001"
    assert plan.urgent


@pytest.mark.parametrize(
    ("level", "urgent"),
    [("warning", False), ("reminder", False), ("overdue", True), ("escalation", True), ("violation", True)],
)
def test_urgency_by_level(routing: Routing, level: str, urgent: bool) -> None:
    assert routing.plan(alert(level)).urgent is urgent


def test_an_emergency_outage_warning_r19_2_is_urgent_but_its_resident_notice_is_not(routing: Routing) -> None:
    warning = routing.plan(alert("warning", rule="R19.2", notify=["unit", "ops"]))
    assert warning.urgent
    assert ("group:warning_group", "wecom") in pairs(warning)  # added by the rule override
    assert warning.targets[-1].mentions == ("13800000011",)
    notice = routing.plan(alert("notice", rule="R19.2", notify=["residents"], notice="emergency_outage"))
    assert notice.residents and notice.targets == [] and not notice.urgent and not notice.empty


def test_residents_are_flagged_not_resolved_alongside_other_roles(routing: Routing) -> None:
    plan = routing.plan(alert("notice", notify=["residents", "ops"], notice="pre_outage"))
    assert plan.residents
    assert pairs(plan) == [("unit:ops:duty", "sms"), ("unit:ops:duty", "email")]


def test_a_unit_id_as_a_role_reaches_that_unit_and_duplicates_collapse(routing: Routing) -> None:
    plan = routing.plan(alert("warning", rule="R22", notify=["unit", "runda"]))
    assert pairs(plan) == [("unit:runda:duty", "sms"), ("unit:runda:duty", "email")]
    assert {t.role for t in plan.targets} == {"unit"}  # the first role wins
    other = routing.plan(alert("warning", unit="chengnan", notify=["unit", "runda", "office"]))
    assert pairs(other) == [
        ("unit:chengnan:duty", "sms"),
        ("unit:chengnan:duty", "email"),
        ("unit:runda:duty", "sms"),
        ("unit:runda:duty", "email"),
        ("unit:office:duty", "sms"),
        ("unit:office:duty", "email"),
    ]
    assert [t.role for t in other.targets][2:4] == ["runda", "runda"]


def test_the_same_address_through_two_contacts_is_one_target(tmp_path: Path) -> None:
    # leaders share the ops duty phone, written without +86: still the same number
    text = UNITS_TEXT.replace('phone: "+8613800000001"', 'phone: "13800000070"', 1)
    units = load_units(write(tmp_path, text, "units.yaml"))
    routing = load_routing(CONFIG / "routing.yaml", units)
    plan = routing.plan(alert("escalation", notify=["ops", "leaders"]))
    assert pairs(plan) == [("unit:ops:duty", "sms"), ("unit:ops:duty", "email"), ("role:leaders", "email")]


def test_an_empty_notify_list_uses_the_levels_default_roles(routing: Routing) -> None:
    plan = routing.plan(alert("overdue", notify=[]))
    assert {t.role for t in plan.targets} == {"unit", "ops", "warning_group"}
    missing = alert("escalation")
    del missing["data"]["notify"]
    assert {t.role for t in routing.plan(missing).targets} == {"unit_head", "leaders"}


def test_an_alert_without_a_unit_still_reaches_the_other_roles_and_says_what_is_missing(routing: Routing) -> None:
    plan = routing.plan(alert("overdue", unit=None, notify=["unit", "ops", "warning_group"]))
    assert pairs(plan) == [("unit:ops:duty", "sms"), ("unit:ops:duty", "email"), ("group:warning_group", "wecom")]
    assert plan.unresolved == ("unit: the alert has no unit", "mention unit.head: the alert has no unit")
    assert plan.targets[-1].mentions == ()
    lonely = routing.plan(alert("escalation", unit=None, notify=["unit_head"]))
    assert lonely.empty and lonely.unresolved == ("unit_head: the alert has no unit",)


def test_unknown_units_and_roles_are_reported_not_raised(routing: Routing) -> None:
    plan = routing.plan(alert("warning", unit="atlantis", notify=["unit", "nobody", "ops"]))
    assert pairs(plan) == [("unit:ops:duty", "sms"), ("unit:ops:duty", "email")]
    assert plan.unresolved == ("unit: unit 'atlantis' is not in the units directory", "nobody: unknown role")


def test_a_unit_without_a_robot_is_reported_when_its_robot_is_asked_for(tmp_path: Path, units: UnitsDirectory) -> None:
    text = ROUTING_TEXT.replace(
        "  unit_head:\n", "  unit_robot:\n    - {to: unit.wecom, channels: [wecom]}\n  unit_head:\n", 1
    )
    routing = load_routing(write(tmp_path, text), units)
    assert pairs(routing.plan(alert("warning", notify=["unit_robot"]))) == [("group:unit:runda", "wecom")]
    plan = routing.plan(alert("warning", unit="office", notify=["unit_robot"]))
    assert plan.targets == [] and plan.unresolved == ("unit_robot: units.office.wecom has no wecom_robot_env",)


def test_the_bare_data_is_accepted_and_the_level_can_come_from_the_type(routing: Routing) -> None:
    assert pairs(routing.plan(alert("warning", envelope=False))) == pairs(routing.plan(alert("warning")))
    event = alert("overdue")
    del event["data"]["level"]
    assert routing.plan(event).level == "overdue" and routing.plan(event).urgent


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"alert_id": None}, "no alert_id"),
        ({"level": "panic"}, "not one of"),
        ({"notify": "unit"}, "list of role names"),
        ({"notify": ["unit", 3]}, "list of role names"),
    ],
)
def test_what_is_not_an_alert_raises(routing: Routing, change: dict[str, Any], problem: str) -> None:
    event = alert("warning", envelope=False)
    event.update(change)
    if event.get("alert_id") is None:
        del event["alert_id"]
    with pytest.raises(ValueError, match=problem):
        routing.plan(event)


def test_no_level_at_all_raises(routing: Routing) -> None:
    event = alert("warning", envelope=False)
    del event["level"]
    with pytest.raises(ValueError, match="no level"):
        routing.plan(event)


# --------------------------------------------------------------------------- fallback, channels, language


def test_the_robot_falls_back_to_the_ops_duty_phone_unless_the_plan_already_texts_ops(routing: Routing) -> None:
    plan = routing.plan(alert("warning", rule="R23", notify=["unit", "warning_group"]))
    robot = plan.targets[-1]
    assert (robot.fallback, robot.fallback_address, robot.fallback_key) == ("sms", "+8613800000070", "unit:ops:duty")
    with_ops = routing.plan(alert("overdue", notify=["unit", "ops", "warning_group"]))
    assert with_ops.targets[-1].fallback is None


def test_sms_falls_back_to_the_same_contacts_email_only_when_the_plan_sends_no_email(
    tmp_path: Path, units: UnitsDirectory
) -> None:
    text, _ = replaced("  reminder:   {default: [unit, ops], urgent: false}",
                       "  reminder:   {default: [unit, ops], urgent: false, channels: [sms]}")  # fmt: skip
    routing = load_routing(write(tmp_path, text), units)
    plan = routing.plan(alert("reminder", notify=["unit_head"]))
    assert pairs(plan) == [("unit:runda:head", "sms")]
    head = plan.targets[0]
    assert (head.fallback, head.fallback_address, head.fallback_key) == (
        "email",
        "head@runda.example.invalid",
        "unit:runda:head",
    )
    assert all(t.fallback is None for t in routing.plan(alert("warning")).targets)  # email already planned


def test_a_units_robot_falls_back_to_that_units_duty_phone(tmp_path: Path, units: UnitsDirectory) -> None:
    text = ROUTING_TEXT.replace(
        "  unit_head:\n", "  unit_robot:\n    - {to: unit.wecom, channels: [wecom]}\n  unit_head:\n", 1
    )
    text, _ = replaced(
        "  wecom: {channel: sms, to: units.ops.duty, after: 2}", "  wecom: {channel: sms, after: 2}", text
    )
    routing = load_routing(write(tmp_path, text), units)
    (robot,) = routing.plan(alert("warning", unit="shuixing", notify=["unit_robot"])).targets
    assert (robot.recipient_key, robot.address) == ("group:unit:shuixing", "WATERWATCH_WECOM_SHUIXING_KEY")
    assert (robot.fallback, robot.fallback_address, robot.fallback_key) == (
        "sms",
        "+8613800000020",
        "unit:shuixing:duty",
    )
    (group,) = routing.plan(alert("warning", notify=["warning_group"])).targets
    assert group.fallback is None  # the warning group has no phone of its own


def test_retry_policies_per_channel_carry_the_fallback_threshold(routing: Routing) -> None:
    assert routing.retry_policy("sms").fallback_after == 3
    assert routing.retry_policy("wecom").fallback_after == 2
    assert routing.retry_policy("wecom").base_delay == 10 and routing.retry_policy("wecom").max_delay == 300
    assert routing.retry_policy("email").fallback_after is None
    assert routing.retry_policy("sms").max_attempts == 6 and routing.retry_policy("sms").base_delay == 30
    assert routing.retry_policy("sms").useful is routing.useful


def test_provider_pacing_email_batches_and_the_in_doubt_check(routing: Routing) -> None:
    sms, email = routing.providers["sms"], routing.providers["email"]
    assert (sms.per_second, sms.burst, sms.batch) == (100, 100, 1)
    assert (email.per_second, email.burst, email.batch, email.batch_wait) == (50, 50, 1000, 1.0)
    bucket = sms.bucket()
    assert bucket is not None and bucket.rate_per_s == 100 and bucket.burst == 100
    assert routing.retry_policy("sms").in_doubt_check == 120 == routing.retry_policy("email").in_doubt_check


def test_wecom_limits_quiet_hours_and_time_zone(routing: Routing) -> None:
    bucket = routing.wecom.bucket()
    assert bucket.rate_per_s == pytest.approx(20 / 60) and bucket.burst == 20
    assert routing.wecom.merge().window == 10 and routing.wecom.merge().limit_bytes == 4096
    assert routing.timezone == "Asia/Shanghai"
    assert [(f"{a:%H:%M}", f"{b:%H:%M}") for a, b in routing.quiet_hours("units").windows] == [("22:00", "07:00")]
    assert [(f"{a:%H:%M}", f"{b:%H:%M}") for a, b in routing.quiet_hours("residents").windows] == [("21:00", "08:00")]


def test_language_per_unit_and_role(tmp_path: Path, units: UnitsDirectory) -> None:
    text, _ = replaced("  units: {}\n  roles: {}", "  units: {boyang_design: en}\n  roles: {leaders: en}")
    routing = load_routing(write(tmp_path, text), units)
    plan = routing.plan(alert("escalation", unit="boyang_design", notify=["unit_head", "leaders", "ops"]))
    assert [(t.recipient_key, t.language) for t in plan.targets if t.channel == "sms"] == [
        ("unit:boyang_design:head", "en"),
        ("role:leaders", "en"),
        ("unit:ops:duty", "zh"),
    ]


# --------------------------------------------------------------------------- ids and logs


def test_delivery_ids_are_stable_short_and_unambiguous() -> None:
    one = delivery_id("A-1", "unit:runda:duty", "sms")
    assert one == delivery_id("A-1", "unit:runda:duty", "sms")
    assert re.fullmatch(r"[0-9a-f]{32}", one)
    assert len({one, delivery_id("A-1", "unit:runda:duty", "email"), delivery_id("A-2", "unit:runda:duty", "sms"),
                delivery_id("A-1", "unit:runda:head", "sms")}) == 4  # fmt: skip
    assert delivery_id("a:b", "c", "sms") != delivery_id("a", "b:c", "sms")


def test_masked_targets_hold_no_clear_phone_or_email(routing: Routing) -> None:
    plan = routing.plan(alert("overdue", rule="R23", notify=["unit", "warning_group"]))
    lines = [masked(t) for t in plan.targets]
    text = "\n".join(lines)
    assert "13800000010" not in text and "13800000011" not in text and "duty@runda" not in text
    assert lines[0] == "unit:runda:duty sms +86138****0010 zh role=unit"
    assert lines[-1] == (
        "group:warning_group wecom WATERWATCH_WECOM_WARNING_GROUP_KEY zh role=warning_group @138****0011 "
        "fallback=sms:unit:ops:duty"
    )
    for t in plan.targets:
        assert not re.search(r"\d{7,}", masked(t))


def test_targets_are_plain_frozen_values() -> None:
    t = Target("role:leaders", "sms", "+8613800000001", "zh", "leaders")
    with pytest.raises(AttributeError):
        t.address = "x"  # type: ignore[misc]
    assert t.mentions == () and t.fallback is None


# --------------------------------------------------------------------------- config errors name file and line


BAD_CASES = [
    # (old line fragment, new text, expected message fragment)
    (
        "    - {to: units.ops.duty, channels: [sms, email]}",
        "    - {to: units.nowhere.duty, channels: [sms, email]}",
        "unknown unit 'nowhere'",
    ),
    (
        "    - {to: roles.leaders, channels: [sms, email]}",
        "    - {to: roles.nobody, channels: [sms, email]}",
        "unknown contact 'roles.nobody'",
    ),
    (
        "    - {to: unit.duty, channels: [sms, email]}",
        "    - {to: unit.duty, channels: [sms, fax]}",
        "unknown channel 'fax'",
    ),
    ("    - {to: unit.duty, channels: [sms, email]}", "    - {to: unit.duty, channels: [sms, sms]}", "listed twice"),
    ("    - {to: unit.duty, channels: [sms, email]}", "    - {to: unit.duty, channels: []}", "names no channel"),
    ("    - {to: unit.duty, channels: [sms, email]}", "    - {to: unit.boss, channels: [sms]}", "is not unit.PART"),
    ("    - {to: unit.duty, channels: [sms, email]}", "    - {to: unit.wecom, channels: [sms]}", "WeCom robot"),
    (
        "    - {to: units.office.duty, channels: [email]}",
        "    - {to: units.office.wecom, channels: [wecom]}",
        "has no wecom_robot_env",
    ),
    (
        "    - {to: roles.warning_group, channels: [wecom]}",
        "    - {to: roles.warning_group, channels: [sms]}",
        "has no phone",
    ),
    (
        "  warning:    {default: [unit], urgent: false}",
        "  warning:    {default: [unit, nobody], urgent: false}",
        "unknown role 'nobody'",
    ),
    (
        "  warning:    {default: [unit], urgent: false}",
        "  warning:    {default: [unit], urgent: maybe}",
        "must be true or false",
    ),
    (
        "  warning:    {default: [unit], urgent: false}",
        "  warnings:   {default: [unit], urgent: false}",
        "unknown level",
    ),
    ("  warning:    {default: [unit], urgent: false}", "  warning:    {default: [unit], loud: true}", "unknown key"),
    ("    levels: [warning]", "    levels: [warnings]", "unknown level 'warnings'"),
    ("    mentions: [unit.head]\n\n#", "    mentions: [units.ops.chief]\n\n#", "is not unit.PART"),
    ('  residents: [["21:00", "08:00"]]', '  residents: [["21:00", "25:00"]]', "'25:00' is not a time"),
    ('  units: [["22:00", "07:00"]]', '  units: [["22:00", "7:00"]]', "'7:00' is not a time"),
    ('  units: [["22:00", "07:00"]]', '  units: [["22:00", "22:00"]]', "window is empty"),
    ('  units: [["22:00", "07:00"]]', '  units: ["22:00", "07:00"]', "pair"),
    ("  base_delay: 30s", "  base_delay: 30 seconds", "is not a duration"),
    ("  sms:   {channel: email, after: 3}", "  sms:   {channel: email, after: 9}", "exceeds max_attempts"),
    ("  factor: 2", "  factor: 0.5", "number >= 1"),
    (
        "    wecom: {base_delay: 10s, max_delay: 5m}",
        "    wecom: {base_delay: 10s, max_delay: 5m, jitter: 1}",
        "unknown key",
    ),
    ("    wecom: {base_delay: 10s, max_delay: 5m}", "    fax: {base_delay: 10s}", "unknown channel"),
    ("    notice.pre_outage: starts_at", "    notice.pre_outage: sometime", "is not a duration"),
    ("    notice.pre_outage: starts_at", "    notice.party: 2h", "not a level"),
    ("  sms:   {channel: email, after: 3}", "  sms:   {channel: sms, after: 3}", "another channel"),
    ("  sms:   {channel: email, after: 3}", "  sms:   {channel: email, after: 0}", "whole number >= 1"),
    ("  sms:   {channel: email, after: 3}", "  sms:   {channel: email}", "needs channel and after"),
    ("  max_bytes: 4096", "  max_bytes: 5000", "at most 4096"),
    ("  per_minute: 20", "  per_minute: fast", "number >= 1"),
    ("  default: zh", "  default: fr", "must be one of zh, en"),
    ("  units: {}\n", "  units: {atlantis: en}\n", "unknown unit 'atlantis'"),
    ("timezone: Asia/Shanghai", "timezone: Mars/Olympus", "unknown time zone"),
    ("timezone: Asia/Shanghai", "timezones: Asia/Shanghai", "unknown key"),
    ("version: 1", "version: 2", "must be 1"),
    ("  unit_head:\n", "  residents:\n    - {to: unit.duty, channels: [sms]}\n  unit_head:\n", "resident fan-out"),
    ("  unit_head:\n", "  unit:\n", "duplicate key 'unit'"),
    ("  email: {per_second: 50, burst: 50, batch: 1000, batch_wait: 1s}",
     "  email: {per_second: 50, burst: 50, batch: 1001, batch_wait: 1s}", "SendGrid takes at most 1000"),
    ("  sms:   {per_second: 100, burst: 100}", "  sms:   {per_second: 100, batch: 5}",
     "providers.sms.batch: unknown key"),
    ("  sms:   {per_second: 100, burst: 100}", "  wecom: {per_second: 1}", "sms or email"),
    ("  sms:   {per_second: 100, burst: 100}", "  sms:   {per_second: 0}", "providers.sms.per_second"),
    ("  in_doubt_check: 2m", "  in_doubt_check: soon", "retry.in_doubt_check"),
]


@pytest.mark.parametrize(("old", "new", "problem"), BAD_CASES, ids=[c[2] for c in BAD_CASES])
def test_bad_routing_files_fail_naming_the_file_and_line(
    tmp_path: Path, units: UnitsDirectory, old: str, new: str, problem: str
) -> None:
    text, line = replaced(old, new)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_routing(path, units)
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)


def test_rule_overrides_are_checked_against_the_policys_rule_ids(tmp_path: Path, units: UnitsDirectory) -> None:
    text, line = replaced("  R19.2:", "  R19.9:")
    path = write(tmp_path, text)
    load_routing(path, units)  # without the policy's ids anything goes
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:{line}: rules.R19.9: unknown rule id"):
        load_routing(path, units, known_rules=["R19.2"])


def test_yaml_syntax_and_missing_sections_name_the_file(tmp_path: Path, units: UnitsDirectory) -> None:
    with pytest.raises(ConfigError, match=r"routing.yaml:\d+: YAML syntax"):
        load_routing(write(tmp_path, "version: 1\nroles: [unclosed\n"), units)
    with pytest.raises(ConfigError, match=r"routing.yaml:1: roles: is required"):
        load_routing(write(tmp_path, "version: 1\nlevels: {}\n"), units)
    with pytest.raises(ConfigError, match=r"routing.yaml:1: the routing file must be a mapping"):
        load_routing(write(tmp_path, "- 1\n"), units)
    with pytest.raises(ConfigError, match="cannot read"):
        load_routing(tmp_path / "missing.yaml", units)


def test_a_minimal_file_gets_the_documented_defaults(tmp_path: Path, units: UnitsDirectory) -> None:
    text = (
        "version: 1\nroles:\n  unit:\n    - {to: unit.duty, channels: [sms]}\nlevels:\n  warning: {default: [unit]}\n"
    )
    routing = load_routing(write(tmp_path, text), units)
    assert pairs(routing.plan(alert("warning", notify=[]))) == [("unit:runda:duty", "sms")]
    assert pairs(routing.plan(alert("warning", notify=["safety"]))) == [
        ("unit:safety:duty", "sms"),
        ("unit:safety:duty", "email"),
    ]  # any_unit default: duty by sms and email
    assert not routing.plan(alert("overdue")).urgent  # levels not listed: not urgent
    assert routing.retry_policy("sms").fallback_after is None
    assert routing.wecom.per_minute == 20 and routing.language_default == "zh"
    assert routing.quiet_hours("residents").is_quiet(1764255600.0)  # 2025-11-27 23:00 +08:00
