"""The delivery state machine: one record per (alert, recipient, channel).

Theory of operation
===================

A *delivery* is one alert to one recipient on one channel. Its id is
``delivery_id(alert_id, recipient_key, channel)``, so an alert read twice plans
the same deliveries twice and the second plan finds the first record
(DESIGN.md principle 3). The record lives in the notifier's ``deliveries``
table; this module only computes transitions: no I/O, no clock, ``now`` is a
parameter (epoch seconds).

States::

    new ──gates──► waiting ──due──► (gates again) ──► intent ──► sent ──receipt──► delivered
     │               ▲                                   │   └──────────receipt──► undelivered
     │               └────── retry / rate limited ───────┤
     │                                                   ├──► failed      permanent error
     │                                                   ├──► fallen_back another channel takes over
     │                                                   └──► dead        gave up (dead-lettered)
     ├──► skipped       opted out, or nothing to send
     └──► expired       no longer useful before it could be sent
    intent found when a job is read again (crash between call and record) ──► in_doubt
    in_doubt ──receipt, or the provider lists the message──► sent / delivered / undelivered
    in_doubt ──no trace at the provider by next_at──► waiting (sent again)

*Gates*, in order, decide whether a delivery may be sent now: usefulness
(``useful_until`` passed → ``expired``), consent (opted out → ``skipped``),
quiet hours (non-urgent → ``waiting`` until the window ends). Rate limits and
the WeCom merge window are applied by the shell, which knows the other
deliveries of the same recipient; they also end in ``waiting``.

*Intent before the call.* :func:`begin` moves a record to ``intent`` and counts
the attempt; the shell stores it durably *before* calling the provider and
stores the outcome (:func:`succeeded` / :func:`failed`) after. A job that finds
its record in ``intent`` means the process died in between: the outcome is
unknown, so the record becomes ``in_doubt`` (:func:`recover`) and is reported,
never silently re-sent or dropped.

*Settling a doubt with evidence.* Where the provider can tell what it got, an
in-doubt record carries ``next_at``: the time by which the evidence is in. A
receipt for the delivery (any provider event: it proves the request arrived)
settles it as sent, delivered or undelivered (:func:`receipt`, also for a record
still in ``intent``, whose result job was lost). So does the provider's own list
of messages, asked at ``next_at`` (:func:`confirmed`). With no trace of it by
then, the request never reached the provider and the delivery is sent again
(:func:`resend`): no gap, and no duplicate. Where there is no such evidence
(WeCom, the console), the record stays in doubt and is reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

TERMINAL = frozenset({"sent", "delivered", "undelivered", "failed", "fallen_back", "dead", "skipped", "expired",
                      "in_doubt", "superseded"})  # fmt: skip
"""States after which the record never changes again (receipts aside: ``sent`` → ``delivered``)."""

RECEIPT_FINAL_OK = frozenset({"delivered", "read"})
RECEIPT_FINAL_BAD = frozenset({"undelivered", "failed", "bounce", "dropped", "blocked", "spamreport"})


@dataclass
class Delivery:
    """One delivery record (JSON in the ``deliveries`` table)."""

    delivery_id: str
    alert_id: str
    recipient_key: str
    channel: str
    address: str
    """Clear phone / e-mail / WeCom robot env-var name: never logged, see :meth:`masked`."""
    language: str
    role: str
    urgent: bool
    useful_until: float
    alert: dict[str, Any]
    """The alert CloudEvent (rendered when the delivery is sent)."""
    mentions: list[str] = field(default_factory=list)
    fallback: str | None = None
    fallback_address: str | None = None
    fallback_key: str | None = None
    fallback_of: str | None = None
    status: str = "new"
    attempt: int = 0
    """Provider calls made."""
    failures: int = 0
    rate_limited: int = 0
    """Attempts answered "slow down" (they count less towards giving up)."""
    next_at: float | None = None
    reason: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    merged_into: str | None = None
    """WeCom: the delivery whose message carried this one."""
    supersedes: str | None = None
    """A correction: the alert id of the resident notice it replaces (sent only where that one was)."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> bytes:
        """The stored record: compact JSON of every field, in field order.

        The alert (most of the bytes) is encoded once per delivery and kept with the
        record (a record is written several times: intent, outcome, receipts), and
        the other fields are encoded around it; the bytes are those of one
        ``json.dumps`` of all fields.  A shallow dict: ``asdict()`` would deep-copy
        the alert for nothing.
        """
        attrs = self.__dict__
        cached = attrs.get("_alert_json")
        if cached is None or cached[0] is not self.alert:
            cached = attrs["_alert_json"] = (self.alert, _dumps(self.alert))
        head = _dumps({name: attrs[name] for name in _HEAD})
        tail = _dumps({name: attrs[name] for name in _TAIL})
        return (head[:-1] + ',"alert":' + cached[1] + "," + tail[1:]).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Delivery:
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Delivery:
        """From decoded JSON; fields this version does not know are ignored."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def kind(self) -> str:
        """``alert.overdue``, ``notice.pre_outage`` ...: what was delivered (for records and logs)."""
        etype = str(self.alert.get("type", ""))
        if etype == "notice.due":
            return f"notice.{(self.alert.get('data') or {}).get('notice')}"
        return etype


_FIELDS = tuple(f.name for f in fields(Delivery))
_HEAD = _FIELDS[: _FIELDS.index("alert")]
_TAIL = _FIELDS[_FIELDS.index("alert") + 1 :]
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""``json.dumps(…, ensure_ascii=False, separators=(",", ":"))`` without building an encoder per call."""
_FIELD_SET = frozenset(_FIELDS)


