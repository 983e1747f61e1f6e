"""The policy: every rule of RULES.md as data (``config/policy.yaml``).

Loading validates the file and names the line of each problem
(``config/policy.yaml:155: rules.R15.2.limit: '12 hours' is not a duration``).
The engine never hard-codes a limit, a threshold or a recipient: it reads them
here.  ``Policy.scaled(n)`` divides every duration by ``n`` for demos and
tests (``--time-scale``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from typing import Any, Literal

from waterwatch.codes import Category, HotlineTier, OutageKind, Urgency
from waterwatch.core import errors as _errors
from waterwatch.core.errors import ConfigError
from waterwatch.core.yamlconf import line_of, load_yaml
from waterwatch.events import INPUT_TYPES

Counts = Literal["wall", "working"]
RULE_KINDS = (
    "deadline",  # a clock with warnings, overdue, escalations, reminders
    "window",  # no alerts while open; the stopping event is a violation if late
    "obligation",  # something that must happen before another clock's deadline
    "notice",  # a resident notice scheduled relative to an outage
    "alert",  # an immediate alert on an event
    "escalation",  # a step of the escalation chain
    "runtime",  # a property of how the service runs
    "no_limit",  # a duty without a fixed time limit
    "informational",  # recorded for the report or reference, no clock
)
MATTER_KINDS = ("ticket", "outage", "leak", "damage", "meter")
ROLES = ("unit", "unit_head", "ops", "leaders", "warning_group")

_DURATION = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")


def parse_duration(text: Any) -> int:
    """``90s``, ``10m``, ``1h30m``, ``5d`` → seconds; raise ``ValueError`` otherwise."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"{text!r} is not a duration (like 90s, 10m, 2h, 5d)")
    if isinstance(text, int):
        return text
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration (like 90s, 10m, 2h, 5d)")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def format_duration(seconds: float) -> str:
    """Seconds → ``1d 2h 3m 4s`` (compact, for tables)."""
    s = round(seconds)
    if s == 0:
        return "0s"
    parts = []
    units: tuple[tuple[str, int], ...] = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    if s < 4 * 86400:  # the measures speak of 24 h, 36 h, 48 h, 72 h; of days beyond
        units = units[1:]
    for unit, size in units:
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class EscalationStep:
    after: float  # share of the allowed time past the deadline
    notify: tuple[str, ...]
    cites: str | None = None


@dataclass(frozen=True, slots=True)
class Reminder:
    every: int  # seconds (clock seconds: working seconds on a working clock)
    max: int


@dataclass(frozen=True, slots=True)
class Warn:
    fractions: tuple[float, ...] = ()
    leads: tuple[int, ...] = ()
    after: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Variant:
    limit: int
    counts: Counts


