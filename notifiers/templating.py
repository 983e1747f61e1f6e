"""Message rendering: alert CloudEvents → SMS, e-mail and WeCom texts from ``templates/``.

One template per (language, channel, kind, part); the layout and the variables
a template sees are described in ``templates/README.md``.  In short::

    templates/{language}/{channel}/{kind}.{part}.j2
    kind     alert.warning | alert.overdue | alert.escalation | alert.reminder | alert.violation
             | notice.pre_outage | notice.delay_update | notice.restoration | notice.correction
             | notice.emergency_outage
    sms      {kind}.txt.j2                                  plain text
    email    {kind}.subject.txt.j2, {kind}.html.j2, {kind}.txt.j2
    wecom    {kind}.md.j2                                   WeCom group-robot markdown

Safety, in the order a reviewer should check it:

* **Sandbox.**  Templates run in :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`
  (a ``SandboxedEnvironment`` that also forbids changing the data): no access to
  ``__class__``, ``__globals__`` and the like, no mutation of the alert.
* **StrictUndefined.**  A name a template uses but the view does not define is an
  error, never a silent blank.  Every variable of the view is always present
  (``None`` when the alert lacks it), so real alerts with few fields render and a
  typo fails ``waterwatch templates check``.
* **Escaping.**  HTML autoescape is on for ``*.html.j2`` only.  Shared macro files
  (``_*.j2``) imported from an HTML template are compiled a second time *in HTML
  mode* (the environment rewrites the import name, see :class:`_Environment`), so a
  value a shared macro prints is escaped in e-mail HTML and left alone in SMS.
  WeCom markdown has no escaping of its own: templates pass values through ``|md``.
* **Personal data.**  Free text that came from outside (summary, location, cause,
  reasons, area description) is passed through :func:`waterwatch.masking.mask_text`
  before any template sees it (:func:`mask_free_text`: also a number right after a
  Chinese character), so a phone number or e-mail address inside it is masked on
  every channel.  Resident notices (停水通知) see only the outage itself:
  the area's description and names (never account lists), times, cause, hotline.

Times are shown in the policy's time zone (Asia/Shanghai) as people read them
(``11月29日 09:00`` / ``29 Nov 09:00``); durations as ``12小时`` / ``12 hours``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import BuiltinMethodType
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, pass_context
from jinja2.environment import TemplateModule
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from markupsafe import Markup

from waterwatch.codes import NoticeKind
from waterwatch.masking import mask_phone, mask_text

LANGUAGES = ("zh", "en")
CHANNELS = ("sms", "email", "wecom")
ALERT_KINDS = ("alert.warning", "alert.overdue", "alert.escalation", "alert.reminder", "alert.violation")
NOTICE_KINDS = tuple(f"notice.{k.value}" for k in NoticeKind)
KINDS = ALERT_KINDS + NOTICE_KINDS

PARTS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "sms": (("text", "txt"),),
    "email": (("subject", "subject.txt"), ("html", "html"), ("text", "txt")),
    "wecom": (("markdown", "md"),),
}
"""Per channel: (field of :class:`Rendered`, file-name part) of each template it needs."""

REPO_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def templates_dir(explicit: Path | str | None = None) -> Path:
    """``explicit``, else ``$WATERWATCH_TEMPLATES``, else the project's ``templates/`` (or ``./templates``).

    An installed wheel carries no ``templates/`` (the Docker image copies it to
    ``/app/templates``, its working directory), hence the fallback to the
    working directory.
    """
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("WATERWATCH_TEMPLATES")
    if env:
        return Path(env)
    return REPO_TEMPLATES if REPO_TEMPLATES.is_dir() else Path("templates")


DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_HOTLINE = "12345"
"""Fallback hotline when neither the alert's context nor ``templates/settings.yaml`` gives one."""

SHARED_TEMPLATE = "_common.j2"
"""Per language, the shared wording: its macros are the variable ``m`` of every template."""

HTML_MODE = "+html"
"""Suffix of a shared template's name when it is compiled in HTML (autoescape) mode."""

LABEL_PREFIX = "label_"
"""A shared template's macro ``label_X()`` is computed once per message (plain text) as the variable ``X_label``."""

_LINE_JOIN = {"zh": "", "en": " "}
"""How the lines of a one-paragraph part (SMS, e-mail subject) are joined, per language."""

FREE_TEXT = ("summary", "location", "cause", "reason", "note", "basis")
"""Context fields that carry free text from outside: masked before any template sees them."""


