"""Routing: from an alert to the recipients and channels that should hear of it.

Theory of operation
-------------------
The engine already decides *whom* to tell: every alert carries
``data.notify``, a list of roles taken from the policy (``unit``,
``unit_head``, ``ops``, ``leaders``, ``warning_group``, a unit id such as
``runda``, or ``residents``).  This module decides *how*, from
``config/routing.yaml`` (data operators can edit) and the units directory
(``config/units.yaml``, where the contacts live):

1. **Roles.**  The alert's ``notify`` list, or the level's ``default`` roles
   when it is empty, plus the level's and the rule's ``add`` roles, in that
   order, each once.  ``residents`` is not resolved here: the plan only says
   ``residents=True`` and the resident fan-out does the rest.
2. **Contacts.**  Each role is a list of ``{to: CONTACT, channels}`` entries
   (``roles:``; a unit id not listed there uses ``any_unit:``).  CONTACT is
   ``unit.duty|head|wecom`` (the alert's own unit), ``units.ID.duty|head|wecom``
   or ``roles.NAME`` (a contact under ``roles:`` in units.yaml).  A channel
   picks the contact's field: ``sms`` the phone, ``email`` the e-mail,
   ``wecom`` the robot's env-var name.  A level or rule may restrict the
   channels.
3. **Targets.**  One :class:`Target` per (address, channel): the same
   address reached through two roles is one target (the first role wins).
   Its ``recipient_key`` names the recipient without personal data
   (``unit:runda:duty``, ``unit:runda:head``, ``role:leaders``,
   ``group:warning_group``, ``group:unit:runda``) and is the partition key of
   the notifier's jobs.  WeCom targets carry the level's ``mentions`` (mobile
   numbers, national format for +86).  Each target names its ``fallback``
   channel and address (``fallback:``), unless the plan already reaches that
   address on that channel.
4. **Urgency.**  ``urgent`` comes from the level, then the rule override:
   urgent plans ignore quiet hours.
5. **Gaps are reported, not raised.**  A role, unit or contact field that
   cannot be resolved (no ``data.unit``, a unit missing from the directory,
   a unit without a WeCom robot) adds a line to :attr:`Plan.unresolved`; the
   rest of the plan stands.  Only an alert that is not an alert at all (no
   id, no level, a ``notify`` that is not a list of names) raises
   ``ValueError``.

Loading validates everything that does not depend on an alert (fixed units
and roles exist and have the fields their channels need; times, durations,
levels, rule ids) and raises :class:`~waterwatch.core.errors.ConfigError`
naming file and line.  The same file carries the retry policy
(:mod:`notifiers.retry`), the quiet hours (:mod:`notifiers.quiet`) and the
WeCom limits (:mod:`notifiers.ratelimit`).  Everything here is pure: no I/O
after loading, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args
from zoneinfo import ZoneInfo

from notifiers.consent import normalize_address
from notifiers.quiet import DEFAULT_TZ, RESIDENT_DEFAULT, UNIT_DEFAULT, QuietHours, parse_hhmm
from notifiers.ratelimit import WECOM_MARKDOWN_BYTES, WECOM_PER_MINUTE, MergeWindow, TokenBucket
from notifiers.retry import ANCHORS, RetryPolicy, Usefulness, alert_data, alert_level
from waterwatch.codes import NoticeKind
from waterwatch.core.errors import ConfigError
from waterwatch.core.policy import parse_duration
from waterwatch.core.units import Contact, UnitsDirectory
from waterwatch.core.yamlconf import line_of, load_yaml
from waterwatch.masking import mask_email, mask_phone

Channel = Literal["sms", "email", "wecom"]
CHANNELS: tuple[str, ...] = get_args(Channel)
LEVELS = ("warning", "overdue", "escalation", "reminder", "violation", "notice")
LANGUAGES = ("zh", "en")
RESIDENTS = "residents"
RESIDENTS_NOTIFIED = "residents_notified"
"""A correction (R19.1): only households that got the notice it supersedes; resolved by the fan-out too."""
RESIDENT_ROLES = frozenset({RESIDENTS, RESIDENTS_NOTIFIED})
Part = Literal["duty", "head", "wecom"]
PARTS: tuple[str, ...] = get_args(Part)
_FIELD: dict[str, str] = {"sms": "phone", "email": "email", "wecom": "wecom_robot_env"}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class ContactRef:
    """A CONTACT of routing.yaml: ``scope`` alert (``unit.*``), unit (``units.ID.*``), role (``roles.NAME``), all."""

    scope: Literal["alert", "unit", "role", "all"]
    name: str = ""
    part: Part = "duty"

    def __str__(self) -> str:
        if self.scope == "alert":
            return f"unit.{self.part}"
        if self.scope == "unit":
            return f"units.{self.name}.{self.part}"
        if self.scope == "role":
            return f"roles.{self.name}"
        return "all"


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a role: a contact and the channels used for it."""

    to: ContactRef
    channels: tuple[Channel, ...]


