"""The event contract: CloudEvents 1.0 (JSON structured mode) for every type.

Input events arrive on ``waterwatch.events`` (key = ``subject`` = matter id);
output events leave on ``waterwatch.alerts``.  Type names are stable: other
systems depend on them (DESIGN.md, "The event contract").

Parsing is strict: an event that does not fit is refused with one readable
line that names the field and the problem (:class:`EventError`), which is what
``waterwatch publish`` prints and what the dead-letter topic records.

Personal data (reporter name, phone, e-mail; addresses) may travel inside
events but must never be logged in clear: use :func:`waterwatch.masking.mask`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from waterwatch.codes import (
    AlertLevel,
    Category,
    Channel,
    HotlineTier,
    NoticeKind,
    OutageKind,
    PublicChannel,
    Urgency,
)

SPECVERSION = "1.0"
MAX_EVENT_BYTES = 256 * 1024
"""Largest accepted serialized event; larger payloads are refused as ``too_large``."""

MatterId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$",
        description="Matter id (事项编号): letters, digits and . _ : - ; also the Kafka key.",
    ),
]
UnitId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Unit id from the units directory (config/units.yaml), e.g. runda.",
    ),
]
ShortText = Annotated[str, Field(max_length=2000)]


def _rfc3339_text(value: Any) -> Any:
    """Times travel as RFC 3339 text with an offset, never as bare numbers."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be an RFC 3339 time with an offset, like 2026-11-27T09:00:00+08:00, not a number")
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


# --------------------------------------------------------------------------- data


class Reporter(_Model):
    """Who reported a matter. Personal data: never logged in clear."""

    name: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254)


class Area(_Model):
    """Where an outage applies: any mix of districts, compounds, supply zones, accounts."""

    districts: list[str] = Field(default_factory=list, max_length=1000)
    compounds: list[str] = Field(default_factory=list, max_length=10000)
    zones: list[str] = Field(default_factory=list, max_length=1000)
    accounts: list[str] = Field(default_factory=list, max_length=100000)
    description: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _not_empty(self) -> Area:
        if not (self.districts or self.compounds or self.zones or self.accounts):
            raise ValueError("an area needs at least one district, compound, zone or account")
        return self


class TicketCreatedData(_Model):
    channel: Channel
    category: Category | None = None
    hotline_tier: HotlineTier | None = Field(
        default=None, description="Feedback tier of a 12345 order (R14.1-R14.4)."
    )
    urgency: Urgency | None = Field(default=None, description="Return window (R14.5).")
    due_at: Time | None = Field(
        default=None, description="Explicit due time from the 12345 centre (R14.due)."
    )
    unit: UnitId | None = None
    summary: ShortText | None = None
    location: ShortText | None = Field(default=None, description="Address; personal data.")
    reporter: Reporter | None = None

    @model_validator(mode="after")
    def _has_a_clock(self) -> TicketCreatedData:
        if self.category is None and self.hotline_tier is None and self.due_at is None:
            raise ValueError("a ticket needs a category, a hotline_tier or a due_at")
        if self.hotline_tier is not None and self.channel is not Channel.HOTLINE_12345:
            raise ValueError("hotline_tier is only for channel hotline_12345")
        return self


class UnitNoteData(_Model):
    """Data of accepted / responded / resolved / closed / reopened."""

    unit: UnitId | None = None
    note: ShortText | None = None


class TicketDispatchedData(_Model):
    unit: UnitId
    note: ShortText | None = None


class TicketReturnedData(_Model):
    unit: UnitId
    reason: Reason
    basis: ShortText | None = Field(default=None, description="The basis for the return (R14.5).")


class ExtensionRequestedData(_Model):
    requested_due_at: Time
    reason: Reason
    unit: UnitId | None = None


class ExtensionGrantedData(_Model):
    due_at: Time
    reason: ShortText | None = None


class ExtensionDeniedData(_Model):
    reason: ShortText | None = None


class DeadlineSetData(_Model):
    due_at: Time
    reason: ShortText | None = None


class OutagePlannedData(_Model):
    kind: OutageKind
    area: Area
    starts_at: Time
    expected_end_at: Time
    cause: ShortText | None = None
    unit: UnitId
    pressure_limited: bool = Field(default=False, description="Limited pressure, not a full stop.")

    @model_validator(mode="after")
    def _check(self) -> OutagePlannedData:
        if self.expected_end_at <= self.starts_at:
            raise ValueError("expected_end_at must be after starts_at")
        if self.kind is OutageKind.MAINTENANCE and not (self.cause and self.cause.strip()):
            raise ValueError(
                "R19.3: a maintenance outage must state its cause, expected restoration and area"
            )
        return self