@dataclass(frozen=True, slots=True)
class Band:
    limit: int
    max_diameter_mm: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of RULES.md."""

    id: str
    article: str
    what: str
    kind: str = "deadline"
    matter: str | None = None
    clock: str | None = None
    starts: tuple[str, ...] = ()
    stops: tuple[str, ...] = ()
    closes: tuple[str, ...] = ()
    limit: int | None = None
    limit_text: str | None = None
    counts: Counts = "wall"
    categories: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    outage_kinds: tuple[str, ...] = ()
    variants: Mapping[str, Variant] = field(default_factory=dict)
    bands: tuple[Band, ...] = ()
    warn: Warn = Warn()
    escalate: tuple[EscalationStep, ...] = ()
    reminder: Reminder | None = None
    unset_reminder: Reminder | None = None
    notify: tuple[str, ...] = ()
    default_unit: str | None = None
    assist: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()
    lead: int | None = None
    window: int | None = None
    report_before: int | None = None
    approval_event: str | None = None
    line: int | None = None

    def describe_limit(self) -> str:
        if self.limit is not None:
            return format_duration(self.limit)
        if self.variants:
            return ", ".join(f"{k} {format_duration(v.limit)}" for k, v in self.variants.items())
        if self.bands:
            return ", ".join(
                (f"≤{b.max_diameter_mm} mm {format_duration(b.limit)}" if b.max_diameter_mm else
                 f"larger {format_duration(b.limit)}")
                for b in self.bands
            )
        if self.lead is not None:
            return f"{format_duration(self.lead)} ahead"
        if self.window is not None:
            return f"within {format_duration(self.window)} before"
        return self.limit_text or "-"

    def describe_counts(self) -> str:
        if self.variants:
            kinds = sorted({v.counts for v in self.variants.values()})
            return "/".join(kinds)
        if self.limit is None and not self.bands and self.lead is None:
            return "-"
        return self.counts


@dataclass(frozen=True, slots=True)
class Policy:
    rules: Mapping[str, Rule]
    notify: Mapping[str, tuple[str, ...]]
    backwards_tolerance: int
    future_tolerance: int
    late_after: int
    peak_hours: tuple[tuple[time, time], ...]
    resident_quiet_hours: tuple[tuple[time, time], ...] = ()
    """Local windows (end before start: across midnight) in which no resident notice is due (R19.1)."""
    timezone: str = "Asia/Shanghai"
    path: Path | None = None
    time_scale: float = 1.0

    # -- look-ups used by the engine (built once, see _index)
    def rule(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    def for_category(self, category: str) -> list[Rule]:
        """Clock rules (kind deadline) that cover a ticket category."""
        return [r for r in self.rules.values() if r.kind == "deadline" and category in r.categories]

    def for_tier(self, tier: str) -> list[Rule]:
        return [r for r in self.rules.values() if r.kind == "deadline" and tier in r.tiers]

    def rule_with(self, **attrs: Any) -> Rule | None:
        for r in self.rules.values():
            if all(getattr(r, k) == v for k, v in attrs.items()):
                return r
        return None

    def scaled(self, factor: float) -> Policy:
        """Every duration divided by ``factor`` (> 0): hours pass in seconds in demos and tests."""
        if factor <= 0:
            raise ValueError("time scale must be > 0")
        if factor == 1:
            return self

        def d(x: int | None) -> int | None:
            return None if x is None else max(1, round(x / factor))

        def rem(r: Reminder | None) -> Reminder | None:
            return None if r is None else Reminder(every=d(r.every) or 1, max=r.max)

        rules = {
            k: replace(
                r,
                limit=d(r.limit),
                lead=d(r.lead),
                window=d(r.window),
                report_before=d(r.report_before),
                # leads or afters that collapse onto the same scaled instant become one warning
                warn=Warn(r.warn.fractions, tuple(dict.fromkeys(d(x) or 1 for x in r.warn.leads)),
                          tuple(dict.fromkeys(d(x) or 1 for x in r.warn.after))),
                variants={n: Variant(d(v.limit) or 1, v.counts) for n, v in r.variants.items()},
                bands=tuple(Band(d(b.limit) or 1, b.max_diameter_mm) for b in r.bands),
                reminder=rem(r.reminder),
                unset_reminder=rem(r.unset_reminder),
            )
            for k, r in self.rules.items()
        }
        return replace(
            self,
            rules=rules,
            backwards_tolerance=d(self.backwards_tolerance) or 1,
            future_tolerance=d(self.future_tolerance) or 1,
            late_after=max(1, d(self.late_after) or 1),
            time_scale=self.time_scale * factor,
            resident_quiet_hours=(),  # times of day mean nothing when hours pass in seconds
        )


# --------------------------------------------------------------------- loading

_RULE_FIELDS = {
    "article", "what", "kind", "matter", "clock", "starts", "stops", "closes", "limit",
    "limit_text", "counts", "categories", "tiers", "outage_kinds", "variants", "bands", "warn",
    "escalate", "reminder", "unset_reminder", "notify", "default_unit", "assist", "on", "lead",
    "window", "report_before", "approval_event", "triggers",
}  # fmt: skip


class _Reader:
    """Validates one YAML tree, naming file and line in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, container: Any, key: str | int | None, where: str, problem: str) -> ConfigError:
        return ConfigError(self.path, line_of(container, key), f"{where}: {problem}")

    def duration(self, c: Any, key: str | int, where: str) -> int:
        try:
            value = parse_duration(c[key])
        except ValueError as exc:
            raise self.fail(c, key, where, str(exc)) from None
        if value <= 0:
            raise self.fail(c, key, where, "must be longer than 0s")
        return value

    def strings(self, c: Any, key: str, where: str, allowed: Iterable[str] | None = None) -> tuple[str, ...]:
        value = c.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(c, key, where, "must be a list of names")
        if allowed is not None:
            allowed_set = set(allowed)
            for i, v in enumerate(value):
                if v not in allowed_set:
                    raise self.fail(value, i, where, f"unknown code {v!r}")
        return tuple(value)

    def mapping(self, c: Any, key: str, where: str) -> Any:
        value = c.get(key)
        if not isinstance(value, dict):
            raise self.fail(c, key, where, "must be a mapping")
        return value

    def warn(self, c: Any, where: str) -> Warn:
        w = self.mapping(c, "warn", where)
        unknown = set(w) - {"fractions", "leads", "after"}
        if unknown:
            raise self.fail(w, sorted(unknown)[0], where, "unknown key (use fractions, leads, after)")
        fr = w.get("fractions", [])
        if not isinstance(fr, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < 1 for x in fr
        ):
            raise self.fail(w, "fractions", f"{where}.fractions", "must be numbers between 0 and 1")
        leads = tuple(self.duration(w["leads"], i, f"{where}.leads[{i}]") for i in range(len(w.get("leads", []))))
        after = tuple(self.duration(w["after"], i, f"{where}.after[{i}]") for i in range(len(w.get("after", []))))
        return Warn(tuple(sorted(float(x) for x in fr)), leads, after)

    def escalate(self, c: Any, where: str) -> tuple[EscalationStep, ...]:
        steps = c.get("escalate")
        if not isinstance(steps, list):
            raise self.fail(c, "escalate", where, "must be a list of steps")
        out = []
        for i, s in enumerate(steps):
            w = f"{where}[{i}]"
            if not isinstance(s, dict):
                raise self.fail(steps, i, w, "a step is a mapping with after and notify")
            after = s.get("after")
            if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
                raise self.fail(s, "after", f"{w}.after", "must be a share of the limit (0.5 = +50 %)")
            notify = self.strings(s, "notify", f"{w}.notify")
            if not notify:
                raise self.fail(s, "notify", f"{w}.notify", "names nobody")
            cites = s.get("cites")
            out.append(EscalationStep(float(after), notify, str(cites) if cites else None))
        return tuple(sorted(out, key=lambda s: s.after))

    def reminder(self, c: Any, key: str, where: str) -> Reminder:
        r = self.mapping(c, key, where)
        every = self.duration(r, "every", f"{where}.every")
        mx = r.get("max")
        if isinstance(mx, bool) or not isinstance(mx, int) or mx < 0:
            raise self.fail(r, "max", f"{where}.max", "must be a whole number ≥ 0")
        return Reminder(every, mx)