class TemplateError(Exception):
    """A template is missing or cannot render: names the template and the reason."""

    def __init__(self, template: str, reason: str) -> None:
        super().__init__(f"{template}: {reason}")
        self.template = template
        self.reason = reason


class MissingTemplate(TemplateError):
    """No template for a (language, channel, kind): there is no fallback to another language."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered message. ``subject``/``html`` are e-mail only, ``markdown`` WeCom only."""

    kind: str
    channel: str
    language: str
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    markdown: str | None = None
    templates: tuple[str, ...] = field(default=())

    @property
    def body(self) -> str:
        """The main body: the markdown for WeCom, else the plain text."""
        return (self.markdown if self.channel == "wecom" else self.text) or ""


# --------------------------------------------------------------------------- names


def kind_of(event: Mapping[str, Any]) -> str:
    """Template kind of an alert CloudEvent: its type, or ``notice.<kind>`` for ``notice.due``."""
    etype = str(event.get("type", ""))
    if etype == "notice.due":
        notice = (event.get("data") or {}).get("notice")
        kind = f"notice.{notice}"
        if kind not in NOTICE_KINDS:
            raise ValueError(f"notice.due with unknown notice kind {notice!r}")
        return kind
    if etype not in ALERT_KINDS:
        raise ValueError(f"not an alert type: {etype!r}")
    return etype


def audience(kind: str) -> str:
    """``residents`` for resident notices (停水通知), ``staff`` for unit alerts."""
    return "residents" if kind.startswith("notice.") else "staff"


def template_names(language: str, channel: str, kind: str) -> list[tuple[str, str]]:
    """(Rendered field, template name) for every part of one message."""
    if channel not in PARTS:
        raise ValueError(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)})")
    return [(fld, f"{language}/{channel}/{kind}.{ext}.j2") for fld, ext in PARTS[channel]]


def is_html(name: str | None) -> bool:
    return name is not None and (name.endswith(".html.j2") or name.endswith(HTML_MODE))


# ------------------------------------------------------------------ the environment


class _Loader(FileSystemLoader):
    """Serves ``x.j2+html`` from the file ``x.j2`` (the same source, compiled in HTML mode)."""

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        if template.endswith(HTML_MODE):
            template = template[: -len(HTML_MODE)]
        return super().get_source(environment, template)

    def list_templates(self) -> list[str]:
        return [t for t in super().list_templates() if t.endswith(".j2")]


_CACHEABLE_TYPES = frozenset({str, Markup, dict, list, tuple, int, float, bool, type(None), TemplateModule})
"""Types whose attribute safety :meth:`_Environment.is_safe_attribute` remembers (their ABCs are fixed)."""


_SUBSCRIPT, _ATTRIBUTE, _SANDBOX = object(), object(), object()
"""How :meth:`_Environment.getattr` answers ``obj.name`` for a plain ``dict`` or ``str``."""