@dataclass(frozen=True)
class Gates:
    """What the shell knows about the recipient right now."""

    consent: bool = True
    quiet_until: float | None = None
    """End of the quiet window the recipient is in (None: not quiet, or urgent)."""
    quiet_reason: str = ""


def _at(d: Delivery, now: float, **changes: Any) -> Delivery:
    """``replace(d, updated_at=now, **changes)``, without ``replace``'s detour through ``__init__``.

    ``Delivery`` has no ``__post_init__`` and no init-only fields, so a copy of its
    attributes with the changes applied is the same record; ``replace`` took about a
    third of the notifier's bookkeeping per message.
    """
    unknown = changes.keys() - _FIELD_SET
    if unknown:
        raise TypeError(f"Delivery has no field(s) {', '.join(sorted(unknown))}")
    copy = object.__new__(Delivery)
    attrs = copy.__dict__
    attrs.update(d.__dict__)
    attrs.update(changes)
    attrs["updated_at"] = now
    return copy


def new(
    *,
    delivery_id: str,
    alert: Mapping[str, Any],
    recipient_key: str,
    channel: str,
    address: str,
    language: str,
    role: str,
    urgent: bool,
    useful_until: float,
    now: float,
    mentions: list[str] | tuple[str, ...] = (),
    fallback: str | None = None,
    fallback_address: str | None = None,
    fallback_key: str | None = None,
    fallback_of: str | None = None,
) -> Delivery:
    data = alert.get("data") or {}
    return Delivery(
        delivery_id=delivery_id,
        alert_id=str(data.get("alert_id") or alert.get("id") or ""),
        recipient_key=recipient_key,
        channel=channel,
        address=address,
        language=language,
        role=role,
        urgent=urgent,
        useful_until=useful_until,
        alert=dict(alert),
        mentions=list(mentions),
        fallback=fallback,
        fallback_address=fallback_address,
        fallback_key=fallback_key,
        fallback_of=fallback_of,
        created_at=now,
        updated_at=now,
    )


def gate(d: Delivery, now: float, gates: Gates) -> Delivery:
    """Apply the gates: the record comes back ``expired``, ``skipped``, ``waiting`` or ``ready``."""
    if now > d.useful_until:
        return _at(d, now, status="expired", next_at=None, reason="no longer useful when it could be sent")
    if not gates.consent:
        return _at(d, now, status="skipped", next_at=None, reason="recipient opted out of this channel")
    if gates.quiet_until is not None and not d.urgent and gates.quiet_until > now:
        return _at(d, now, status="waiting", next_at=gates.quiet_until, reason=gates.quiet_reason or "quiet hours")
    return _at(d, now, status="ready", next_at=None, reason=None)


def wait(d: Delivery, now: float, until: float, reason: str) -> Delivery:
    """Hold the delivery until ``until`` (rate limit, merge window)."""
    return _at(d, now, status="waiting", next_at=until, reason=reason)