class OutageEmergencyData(_Model):
    area: Area
    cause: Reason
    unit: UnitId
    expected_end_at: Time | None = None


class OutageUpdatedData(_Model):
    starts_at: Time | None = None
    expected_end_at: Time | None = None
    area: Area | None = None
    reason: Reason

    @model_validator(mode="after")
    def _changes_something(self) -> OutageUpdatedData:
        if self.starts_at is None and self.expected_end_at is None and self.area is None:
            raise ValueError("an update needs a new starts_at, expected_end_at or area")
        return self


class OutageCancelledData(_Model):
    reason: Reason


class OutageNoteData(_Model):
    """Data of outage.started / outage.restored."""

    note: ShortText | None = None


class OutageDelayData(_Model):
    expected_end_at: Time
    reason: Reason
    unit: UnitId | None = None


class NoticeApprovedData(_Model):
    approved_by: UnitId = "office"
    channels: list[PublicChannel] = Field(
        default_factory=lambda: [PublicChannel.MEDIA, PublicChannel.WECHAT_ACCOUNT]
    )
    note: ShortText | None = None


class LeakReportedData(_Model):
    pipe_diameter_mm: int | None = Field(default=None, gt=0, le=5000)
    location: ShortText | None = None
    unit: UnitId | None = None
    in_meter_well: bool = Field(default=False, description="In the meter well or behind the meter (R25).")


class LeakNoteData(_Model):
    """Data of leak.crew_arrived / leak.repaired."""

    unit: UnitId | None = None
    note: ShortText | None = None


class LeakRepairStartedData(_Model):
    pipe_diameter_mm: int | None = Field(default=None, gt=0, le=5000)
    unit: UnitId | None = None
    note: ShortText | None = None


class DamageReportedData(_Model):
    location: ShortText | None = None
    unit: UnitId | None = None
    summary: ShortText | None = None


class DamageNoteData(_Model):
    note: ShortText | None = None


class MeterRegisteredData(_Model):
    meter_id: Annotated[str, Field(min_length=1, max_length=64)]
    account: Annotated[str, Field(min_length=1, max_length=64)]
    unit: UnitId | None = None


class MeterReadData(_Model):
    meter_id: Annotated[str, Field(min_length=1, max_length=64)]
    account: Annotated[str, Field(min_length=1, max_length=64)]
    period: Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
    estimated: bool = False
    evidence: ShortText | None = Field(default=None, description="Why the meter was not read (R31).")
    explained_to_user: bool = False


# ----------------------------------------------------------------------- envelope


