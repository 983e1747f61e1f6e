"""E-mail through SendGrid's v3 Mail Send API with the ``sendgrid`` SDK.

``POST /v3/mail/send`` with one personalization per recipient (its own ``to``
and ``custom_args``, which SendGrid echoes in event webhooks), a subject, and
``text/plain`` then ``text/html`` content.  202 → ``X-Message-Id``.  Errors:

* 429 → ``rate_limited`` (``Retry-After``, else ``X-RateLimit-Reset`` minus now);
* 5xx, 408, a timeout or a network error → ``transient``;
* 400, 401, 403, 413 and other 4xx → ``permanent`` with the first ``errors[].message``.

The SDK speaks ``urllib`` through ``python_http_client``, whose DEBUG log lines hold
the API key and the recipients; this module drops that logger's records below INFO.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.error import URLError

from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Content, CustomArg, From, Mail, MimeType, Personalization, Subject, To

from notifiers.channels import DEFAULT_TIMEOUT, parse_retry_after
from notifiers.channels.base import Channel, Message, SendError, SendOutcome
from notifiers.templating import Rendered
from waterwatch.masking import mask_email, mask_text

PROVIDER = "sendgrid"
DEFAULT_HOST = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000
"""SendGrid's limit per request (personalizations, and recipients in all of them)."""