@dataclass(frozen=True, slots=True)
class Override:
    """A level's settings, or a rule's override of them (``None``: not set)."""

    default: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    urgent: bool | None = None
    mentions: tuple[ContactRef, ...] | None = None
    channels: tuple[Channel, ...] | None = None
    levels: frozenset[str] | None = None
    """Rules only: the levels the override applies to (``None``: all)."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """When ``channel`` keeps failing: send by ``to_channel`` to ``to`` (``None``: the same contact)."""

    channel: Channel
    to_channel: Channel
    to: ContactRef | None
    after: int


@dataclass(frozen=True, slots=True)
class WecomLimits:
    """A robot's send rate and the merge window (``wecom:`` in routing.yaml)."""

    per_minute: float = WECOM_PER_MINUTE
    burst: int = WECOM_PER_MINUTE
    merge_window: float = 10.0
    max_bytes: int = WECOM_MARKDOWN_BYTES

    def bucket(self) -> TokenBucket:
        """A fresh token bucket for one robot."""
        return TokenBucket(self.per_minute / 60.0, self.burst)

    def merge(self) -> MergeWindow:
        """The merge policy for one robot."""
        return MergeWindow(self.merge_window, self.max_bytes)


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What one channel's provider takes (``providers:`` in routing.yaml), per notifier instance.

    ``per_second``/``burst``: provider calls (an SMS; an e-mail request, which may carry
    many recipients); ``None`` is no limit of ours.  ``batch``: e-mail recipients of one
    resident notice per SendGrid request (its personalizations, at most 1000); ``1`` sends
    each alone.  ``batch_wait``: how long a notice's e-mails wait for a batch to fill.
    """

    per_second: float | None = None
    burst: int = 1
    batch: int = 1
    batch_wait: float = 1.0

    def bucket(self) -> TokenBucket | None:
        return None if self.per_second is None else TokenBucket(self.per_second, self.burst)


SENDGRID_MAX_PERSONALIZATIONS = 1000


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery to make: a recipient on a channel.  ``address`` is personal data: log :func:`masked`."""

    recipient_key: str
    channel: Channel
    address: str
    """E.164 phone (sms), e-mail address (email) or the env-var name of the WeCom robot key (wecom)."""
    language: str
    role: str
    mentions: tuple[str, ...] = ()
    fallback: Channel | None = None
    fallback_address: str | None = None
    fallback_key: str | None = None
    """Recipient key of the fallback (it may live on another partition, e.g. ``unit:ops:duty``)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The deliveries of one alert."""

    alert_id: str
    level: str
    rule: str
    targets: list[Target]
    residents: bool
    urgent: bool
    unresolved: tuple[str, ...] = ()
    """Readable notes (roles and unit ids only) on what could not be resolved."""

    @property
    def empty(self) -> bool:
        """Nobody at all to tell: the caller should dead-letter the alert."""
        return not self.targets and not self.residents


def delivery_id(alert_id: str, recipient_key: str, channel: str) -> str:
    """A stable id of one delivery: the first 32 hex digits of SHA-256 over the three parts."""
    raw = "\x1f".join((alert_id, recipient_key, channel)).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:32]


def masked(target: Target) -> str:
    """A one-line description of ``target`` for logs, without personal data in clear."""
    if target.channel == "sms":
        address = mask_phone(target.address)
    elif target.channel == "email":
        address = mask_email(target.address)
    else:
        address = target.address  # the NAME of an env var, not the key
    text = f"{target.recipient_key} {target.channel} {address} {target.language} role={target.role}"
    if target.mentions:
        text += " @" + ",".join(m if m == "@all" else mask_phone(m) for m in target.mentions)
    if target.fallback is not None:
        text += f" fallback={target.fallback}"
        if target.fallback_key is not None:
            text += f":{target.fallback_key}"
    return text


def _same(channel: str, address: str) -> str:
    try:
        return normalize_address(channel, address)
    except ValueError:
        return address.strip()


def _mention(phone: str) -> str:
    """WeCom's mentioned_mobile_list wants mainland numbers without +86."""
    digits = "".join(ch for ch in phone if ch.isdigit() or ch == "+")
    return digits[3:] if digits.startswith("+86") else digits