def begin(d: Delivery, now: float) -> Delivery:
    """About to call the provider: store this durably first."""
    return _at(d, now, status="intent", attempt=d.attempt + 1, next_at=None)


def succeeded(d: Delivery, now: float, provider: str, provider_id: str | None) -> Delivery:
    return _at(d, now, status="sent", provider=provider, provider_id=provider_id, error=None, reason=None)


def failed(
    d: Delivery, now: float, *, provider: str, action: str, at: float | None, error: str, counts: bool = True
) -> Delivery:
    """The provider call failed; ``action`` is the retry decision: retry, give_up, fallback, permanent."""
    failures = d.failures + (1 if counts else 0)
    if action == "retry" and at is not None:
        return _at(d, now, status="waiting", next_at=at, provider=provider, error=error, failures=failures,
                   reason="retry")  # fmt: skip
    if action == "fallback":
        return _at(d, now, status="fallen_back", provider=provider, error=error, failures=failures,
                   reason=f"fallback to {d.fallback}")  # fmt: skip
    if action == "permanent":
        return _at(d, now, status="failed", provider=provider, error=error, failures=failures,
                   reason="permanent error")  # fmt: skip
    return _at(d, now, status="dead", provider=provider, error=error, failures=failures, reason="gave up")


def recover(d: Delivery, now: float, check_at: float | None = None) -> Delivery:
    """A job found this record in ``intent``: the outcome of the call is unknown.

    ``check_at``: when to settle the doubt with the provider's evidence (None: it
    cannot be settled; the record stays in doubt and is reported).
    """
    reason = "process stopped between the provider call and its record"
    if check_at is not None:
        reason += "; settled by a receipt or by asking the provider"
    return _at(d, now, status="in_doubt", next_at=check_at, reason=reason)


def confirmed(d: Delivery, now: float, provider: str, provider_id: str | None) -> Delivery:
    """The provider lists the message of an in-doubt delivery: it was sent (once)."""
    return _at(d, now, status="sent", provider=provider, provider_id=provider_id, error=None, next_at=None,
               reason="in doubt, confirmed by the provider")  # fmt: skip


def resend(d: Delivery, now: float) -> Delivery:
    """No trace of an in-doubt delivery at the provider by ``next_at``: the request never arrived; send it."""
    return _at(d, now, status="waiting", next_at=now, reason="in doubt, unknown to the provider: sent again")


NOTIFIED = frozenset({"sent", "delivered", "in_doubt"})
"""States in which a resident may have got a notice: a correction of it must reach them."""


def superseded(d: Delivery, now: float, by: str) -> Delivery:
    """A notice not sent yet, replaced by a correction: a stale notice is never sent."""
    return _at(d, now, status="superseded", next_at=None, reason=f"superseded by {by}")


def merged(d: Delivery, now: float, into: str) -> Delivery:
    """Carried by another delivery's message (WeCom merge); its outcome follows that one."""
    return _at(d, now, merged_into=into)


RECEIPT_ACCEPTED = frozenset({"accepted", "queued", "scheduled", "sending", "sent", "processed", "deferred",
                              "open", "click", "receiving", "received"})  # fmt: skip
"""Provider events that prove the request arrived, without a final outcome yet."""


def receipt(d: Delivery, now: float, status: str, error: str | None = None) -> Delivery | None:
    """A provider receipt; ``None`` when it changes nothing (unknown status, record not sent yet).

    For a record in ``intent`` or ``in_doubt`` any known event settles the doubt: the
    provider has the message, so it is sent (or already delivered / undelivered).
    """
    if d.status not in ("sent", "delivered", "undelivered", "in_doubt", "intent"):
        return None
    unsure = d.status in ("intent", "in_doubt")
    why = "in doubt, confirmed by a receipt" if unsure else d.reason
    if status in RECEIPT_FINAL_OK:
        return _at(d, now, status="delivered", error=None, next_at=None, reason=why)
    if status in RECEIPT_FINAL_BAD:
        return _at(d, now, status="undelivered", error=error or status, next_at=None, reason=why)
    if unsure and status in RECEIPT_ACCEPTED:
        return _at(d, now, status="sent", error=None, next_at=None, reason=why)
    return None