class _BelowInfo(logging.Filter):
    """Drops DEBUG records: ``python_http_client`` logs headers (the API key) and payloads there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


def _quiet_sdk_debug_log() -> None:
    logger = logging.getLogger("python_http_client.client")
    if not any(isinstance(f, _BelowInfo) for f in logger.filters):
        logger.addFilter(_BelowInfo())


@dataclass(frozen=True)
class BatchOutcome:
    """The result of one request of :meth:`SendGridEmail.send_batch`: the deliveries it carried, and how it went."""

    delivery_ids: tuple[str, ...]
    outcome: SendOutcome | None = None
    error: SendError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class SendGridEmail:
    """Sends e-mail (subject, plain text and HTML) through SendGrid; ``host`` redirects the API (e.g. a fake)."""

    channel: Channel = "email"
    provider = PROVIDER

    def __init__(
        self,
        api_key: str,
        from_email: str,
        from_name: str | None = None,
        host: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        _quiet_sdk_debug_log()
        self.from_email = from_email
        self.from_name = from_name
        self.host = (host or DEFAULT_HOST).rstrip("/")
        self._sg = SendGridAPIClient(api_key, host=self.host)
        self._sg.client.timeout = timeout  # python_http_client hands it to urlopen (connect and read)

    # ------------------------------------------------------------------ sending

    def send(self, message: Message) -> SendOutcome:
        """Send one e-mail; raise :class:`SendError` (addresses masked in the detail) on failure."""
        _check_address(message)
        body = self._mail(message.rendered, [message])
        return self._post(body, [message.to])

    def send_batch(self, messages: Sequence[Message]) -> list[BatchOutcome]:
        """Send many e-mails in as few requests as possible; one :class:`BatchOutcome` per request.

        Messages with identical subject, text and HTML share a request, up to
        :data:`MAX_PERSONALIZATIONS` per request, in their original order.  After a
        ``rate_limited`` answer the remaining requests are not made: they come back
        with a ``rate_limited`` error of code ``not_attempted`` and the same ``retry_after``.
        Messages with an unusable address come back first, as one ``permanent`` outcome.
        """
        results: list[BatchOutcome] = []
        groups: dict[tuple[str | None, str | None, str | None], list[Message]] = {}
        invalid: list[Message] = []
        for m in messages:
            if "@" not in m.to:
                invalid.append(m)
                continue
            r = m.rendered
            groups.setdefault((r.subject, r.text, r.html), []).append(m)
        if invalid:
            error = SendError("permanent", "invalid_address", "no e-mail address", provider=PROVIDER)
            results.append(BatchOutcome(tuple(m.delivery_id for m in invalid), error=error))
        chunks = [
            group[i : i + MAX_PERSONALIZATIONS]
            for group in groups.values()
            for i in range(0, len(group), MAX_PERSONALIZATIONS)
        ]
        stopped: SendError | None = None
        for chunk in chunks:
            ids = tuple(m.delivery_id for m in chunk)
            if stopped is not None:
                skipped = SendError(
                    "rate_limited",
                    "not_attempted",
                    "not sent: an earlier request of this batch was rate limited",
                    provider=PROVIDER,
                    retry_after=stopped.retry_after,
                )
                results.append(BatchOutcome(ids, error=skipped))
                continue
            try:
                body = self._mail(chunk[0].rendered, chunk)
                outcome = self._post(body, [m.to for m in chunk])
            except SendError as exc:
                results.append(BatchOutcome(ids, error=exc))
                if exc.kind == "rate_limited":
                    stopped = exc
            else:
                results.append(BatchOutcome(ids, outcome=outcome))
        return results

    def close(self) -> None:
        """Nothing to release: ``urllib`` opens a connection per request."""

    # ------------------------------------------------------------------ helpers

    def _mail(self, rendered: Rendered, recipients: Sequence[Message]) -> dict[str, Any]:
        """The Mail Send JSON: one personalization (``to`` and ``custom_args``) per recipient."""
        if not rendered.subject:
            raise SendError("permanent", "no_subject", "the rendered e-mail has no subject", provider=PROVIDER)
        if not (rendered.text or rendered.html):
            raise SendError("permanent", "empty_body", "the rendered e-mail has no body", provider=PROVIDER)
        mail = Mail(from_email=From(self.from_email, self.from_name), subject=Subject(rendered.subject))
        if rendered.text:
            mail.add_content(Content(MimeType.text, rendered.text))
        if rendered.html:
            mail.add_content(Content(MimeType.html, rendered.html))
        for index, message in enumerate(recipients):
            p = Personalization()
            p.add_to(To(message.to))
            for key, value in message.custom_args.items():
                p.add_custom_arg(CustomArg(str(key), str(value)))
            mail.add_personalization(p, index=index)
        body: dict[str, Any] = mail.get()
        return body

    def _post(self, body: Mapping[str, Any], addresses: Sequence[str]) -> SendOutcome:
        try:
            response = self._sg.send(dict(body))
        except SendGridHTTPError as exc:
            raise _http_error(exc, addresses) from None
        except TimeoutError:
            raise SendError("transient", "timeout", "no answer in time", provider=PROVIDER) from None
        except URLError as exc:
            code = "timeout" if isinstance(exc.reason, TimeoutError) else "connection"
            raise SendError("transient", code, _reason(exc), provider=PROVIDER) from None
        except (OSError, http.client.HTTPException) as exc:
            raise SendError("transient", "connection", type(exc).__name__, provider=PROVIDER) from None
        message_id = response.headers.get("X-Message-Id") if response.headers is not None else None
        return SendOutcome(provider=PROVIDER, provider_id=message_id)


def _check_address(message: Message) -> None:
    if "@" not in message.to:
        raise SendError("permanent", "invalid_address", "no e-mail address", provider=PROVIDER)


def _reason(exc: URLError) -> str:
    reason = exc.reason
    return type(reason).__name__ if isinstance(reason, BaseException) else mask_text(str(reason))


def _http_error(exc: SendGridHTTPError, addresses: Sequence[str]) -> SendError:
    status = int(getattr(exc, "status_code", 0) or 0)
    headers = getattr(exc, "headers", None)
    detail = f"HTTP {status}"
    first = _first_error(getattr(exc, "body", b""))
    if first:
        detail = f"{detail}: {_scrub(first, addresses)}"
    code = f"http_{status}"
    if status == 429:
        return SendError("rate_limited", code, detail, provider=PROVIDER, retry_after=_rate_limit_wait(headers))
    if status >= 500 or status == 408:
        return SendError("transient", code, detail, provider=PROVIDER)
    return SendError("permanent", code, detail, provider=PROVIDER)


def _first_error(body: Any) -> str | None:
    """``errors[0].message`` (with its ``field``) of a SendGrid error body, if it has one."""
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else str(body))
        first = data["errors"][0]
        message = str(first.get("message") or "").strip()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    field = first.get("field")
    return f"{message} (field {field})" if field and message else message or None


def _rate_limit_wait(headers: Any, now: float | None = None) -> float | None:
    if headers is None:
        return None
    retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    if retry_after is not None:
        return retry_after
    reset = headers.get("X-RateLimit-Reset")
    try:
        return max(0.0, float(reset) - (time.time() if now is None else now)) if reset else None
    except ValueError:
        return None


def _scrub(text: str, addresses: Sequence[str]) -> str:
    """Provider text with the request's recipients (and any other address or number) masked."""
    for address in addresses:
        if address and address in text:
            text = text.replace(address, mask_email(address))
    return mask_text(text)
