"""``waterwatch templates check``: every message template, rendered at its worst, within its budget.

The check renders EVERY (language, channel, kind) template with *maximal*
sample alerts — the longest unit name of the units directory, 64-character
matter ids, long realistic area descriptions, causes and summaries, a large
``late_by``, every optional field present, times that cross a year boundary —
one sample for every distinct wording a kind has (each stage of
``alert.warning``, each violation, a cancelled and a changed correction …),
and once more with *minimal* samples (every optional field absent), so a
template that mishandles a missing value fails here and not at 3 a.m.

It fails (exit 1), naming the file and the reason, on:

* a template that is missing for a (language, channel, kind) — there is no
  fallback from one language to the other;
* a Jinja syntax error (file and line);
* a variable the template uses but the alert view does not define
  (``StrictUndefined``), or anything the sandbox refuses;
* an SMS over its segment budget (``templates/budget.yaml``: 3 segments for
  resident notices, 2 for unit alerts; ``--sms-budget N`` overrides);
* a WeCom markdown message over 4096 bytes (UTF-8);
* an empty message or e-mail subject.

It prints a table (template, channel, language, SMS segments and encoding or
sizes in bytes, budget, status) and a summary.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
import yaml
from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError, TemplateNotFound, UndefinedError
from rich.console import Console
from rich.table import Table

from notifiers.sms import SmsCount, segments
from notifiers.templating import (
    ALERT_KINDS,
    CHANNELS,
    KINDS,
    LANGUAGES,
    NOTICE_KINDS,
    PARTS,
    MissingTemplate,
    Renderer,
    TemplateError,
    template_names,
    templates_dir,
)

templates_app = typer.Typer(
    help="Message templates (templates/): render every one at its worst and check its budget.",
    no_args_is_help=True,
)

DEFAULT_SMS_SEGMENTS = {"resident_notice": 3, "unit_alert": 2}
WECOM_MARKDOWN_LIMIT = 4096
"""The WeCom group robot refuses markdown content over 4096 bytes (UTF-8)."""

TZ = ZoneInfo("Asia/Shanghai")


# ------------------------------------------------------------------------ budget


@dataclass(frozen=True)
class Budget:
    """SMS segments per kind and the WeCom markdown limit (``templates/budget.yaml``)."""

    resident_notice: int = DEFAULT_SMS_SEGMENTS["resident_notice"]
    unit_alert: int = DEFAULT_SMS_SEGMENTS["unit_alert"]
    per_kind: Mapping[str, int] = field(default_factory=dict)
    wecom_markdown_bytes: int = WECOM_MARKDOWN_LIMIT
    override: int | None = None

    def sms_segments(self, kind: str) -> int:
        if self.override is not None:
            return self.override
        if kind in self.per_kind:
            return self.per_kind[kind]
        return self.resident_notice if kind.startswith("notice.") else self.unit_alert


class BudgetError(ValueError):
    pass


def load_budget(template_dir: Path, sms_budget: int | None = None) -> Budget:
    """Read ``budget.yaml`` of ``template_dir`` (defaults when absent); ``sms_budget`` overrides every kind."""
    path = template_dir / "budget.yaml"
    if sms_budget is not None and sms_budget < 1:
        raise BudgetError(f"--sms-budget: {sms_budget} is not a number of segments (1 or more)")
    if not path.exists():
        return Budget(override=sms_budget)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BudgetError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise BudgetError(f"{path}: must be a mapping (sms_segments, wecom_markdown_bytes)")
    unknown = set(tree) - {"version", "sms_segments", "wecom_markdown_bytes"}
    if unknown:
        raise BudgetError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    sms = tree.get("sms_segments") or {}
    if not isinstance(sms, dict):
        raise BudgetError(f"{path}: sms_segments must be a mapping")
    values: dict[str, int] = {}
    for key, value in sms.items():
        if key not in DEFAULT_SMS_SEGMENTS and key not in KINDS:
            raise BudgetError(
                f"{path}: sms_segments.{key}: not resident_notice, unit_alert or a kind ({', '.join(KINDS)})"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BudgetError(f"{path}: sms_segments.{key}: {value!r} is not a number of segments (1 or more)")
        values[key] = value
    wecom = tree.get("wecom_markdown_bytes", WECOM_MARKDOWN_LIMIT)
    if not isinstance(wecom, int) or isinstance(wecom, bool) or not 1 <= wecom <= WECOM_MARKDOWN_LIMIT:
        raise BudgetError(
            f"{path}: wecom_markdown_bytes: {wecom!r} must be 1 to {WECOM_MARKDOWN_LIMIT} (the robot's limit)"
        )
    return Budget(
        resident_notice=values.pop("resident_notice", DEFAULT_SMS_SEGMENTS["resident_notice"]),
        unit_alert=values.pop("unit_alert", DEFAULT_SMS_SEGMENTS["unit_alert"]),
        per_kind=values,
        wecom_markdown_bytes=wecom,
        override=sms_budget,
    )


# ------------------------------------------------------------------------ samples

LONG_SUMMARY = (
    "居民反映小区12号楼自昨晚起持续停水，多次拨打物业电话13912345678无人接听，家中有八旬老人和婴儿急需用水，"
    "请尽快派人到现场排查处理并回电说明原因和预计恢复供水时间"
)
LONG_LOCATION = "东昌府区古楼街道柳园南路与东关大街交叉口向东200米路北银河花园小区西门12号楼2单元楼前阀门井"
LONG_CAUSE = "DN600主供水管道爆裂抢修，同时更换柳园南路DN300、DN200闸阀各两台及配套管件并进行管道冲洗消毒"
LONG_REASON = "现场开挖后发现阀门井下方管道严重锈蚀，需增加一处DN300管道更换，施工时间相应顺延，详见运营管理部通知"
LONG_AREA = {
    "description": (
        "东昌府区古楼街道柳园南路以东、东关大街以南、运河路以西、兴华路以北区域，含银河花园、凤凰苑、"
        "育新街1号院、东关小学、柳园社区卫生服务中心及沿街商铺"
    ),
    "districts": ["dongchangfu", "gulou"],
    "compounds": ["yinhe-garden", "fenghuang-yuan", "yuxin-street-1", "dongguan-school"],
    "zones": ["zone-3", "zone-7"],
    "accounts": [f"{1000000 + i}" for i in range(40)],
}
OLD_AREA = {
    "description": "东昌府区古楼街道柳园南路以东、东关大街以南区域，含银河花园、凤凰苑",
    "compounds": ["yinhe-garden"],
}
MATTER_PREFIX = {"ticket": "T", "outage": "O", "leak": "L", "damage": "D", "meter": "M"}

FIRED = datetime(2026, 12, 31, 23, 58, tzinfo=TZ)
LATE_BY = 3 * 86400 + 23 * 3600 + 59 * 60  # the longest "hours" duration: 95小时59分钟
SPAN = timedelta(hours=95, minutes=59)


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def long_matter_id(matter_kind: str, length: int = 64) -> str:
    head = f"{MATTER_PREFIX.get(matter_kind, 'X')}-2026-1231-LC12345-"
    return head + "0" * (length - len(head) - 1) + "9"


@dataclass(frozen=True)
class Variant:
    """One distinct wording of a kind: the alert shape the engine produces for it."""

    kind: str
    matter_kind: str
    rule: str
    clock: str
    stage: str
    notify: tuple[str, ...]
    due: str | None  # "ahead", "now", "behind" or None (no deadline)
    keys: tuple[str, ...] = ()  # context keys of the maximal sample
    required: tuple[str, ...] = ()  # context keys the minimal sample keeps
    notice: str | None = None


_TICKET = ("summary", "location", "category", "channel", "hotline_tier", "urgency", "dispatched_at", "returns",
           "extensions_granted", "started_at", "limit", "counts", "original_due_at", "reopened_at")  # fmt: skip
_CLOCK = ("started_at", "limit", "counts")
_OUTAGE = ("area", "cause", "starts_at", "expected_end_at", "outage_kind", "pressure_limited", "hotline")
_OUT_REQ = ("area", "starts_at")

VARIANTS: tuple[Variant, ...] = (
    # alert.warning: deadline warnings and the one-off warnings of outages and leaks
    Variant("alert.warning", "ticket", "R15.4", "resolve", "warn_80", ("unit",), "ahead", _TICKET, _CLOCK),
    Variant("alert.warning", "ticket", "R13.accept", "accept", "warn_lead_15m", ("unit",), "ahead", _TICKET, _CLOCK),
    Variant("alert.warning", "ticket", "R15.7", "resolve", "deadline_unset", ("ops",), None, _TICKET),
    Variant("alert.warning", "outage", "R19.2", "report", "warning_group", ("unit", "warning_group", "ops"), None,
            (*_OUTAGE, "emergency"), _OUT_REQ),
    Variant("alert.warning", "outage", "R22", "peak", "peak", ("unit", "runda"), "now", (*_OUTAGE, "peak_alerts"),
            _OUT_REQ),
    Variant("alert.warning", "outage", "R23", "delay_report", "delay_report", ("unit", "warning_group"), "now",
            _OUTAGE, (*_OUT_REQ, "expected_end_at")),
    Variant("alert.warning", "outage", "R23", "delay", "delay_reported_9", ("unit", "warning_group"), None,
            (*_OUTAGE, "previous_expected_end_at", "reason", "delays"), (*_OUT_REQ, "expected_end_at")),
    Variant("alert.warning", "leak", "R25", "contact", "contact_user", ("unit",), None,
            ("location", "pipe_diameter_mm", "in_meter_well")),
    Variant("alert.warning", "outage", "R19.4", "ops_notice", "ops_notice", ("ops", "runda"), "now", _OUTAGE,
            _OUT_REQ),
    Variant("alert.warning", "meter", "R31", "read:2026-12", "warn_80", ("unit",), "ahead", _CLOCK, _CLOCK),
    Variant("alert.warning", "damage", "R30", "arrive", "warn_lead_20m", ("unit",), "ahead",
            ("summary", "location", *_CLOCK), _CLOCK),
    # alert.overdue
    Variant("alert.overdue", "ticket", "R15.6", "resolve", "overdue", ("unit", "ops", "warning_group"), "now",
            _TICKET, _CLOCK),
    Variant("alert.overdue", "outage", "R23", "restore", "overdue", ("unit", "warning_group"), "now",
            (*_OUTAGE, *_CLOCK), _OUT_REQ),
    Variant("alert.overdue", "meter", "R31", "read:2026-12", "overdue", ("unit", "ops", "warning_group"), "now",
            _CLOCK, _CLOCK),
    Variant("alert.overdue", "leak", "R24.repair", "repair", "overdue", ("unit", "ops", "warning_group"), "now",
            ("location", "pipe_diameter_mm", "diameter_unknown", *_CLOCK), _CLOCK),
    # alert.reminder
    Variant("alert.reminder", "ticket", "R15.6", "resolve", "reminder_3", ("unit", "ops"), "behind", _TICKET, _CLOCK),
    Variant("alert.reminder", "ticket", "R15.7", "resolve", "deadline_unset_6", ("ops",), None, _TICKET),
    # alert.escalation
    Variant("alert.escalation", "ticket", "R15.6", "resolve", "escalate_2", ("unit_head", "ops", "leaders"),
            "behind", (*_TICKET, "cites"), _CLOCK),
    Variant("alert.escalation", "ticket", "R12", "report", "immediate", ("leaders", "ops"), None,
            (*(k for k in _TICKET if k != "category"), "category_r12")),
    Variant("alert.escalation", "outage", "R12", "report", "immediate", ("leaders", "ops"), None,
            (*_OUTAGE, "emergency"), _OUT_REQ),
    # alert.violation: one per distinct stage the engine produces
    Variant("alert.violation", "ticket", "R13.resolve", "resolve", "no_extension_request", ("unit", "ops"), "now",
            _TICKET, _CLOCK),
    Variant("alert.violation", "ticket", "R14.5", "return", "late_return", ("unit", "ops"), "behind",
            (*_TICKET, "returned_by", "reason"), _CLOCK),
    Variant("alert.violation", "outage", "R19.1", "pre_notice", "late_notice", ("unit", "ops"), None, _OUTAGE,
            _OUT_REQ),
    Variant("alert.violation", "outage", "R19.3", "report", "not_in_advance", ("ops",), None, _OUTAGE, _OUT_REQ),
    Variant("alert.violation", "outage", "R19.4", "ops_notice", "late_ops_notice", ("ops", "runda"), None, _OUTAGE,
            _OUT_REQ),
    Variant("alert.violation", "outage", "R23", "restore", "no_delay_report", ("unit", "ops"), "now",
            (*_OUTAGE, *_CLOCK), _OUT_REQ),
    Variant("alert.violation", "outage", "R19.1", "pre_notice", "late_change_v9", ("unit", "ops"), None, _OUTAGE,
            _OUT_REQ),
    Variant("alert.violation", "outage", "R23", "delay", "late_delay_report_9", ("unit", "ops"), None, _OUTAGE,
            _OUT_REQ),
    # resident notices
    Variant("notice.pre_outage", "outage", "R19.1", "pre_notice", "pre_notice", ("residents",), "now",
            (*_OUTAGE, *_CLOCK), ("area", "starts_at", "expected_end_at"), "pre_outage"),
    Variant("notice.pre_outage", "outage", "R19.2", "public_notice", "public_9", ("public",), None,
            (*_OUTAGE, "public_channels", "approvals"), ("area", "starts_at", "expected_end_at"), "pre_outage"),
    Variant("notice.emergency_outage", "outage", "R19.2", "notice", "emergency_outage", ("residents",), None,
            (*_OUTAGE, "emergency"), _OUT_REQ, "emergency_outage"),
    Variant("notice.emergency_outage", "outage", "R19.2", "public_notice", "public_9", ("public",), None,
            (*_OUTAGE, "emergency", "public_channels"), _OUT_REQ, "emergency_outage"),
    Variant("notice.delay_update", "outage", "R23", "notice", "delay_update_9", ("residents",), None,
            (*_OUTAGE, "previous_expected_end_at", "delays"), ("area", "starts_at", "expected_end_at"), "delay_update"),
    Variant("notice.restoration", "outage", "R23", "notice", "restoration", ("residents",), None,
            (*_OUTAGE, "restored_at"), _OUT_REQ, "restoration"),
    Variant("notice.correction", "outage", "R19.1", "notice", "correction_9", ("residents_notified",), None,
            (*_OUTAGE, "previous", "reason", "supersedes"), ("area", "starts_at", "expected_end_at", "previous"),
            "correction"),
    Variant("notice.correction", "outage", "R19.1", "notice", "correction_8", ("residents_notified",), None,
            (*_OUTAGE, "cancelled", "reason", "supersedes"), ("area", "starts_at", "expected_end_at", "cancelled"),
            "correction"),
)  # fmt: skip


def _context_values(fired: datetime, mid: str, unit: str | None) -> dict[str, Any]:
    starts = datetime(2026, 12, 31, 22, 0, tzinfo=TZ)
    end = datetime(2027, 1, 1, 6, 0, tzinfo=TZ)  # crosses the year: the longest time format
    return {
        "summary": LONG_SUMMARY,
        "location": LONG_LOCATION,
        "category": "meter_well_multi_dept_repair",
        "category_r12": "important_party_urgent",
        "channel": "hotline_12345",
        "hotline_tier": "complex",
        "urgency": "extra_urgent",
        "dispatched_at": _iso(fired - SPAN),
        "returns": 9,
        "extensions_granted": 9,
        "started_at": _iso(fired - SPAN - SPAN),
        "limit": "95h 59m",
        "counts": "working",
        "original_due_at": _iso(fired - SPAN - timedelta(hours=12)),
        "reopened_at": _iso(fired - timedelta(hours=1)),
        "cites": "R35(3)",
        "returned_by": unit,
        "reason": LONG_REASON,
        "area": LONG_AREA,
        "cause": LONG_CAUSE,
        "starts_at": _iso(starts),
        "expected_end_at": _iso(end),
        "previous_expected_end_at": _iso(end - timedelta(hours=2, minutes=30)),
        "restored_at": _iso(end + timedelta(hours=1, minutes=30)),
        "outage_kind": "maintenance",
        "pressure_limited": True,
        "emergency": True,
        "peak_alerts": 8,
        "delays": 9,
        "approvals": 9,
        "public_channels": ["media", "wechat_account"],
        "previous": {"starts_at": _iso(starts - timedelta(days=2, hours=1)),
                     "expected_end_at": _iso(end - timedelta(days=2, hours=3)), "area": OLD_AREA},
        "cancelled": True,
        "supersedes": f"{mid}/R19.1/pre_notice/v9/pre_notice",
        "pipe_diameter_mm": 1200,
        "diameter_unknown": True,
        "in_meter_well": True,
        "hotline": "0635-12345678",
    }  # fmt: skip


def sample_event(variant: Variant, *, unit: str | None, maximal: bool = True) -> dict[str, Any]:
    """An alert CloudEvent of this variant, with maximal (or minimal) values."""
    mid = long_matter_id(variant.matter_kind) if maximal else f"{MATTER_PREFIX[variant.matter_kind]}-1"
    fired = FIRED
    late_by = LATE_BY if maximal else None
    sent = fired + timedelta(seconds=late_by or 0)
    due = {"ahead": sent + SPAN, "now": fired, "behind": fired - SPAN, None: None}[variant.due]
    values = _context_values(fired, mid, unit)
    keys = variant.keys if maximal else variant.required
    context: dict[str, Any] = {}
    for key in keys:
        target = "category" if key == "category_r12" else key
        context[target] = values[key]
    if not maximal and "area" in context:
        context["area"] = {"zones": ["zone-3"]}
    level = variant.kind.split(".", 1)[1] if variant.kind.startswith("alert.") else "notice"
    etype = variant.kind if variant.kind.startswith("alert.") else "notice.due"
    alert_id = f"{mid}/{variant.rule}/{variant.clock}/v9/{variant.stage}"
    data: dict[str, Any] = {
        "alert_id": alert_id,
        "matter_id": mid,
        "matter_kind": variant.matter_kind,
        "rule": variant.rule,
        "clock": variant.clock,
        "level": level,
        "stage": variant.stage,
        "due_at": None if due is None else _iso(due),
        "fired_at": _iso(fired),
    }
    if late_by is not None:
        data["late_by"] = late_by
    if unit is not None:
        data["unit"] = unit
    data["notify"] = list(variant.notify)
    if variant.notice is not None:
        data["notice"] = variant.notice
    data["message"] = f"{variant.rule}: sample {variant.stage} ({'maximal' if maximal else 'minimal'})"
    data["context"] = dict(sorted(context.items()))
    return {
        "specversion": "1.0", "id": alert_id, "source": "waterwatch/templates-check", "type": etype,
        "time": _iso(fired), "subject": mid, "datacontenttype": "application/json", "data": data,
    }  # fmt: skip


def longest_unit(units: Any, language: str) -> str | None:
    """The unit id whose name (in ``language``) is longest, from a units directory."""
    if not units:
        return None

    def name(uid: str) -> str:
        u = units[uid]
        if isinstance(u, Mapping):
            return str(u.get("name_en" if language == "en" else "name") or uid)
        return str((u.name_en if language == "en" else u.name) or uid)

    ids: list[str] = sorted(str(uid) for uid in units)
    return max(ids, key=lambda uid: len(name(uid).encode("utf-8")))


def samples(kind: str, *, unit: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(label, event) of every maximal and minimal sample of one kind."""
    out: list[tuple[str, dict[str, Any]]] = []
    for v in VARIANTS:
        if v.kind != kind:
            continue
        label = f"{v.rule} {v.stage}"
        out.append((f"{label} (maximal)", sample_event(v, unit=unit, maximal=True)))
        out.append((f"{label} (minimal)", sample_event(v, unit=None, maximal=False)))
    return out