class _Environment(ImmutableSandboxedEnvironment):
    """Sandboxed, StrictUndefined; imports from an HTML template load shared files in HTML mode."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe_attributes: dict[tuple[type, str], bool] = {}
        self._attribute_paths: dict[tuple[type, str], object] = {}

    timezone: ZoneInfo = ZoneInfo(DEFAULT_TIMEZONE)  # the filters show times here (not visible to templates)

    def join_path(self, template: str, parent: str) -> str:
        if is_html(parent) and not is_html(template):
            return template + HTML_MODE
        return template

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call from a template; a macro or a built-in method is called directly.

        The sandbox's check (``unsafe_callable``/``alters_data`` on the object) and
        :meth:`Context.call`'s context injection do nothing for these: a macro or a
        built-in cannot carry those attributes (templates cannot set attributes) and
        takes no context argument.  What a template may *reach* is unchanged: a
        mutating method such as ``dict.update`` is refused when it is looked up
        (:meth:`is_safe_attribute`), before any call.  Every other callable goes
        through the sandbox as before.
        """
        cls = type(__obj)
        if cls is Macro:  # as Context.call does: the caller's eval context decides the escaping
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            arguments = _macro_arguments(__obj, args, kwargs)
            if arguments is None:
                return __obj(__context.eval_ctx, *args, **kwargs)
            out = __obj._func(*arguments)
            return Markup(out) if __context.eval_ctx.autoescape else out
        if cls is BuiltinMethodType:
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            return __obj(*args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute`` from a template; for a plain ``dict`` or ``str``, the sandbox's answer remembered.

        The sandbox tries the attribute, catches the ``AttributeError`` and subscripts
        (``area.description``), or checks the attribute it found (``names.get``,
        ``stage.startswith``) with :meth:`is_safe_attribute` and ``wrap_str_format``.
        A ``dict`` or ``str`` has no instance attributes and Jinja's checks depend on
        the type and the name only, so the path is decided once per (type, name):
        subscript, plain attribute, or the sandbox itself (an unsafe attribute such as
        ``dict.update``, and ``str.format``, which the sandbox wraps).  A macro of a
        module (``m.facts``) is returned as the sandbox would (a public name of a
        module; a ``Macro`` is not a ``str.format`` method).  Any other object goes
        through the sandbox.
        """
        cls = type(obj)
        if cls is dict or cls is str:
            path = self._attribute_paths.get((cls, attribute))
            if path is None:
                path = self._attribute_path(obj, attribute)
            if path is _SUBSCRIPT:
                try:
                    return obj[attribute]
                except (TypeError, LookupError):
                    return self.undefined(obj=obj, name=attribute)
            if path is _ATTRIBUTE:
                return getattr(obj, attribute)
        elif cls is TemplateModule and not attribute.startswith("_"):
            value = obj.__dict__.get(attribute)
            if type(value) is Macro:
                return value
        return super().getattr(obj, attribute)

    def _attribute_path(self, obj: Any, attribute: str) -> object:
        cls = type(obj)
        if not hasattr(cls, attribute):
            path = _SUBSCRIPT
        else:
            value = getattr(obj, attribute)
            safe = self.wrap_str_format(value) is None and self.is_safe_attribute(obj, attribute, value)
            path = _ATTRIBUTE if safe else _SANDBOX
        self._attribute_paths[(cls, attribute)] = path
        return path

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """The sandbox's own decision, remembered per (type, attribute).

        Jinja decides from ``type(obj)`` and ``attr`` only (internal attributes of
        functions, methods, frames…; mutating methods of lists, dicts and sets), never
        from ``value``; asking once per pair instead of on every attribute a template
        reads saves about a tenth of a render.  Only built-in types are remembered, so
        a class registered with a mutable ABC later cannot reuse an old answer.
        """
        cls = type(obj)
        if cls not in _CACHEABLE_TYPES:
            return super().is_safe_attribute(obj, attr, value)
        key = (cls, attr)
        safe = self._safe_attributes.get(key)
        if safe is None:
            safe = self._safe_attributes[key] = super().is_safe_attribute(obj, attr, value)
        return safe


def _macro_arguments(macro: Macro, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
    """The arguments ``Macro.__call__`` would pass to the macro's function, for the plain case.

    Plain: no ``caller``, no ``*varargs``/``**kwargs`` in the macro, no more positional
    arguments than it takes, keywords only for its parameters after them.  Each
    parameter not given is ``missing`` (the compiled macro applies its default), as
    ``Macro.__call__`` does.  Anything else (``None``) goes through ``Macro.__call__``,
    which also raises its errors.  Saves about half of a macro call's overhead; a
    macro call is the commonest operation of a render.
    """
    if macro.caller or macro.catch_kwargs or macro.catch_varargs or macro._environment.is_async:
        return None
    given = len(args)
    rest = macro.arguments[given:]
    if given > macro._argument_count:
        return None
    if not kwargs:
        return [*args, *([missing] * len(rest))]
    if not kwargs.keys() <= set(rest):
        return None
    return [*args, *(kwargs.get(name, missing) for name in rest)]


def make_environment(template_dir: Path, timezone: str = DEFAULT_TIMEZONE) -> _Environment:
    """The sandboxed environment for one template directory; times are shown in ``timezone``."""
    env = _Environment(
        loader=_Loader(str(template_dir), encoding="utf-8"),
        undefined=StrictUndefined,
        autoescape=is_html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.filters.update(
        local=_local,
        span=_span,
        duration=_duration,
        mask=_mask,
        clip=_clip,
        md=md_escape,
        article=_article,
        oneline=_oneline,
    )
    env.timezone = ZoneInfo(timezone)
    return env


# ------------------------------------------------------------------------ filters

_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _to_dt(value: Any, tz: ZoneInfo) -> datetime | None:
    if type(value) is str and value:
        return _parse_iso(value, tz)
    return _parse_dt(value, tz)


@lru_cache(maxsize=4096)
def _parse_iso(value: str, tz: ZoneInfo) -> datetime | None:
    """:func:`_parse_dt` of an ISO string (remembered: a message shows the same few times several times)."""
    return _parse_dt(value, tz)


def _parse_dt(value: Any, tz: ZoneInfo) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float):
        dt = datetime.fromtimestamp(value, tz)
    else:
        dt = datetime.fromisoformat(str(value))
    if dt.tzinfo is None:
        raise ValueError(f"time without offset: {value!r}")
    return dt.astimezone(tz)


def _ctx_tz(ctx: Context) -> ZoneInfo:
    tz = getattr(ctx.environment, "timezone", None)
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(DEFAULT_TIMEZONE)


def _ctx_lang(ctx: Context) -> str:
    lang = ctx.get("lang")
    return lang if isinstance(lang, str) else "zh"


def format_local(value: Any, lang: str, tz: ZoneInfo, style: str = "datetime", ref_year: int | None = None) -> str:
    """A time for people: ``11月29日 09:00`` / ``29 Nov 09:00``; the year only when it differs from ``ref_year``."""
    dt = _to_dt(value, tz)
    if dt is None:
        return ""
    hm = f"{dt.hour:02d}:{dt.minute:02d}"
    if style == "time":
        return hm
    year = ref_year is not None and dt.year != ref_year
    if lang == "zh":
        day = f"{dt.year}年{dt.month}月{dt.day}日" if year else f"{dt.month}月{dt.day}日"
    else:
        day = f"{dt.day} {_MONTHS_EN[dt.month - 1]}" + (f" {dt.year}" if year else "")
    return day if style == "date" else f"{day} {hm}"


def _ref_year(ctx: Context) -> int | None:
    ref = ctx.get("fired_at")
    try:
        dt = _to_dt(ref, _ctx_tz(ctx))
    except (TypeError, ValueError):
        return None
    return dt.year if dt else None


@pass_context
def _local(ctx: Context, value: Any, style: str = "datetime") -> str:
    return format_local(value, _ctx_lang(ctx), _ctx_tz(ctx), style, _ref_year(ctx))


@pass_context
def _span(ctx: Context, start: Any, end: Any) -> str:
    """``12月1日 09:00至16:00`` (same day) or ``12月1日 22:00至12月2日 06:00``; ``… to …`` in English."""
    lang, tz, ref = _ctx_lang(ctx), _ctx_tz(ctx), _ref_year(ctx)
    s, e = _to_dt(start, tz), _to_dt(end, tz)
    word = "至" if lang == "zh" else " to "
    if s is None:
        return format_local(e, lang, tz, "datetime", ref)
    if e is None:
        return format_local(s, lang, tz, "datetime", ref)
    tail = format_local(e, lang, tz, "time" if s.date() == e.date() else "datetime", ref)
    return f"{format_local(s, lang, tz, 'datetime', ref)}{word}{tail}"


_DURATION_TOKEN = re.compile(r"(\d+)\s*([dhms])")


def parse_compact_duration(value: Any) -> int | None:
    """``12h``, ``6h 50m``, ``1d 2h`` (the engine's ``format_duration``) or seconds → seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return round(value)
    tokens = _DURATION_TOKEN.findall(str(value))
    if not tokens or _DURATION_TOKEN.sub("", str(value)).strip():
        raise ValueError(f"not a duration: {value!r}")
    size = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * size[u] for n, u in tokens)


def format_duration_for(seconds: Any, lang: str) -> str:
    """Seconds → ``12小时``, ``6小时50分钟``, ``5天3小时`` / ``12 hours``, ``6 hours 50 minutes``.

    Like the measures (and the policy's ``format_duration``): hours up to 4 days,
    days beyond.  At most two units; rounded to the minute from one hour on, to
    the hour from ten hours on (``95小时59分钟`` reads as ``96小时``).
    """
    s = parse_compact_duration(seconds)
    if s is None:
        return ""
    return _duration_text(abs(s), lang)


@lru_cache(maxsize=4096)
def _duration_text(s: int, lang: str) -> str:
    """:func:`format_duration_for` of whole seconds ≥ 0 (remembered: alerts repeat the same few durations)."""
    if s >= 10 * 3600:
        s = round(s / 3600) * 3600
    elif s >= 3600:
        s = round(s / 60) * 60
    units: list[tuple[str, int]] = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)]
    if s < 4 * 86400:
        units = units[1:]
    parts: list[tuple[int, str]] = []
    for unit, size in units:
        if s >= size:
            parts.append((s // size, unit))
            s %= size
        if len(parts) == 2 or (parts and unit == "m"):
            break
    if not parts:
        parts = [(0, "m")]
    zh = {"d": "天", "h": "小时", "m": "分钟", "s": "秒"}
    en = {"d": "day", "h": "hour", "m": "minute", "s": "second"}
    if lang == "zh":
        return "".join(f"{n}{zh[u]}" for n, u in parts)
    return " ".join(f"{n} {en[u]}{'' if n == 1 else 's'}" for n, u in parts)


@pass_context
def _duration(ctx: Context, value: Any) -> str:
    return format_duration_for(value, _ctx_lang(ctx))


_PHONE_IN_CJK_TEXT = re.compile(r"(?<![0-9A-Za-z+])(\+?\d{7,15}|0\d{2,3}-\d{7,8})(?!\d)")
"""A phone number inside Chinese text: ``电话13912345678`` has a word character before the digits, which
:func:`waterwatch.masking.mask_text` (``(?<![\\w+])``, Unicode-aware) does not mask."""


def mask_free_text(value: Any) -> str:
    """Mask phone numbers and e-mail addresses in free text, also when they follow a Chinese character."""
    if value is None:
        return ""
    return mask_text(_PHONE_IN_CJK_TEXT.sub(lambda m: mask_phone(m.group(1)), str(value)))


def _mask(value: Any) -> str:
    return mask_free_text(value)


@pass_context
def _clip(ctx: Context, value: Any, limit: int) -> str:
    """At most ``limit`` UTF-16 units (what UCS-2 SMS bills), ending in ``…`` (``...`` in English) when cut."""
    text = "" if value is None else str(value)
    units = [2 if ord(c) > 0xFFFF else 1 for c in text]
    if sum(units) <= limit:
        return text
    ellipsis = "…" if _ctx_lang(ctx) == "zh" else "..."
    budget, out = limit - len(ellipsis), []
    for c, w in zip(text, units, strict=True):
        if budget - w < 0:
            break
        budget -= w
        out.append(c)
    return "".join(out).rstrip() + ellipsis


_MD_SPECIAL = str.maketrans({
    "[": "［", "]": "］", "<": "＜", ">": "＞", "`": "｀", "*": "＊", "#": "＃", "|": "｜",
    "\r": " ", "\n": " ", "\t": " ",
})  # fmt: skip


def md_escape(value: Any) -> str:
    """Neutralise WeCom markdown in a value: no links, mentions, bold, headings, quotes or new lines."""
    if value is None:
        return ""
    return re.sub(r" {2,}", " ", str(value).translate(_MD_SPECIAL))


_ARTICLE = re.compile(r"^\s*(\d+)\s*(?:\((\d+)\))?\s*$")


@pass_context
def _article(ctx: Context, value: Any) -> str:
    """``15(2)`` → ``第15条第2项`` / ``Art. 15(2)``; ``19(1), 20`` → ``第19条第1项、第20条``."""
    if not value:
        return ""
    lang = _ctx_lang(ctx)
    pieces = [p.strip() for p in str(value).split(",") if p.strip()]
    if lang != "zh":
        return ("Art. " if len(pieces) == 1 else "Arts. ") + ", ".join(pieces)
    out = []
    for p in pieces:
        m = _ARTICLE.match(p)
        if not m:
            out.append(f"第{p}条")
        else:
            out.append(f"第{m.group(1)}条" + (f"第{m.group(2)}项" if m.group(2) else ""))
    return "、".join(out)


def _oneline(value: Any) -> str:
    return " ".join(str(value or "").split())


# ------------------------------------------------------------------------ the view


def _settings(template_dir: Path) -> dict[str, Any]:
    path = template_dir / "settings.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise TemplateError(str(path), "must be a mapping (hotline, sender)")
    return data


def _names(units: Any, lang: str) -> dict[str, str]:
    """Unit id → display name in ``lang`` (Chinese name, or ``name_en``)."""
    if units is None:
        return {}
    out: dict[str, str] = {}
    for uid in units:
        u = units[uid]
        if isinstance(u, Mapping):
            name = u.get("name_en" if lang == "en" else "name") or u.get("name") or uid
        else:
            name = (u.name_en if lang == "en" else u.name) or uid
        out[str(uid)] = str(name)
    return out


def _area(raw: Any) -> dict[str, Any] | None:
    """An outage area for the templates: names and description, the *number* of accounts only."""
    if not isinstance(raw, Mapping):
        return None
    desc = raw.get("description")
    return {
        "description": mask_free_text(desc) if desc else None,
        "districts": [str(x) for x in raw.get("districts") or []],
        "compounds": [str(x) for x in raw.get("compounds") or []],
        "zones": [str(x) for x in raw.get("zones") or []],
        "accounts": len(raw.get("accounts") or []),
    }


def _masked(value: Any, key: str = "") -> Any:
    if key == "hotline":
        return value
    if key == "area":
        return _area(value)
    if key == "accounts":
        return len(value) if isinstance(value, list) else None
    if isinstance(value, str):
        return mask_free_text(value)
    if isinstance(value, Mapping):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


class _MaskedContext(Mapping[str, Any]):
    """The view's ``context``: the alert's whole context, masked as :func:`_masked` masks it.

    Masked when a template first reads it: none of the shipped templates does, and
    masking every string of the context was a third of building the view.
    """

    __slots__ = ("_masked", "_raw")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw
        self._masked: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._masked is None:
            self._masked = _masked(dict(self._raw))
        return self._masked

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return repr(self._data())


def _seconds(iso: Any) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(str(iso)).timestamp()


VIEW_CONTEXT_FIELDS = (
    "summary", "location", "category", "hotline_tier", "urgency", "cause", "reason", "starts_at",
    "expected_end_at", "previous_expected_end_at", "restored_at", "outage_kind", "pressure_limited",
    "emergency", "cancelled", "supersedes", "public_channels", "pipe_diameter_mm", "in_meter_well",
    "returned_by", "returns", "extensions_granted", "delays", "dispatched_at", "cites", "assist",
    "counts", "original_due_at", "reopened_at", "diameter_unknown",
)  # fmt: skip
"""Context fields a template can use by name (``None`` when the alert lacks them)."""


class Renderer:
    """Renders alert CloudEvents (``Alert.to_event()``) with the templates of ``template_dir``.

    ``template_dir`` defaults to :func:`templates_dir` (``$WATERWATCH_TEMPLATES`` or
    the project's ``templates/``).
    ``units`` (a :class:`~waterwatch.core.units.UnitsDirectory` or a mapping of
    unit id → ``{name, name_en}``) gives unit names; ``policy`` gives rule
    articles.  Without them, ids are shown.
    """

    def __init__(
        self,
        template_dir: Path | str | None = None,
        language: str = "zh",
        *,
        units: Any = None,
        policy: Any = None,
        timezone: str | None = None,
        hotline: str | None = None,
    ) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r} (one of {', '.join(LANGUAGES)})")
        self.template_dir = templates_dir(template_dir)
        if not self.template_dir.is_dir():
            raise TemplateError(str(self.template_dir), "no such template directory")
        self.language = language
        self.units = units
        self.policy = policy
        self.settings = _settings(self.template_dir)
        tz = timezone or getattr(policy, "timezone", None) or DEFAULT_TIMEZONE
        self.tz = ZoneInfo(tz)
        self.hotline = (
            hotline or os.environ.get("WATERWATCH_HOTLINE") or str(self.settings.get("hotline") or DEFAULT_HOTLINE)
        )
        self.env = make_environment(self.template_dir, tz)
        self._names = {lang: _names(units, lang) for lang in LANGUAGES}
        self._templates: dict[str, Any] = {}  # name → compiled template (the files are not reloaded)
        self._local = threading.local()  # per thread: the variables and modules of :class:`_Shared`

    @classmethod
    def from_config(
        cls, template_dir: Path | str | None = None, config_dir: Path | None = None, language: str = "zh"
    ) -> Renderer:
        """A renderer with the unit names and rule articles of a configuration directory."""
        from waterwatch.core.config import load_config

        cfg = load_config(config_dir)
        return cls(template_dir, language, units=cfg.units, policy=cfg.policy)

    # -------------------------------------------------------------- public

    def render(self, alert_event: Mapping[str, Any], channel: str, language: str | None = None) -> Rendered:
        """Render one alert CloudEvent for ``channel`` in ``language`` (default: the renderer's)."""
        lang = language or self.language
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r} (one of {', '.join(LANGUAGES)})")
        kind = kind_of(alert_event)
        view = self.view(alert_event, lang)
        parts: dict[str, str] = {}
        # One variables mapping for every part, globals included (each part's context
        # reads it as is instead of copying it), and ``m`` built once per language and
        # mode: see :class:`_Shared`.
        shared = self._shared_state()
        variables = shared.bind(self.env.globals, view)
        named = template_names(lang, channel, kind)
        shared.label(self._shared_template(lang, False))
        # plain-text parts first: the HTML part reuses what they kept in ``memo`` (see :class:`_Memo`)
        for fld, name in sorted(named, key=lambda part: is_html(part[1])):
            try:
                template = self._template(name)
            except TemplateNotFound as exc:
                missing = exc.name if isinstance(exc.name, str) else name
                raise MissingTemplate(name, f"template not found ({missing})") from None
            variables["m"] = shared.module(self._shared_template(lang, is_html(name)))
            parts[fld] = _tidy(channel, fld, _render(template, variables), lang)
        return Rendered(kind=kind, channel=channel, language=lang, templates=tuple(n for _, n in named), **parts)

    def _template(self, name: str) -> Any:
        """The compiled template ``name``, looked up once (the files are not reloaded)."""
        template = self._templates.get(name)
        if template is None:
            template = self._templates[name] = self.env.get_template(name)
        return template

    def _shared_state(self) -> _Shared:
        state: _Shared | None = getattr(self._local, "shared", None)
        if state is None:
            state = self._local.shared = _Shared()
        return state

    def _shared_template(self, lang: str, html: bool) -> Any:
        """``{lang}/_common.j2`` (compiled in HTML mode for an HTML part): the macros every template sees as ``m``."""
        name = f"{lang}/{SHARED_TEMPLATE}" + (HTML_MODE if html else "")
        try:
            return self._template(name)
        except TemplateNotFound:
            raise MissingTemplate(name, "template not found") from None

    def view(self, alert_event: Mapping[str, Any], language: str | None = None) -> dict[str, Any]:
        """The variables a template sees for this alert (see templates/README.md)."""
        lang = language or self.language
        data: Mapping[str, Any] = alert_event.get("data") or {}
        ctx: Mapping[str, Any] = data.get("context") or {}
        kind = kind_of(alert_event)
        rule_id = data.get("rule")
        rule = self.policy.rules.get(rule_id) if self.policy is not None and rule_id else None
        names = self._names[lang]
        unit = data.get("unit")
        fired = _seconds(data.get("fired_at"))
        due = _seconds(data.get("due_at"))
        late_by = data.get("late_by")
        sent = None if fired is None else fired + (late_by or 0)
        previous = ctx.get("previous")
        view: dict[str, Any] = {
            "lang": lang,
            "kind": kind,
            "type": alert_event.get("type"),
            "audience": audience(kind),
            "alert_id": data.get("alert_id") or alert_event.get("id"),
            "matter_id": data.get("matter_id") or alert_event.get("subject"),
            "matter_kind": data.get("matter_kind"),
            "rule": rule_id,
            "rule_article": getattr(rule, "article", None),
            "rule_what": getattr(rule, "what", None),
            "clock": data.get("clock"),
            "level": data.get("level"),
            "stage": data.get("stage"),
            "notice": data.get("notice"),
            "due_at": data.get("due_at"),
            "fired_at": data.get("fired_at"),
            "sent_at": None if sent is None else datetime.fromtimestamp(sent, self.tz).isoformat(),
            "late_by": late_by,
            "overdue_by": (sent - due) if sent is not None and due is not None and sent > due else None,
            "remaining": (due - sent) if sent is not None and due is not None and due > sent else None,
            "limit": parse_compact_duration(ctx.get("limit")),
            "lead": getattr(rule, "lead", None),
            "report_before": getattr(rule, "report_before", None),
            "starts_in": None,
            "clock_started_at": ctx.get("started_at"),
            "unit": unit,
            "unit_name": names.get(unit, unit) if unit else None,
            "names": names,
            "notify": list(data.get("notify") or []),
            "message": data.get("message"),
            "hotline": str(ctx.get("hotline") or self.hotline),
            "sender": self._sender(lang),
            "ticket_channel": ctx.get("channel"),
            "area": _area(ctx.get("area")),
            "previous": None,
            "context": _MaskedContext(ctx),
        }
        for key in VIEW_CONTEXT_FIELDS:
            value = ctx.get(key)
            view[key] = mask_free_text(value) if key in FREE_TEXT and isinstance(value, str) else value
        starts = _seconds(view["starts_at"])
        if starts is not None and sent is not None and starts > sent:
            view["starts_in"] = starts - sent
        if isinstance(previous, Mapping):
            view["previous"] = {
                "starts_at": previous.get("starts_at"),
                "expected_end_at": previous.get("expected_end_at"),
                "area": _area(previous.get("area")),
            }
        return view

    def _sender(self, lang: str) -> str:
        sender = self.settings.get("sender")
        if isinstance(sender, Mapping) and sender.get(lang):
            return str(sender[lang])
        return "聊城水务集团" if lang == "zh" else "Liaocheng Water Group"


