"""The one interface every channel sender implements.

A sender turns a rendered :class:`Message` into one provider call and either
returns a :class:`SendOutcome` or raises :class:`SendError` whose ``kind`` says
what the caller may do next:

``rate_limited``  the provider asked us to slow down (Twilio 20429 / HTTP 429,
                  SendGrid 429, WeCom errcode 45009); ``retry_after`` seconds
                  when the provider said so, else ``None``.
``transient``     5xx, a timeout, a refused connection: back off and retry.
``permanent``     retrying cannot help (Twilio 21610 unsubscribed, 21211 invalid
                  number; SendGrid 400/401/403; WeCom bad key): record, do not retry.

Senders are synchronous (the SDKs use requests / urllib) and thread-safe; the
notifier runs them in a small thread pool. Error text never holds a clear
phone number or e-mail address (see :mod:`waterwatch.masking`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from notifiers.templating import Rendered

Channel = Literal["sms", "email", "wecom", "console", "file"]
ErrorKind = Literal["rate_limited", "transient", "permanent"]


@dataclass(frozen=True)
class Message:
    """One message to one recipient on one channel."""

    delivery_id: str
    channel: Channel
    to: str
    """E.164 phone (sms), e-mail address (email), or the name of the environment
    variable holding the WeCom robot key (wecom); console/file: a masked label."""
    language: str
    rendered: Rendered
    recipient_key: str = ""
    """Partition key of the recipient (e.g. ``unit:runda:duty``); echoed in receipts."""
    mentions: tuple[str, ...] = ()
    """WeCom: mobile numbers to @-mention."""
    status_callback: str | None = None
    """Twilio: the StatusCallback URL (carries delivery id and recipient key)."""
    custom_args: dict[str, str] = field(default_factory=dict)
    """SendGrid: custom_args echoed in event webhooks."""


@dataclass(frozen=True)
class SendOutcome:
    provider: str
    provider_id: str | None = None
    """Twilio message SID, SendGrid X-Message-Id, None for WeCom/console."""


class SendError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        code: str,
        detail: str,
        *,
        provider: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider} {kind} {code}: {detail}")
        self.kind = kind
        self.code = code
        self.detail = detail
        self.provider = provider
        self.retry_after = retry_after


class Sender(Protocol):
    channel: Channel
    provider: str

    def send(self, message: Message) -> SendOutcome: ...

    def close(self) -> None: ...