# ------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Routing:
    """Loaded ``routing.yaml`` bound to a units directory; :meth:`plan` routes one alert."""

    units: UnitsDirectory
    roles: Mapping[str, tuple[Entry, ...]]
    any_unit: tuple[Entry, ...]
    levels: Mapping[str, Override]
    rules: Mapping[str, Override]
    fallback: Mapping[str, Fallback]
    retry: Mapping[str, RetryPolicy]
    useful: Usefulness
    quiet_units: QuietHours
    quiet_residents: QuietHours
    wecom: WecomLimits
    providers: Mapping[str, ProviderLimits] = field(default_factory=dict)
    language_default: str = "zh"
    language_units: Mapping[str, str] = field(default_factory=dict)
    language_roles: Mapping[str, str] = field(default_factory=dict)
    timezone: str = DEFAULT_TZ
    path: Path | None = None

    # ------------------------------------------------------------------ queries

    def entries(self, role: str) -> tuple[Entry, ...] | None:
        """The entries a role resolves to (``roles:`` first, then a unit id via ``any_unit:``); ``None``: unknown."""
        if role in self.roles:
            return self.roles[role]
        if role in self.units.units:
            return tuple(Entry(ContactRef("unit", role, e.to.part), e.channels) for e in self.any_unit)
        return None

    def unknown_roles(self, roles: Iterable[str]) -> list[str]:
        """The names in ``roles`` this routing cannot resolve (to check the policy's notify lists at startup)."""
        return [r for r in dict.fromkeys(roles) if r not in RESIDENT_ROLES and self.entries(r) is None]

    def retry_policy(self, channel: str) -> RetryPolicy:
        """The retry policy of ``channel`` (with its ``fallback_after``)."""
        return self.retry.get(channel) or RetryPolicy(useful=self.useful)

    def quiet_hours(self, audience: Literal["units", "residents"]) -> QuietHours:
        """Quiet hours for unit recipients or for residents."""
        return self.quiet_residents if audience == "residents" else self.quiet_units

    # ------------------------------------------------------------------ resolution

    def _language(self, unit_id: str | None, role_name: str | None, contact: Contact | None) -> str:
        chosen: object = None
        if unit_id is not None:
            chosen = self.language_units.get(unit_id) or getattr(self.units.units.get(unit_id), "language", None)
        elif role_name is not None:
            chosen = self.language_roles.get(role_name)
        if chosen is None and contact is not None:
            chosen = getattr(contact, "language", None)
        return chosen if isinstance(chosen, str) and chosen in LANGUAGES else self.language_default

    def resolve(self, ref: ContactRef, unit_id: str | None, channel: Channel) -> tuple[str, str, str] | str:
        """``(recipient_key, address, language)`` of ``ref`` on ``channel``, or why it cannot be resolved."""
        field_name = _FIELD[channel]
        if ref.scope == "role":
            contact = self.units.roles.get(ref.name)
            if contact is None:
                return f"roles.{ref.name} is not in the units directory"
            address = getattr(contact, field_name)
            if not address:
                return f"roles.{ref.name} has no {field_name}"
            key = f"group:{ref.name}" if channel == "wecom" else f"role:{ref.name}"
            return key, str(address), self._language(None, ref.name, contact)
        if ref.scope == "all":
            return "all cannot receive messages"
        uid = unit_id if ref.scope == "alert" else ref.name
        if not uid:
            return "the alert has no unit"
        unit = self.units.units.get(uid)
        if unit is None:
            return f"unit {uid!r} is not in the units directory"
        # a unit's robot is kept on its duty contact; reached on another channel (a fallback) it means the duty
        part = "duty" if ref.part == "wecom" and channel != "wecom" else ref.part
        contact = unit.head if part == "head" else unit.duty
        address = getattr(contact, field_name)
        if not address:
            return f"units.{uid}.{part} has no {field_name}"
        if channel == "wecom":
            key = f"group:unit:{uid}" if part != "head" else f"group:unit:{uid}:head"
        else:
            key = f"unit:{uid}:{part}"
        return key, str(address), self._language(uid, None, contact)

    def _mentions(self, refs: tuple[ContactRef, ...], unit_id: str | None, notes: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for ref in refs:
            if ref.scope == "all":
                out.append("@all")
                continue
            found = self.resolve(ref, unit_id, "sms")
            if isinstance(found, str):
                notes.append(f"mention {ref}: {found}")
            else:
                out.append(_mention(found[1]))
        return tuple(dict.fromkeys(out))

    # ------------------------------------------------------------------ plan

    def plan(self, alert_event: Mapping[str, Any]) -> Plan:
        """Route one alert (a CloudEvent mapping from ``waterwatch.alerts``, or its ``data``)."""
        if not isinstance(alert_event, Mapping):
            raise ValueError("an alert is a mapping (a CloudEvent or its data)")
        data = alert_data(alert_event)
        alert_id = data.get("alert_id") or alert_event.get("id")
        if not isinstance(alert_id, str) or not alert_id:
            raise ValueError("alert has no alert_id")
        level = alert_level(alert_event)
        if level not in LEVELS:
            raise ValueError(f"alert level {level!r} is not one of {', '.join(LEVELS)}")
        rule = data.get("rule")
        rule = rule if isinstance(rule, str) else ""
        unit_raw = data.get("unit")
        unit_id = unit_raw if isinstance(unit_raw, str) and unit_raw else None
        notify = data.get("notify")
        if notify is not None and not (isinstance(notify, list | tuple) and all(isinstance(r, str) for r in notify)):
            raise ValueError("alert notify must be a list of role names")

        lvl = self.levels.get(level, Override())
        ov = self.rules.get(rule)
        if ov is not None and ov.levels is not None and level not in ov.levels:
            ov = None
        roles = list(notify) if notify else list(lvl.default)
        roles += [*lvl.add, *(ov.add if ov else ())]
        urgent = bool(lvl.urgent)
        if ov is not None and ov.urgent is not None:
            urgent = ov.urgent
        mention_refs = ov.mentions if ov is not None and ov.mentions is not None else (lvl.mentions or ())
        allowed = ov.channels if ov is not None and ov.channels is not None else lvl.channels

        notes: list[str] = []
        residents = False
        targets: list[Target] = []
        sources: list[ContactRef] = []
        seen: set[tuple[str, str]] = set()
        mentions: tuple[str, ...] | None = None
        for role in dict.fromkeys(roles):
            if role in RESIDENT_ROLES:
                residents = True
                continue
            entries = self.entries(role)
            if entries is None:
                notes.append(f"{role}: unknown role")
                continue
            for entry in entries:
                for channel in entry.channels:
                    if allowed is not None and channel not in allowed:
                        continue
                    found = self.resolve(entry.to, unit_id, channel)
                    if isinstance(found, str):
                        notes.append(f"{role}: {found}")
                        continue
                    key, address, language = found
                    ident = (channel, _same(channel, address))
                    if ident in seen:
                        continue
                    seen.add(ident)
                    if channel == "wecom" and mentions is None:
                        mentions = self._mentions(mention_refs, unit_id, notes)
                    wecom_mentions = mentions if channel == "wecom" and mentions else ()
                    targets.append(Target(key, channel, address, language, role, wecom_mentions))
                    sources.append(entry.to)
        with_fallback = [self._with_fallback(t, ref, unit_id, seen) for t, ref in zip(targets, sources, strict=True)]
        return Plan(alert_id, level, rule, with_fallback, residents, urgent, tuple(dict.fromkeys(notes)))

    def _with_fallback(
        self, target: Target, ref: ContactRef, unit_id: str | None, seen: set[tuple[str, str]]
    ) -> Target:
        fb = self.fallback.get(target.channel)
        if fb is None:
            return target
        found = self.resolve(fb.to or ref, unit_id, fb.to_channel)
        if isinstance(found, str):
            return target
        key, address, _ = found
        if (fb.to_channel, _same(fb.to_channel, address)) in seen:
            return target
        return Target(
            target.recipient_key, target.channel, target.address, target.language, target.role, target.mentions,
            fb.to_channel, address, key,
        )  # fmt: skip


# --------------------------------------------------------------------------- loading


class _Reader:
    """Validates the YAML tree of routing.yaml, naming file and line in every error."""

    def __init__(self, path: Path, units: UnitsDirectory) -> None:
        self.path = path
        self.units = units

    def fail(self, container: Any, key: str | int | None, where: str, problem: str) -> ConfigError:
        return ConfigError(self.path, line_of(container, key), f"{where}: {problem}")

    def mapping(self, c: Any, key: str, where: str, *, required: bool = False) -> dict[str, Any]:
        if key not in c:
            if required:
                raise self.fail(c, None, where, "is required")
            return {}
        value = c[key]
        if not isinstance(value, dict):
            raise self.fail(c, key, where, "must be a mapping")
        return value

    def keys(self, c: dict[str, Any], allowed: Iterable[str], where: str) -> None:
        allowed = tuple(allowed)
        for k in c:
            if k not in allowed:
                raise self.fail(c, k, f"{where}.{k}", f"unknown key (use {', '.join(allowed)})")

    def names(self, c: Any, key: str, where: str) -> tuple[str, ...]:
        value = c.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(c, key, where, "must be a list of names")
        return tuple(value)

    def boolean(self, c: Any, key: str, where: str) -> bool | None:
        if key not in c:
            return None
        if not isinstance(c[key], bool):
            raise self.fail(c, key, where, "must be true or false")
        return bool(c[key])

    def duration(self, c: Any, key: str | int, where: str, *, zero: bool = False) -> float:
        try:
            value = parse_duration(c[key])
        except ValueError as exc:
            raise self.fail(c, key, where, str(exc)) from None
        if value < 0 or (value == 0 and not zero):
            raise self.fail(c, key, where, "must be longer than 0s")
        return float(value)

    def number(self, c: Any, key: str, where: str, *, least: float, whole: bool = False) -> float:
        value = c[key]
        ok = isinstance(value, int) if whole else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or value < least:
            raise self.fail(c, key, where, f"must be a {'whole ' if whole else ''}number >= {least:g}")
        return float(value)

    def channels(self, c: Any, key: str, where: str) -> tuple[Channel, ...]:
        value = self.names(c, key, where)
        if not value:
            raise self.fail(c, key, where, "names no channel")
        for i, ch in enumerate(value):
            if ch not in CHANNELS:
                raise self.fail(c[key], i, f"{where}[{i}]", f"unknown channel {ch!r} (use {', '.join(CHANNELS)})")
            if ch in value[:i]:
                raise self.fail(c[key], i, f"{where}[{i}]", f"channel {ch!r} is listed twice")
        return cast(tuple[Channel, ...], value)

    def ref(self, c: Any, key: str | int, where: str, *, allow_all: bool = False) -> ContactRef:
        text = c[key]
        if not isinstance(text, str):
            raise self.fail(c, key, where, "must be a contact like unit.duty, units.ops.head or roles.leaders")
        parts = text.split(".")
        if text == "all" and allow_all:
            return ContactRef("all")
        if len(parts) == 2 and parts[0] == "unit" and parts[1] in PARTS:
            return ContactRef("alert", "", cast(Part, parts[1]))
        if len(parts) == 3 and parts[0] == "units" and parts[2] in PARTS:
            if parts[1] not in self.units.units:
                raise self.fail(c, key, where, f"unknown unit {parts[1]!r} (not in units.yaml)")
            return ContactRef("unit", parts[1], cast(Part, parts[2]))
        if len(parts) == 2 and parts[0] == "roles":
            if parts[1] not in self.units.roles:
                raise self.fail(c, key, where, f"unknown contact {text!r} (not under roles: in units.yaml)")
            return ContactRef("role", parts[1])
        extra = ", or all" if allow_all else ""
        raise self.fail(c, key, where, f"{text!r} is not unit.PART, units.ID.PART (PART: duty, head, wecom) "
                                       f"or roles.NAME{extra}")  # fmt: skip

    def check_fixed(self, ref: ContactRef, channel: str, c: Any, key: str | int, where: str) -> None:
        """A fixed contact (``units.ID.*``, ``roles.*``) must have the field its channel needs."""
        if ref.scope not in ("unit", "role"):
            return
        if ref.part == "wecom" and channel != "wecom":
            raise self.fail(c, key, where, f"{ref} is a WeCom robot: only the wecom channel reaches it")
        if ref.scope == "role":
            contact = self.units.roles[ref.name]
        else:
            unit = self.units.units[ref.name]
            contact = unit.head if ref.part == "head" else unit.duty
        if not getattr(contact, _FIELD[channel]):
            raise self.fail(c, key, where, f"{ref} has no {_FIELD[channel]} in units.yaml for channel {channel}")

    def entries(self, c: Any, key: str, where: str, *, relative: bool = False) -> tuple[Entry, ...]:
        value = c[key]
        if not isinstance(value, list) or not value:
            raise self.fail(c, key, where, "must be a non-empty list of {to: CONTACT, channels: [...]}")
        out: list[Entry] = []
        for i, item in enumerate(value):
            w = f"{where}[{i}]"
            if not isinstance(item, dict):
                raise self.fail(value, i, w, "must be a mapping {to: CONTACT, channels: [...]}")
            self.keys(item, ("to", "channels"), w)
            if "to" not in item or "channels" not in item:
                raise self.fail(value, i, w, "needs to and channels")
            if relative:
                part = item["to"]
                if part not in PARTS:
                    raise self.fail(item, "to", f"{w}.to", f"must be one of {', '.join(PARTS)}")
                ref = ContactRef("unit", "", cast(Part, part))
            else:
                ref = self.ref(item, "to", f"{w}.to")
            chans = self.channels(item, "channels", f"{w}.channels")
            for ch in chans:
                if ref.part == "wecom" and ch != "wecom":
                    raise self.fail(item, "channels", f"{w}.channels", f"{ref} is a WeCom robot: use [wecom]")
                if not relative:
                    self.check_fixed(ref, ch, item, "to", f"{w}.to")
            out.append(Entry(ref, chans))
        return tuple(out)

    def known_role(self, role: str, roles: Mapping[str, Any]) -> bool:
        return role in RESIDENT_ROLES or role in roles or role in self.units.units

    def override(self, c: Any, key: str, where: str, roles: Mapping[str, Any], *, rule: bool) -> Override:
        node = self.mapping(c, key, where)
        allowed = ["add", "urgent", "mentions", "channels"] + (["levels"] if rule else ["default"])
        self.keys(node, allowed, where)
        lists: dict[str, tuple[str, ...]] = {}
        for name in ("default", "add"):
            lists[name] = self.names(node, name, f"{where}.{name}")
            for i, role in enumerate(lists[name]):
                if not self.known_role(role, roles):
                    problem = f"unknown role {role!r} (not under roles:, not a unit id, not residents)"
                    raise self.fail(node[name], i, f"{where}.{name}[{i}]", problem)
        mentions: tuple[ContactRef, ...] | None = None
        if "mentions" in node:
            refs = node["mentions"]
            if not isinstance(refs, list):
                raise self.fail(node, "mentions", f"{where}.mentions", "must be a list of contacts")
            mentions = tuple(self.ref(refs, i, f"{where}.mentions[{i}]", allow_all=True) for i in range(len(refs)))
            for i, m in enumerate(mentions):
                self.check_fixed(m, "sms", refs, i, f"{where}.mentions[{i}]")
        levels: frozenset[str] | None = None
        if "levels" in node:
            names = self.names(node, "levels", f"{where}.levels")
            for i, lv in enumerate(names):
                if lv not in LEVELS:
                    raise self.fail(node["levels"], i, f"{where}.levels[{i}]",
                                    f"unknown level {lv!r} (use {', '.join(LEVELS)})")  # fmt: skip
            levels = frozenset(names)
        return Override(
            default=lists["default"],
            add=lists["add"],
            urgent=self.boolean(node, "urgent", f"{where}.urgent"),
            mentions=mentions,
            channels=self.channels(node, "channels", f"{where}.channels") if "channels" in node else None,
            levels=levels,
        )

    def quiet(self, c: Any, key: str, where: str, default: tuple[tuple[str, str], ...], tz: ZoneInfo) -> QuietHours:
        if key not in c:
            return QuietHours(default, tz)
        value = c[key]
        if not isinstance(value, list):
            raise self.fail(c, key, where, 'must be a list of ["HH:MM", "HH:MM"] pairs')
        pairs: list[tuple[str, str]] = []
        for i, pair in enumerate(value):
            w = f"{where}[{i}]"
            if not (isinstance(pair, list) and len(pair) == 2):
                raise self.fail(value, i, w, 'must be a ["HH:MM", "HH:MM"] pair like ["22:00", "07:00"]')
            for text in pair:
                try:
                    parse_hhmm(text)
                except ValueError as exc:
                    raise self.fail(value, i, w, str(exc)) from None
            if pair[0] == pair[1]:
                raise self.fail(value, i, w, f"start and end are both {pair[0]}: the window is empty")
            pairs.append((pair[0], pair[1]))
        try:
            return QuietHours(pairs, tz)
        except ValueError as exc:
            raise self.fail(c, key, where, str(exc)) from None


_TOP = ("version", "timezone", "roles", "any_unit", "levels", "rules", "fallback", "retry", "quiet_hours", "wecom",
        "providers", "language")  # fmt: skip
_RETRY_KEYS = ("max_attempts", "base_delay", "factor", "max_delay", "min_delay", "rate_limit_wait", "rate_limit_cap",
               "permanent_fallback", "in_doubt_check")  # fmt: skip
_NOTICE_KINDS = tuple(k.value for k in NoticeKind)


def _retry_values(rd: _Reader, node: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _RETRY_KEYS:
        if key not in node:
            continue
        w = f"{where}.{key}"
        if key in ("max_attempts", "rate_limit_cap"):
            out[key] = int(rd.number(node, key, w, least=1 if key == "max_attempts" else 0, whole=True))
        elif key == "factor":
            out[key] = rd.number(node, key, w, least=1)
        elif key == "permanent_fallback":
            out[key] = rd.boolean(node, key, w)
        else:
            out[key] = rd.duration(node, key, w, zero=key == "min_delay")
    return out


def _useful(rd: _Reader, retry: dict[str, Any]) -> Usefulness:
    if "useful_for" not in retry:
        return Usefulness()
    node = rd.mapping(retry, "useful_for", "retry.useful_for")
    windows: dict[str, float | str] = {}
    default = Usefulness().default
    for key, value in node.items():
        w = f"retry.useful_for.{key}"
        if key == "default":
            default = rd.duration(node, key, w)
            continue
        level, _, notice = key.partition(".")
        if level not in LEVELS or (notice and (level != "notice" or notice not in _NOTICE_KINDS)):
            raise rd.fail(node, key, w, f"not a level ({', '.join(LEVELS)}) or notice.KIND "
                                        f"({', '.join(_NOTICE_KINDS)})")  # fmt: skip
        windows[key] = value if isinstance(value, str) and value in ANCHORS else rd.duration(node, key, w)
    return Usefulness(windows, default)


def _providers(rd: _Reader, tree: dict[str, Any]) -> dict[str, ProviderLimits]:
    if tree.get("providers") is None:
        return {}
    node = rd.mapping(tree, "providers", "providers")
    out: dict[str, ProviderLimits] = {}
    for ch, spec in node.items():
        w = f"providers.{ch}"
        if ch not in ("sms", "email"):
            raise rd.fail(node, ch, w, "sms or email (WeCom robots are limited under wecom:)")
        if not isinstance(spec, dict):
            raise rd.fail(node, ch, w, "must be a mapping {per_second, burst, batch, batch_wait}")
        rd.keys(spec, ("per_second", "burst", "batch", "batch_wait") if ch == "email" else ("per_second", "burst"), w)
        per_second = rd.number(spec, "per_second", f"{w}.per_second", least=0.001) if "per_second" in spec else None
        burst = int(rd.number(spec, "burst", f"{w}.burst", least=1, whole=True)) if "burst" in spec else 1
        batch = int(rd.number(spec, "batch", f"{w}.batch", least=1, whole=True)) if "batch" in spec else 1
        if batch > SENDGRID_MAX_PERSONALIZATIONS:
            raise rd.fail(spec, "batch", f"{w}.batch", f"SendGrid takes at most {SENDGRID_MAX_PERSONALIZATIONS}")
        wait = rd.duration(spec, "batch_wait", f"{w}.batch_wait", zero=True) if "batch_wait" in spec else 1.0
        out[ch] = ProviderLimits(per_second, burst, batch, wait)
    return out


def load_routing(path: Path, units: UnitsDirectory, *, known_rules: Iterable[str] | None = None) -> Routing:
    """Load and validate ``routing.yaml`` against a units directory; errors name file and line.

    With ``known_rules`` (the policy's rule ids) an override of an unknown rule is an error too.
    """
    path = Path(path)
    tree = load_yaml(path)
    rd = _Reader(path, units)
    if not isinstance(tree, dict):
        raise ConfigError(path, 1, "the routing file must be a mapping with version, roles and levels")
    if tree.get("version") != 1:
        raise rd.fail(tree, "version", "version", "must be 1")
    rd.keys(tree, _TOP, "(top)")

    tz_name = tree.get("timezone", DEFAULT_TZ)
    try:
        if not isinstance(tz_name, str):
            raise ValueError
        tz = ZoneInfo(tz_name)
    except (ValueError, KeyError):
        raise rd.fail(tree, "timezone", "timezone", f"unknown time zone {tz_name!r} (like Asia/Shanghai)") from None

    roles_node = rd.mapping(tree, "roles", "roles", required=True)
    roles: dict[str, tuple[Entry, ...]] = {}
    for name in roles_node:
        if name == RESIDENTS:
            raise rd.fail(roles_node, name, f"roles.{name}", "residents is handled by the resident fan-out")
        roles[name] = rd.entries(roles_node, name, f"roles.{name}")
    any_unit = (
        rd.entries(tree, "any_unit", "any_unit", relative=True)
        if "any_unit" in tree
        else (Entry(ContactRef("unit", "", "duty"), ("sms", "email")),)
    )

    levels_node = rd.mapping(tree, "levels", "levels", required=True)
    levels: dict[str, Override] = {}
    for name in levels_node:
        if name not in LEVELS:
            raise rd.fail(levels_node, name, f"levels.{name}", f"unknown level (use {', '.join(LEVELS)})")
        levels[name] = rd.override(levels_node, name, f"levels.{name}", roles, rule=False)

    rules_node = rd.mapping(tree, "rules", "rules")
    known = set(known_rules) if known_rules is not None else None
    rules: dict[str, Override] = {}
    for name in rules_node:
        if known is not None and name not in known:
            raise rd.fail(rules_node, name, f"rules.{name}", "unknown rule id (not in the policy)")
        rules[name] = rd.override(rules_node, name, f"rules.{name}", roles, rule=True)

    fallback_node = rd.mapping(tree, "fallback", "fallback")
    fallback: dict[str, Fallback] = {}
    for ch, node in fallback_node.items():
        w = f"fallback.{ch}"
        if ch not in CHANNELS:
            raise rd.fail(fallback_node, ch, w, f"unknown channel (use {', '.join(CHANNELS)})")
        if node is None:
            continue
        if not isinstance(node, dict):
            raise rd.fail(fallback_node, ch, w, "must be a mapping {channel, to, after}")
        rd.keys(node, ("channel", "to", "after"), w)
        if "channel" not in node or "after" not in node:
            raise rd.fail(fallback_node, ch, w, "needs channel and after")
        to_ch = node["channel"]
        if to_ch not in CHANNELS or to_ch == ch:
            raise rd.fail(node, "channel", f"{w}.channel", f"must be another channel ({', '.join(CHANNELS)})")
        ref = rd.ref(node, "to", f"{w}.to") if "to" in node else None
        if ref is not None:
            rd.check_fixed(ref, to_ch, node, "to", f"{w}.to")
        after = int(rd.number(node, "after", f"{w}.after", least=1, whole=True))
        fallback[ch] = Fallback(cast(Channel, ch), cast(Channel, to_ch), ref, after)

    retry_node = rd.mapping(tree, "retry", "retry")
    rd.keys(retry_node, (*_RETRY_KEYS, "channels", "useful_for"), "retry")
    useful = _useful(rd, retry_node)
    base = _retry_values(rd, retry_node, "retry")
    per_channel = rd.mapping(retry_node, "channels", "retry.channels")
    retry: dict[str, RetryPolicy] = {}
    for ch in CHANNELS:
        values = dict(base)
        where, container, key = "retry", tree, "retry"
        if ch in per_channel:
            node = rd.mapping(per_channel, ch, f"retry.channels.{ch}")
            rd.keys(node, _RETRY_KEYS, f"retry.channels.{ch}")
            values.update(_retry_values(rd, node, f"retry.channels.{ch}"))
            where, container, key = f"retry.channels.{ch}", per_channel, ch
        fb = fallback.get(ch)
        try:
            retry[ch] = RetryPolicy(**values, fallback_after=fb.after if fb else None, useful=useful)
        except ValueError as exc:
            if fb is not None and "fallback_after" in str(exc):
                raise rd.fail(fallback_node[ch], "after", f"fallback.{ch}.after", str(exc)) from None
            raise rd.fail(container, key, where, str(exc)) from None
    for ch in per_channel:
        if ch not in CHANNELS:
            raise rd.fail(per_channel, ch, f"retry.channels.{ch}", f"unknown channel (use {', '.join(CHANNELS)})")

    quiet_node = rd.mapping(tree, "quiet_hours", "quiet_hours")
    rd.keys(quiet_node, ("units", "residents"), "quiet_hours")
    quiet_units = rd.quiet(quiet_node, "units", "quiet_hours.units", UNIT_DEFAULT, tz)
    quiet_residents = rd.quiet(quiet_node, "residents", "quiet_hours.residents", RESIDENT_DEFAULT, tz)

    wecom_node = rd.mapping(tree, "wecom", "wecom")
    rd.keys(wecom_node, ("per_minute", "burst", "merge_window", "max_bytes"), "wecom")
    d = WecomLimits()
    wecom = WecomLimits(
        per_minute=rd.number(wecom_node, "per_minute", "wecom.per_minute", least=1) if "per_minute" in wecom_node
        else d.per_minute,
        burst=int(rd.number(wecom_node, "burst", "wecom.burst", least=1, whole=True)) if "burst" in wecom_node
        else d.burst,
        merge_window=rd.duration(wecom_node, "merge_window", "wecom.merge_window", zero=True)
        if "merge_window" in wecom_node else d.merge_window,
        max_bytes=int(rd.number(wecom_node, "max_bytes", "wecom.max_bytes", least=64, whole=True))
        if "max_bytes" in wecom_node else d.max_bytes,
    )  # fmt: skip
    if wecom.max_bytes > WECOM_MARKDOWN_BYTES:
        raise rd.fail(wecom_node, "max_bytes", "wecom.max_bytes", f"the robot takes at most {WECOM_MARKDOWN_BYTES}")

    providers = _providers(rd, tree)

    lang_node = rd.mapping(tree, "language", "language")
    rd.keys(lang_node, ("default", "units", "roles"), "language")
    lang_default = lang_node.get("default", "zh")
    if lang_default not in LANGUAGES:
        raise rd.fail(lang_node, "default", "language.default", f"must be one of {', '.join(LANGUAGES)}")
    per: dict[str, dict[str, str]] = {}
    for section, names in (("units", set(units.units)), ("roles", set(units.roles))):
        node = rd.mapping(lang_node, section, f"language.{section}") if lang_node.get(section) is not None else {}
        per[section] = {}
        for name, lang in node.items():
            w = f"language.{section}.{name}"
            if name not in names:
                raise rd.fail(node, name, w, f"unknown {section[:-1]} {name!r} (not in units.yaml)")
            if lang not in LANGUAGES:
                raise rd.fail(node, name, w, f"must be one of {', '.join(LANGUAGES)}")
            per[section][name] = str(lang)

    return Routing(
        units=units, roles=roles, any_unit=any_unit, levels=levels, rules=rules, fallback=fallback, retry=retry,
        useful=useful, quiet_units=quiet_units, quiet_residents=quiet_residents, wecom=wecom, providers=providers,
        language_default=str(lang_default), language_units=per["units"], language_roles=per["roles"],
        timezone=tz.key, path=path,
    )  # fmt: skip