def load_policy(path: Path) -> Policy:
    """Load and validate ``policy.yaml``."""
    tree = load_yaml(path)
    rd = _Reader(path)
    if not isinstance(tree, dict):
        raise ConfigError(path, 1, "the policy file must be a mapping with defaults and rules")
    if tree.get("version") != 1:
        raise rd.fail(tree, "version", "version", "must be 1")
    defaults = rd.mapping(tree, "defaults", "defaults")
    d_warn = rd.warn(defaults, "defaults.warn") if "warn" in defaults else Warn((0.5, 0.8))
    d_esc = rd.escalate(defaults, "defaults.escalate") if "escalate" in defaults else ()
    d_rem = rd.reminder(defaults, "reminder", "defaults.reminder") if "reminder" in defaults else None
    notify_map = rd.mapping(defaults, "notify", "defaults.notify")
    notify = {k: rd.strings(notify_map, k, f"defaults.notify.{k}") for k in notify_map}
    tol = {k: rd.duration(defaults, k, f"defaults.{k}") for k in
           ("backwards_tolerance", "future_tolerance", "late_after")}  # fmt: skip
    peaks = _periods(rd, defaults, "peak_hours", "defaults.peak_hours")
    quiet = _periods(rd, defaults, "resident_quiet_hours", "defaults.resident_quiet_hours", wrap=True)

    raw_rules = rd.mapping(tree, "rules", "rules")
    rules: dict[str, Rule] = {}
    event_types = set(INPUT_TYPES)
    for rid, r in raw_rules.items():
        w = f"rules.{rid}"
        if not isinstance(r, dict):
            raise rd.fail(raw_rules, rid, w, "must be a mapping")
        unknown = set(r) - _RULE_FIELDS
        if unknown:
            key = sorted(unknown)[0]
            raise rd.fail(r, key, f"{w}.{key}", "unknown field")
        for req in ("article", "what"):
            if not isinstance(r.get(req), str) or not r[req].strip():
                raise rd.fail(r, req, w, f"needs {req}")
        kind = r.get("kind", "deadline")
        if kind not in RULE_KINDS:
            raise rd.fail(r, "kind", f"{w}.kind", f"must be one of {', '.join(RULE_KINDS)}")
        matter = r.get("matter")
        if matter is not None and matter not in MATTER_KINDS:
            raise rd.fail(r, "matter", f"{w}.matter", f"must be one of {', '.join(MATTER_KINDS)}")
        counts = r.get("counts", "wall")
        if counts not in ("wall", "working"):
            raise rd.fail(r, "counts", f"{w}.counts", "must be wall or working")
        variants: dict[str, Variant] = {}
        if "variants" in r:
            vs = rd.mapping(r, "variants", f"{w}.variants")
            for name, v in vs.items():
                vw = f"{w}.variants.{name}"
                if name not in {u.value for u in Urgency}:
                    raise rd.fail(vs, name, vw, "unknown urgency code")
                if not isinstance(v, dict):
                    raise rd.fail(vs, name, vw, "must be a mapping with limit and counts")
                vc = v.get("counts", "wall")
                if vc not in ("wall", "working"):
                    raise rd.fail(v, "counts", f"{vw}.counts", "must be wall or working")
                variants[name] = Variant(rd.duration(v, "limit", f"{vw}.limit"), vc)
        bands: list[Band] = []
        for i, b in enumerate(r.get("bands", [])):
            bw = f"{w}.bands[{i}]"
            if not isinstance(b, dict):
                raise rd.fail(r["bands"], i, bw, "must be a mapping with limit")
            mx = b.get("max_diameter_mm")
            if mx is not None and (isinstance(mx, bool) or not isinstance(mx, int) or mx <= 0):
                raise rd.fail(b, "max_diameter_mm", bw, "must be a positive whole number")
            bands.append(Band(rd.duration(b, "limit", f"{bw}.limit"), mx))
        if bands and bands[-1].max_diameter_mm is not None:
            raise rd.fail(r, "bands", f"{w}.bands", "the last band must have no max_diameter_mm")
        limit = rd.duration(r, "limit", f"{w}.limit") if "limit" in r else None
        if kind == "deadline" and limit is None and not bands and "limit_text" not in r:
            raise rd.fail(r, "kind", w, "a deadline rule needs a limit (or limit_text for a limit set per matter)")
        default_unit = r.get("default_unit")
        rule = Rule(
            id=str(rid),
            article=str(r["article"]),
            what=str(r["what"]).strip(),
            kind=kind,
            matter=matter,
            clock=r.get("clock"),
            starts=rd.strings(r, "starts", f"{w}.starts", event_types),
            stops=rd.strings(r, "stops", f"{w}.stops", event_types),
            closes=rd.strings(r, "closes", f"{w}.closes", event_types),
            limit=limit,
            limit_text=r.get("limit_text"),
            counts=counts,
            categories=rd.strings(r, "categories", f"{w}.categories", [c.value for c in Category]),
            tiers=rd.strings(r, "tiers", f"{w}.tiers", [t.value for t in HotlineTier]),
            outage_kinds=rd.strings(r, "outage_kinds", f"{w}.outage_kinds", [k.value for k in OutageKind]),
            variants=variants,
            bands=tuple(bands),
            warn=rd.warn(r, f"{w}.warn") if "warn" in r else d_warn,
            escalate=rd.escalate(r, f"{w}.escalate") if "escalate" in r else d_esc,
            reminder=rd.reminder(r, "reminder", f"{w}.reminder") if "reminder" in r else d_rem,
            unset_reminder=(rd.reminder(r, "unset_reminder", f"{w}.unset_reminder")
                            if "unset_reminder" in r else None),
            notify=rd.strings(r, "notify", f"{w}.notify"),
            default_unit=str(default_unit) if default_unit else None,
            assist=rd.strings(r, "assist", f"{w}.assist"),
            triggers=rd.strings(r, "triggers", f"{w}.triggers", event_types),
            lead=rd.duration(r, "lead", f"{w}.lead") if "lead" in r else None,
            window=rd.duration(r, "window", f"{w}.window") if "window" in r else None,
            report_before=rd.duration(r, "report_before", f"{w}.report_before") if "report_before" in r else None,
            approval_event=r.get("approval_event"),
            line=line_of(raw_rules, rid),
        )
        rules[rule.id] = rule
    _check_coverage(rd, raw_rules, rules)
    return Policy(
        rules=rules,
        notify=notify,
        backwards_tolerance=tol["backwards_tolerance"],
        future_tolerance=tol["future_tolerance"],
        late_after=tol["late_after"],
        peak_hours=peaks,
        resident_quiet_hours=quiet,
        timezone=str(tree.get("timezone", "Asia/Shanghai")),
        path=path,
    )


