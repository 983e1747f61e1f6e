"""SMS through Twilio's Programmable Messaging API with the ``twilio`` SDK.

``POST /2010-04-01/Accounts/{Sid}/Messages.json`` with ``To``, ``From`` or
``MessagingServiceSid``, ``Body`` and ``StatusCallback``.  Errors map to
:class:`SendError` kinds:

* HTTP 429 or code 20429 → ``rate_limited`` (``retry_after`` from the response's ``Retry-After``);
* HTTP 5xx, a timeout, a refused or dropped connection → ``transient``;
* any other 4xx (21610 unsubscribed, 21211 invalid number, 21614 not a mobile,
  21408 region not enabled, 20003 bad credentials…) → ``permanent``.

The SDK's exceptions carry no response headers, so the sender's HTTP client
records the headers of the last response of each thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from notifiers.channels import DEFAULT_TIMEOUT, parse_retry_after
from notifiers.channels.base import Channel, Message, SendError, SendOutcome
from waterwatch.masking import mask_phone, mask_text

# The SDK logs every request at INFO (URL, headers, six lines per SMS): noise in the notifier's log,
# and the URL carries the account. Warnings and errors still pass.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)

PROVIDER = "twilio"

RATE_LIMITED_CODES = frozenset({20429})
LOOKUP_LIMIT = 20
"""Messages to one number read when settling an in-doubt delivery (newest first)."""
LOOKUP_SKEW_S = 300.0
"""Clock skew allowed between this machine and Twilio's ``date_created``."""

PERMANENT_CODES = frozenset({21211, 21408, 21610, 21614})
"""Named for the reader: every 4xx other than 429 is permanent anyway."""


class _HeaderRecordingClient(TwilioHttpClient):  # type: ignore[misc]  # the SDK ships no type hints
    """The SDK's requests-based client that also keeps the last response's headers, per thread."""

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self._local.headers = None
        response = super().request(*args, **kwargs)
        self._local.headers = response.headers
        return response

    def last_headers(self) -> Mapping[str, str]:
        """Headers of this thread's last response (``{}`` when there was none)."""
        return getattr(self._local, "headers", None) or {}

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


class TwilioSms:
    """Sends ``rendered.text`` as an SMS; returns the message SID as ``provider_id``.

    ``base_url`` (e.g. a local fake) replaces ``https://api.twilio.com`` and turns off
    ``TWILIO_EDGE``/``TWILIO_REGION`` rewriting; ``timeout`` bounds connect and read.
    """

    channel: Channel = "sms"
    provider = PROVIDER

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("TwilioSms needs from_number or messaging_service_sid")
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/") if base_url else None
        self._http = _HeaderRecordingClient(timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        if self.base_url:
            self._client.api.base_url = self.base_url
            self._client.edge = None  # read from TWILIO_EDGE / TWILIO_REGION: they would rewrite the host
            self._client.region = None
        self._messages = self._client.messages  # built once here: the SDK builds it lazily, without a lock

    def send(self, message: Message) -> SendOutcome:
        """Create the message; raise :class:`SendError` (details masked) when Twilio or the network says no."""
        body = message.rendered.text
        if not body:
            raise SendError("permanent", "empty_body", "the rendered SMS has no text", provider=PROVIDER)
        try:
            created = self._messages.create(
                to=message.to,
                from_=self.from_number or values.unset,
                messaging_service_sid=self.messaging_service_sid or values.unset,
                body=body,
                status_callback=message.status_callback or values.unset,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise self._http_error(exc, message.to) from None
        except requests.Timeout as exc:
            raise SendError("transient", "timeout", type(exc).__name__, provider=PROVIDER) from None
        except requests.ConnectionError as exc:
            raise SendError("transient", "connection", type(exc).__name__, provider=PROVIDER) from None
        except requests.RequestException as exc:
            raise SendError("transient", "http", type(exc).__name__, provider=PROVIDER) from None
        except TwilioException as exc:
            detail = _scrub(str(exc), message.to)
            raise SendError("permanent", "sdk", detail, provider=PROVIDER) from None
        except ValueError:  # a 2xx whose body is not JSON: the message may exist
            raise SendError("transient", "bad_response", "unreadable success response", provider=PROVIDER) from None
        return SendOutcome(provider=PROVIDER, provider_id=created.sid)

    def find(self, to: str, body: str, since: float) -> tuple[str, str] | None:
        """(SID, status) of a message with this ``body`` to ``to`` created after ``since`` (epoch s), or None.

        Settles an in-doubt delivery: the process stopped after asking Twilio to send
        and before recording the answer.  Reads the account's newest messages to that
        number (``GET …/Messages.json?To=``, newest first, the last ``LOOKUP_LIMIT``);
        a clock skew of ``LOOKUP_SKEW_S`` is allowed.  Network and API errors raise
        :class:`SendError` (``transient``): no answer is not "not sent".
        """
        try:
            recent = self._messages.list(to=to, limit=LOOKUP_LIMIT)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise self._http_error(exc, to) from None
        except (requests.RequestException, TwilioException, ValueError) as exc:
            raise SendError("transient", "lookup", type(exc).__name__, provider=PROVIDER) from None
        for m in recent:
            created = getattr(m, "date_created", None)
            if m.body == body and (created is None or created.timestamp() >= since - LOOKUP_SKEW_S):
                return str(m.sid), str(m.status or "")
        return None

    def _http_error(self, exc: TwilioRestException | TwilioServiceException, to: str) -> SendError:
        status = int(exc.status or 0)
        code = exc.code if isinstance(exc.code, int) and exc.code != status else None
        label = str(code) if code is not None else f"http_{status}"
        if isinstance(exc, TwilioServiceException):
            text = f"{exc.title}: {exc.detail}" if exc.detail else exc.title
        else:
            text = str(exc.msg).removeprefix("Unable to create record: ")
        detail = f"HTTP {status}: {_scrub(str(text), to)}"
        if status == 429 or code in RATE_LIMITED_CODES:
            retry_after = parse_retry_after(_header(self._http.last_headers(), "Retry-After"))
            return SendError("rate_limited", label, detail, provider=PROVIDER, retry_after=retry_after)
        if status >= 500 or status == 0:
            return SendError("transient", label, detail, provider=PROVIDER)
        return SendError("permanent", label, detail, provider=PROVIDER)

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:  # a plain dict: look the name up without regard to case
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _scrub(text: str, to: str) -> str:
    """Provider text with the recipient's number (in any spelling Twilio echoes) masked."""
    if to:
        text = text.replace(to, mask_phone(to))
    return mask_text(text)