class _Memo:
    """``memo``: what a shared macro computed for one message, for the message's other parts.

    ``memo.get(key) or memo.keep(key, items)``: the detail rows of an e-mail are the
    same data in its text and its HTML part.  A list is kept only when it holds no
    ``Markup``: computed in text mode, its values are plain text, which the HTML
    part escapes when it prints them, giving what computing them again in HTML mode
    gives (the shared macros print plain text only, see ``_common.j2``); computed in
    HTML mode, it holds escaped macro output and is not kept.  The renderer renders
    an e-mail's text part before its HTML part so that the HTML part finds it.
    """

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        return self._kept.get(key)

    def keep(self, key: Any, items: Any) -> Any:
        if not _holds_markup(items):
            self._kept[key] = items
        return items


def _holds_markup(value: Any) -> bool:
    if isinstance(value, Markup):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_markup(v) for v in value)
    if isinstance(value, Mapping):
        return any(_holds_markup(v) for v in value.values())
    return False


class _Shared:
    """The variables of the message being rendered, and ``m``: one module per shared template.

    Building ``_common.j2``'s module (its dictionaries and a ``Macro`` object per
    macro) cost about a tenth of an e-mail, twice (text and HTML mode) per message.
    Nothing in it depends on the message except through the names its macros look up
    when *called*, and those are looked up in the mapping the module was built with
    (Jinja's ``shared`` context keeps that mapping, uncopied, as the module's parent).
    So each module is built once and kept, over one ``variables`` dict whose contents
    :meth:`bind` replaces for every message.  A top-level ``{% set %}`` in the file
    would be computed once for the first message and kept: per-message values are
    ``label_X`` macros instead (:meth:`label`).  One instance per thread (the dict is
    rebound per message), as :attr:`Renderer._local` keeps it.
    """

    __slots__ = ("labels", "modules", "variables")

    def __init__(self) -> None:
        self.variables: dict[str, Any] = {}
        self.modules: dict[Any, Any] = {}  # shared template -> its module
        self.labels: dict[Any, tuple[tuple[str, Macro], ...]] = {}  # shared template -> (X_label, label_X macro)

    def bind(self, globals_: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
        v = self.variables
        v.clear()
        v.update(globals_)
        v.update(view)
        v["memo"] = _Memo()
        return v

    def module(self, template: Any) -> Any:
        mod = self.modules.get(template)
        if mod is None:
            mod = self.modules[template] = template.make_module(self.variables, shared=True)
        return mod

    def label(self, template: Any) -> None:
        """Bind ``X_label`` to the plain-text output of each ``label_X`` macro of ``template``'s module."""
        labels = self.labels.get(template)
        if labels is None:
            labels = self.labels[template] = tuple(
                (f"{k[len(LABEL_PREFIX) :]}_label", v)
                for k, v in sorted(vars(self.module(template)).items())
                if k.startswith(LABEL_PREFIX) and isinstance(v, Macro)
            )
        v = self.variables
        for key, macro in labels:
            v[key] = macro()


def _render(template: Any, variables: dict[str, Any]) -> str:
    """``template.render(variables)`` without copying ``variables`` (Jinja's ``shared`` context).

    The template only reads the mapping: what it sets lives in its own context.
    Errors are reported exactly as ``render`` reports them (file and line).
    """
    ctx = template.new_context(variables, shared=True)
    try:
        return str(template.environment.concat(template.root_render_func(ctx)))
    except Exception:
        template.environment.handle_exception()
        raise  # handle_exception always raises; this keeps type checkers informed


def _tidy(channel: str, field_name: str, out: str, lang: str) -> str:
    """Whitespace: SMS and subjects are one paragraph (see :func:`tidy_sms`); blocks are tidied otherwise."""
    if channel == "sms" or field_name == "subject":
        return tidy_sms(out, lang)
    if field_name == "html":
        return out.strip() + "\n"
    lines = [ln.rstrip() for ln in out.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def tidy_sms(out: str, lang: str) -> str:
    """An SMS is one paragraph: lines trimmed and joined (no separator in Chinese, a space in English)."""
    joined = _LINE_JOIN.get(lang, " ").join(ln.strip() for ln in out.splitlines() if ln.strip())
    return re.sub(r" {2,}", " ", joined).strip()