# ------------------------------------------------------------------------- check


@dataclass(frozen=True)
class Problem:
    template: str
    reason: str

    def __str__(self) -> str:
        return f"{self.template}: {self.reason}"


@dataclass
class Row:
    """One message: (language, channel, kind) and its worst size over all samples."""

    language: str
    channel: str
    kind: str
    templates: tuple[str, ...]
    samples: int = 0
    sms: SmsCount | None = None
    sms_budget: int | None = None
    wecom_bytes: int = 0
    wecom_budget: int | None = None
    subject_chars: int = 0
    html_bytes: int = 0
    text_bytes: int = 0
    ok: bool = True

    @property
    def size(self) -> str:
        if self.channel == "sms":
            return "-" if self.sms is None else f"{self.sms.segments} seg {self.sms.encoding} ({self.sms.units} units)"
        if self.channel == "wecom":
            return f"{self.wecom_bytes} B"
        return f"subject {self.subject_chars} ch, html {self.html_bytes} B, text {self.text_bytes} B"

    @property
    def budget(self) -> str:
        if self.channel == "sms":
            return f"≤ {self.sms_budget} seg"
        if self.channel == "wecom":
            return f"≤ {self.wecom_budget} B"
        return "-"


@dataclass
class CheckResult:
    template_dir: Path
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    renders: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _display(template_dir: Path, name: str) -> str:
    return str(template_dir / name.removesuffix("+html"))