class CloudEvent(_Model):
    """CloudEvents 1.0 envelope, JSON structured mode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, Field(min_length=1, max_length=200)]
    source: Annotated[str, Field(min_length=1, max_length=500)]
    type: str
    time: Time
    subject: MatterId
    datacontenttype: Literal["application/json"] | None = None

    KIND: ClassVar[str] = ""
    # Every concrete event type (made by _event below) declares its own ``data`` model.
    data: Any


def _event(type_name: str, data_model: type[BaseModel], kind: str, doc: str) -> type[CloudEvent]:
    """Make the envelope model of one event type."""
    model: type[CloudEvent] = type(
        _class_name(type_name),
        (CloudEvent,),
        {
            "__doc__": doc,
            "__annotations__": {"type": Literal[type_name], "data": data_model},
            "__module__": __name__,
            "KIND": kind,
        },
    )
    return model


def _class_name(type_name: str) -> str:
    return "".join(part.capitalize() for part in type_name.replace(".", "_").split("_"))


# Input types: (type, data model, matter kind, description)
INPUT_TYPES: dict[str, tuple[type[BaseModel], str, str]] = {
    "ticket.created": (TicketCreatedData, "ticket", "A work order (工单) was created."),
    "ticket.dispatched": (TicketDispatchedData, "ticket", "ops dispatched the order (R13)."),
    "ticket.accepted": (UnitNoteData, "ticket", "The unit accepted (受理) the order."),
    "ticket.responded": (UnitNoteData, "ticket", "The unit responded to the user."),
    "ticket.resolved": (UnitNoteData, "ticket", "The matter was resolved."),
    "ticket.closed": (UnitNoteData, "ticket", "The order was closed."),
    "ticket.reopened": (UnitNoteData, "ticket", "The order was reopened."),
    "ticket.returned": (TicketReturnedData, "ticket", "The unit returned (回退) the order."),
    "ticket.extension_requested": (ExtensionRequestedData, "ticket", "Extension requested."),
    "ticket.extension_granted": (ExtensionGrantedData, "ticket", "ops granted an extension."),
    "ticket.extension_denied": (ExtensionDeniedData, "ticket", "ops denied an extension."),
    "ticket.deadline_set": (DeadlineSetData, "ticket", "ops set the deadline (R15.7)."),
    "outage.planned": (OutagePlannedData, "outage", "A planned outage (停水) was announced."),
    "outage.emergency": (OutageEmergencyData, "outage", "An unforeseen outage (R19.2)."),
    "outage.updated": (OutageUpdatedData, "outage", "An outage's times or area changed."),
    "outage.cancelled": (OutageCancelledData, "outage", "A planned outage was cancelled."),
    "outage.started": (OutageNoteData, "outage", "Supply was stopped."),
    "outage.delay_reported": (OutageDelayData, "outage", "Restoration will be late (R23)."),
    "outage.restored": (OutageNoteData, "outage", "Supply was restored."),
    "outage.notice_approved": (
        NoticeApprovedData,
        "outage",
        "office approved a public-channel notice (R19.2).",
    ),
    "leak.reported": (LeakReportedData, "leak", "A leak was reported (R24)."),
    "leak.crew_arrived": (LeakNoteData, "leak", "The pipeline crew arrived on site."),
    "leak.repair_started": (LeakRepairStartedData, "leak", "The repair started."),
    "leak.repaired": (LeakNoteData, "leak", "The leak was repaired."),
    "damage.reported": (DamageReportedData, "damage", "Outside damage reported (R30)."),
    "damage.inspector_arrived": (DamageNoteData, "damage", "The inspection brigade arrived."),
    "meter.registered": (MeterRegisteredData, "meter", "A billing meter joined the cycle (R31)."),
    "meter.read": (MeterReadData, "meter", "A billing meter was read (R31)."),
}

INPUT_MODELS: dict[str, type[CloudEvent]] = {
    name: _event(name, data, kind, doc) for name, (data, kind, doc) in INPUT_TYPES.items()
}

# ------------------------------------------------------------------------ output


class AlertData(_Model):
    """Data of every alert on ``waterwatch.alerts``."""

    alert_id: Annotated[str, Field(min_length=1, max_length=200)]
    matter_id: MatterId
    matter_kind: Literal["ticket", "outage", "leak", "damage", "meter"]
    rule: Annotated[str, Field(description="A RULES.md rule ID, e.g. R15.2.")]
    clock: Annotated[str, Field(description="The clock within the matter, e.g. accept, resolve.")]
    level: AlertLevel
    stage: Annotated[
        str, Field(description="What threshold fired: warn_50, overdue, escalate_1, reminder_2 ...")
    ]
    due_at: Time | None = Field(description="The deadline in force.")
    fired_at: Time = Field(description="When the threshold was reached (virtual in replay).")
    late_by: float | None = Field(
        default=None, description="Seconds between the threshold and the actual firing, if late."
    )
    unit: UnitId | None = None
    notify: list[str] = Field(
        default_factory=list, description="Roles to tell: unit, unit_head, ops, leaders, ..."
    )
    notice: NoticeKind | None = Field(default=None, description="For notice.due only.")
    message: ShortText = Field(description="A one-line English explanation (not user-facing).")
    context: dict[str, Any] = Field(default_factory=dict, description="Values for the templates.")


OUTPUT_TYPES: dict[str, str] = {
    "alert.warning": "A deadline is approaching (预警).",
    "alert.overdue": "A deadline passed (超时).",
    "alert.escalation": "An overdue matter is escalated (上报).",
    "alert.reminder": "Still overdue: a reminder.",
    "alert.violation": "The input itself broke a rule (e.g. an outage planned < 48 h ahead).",
    "notice.due": "A resident notice (停水通知) is to be sent now.",
}

OUTPUT_MODELS: dict[str, type[CloudEvent]] = {
    name: _event(name, AlertData, "alert", doc) for name, doc in OUTPUT_TYPES.items()
}

ALL_MODELS: dict[str, type[CloudEvent]] = {**INPUT_MODELS, **OUTPUT_MODELS}


# -------------------------------------------------------------- other topic records


class ClockCheck(_Model):
    """A check command on ``waterwatch.clock`` (key = matter id): is this deadline still due?"""

    matter_id: MatterId
    clock: str
    stage: str
    due_at: Time
    version: int = Field(ge=0)


class DeadLetter(_Model):
    """A rejected input on ``waterwatch.deadletter``, with what is needed to re-drive it."""

    reason: str
    error: Annotated[str, Field(description="Error class: invalid_json, not_utf8, schema, ...")]
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key_b64: str | None = None
    value_b64: str = Field(description="The original bytes, base64.")
    rejected_at: Time
    event_type: str | None = None
    matter_id: str | None = None


class DeliveryRecord(_Model):
    """One record per recipient, channel and attempt on ``waterwatch.deliveries``."""

    delivery_id: str
    alert_id: str
    channel: Literal["sms", "email", "wecom", "console", "file"]
    recipient: str = Field(description="A masked recipient reference, never a clear number.")
    attempt: int = Field(ge=0)
    status: Literal[
        "intent", "sent", "delivered", "failed", "permanent_failure", "in_doubt", "skipped"
    ]
    provider_id: str | None = None
    error: str | None = None
    at: Time


class Resident(_Model):
    """A household on the compacted ``waterwatch.residents`` topic (key = account)."""

    account: Annotated[str, Field(min_length=1, max_length=64)]
    name: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254)
    language: Literal["zh", "en"] = "zh"
    districts: list[str] = Field(default_factory=list)
    compounds: list[str] = Field(default_factory=list)
    zones: list[str] = Field(default_factory=list)
    consent: dict[Literal["sms", "email"], bool] = Field(default_factory=dict)


# ------------------------------------------------------------------------- parsing


class EventError(ValueError):
    """An input that is not a valid event. ``str()`` is one readable line."""

    def __init__(self, error: str, reason: str, *, event_type: str | None = None) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        self.event_type = event_type


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(event)"


def describe_validation_error(err: ValidationError, limit: int = 3) -> str:
    """One line naming each bad field and its problem, e.g. ``data.unit: field required``."""
    parts: list[str] = []
    for item in err.errors(include_url=False)[:limit]:
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if item["type"] == "missing":
            msg = "is required"
        elif item["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif item["type"] == "enum":
            expected = item.get("ctx", {}).get("expected", "")
            msg = f"{item.get('input')!r} is not one of {expected}"
        parts.append(f"{_loc(loc)}: {msg}")
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _input_adapter() -> TypeAdapter[Any]:
    """One validator for every input type, chosen by ``type`` (built on first use, then cached)."""
    adapter = _ADAPTERS.get("input")
    if adapter is None:
        union = Union[tuple(INPUT_MODELS.values())]  # type: ignore[valid-type]  # noqa: UP007
        tagged: Any = Annotated[union, Field(discriminator="type")]
        adapter = _ADAPTERS["input"] = TypeAdapter(tagged)
    return adapter


def parse_event(raw: bytes | str | dict[str, Any], *, allow_output: bool = False) -> CloudEvent:
    """Validate raw bytes, text or a decoded dict as one event; raise :class:`EventError`.

    Fast path: an input event's text goes straight to pydantic's JSON validator
    (no ``json.loads``, no intermediate dict; the model picked by ``type`` in
    the same pass).  Whatever it does not accept takes the full path below, so
    every refusal reads exactly as before.
    """
    if not allow_output and not isinstance(raw, dict) and len(raw) <= MAX_EVENT_BYTES:
        try:
            event: CloudEvent = _input_adapter().validate_json(raw)
            return event
        except ValueError:  # ValidationError included: let the full path name the problem
            pass
    if isinstance(raw, bytes):
        if len(raw) > MAX_EVENT_BYTES:
            raise EventError("too_large", f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} limit")
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError("not_utf8", f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if isinstance(raw, str):
        if len(raw) > MAX_EVENT_BYTES:
            raise EventError("too_large", f"event is {len(raw)} characters, over the limit")
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EventError(
                "invalid_json", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if not isinstance(raw, dict):
        raise EventError("schema", f"an event is a JSON object, not {type(raw).__name__}")
    type_name = raw.get("type")
    models = ALL_MODELS if allow_output else INPUT_MODELS
    if not isinstance(type_name, str):
        raise EventError("schema", "type: is required (a string such as ticket.created)")
    model = models.get(type_name)
    if model is None:
        raise EventError("unknown_type", f"type: unknown event type {type_name!r}", event_type=type_name)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise EventError("schema", describe_validation_error(exc), event_type=type_name) from None


def event_time(event: CloudEvent) -> datetime:
    """The event's own time (its ``time`` attribute)."""
    return event.time


def dump_event(event: BaseModel) -> str:
    """Serialize compactly, keys in model order, non-ASCII kept (deterministic)."""
    return event.model_dump_json(exclude_none=True)