def _periods(rd: _Reader, c: Any, key: str, where: str, *, wrap: bool = False) -> tuple[tuple[time, time], ...]:
    """[start, end] pairs of local times; with ``wrap`` a pair may cross midnight (end before start)."""
    value = c.get(key, [])
    out = []
    if not isinstance(value, list):
        raise rd.fail(c, key, where, "must be a list of [start, end] pairs")
    for i, pair in enumerate(value):
        pw = f"{where}[{i}]"
        if not (isinstance(pair, list) and len(pair) == 2):
            raise rd.fail(value, i, pw, "must be a [start, end] pair like [\"06:00\", \"08:30\"]")
        try:
            a, b = (time.fromisoformat(str(x)) for x in pair)
        except ValueError:
            raise rd.fail(value, i, pw, "times must look like 06:00") from None
        if b == a or (b < a and not wrap):
            raise rd.fail(value, i, pw, f"end {b:%H:%M} is not after start {a:%H:%M}")
        out.append((a, b))
    return tuple(out)


def _check_coverage(rd: _Reader, raw: Any, rules: Mapping[str, Rule]) -> None:
    """Each category and tier maps to exactly one clock rule per clock."""
    seen: dict[tuple[str, str], str] = {}
    for r in rules.values():
        if r.kind != "deadline":
            continue
        for code in (*r.categories, *r.tiers):
            key = (code, r.clock or "")
            if key in seen:
                raise rd.fail(raw, r.id, f"rules.{r.id}",
                              f"{code} is already covered by {seen[key]} for the {r.clock} clock")  # fmt: skip
            seen[key] = r.id


# errors.py's path, not this module's: when this module is compiled (mypyc), its ``__file__`` may not be
# where the package is (docs/decisions/0008-core-throughput.md)
DEFAULT_CONFIG_DIR = Path(_errors.__file__).resolve().parents[2] / "config"


def default_policy_path(config_dir: Path | None = None) -> Path:
    return (config_dir or DEFAULT_CONFIG_DIR) / "policy.yaml"