def _where(template_dir: Path, exc: BaseException, fallback: str) -> str:
    """``file:line`` of the innermost template frame of an exception, else ``fallback``."""
    if isinstance(exc, TemplateSyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    found = None
    root = str(template_dir.resolve())
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if filename.endswith(".j2") and str(Path(filename).resolve()).startswith(root):
            found = f"{filename}:{lineno}"
    return found or fallback


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {exc.message}"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, TemplateNotFound):
        return f"template not found: {exc.name}"
    return f"{type(exc).__name__}: {exc}"


def check_templates(
    template_dir: Path | str | None = None,
    *,
    sms_budget: int | None = None,
    units: Any = None,
    policy: Any = None,
    languages: Iterable[str] = LANGUAGES,
) -> CheckResult:
    """Render every template with maximal and minimal samples; collect sizes and problems."""
    template_dir = templates_dir(template_dir)
    result = CheckResult(template_dir)
    if not template_dir.is_dir():
        result.problems.append(Problem(str(template_dir), "no such template directory"))
        return result
    try:
        budget = load_budget(template_dir, sms_budget)
    except BudgetError as exc:
        result.problems.append(Problem(str(template_dir / "budget.yaml"), str(exc)))
        budget = Budget(override=sms_budget)
    try:
        renderer = Renderer(template_dir, units=units, policy=policy)
    except (TemplateError, yaml.YAMLError) as exc:
        result.problems.append(Problem(str(template_dir / "settings.yaml"), str(exc)))
        return result
    env = renderer.env
    languages = tuple(languages)

    # 1. every file compiles (shared files also in HTML mode, as HTML templates import them)
    present = set(env.list_templates())
    broken: set[str] = set()
    for name in sorted(present):
        for compiled in (name, name + "+html") if Path(name).name.startswith("_") else (name,):
            try:
                env.get_template(compiled)
            except TemplateSyntaxError as exc:
                result.problems.append(Problem(_where(template_dir, exc, _display(template_dir, name)), _reason(exc)))
                broken.add(name)
                break

    # 2. every (language, channel, kind) has its templates; nothing unexpected lies around
    expected: set[str] = set()
    for lang in languages:
        for channel in CHANNELS:
            for kind in KINDS:
                for _, name in template_names(lang, channel, kind):
                    expected.add(name)
                    if name not in present:
                        result.problems.append(Problem(
                            _display(template_dir, name),
                            f"missing template ({lang}, {channel}, {kind}); there is no fallback to another language",
                        ))  # fmt: skip
    for name in sorted(present - expected):
        if not Path(name).name.startswith("_"):
            result.warnings.append(f"{_display(template_dir, name)}: not a template of any (language, channel, kind)")

    # 3. render every message with every sample
    for lang in languages:
        unit = longest_unit(units, lang)
        for channel in CHANNELS:
            for kind in KINDS:
                names = tuple(n for _, n in template_names(lang, channel, kind))
                row = Row(lang, channel, kind, names)
                if channel == "sms":
                    row.sms_budget = budget.sms_segments(kind)
                if channel == "wecom":
                    row.wecom_budget = budget.wecom_markdown_bytes
                result.rows.append(row)
                if any(n not in present or n in broken for n in names):
                    row.ok = False
                    continue
                for label, event in samples(kind, unit=unit):
                    result.renders += 1
                    row.samples += 1
                    try:
                        out = renderer.render(event, channel, lang)
                    except MissingTemplate as exc:
                        result.problems.append(Problem(_display(template_dir, exc.template), exc.reason))
                        row.ok = False
                        break
                    except Exception as exc:  # every template error is reported, none stops the check
                        where = _where(template_dir, exc, _display(template_dir, names[0]))
                        result.problems.append(Problem(where, f"{_reason(exc)} [{label}]"))
                        row.ok = False
                        continue
                    _measure(result, row, out, label, template_dir)
    return result


def _measure(result: CheckResult, row: Row, out: Any, label: str, template_dir: Path) -> None:
    file = _display(template_dir, row.templates[-1] if row.channel != "email" else row.templates[0])
    if row.channel == "sms":
        text = out.text or ""
        count = segments(text)
        if row.sms is None or (count.segments, count.units) > (row.sms.segments, row.sms.units):
            row.sms = count
        if not text.strip():
            result.problems.append(Problem(file, f"empty SMS [{label}]"))
            row.ok = False
        elif row.sms_budget is not None and count.segments > row.sms_budget:
            result.problems.append(Problem(file, (
                f"SMS over budget: {count.segments} segments {count.encoding} ({count.units} units) > "
                f"{row.sms_budget} [{label}]"
            )))  # fmt: skip
            row.ok = False
    elif row.channel == "wecom":
        size = len((out.markdown or "").encode("utf-8"))
        row.wecom_bytes = max(row.wecom_bytes, size)
        if not (out.markdown or "").strip():
            result.problems.append(Problem(file, f"empty markdown [{label}]"))
            row.ok = False
        elif row.wecom_budget is not None and size > row.wecom_budget:
            result.problems.append(
                Problem(file, f"WeCom markdown over budget: {size} bytes > {row.wecom_budget} [{label}]")
            )
            row.ok = False
    else:
        row.subject_chars = max(row.subject_chars, len(out.subject or ""))
        row.html_bytes = max(row.html_bytes, len((out.html or "").encode("utf-8")))
        row.text_bytes = max(row.text_bytes, len((out.text or "").encode("utf-8")))
        for part in ("subject", "html", "text"):
            if not (getattr(out, part) or "").strip():
                idx = [p for p, _ in PARTS["email"]].index(part)
                result.problems.append(Problem(_display(template_dir, row.templates[idx]), f"empty {part} [{label}]"))
                row.ok = False


# --------------------------------------------------------------------------- CLI


def print_result(result: CheckResult, console: Console, err: Console) -> None:
    table = Table(title=f"templates in {result.template_dir}", show_lines=False)
    for col in ("template", "channel", "lang", "size (worst sample)", "budget", "samples", "status"):
        table.add_column(col, no_wrap=col != "size (worst sample)")
    for row in result.rows:
        name = row.templates[0] if len(row.templates) == 1 else row.templates[0].replace(".subject.txt.j2", ".*.j2")
        status = "[green]ok[/green]" if row.ok else "[red]FAIL[/red]"
        table.add_row(name, row.channel, row.language, row.size, row.budget, str(row.samples), status)
    console.print(table)
    for w in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    for p in result.problems:
        err.print(f"[red]error:[/red] {p}", highlight=False)
    sms = [r for r in result.rows if r.channel == "sms" and r.sms is not None]
    wecom = [r for r in result.rows if r.channel == "wecom"]
    worst_sms = max(sms, key=lambda r: (r.sms.segments, r.sms.units), default=None)  # type: ignore[union-attr]
    worst_wecom = max(wecom, key=lambda r: r.wecom_bytes, default=None)
    failed = sum(1 for r in result.rows if not r.ok)
    summary = (
        f"{len(result.rows)} messages ({', '.join(LANGUAGES)} × {', '.join(CHANNELS)} × {len(KINDS)} kinds), "
        f"{result.renders} renders: {len(result.rows) - failed} ok, {failed} failed, "
        f"{len(result.problems)} problem(s), {len(result.warnings)} warning(s)"
    )
    if worst_sms is not None and worst_sms.sms is not None:
        summary += f"; longest SMS {worst_sms.templates[0]} {worst_sms.sms}"
    if worst_wecom is not None:
        summary += f"; largest WeCom {worst_wecom.templates[0]} {worst_wecom.wecom_bytes} B"
    (console if result.ok else err).print(("[green]OK[/green] " if result.ok else "[red]FAILED[/red] ") + summary,
                                          highlight=False)  # fmt: skip


@templates_app.callback()
def _templates() -> None:
    """Message templates (templates/): render every one at its worst and check its budget."""


@templates_app.command("check")
def check(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Template directory (default: $WATERWATCH_TEMPLATES or the project's templates/)."),
    ] = None,
    sms_budget: Annotated[
        int | None,
        typer.Option(
            "--sms-budget",
            min=1,
            help="Most SMS segments for every kind (default: templates/budget.yaml, "
            "3 for resident notices, 2 for unit alerts).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Configuration directory (unit names, rule articles)."),
    ] = None,
) -> None:
    """Render EVERY template with maximal and minimal samples in both languages; fail on any problem."""
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    units = policy = None
    try:
        from waterwatch.core.config import load_config

        cfg = load_config(config)
        units, policy = cfg.units, cfg.policy
    except Exception as exc:  # the check still runs, with unit ids instead of names
        err.print(f"[yellow]warning:[/yellow] configuration not loaded ({exc}); unit ids shown instead of names",
                  highlight=False)  # fmt: skip
    result = check_templates(directory, sms_budget=sms_budget, units=units, policy=policy)
    print_result(result, console, err)
    if not result.ok:
        raise typer.Exit(1)


__all__ = [
    "ALERT_KINDS", "NOTICE_KINDS", "VARIANTS", "Budget", "CheckResult", "Problem", "Row", "check",
    "check_templates", "load_budget", "sample_event", "samples", "templates_app",
]  # fmt: skip
