"""Local fakes of Twilio, SendGrid and a WeCom group robot that speak their wire formats and inject faults.

Each fake is a :class:`~http.server.ThreadingHTTPServer` on ``127.0.0.1`` (a free
port), started and stopped as a context manager::

    with FakeTwilio("AC" + "0" * 32, "token") as fake:
        sms = TwilioSms(..., base_url=fake.base_url)
        fake.fail_next(status=429, code=20429, retry_after=2)

* ``fake.requests``: every request received (:class:`RecordedRequest`), in order;
* ``fake.messages``: the requests the fake accepted (sent messages);
* ``fake.fail_next(...)``: queue a fault for the next request (``times=n`` for the next n).
  ``timeout=s`` holds the request ``s`` seconds (or until ``stop``) and closes without an
  answer; ``disconnect=True`` closes at once.  Neither request is accepted;
* ``latency``: seconds added before every answer.

The fakes check credentials like the real services (Twilio: HTTP Basic with the
account SID and auth token; SendGrid: ``Bearer`` API key; WeCom: the ``key`` query
parameter, when ``keys`` is given) and validate requests the way the fields'
documentation says, answering with each service's error format.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

# ============================================================== the common part


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; ``form`` (Twilio) or ``json`` (SendGrid, WeCom) parsed from ``body``."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    form: dict[str, str] | None = None
    json: Any = None

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass(frozen=True)
class Fault:
    """What the next request gets instead of the normal answer (fields a provider does not use are ignored)."""

    status: int | None = None
    code: int | None = None
    message: str | None = None
    field: str | None = None
    retry_after: float | None = None
    reset_in: float | None = None
    timeout: float | None = None
    disconnect: bool = False


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data).encode("utf-8"), {"Content-Type": "application/json", **(headers or {})})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: _FakeProvider


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no stale pooled connections between tests

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers=dict(self.headers.items()),
            body=body,
            at=time.time(),
            form=_form(self.headers.get("Content-Type"), body),
            json=_json(self.headers.get("Content-Type"), body),
        )
        fake._record(request)
        if fake.latency > 0:
            fake._stopping.wait(fake.latency)
        fault = fake._take_fault()
        if fault is not None and (fault.timeout is not None or fault.disconnect):
            if fault.timeout is not None:
                fake._stopping.wait(fault.timeout)
            self.close_connection = True
            return
        reply = fake._fault_reply(request, fault) if fault is not None else fake._handle(request)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``fake.requests`` instead."""


def _form(content_type: str | None, body: bytes) -> dict[str, str] | None:
    if not content_type or not content_type.startswith("application/x-www-form-urlencoded"):
        return None
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}


def _json(content_type: str | None, body: bytes) -> Any:
    if not content_type or not content_type.startswith("application/json"):
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError:
        return None


class _FakeProvider(ABC):
    """Server plumbing shared by the fakes: start/stop, recording, the fault queue."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._messages: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests held by a ``timeout`` fault are released and closed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running fake."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- recording

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[RecordedRequest]:
        """The requests accepted as sent messages (a copy)."""
        with self._lock:
            return list(self._messages)

    def reset(self) -> None:
        """Forget requests, messages and queued faults."""
        with self._lock:
            self._requests.clear()
            self._messages.clear()
            self._faults.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _accept(self, request: RecordedRequest) -> None:
        with self._lock:
            self._messages.append(request)

    # ---- faults

    def _queue(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def _take_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    @abstractmethod
    def _fault_reply(self, request: RecordedRequest, fault: Fault) -> Reply: ...

    @abstractmethod
    def _handle(self, request: RecordedRequest) -> Reply: ...


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except ValueError:
        return None
    return user, password


# ==================================================================== Twilio

TWILIO_API_VERSION = "2010-04-01"
_TWILIO_MESSAGES = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

_TWILIO_STATUS = {20003: 401, 20404: 404, 20429: 429, 20500: 500, 20503: 503}
_TWILIO_CODE = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 502: 20500, 503: 20503}
_TWILIO_MESSAGE = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service unavailable",
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}",
    21602: "Message body is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account.",  # noqa: E501
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number {to} is not a valid mobile number",
}


class FakeTwilio(_FakeProvider):
    """Twilio's Messages resource: ``POST /2010-04-01/Accounts/{Sid}/Messages.json`` (form-encoded, Basic auth).

    Accepts E.164 ``To`` numbers not in :attr:`stopped`; answers 201 with the Message
    JSON (``sid`` ``SM…``, ``status`` ``queued``, or ``accepted`` via a messaging service).
    Errors are ``{code, message, more_info, status}``.
    """

    def __init__(self, account_sid: str, auth_token: str, *, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.stopped: set[str] = set()
        """Numbers that answered STOP: sending to them fails with 21610."""
        self._by_sid: dict[str, dict[str, Any]] = {}

    def fail_next(
        self,
        status: int | None = None,
        code: int | None = None,
        *,
        message: str | None = None,
        retry_after: float | None = None,
        timeout: float | None = None,
        disconnect: bool = False,
        times: int = 1,
    ) -> None:
        """Fail the next request(s): an error JSON with ``status`` (default from ``code``, else 400) and ``code``."""
        fault = Fault(status, code, message, None, retry_after, None, timeout, disconnect)
        self._queue(fault, times)

    def status_callback(
        self, url: str, message_sid: str, status: str, error_code: int | str | None = None
    ) -> tuple[dict[str, str], str]:
        """The form Twilio POSTs to a message's StatusCallback ``url``, and its ``X-Twilio-Signature``."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": TWILIO_API_VERSION,
            "MessageSid": message_sid,
            "SmsSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        with self._lock:
            sent = self._by_sid.get(message_sid)
        if sent is not None:
            params["To"] = sent["to"]
            if sent["from"]:
                params["From"] = sent["from"]
            if sent["messaging_service_sid"]:
                params["MessagingServiceSid"] = sent["messaging_service_sid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params, RequestValidator(self.auth_token).compute_signature(url, params)

    def _error(self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
        body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}"}
        return Reply.json(status, {**body, "status": status}, headers)

    def _fault_reply(self, request: RecordedRequest, fault: Fault) -> Reply:
        if fault.code is not None:
            code, status = fault.code, fault.status or _TWILIO_STATUS.get(fault.code, 400)
        else:
            status = fault.status or 500
            code = _TWILIO_CODE.get(status, 20500 if status >= 500 else 20001)
        to = (request.form or {}).get("To", "")
        message = fault.message or _TWILIO_MESSAGE.get(code, "Error").format(to=to)
        headers = {"Retry-After": _seconds(fault.retry_after)} if fault.retry_after is not None else None
        return self._error(status, code, message, headers)

    def _handle(self, request: RecordedRequest) -> Reply:
        match = _TWILIO_MESSAGES.match(request.path)
        if request.method not in ("POST", "GET") or match is None:
            return self._error(404, 20404, _TWILIO_MESSAGE[20404])
        if _basic_auth(request.header("Authorization")) != (self.account_sid, self.auth_token):
            return self._error(401, 20003, _TWILIO_MESSAGE[20003])
        if match.group(1) != self.account_sid:
            return self._error(404, 20404, _TWILIO_MESSAGE[20404])
        if request.method == "GET":
            return self._list(request)
        form = request.form or {}
        to, from_, service, body = (form.get(k, "") for k in ("To", "From", "MessagingServiceSid", "Body"))
        if not to:
            return self._error(400, 21604, _TWILIO_MESSAGE[21604])
        if not (from_ or service):
            return self._error(400, 21606, _TWILIO_MESSAGE[21606])
        if not body:
            return self._error(400, 21602, _TWILIO_MESSAGE[21602])
        if not _E164.match(to):
            return self._error(400, 21211, _TWILIO_MESSAGE[21211].format(to=to))
        if to in self.stopped:
            return self._error(400, 21610, _TWILIO_MESSAGE[21610])
        sid = "SM" + secrets.token_hex(16)
        now = formatdate(usegmt=True)
        uri = f"/{TWILIO_API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        resource = {
            "account_sid": self.account_sid,
            "api_version": TWILIO_API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_ or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if from_ else "accepted",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": to,
            "uri": uri,
        }
        with self._lock:
            self._by_sid[sid] = resource
        self._accept(request)
        return Reply.json(201, resource)

    def _list(self, request: RecordedRequest) -> Reply:
        """``GET …/Messages.json?To=&PageSize=``: the messages, newest first, one page (Twilio's list format)."""
        to = request.query.get("To")
        size = max(1, min(1000, int(request.query.get("PageSize") or 50)))
        with self._lock:
            found = [m for m in reversed(self._by_sid.values()) if to is None or m["to"] == to][:size]
        uri = f"/{TWILIO_API_VERSION}/Accounts/{self.account_sid}/Messages.json"
        page = {"messages": found, "end": max(0, len(found) - 1), "first_page_uri": f"{uri}?PageSize={size}&Page=0",
                "next_page_uri": None, "page": 0, "page_size": size, "previous_page_uri": None, "start": 0,
                "uri": f"{uri}?PageSize={size}&Page=0"}  # fmt: skip
        return Reply.json(200, page)


# ================================================================== SendGrid

MAX_PERSONALIZATIONS = 1000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SENDGRID_MESSAGE = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "The from address does not match a verified Sender Identity. Mail cannot be sent until this error is resolved.",  # noqa: E501
    413: "The JSON payload you have included in your request is too large.",
    429: "too many requests",
    500: "An internal error occurred",
    503: "Service Unavailable",
}


class FakeSendGrid(_FakeProvider):
    """SendGrid v3 Mail Send: ``POST /v3/mail/send`` JSON with ``Authorization: Bearer KEY``.

    Validates from, subject, content order (``text/plain`` first), ≤ 1000 personalizations
    and recipients; answers 202 with an empty body and ``X-Message-Id``, or
    ``{"errors": [{"field", "message", "help"}]}``.
    """

    def __init__(self, api_key: str, *, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.api_key = api_key
        self._events: deque[dict[str, Any]] = deque()
        self._events_url: str | None = None
        self._signer: SendGridWebhookSigner | None = None
        self._events_thread: threading.Thread | None = None
        self.events_posted = 0

    def post_events(self, url: str, signer: SendGridWebhookSigner, retry_for: float = 120.0) -> None:
        """Act as SendGrid's event webhook: a signed ``processed`` event per accepted recipient, POSTed to ``url``.

        Events carry the message's ``custom_args`` as top-level keys, as SendGrid's do, in
        batches of up to 100; a batch the receiver does not take (error or no answer) is
        posted again every half second for ``retry_for`` seconds (SendGrid retries for 24 h).
        """
        self._events_url, self._signer = url, signer
        if self._events_thread is None:
            self._events_thread = threading.Thread(target=self._post_loop, args=(retry_for,), daemon=True,
                                                   name="FakeSendGrid-events")  # fmt: skip
            self._events_thread.start()

    def _post_loop(self, retry_for: float) -> None:
        import urllib.request

        while not self._stopping.is_set():
            with self._lock:
                batch = [self._events.popleft() for _ in range(min(100, len(self._events)))]
            if not batch:
                self._stopping.wait(0.05)
                continue
            body = json.dumps(batch).encode()
            give_up = time.monotonic() + retry_for
            while not self._stopping.is_set() and time.monotonic() < give_up:
                assert self._signer is not None and self._events_url is not None
                headers = {"Content-Type": "application/json", **self._signer.headers(body, int(time.time()))}
                req = urllib.request.Request(self._events_url, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        if 200 <= resp.status < 300:
                            self.events_posted += len(batch)
                            break
                except OSError:
                    pass
                self._stopping.wait(0.5)

    def fail_next(
        self,
        status: int | None = None,
        *,
        message: str | None = None,
        field: str | None = None,
        retry_after: float | None = None,
        reset_in: float | None = None,
        timeout: float | None = None,
        disconnect: bool = False,
        times: int = 1,
    ) -> None:
        """Fail the next request(s) with ``status`` (default 500) and one error; a 429 carries rate-limit headers.

        ``retry_after`` sets ``Retry-After``; ``reset_in`` sets ``X-RateLimit-Reset`` to now + ``reset_in``.
        """
        self._queue(Fault(status, None, message, field, retry_after, reset_in, timeout, disconnect), times)

    @staticmethod
    def _errors(status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None) -> Reply:
        return Reply.json(status, {"errors": [{"field": field, "message": message, "help": None}]}, headers)

    def _fault_reply(self, request: RecordedRequest, fault: Fault) -> Reply:
        status = fault.status or 500
        headers: dict[str, str] = {}
        if status == 429:
            headers.update({"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"})
        if fault.reset_in is not None:
            headers["X-RateLimit-Reset"] = str(int(time.time() + fault.reset_in))
        if fault.retry_after is not None:
            headers["Retry-After"] = _seconds(fault.retry_after)
        message = fault.message or _SENDGRID_MESSAGE.get(status, "error")
        return self._errors(status, message, fault.field, headers)

    def _handle(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return self._errors(404, "resource not found")
        if request.header("Authorization") != f"Bearer {self.api_key}":
            return self._errors(401, _SENDGRID_MESSAGE[401])
        mail = request.json
        if not isinstance(mail, dict):
            return self._errors(400, "Bad Request")
        problem = _check_mail(mail)
        if problem is not None:
            return self._errors(400, problem[1], problem[0])
        self._accept(request)
        message_id = secrets.token_urlsafe(16)
        if self._events_url is not None:
            common = mail.get("custom_args") or {}
            with self._lock:
                for p in mail["personalizations"]:
                    for to in p.get("to", []):
                        self._events.append({"email": to["email"], "timestamp": int(time.time()), "event": "processed",
                                             "sg_message_id": f"{message_id}.filter0001", **common,
                                             **(p.get("custom_args") or {})})  # fmt: skip
        return Reply(202, b"", {"X-Message-Id": message_id})


def _check_mail(mail: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, message) of the first problem SendGrid would report, or ``None``."""
    sender = mail.get("from")
    if not isinstance(sender, dict) or not _EMAIL.match(str(sender.get("email", ""))):
        return "from.email", "The from object must be provided for every email send."
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "personalizations", "The personalizations field is required and must have at least one personalization."
    if len(personalizations) > MAX_PERSONALIZATIONS:
        return "personalizations", "The personalizations field must have no more than 1000 personalizations."
    recipients = 0
    for i, p in enumerate(personalizations):
        tos = p.get("to") if isinstance(p, dict) else None
        if not isinstance(tos, list) or not tos:
            return f"personalizations.{i}.to", "The to array is required for all personalization objects."
        for j, to in enumerate(tos):
            if not isinstance(to, dict) or not _EMAIL.match(str(to.get("email", ""))):
                return f"personalizations.{i}.to.{j}.email", "Does not contain a valid address."
        recipients += len(tos)
        if not (mail.get("subject") or p.get("subject")):
            return "subject", "The subject is required. You can get around this requirement if you use a template."
        for key, value in (p.get("custom_args") or {}).items():
            if not isinstance(value, str):
                return f"personalizations.{i}.custom_args.{key}", "Custom args values must be strings."
    if recipients > MAX_PERSONALIZATIONS:
        return "personalizations", "The total number of recipients must be no more than 1000."
    content = mail.get("content")
    if not mail.get("template_id"):
        if not isinstance(content, list) or not content:
            return "content", "Unless a valid template_id is provided, the content parameter is required."
        types = [c.get("type") if isinstance(c, dict) else None for c in content]
        if any(not t or not isinstance(c.get("value"), str) for t, c in zip(types, content, strict=True)):
            return "content", "The content value must be a string at least one character in length."
        if "text/plain" in types and types[0] != "text/plain":
            return "content.0.type", "If present, text/plain content must be first, followed by any other content."
    return None


# ===================================================================== WeCom

WECOM_PATH = "/cgi-bin/webhook/send"
WECOM_TEXT_LIMIT = 2048
WECOM_MARKDOWN_LIMIT = 4096
_WECOM_ERRMSG = {
    40008: "invalid message type",
    40058: "invalid Request Parameter",
    44004: "empty content",
    45009: "api freq out of limit",
    93000: "invalid webhook url",
    -1: "system busy",
}


class FakeWeCom(_FakeProvider):
    """A WeCom group robot: ``POST /cgi-bin/webhook/send?key=KEY`` → HTTP 200 ``{"errcode", "errmsg"}``.

    ``keys``: the valid robot keys (``None``: any non-empty key).  ``rate_limit``: messages
    per key per 60 s of ``clock`` (the real robot allows 20), beyond which errcode 45009.
    """

    def __init__(
        self,
        keys: Iterable[str] | None = None,
        *,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        latency: float = 0.0,
    ) -> None:
        super().__init__(latency=latency)
        self.keys = set(keys) if keys is not None else None
        self.rate_limit = rate_limit
        self._clock = clock
        self._sent_at: dict[str, deque[float]] = {}

    def fail_next(
        self,
        errcode: int | None = None,
        *,
        status: int = 200,
        errmsg: str | None = None,
        timeout: float | None = None,
        disconnect: bool = False,
        times: int = 1,
    ) -> None:
        """Fail the next request(s): HTTP ``status`` with ``{"errcode", "errmsg"}`` (an empty body without errcode)."""
        self._queue(Fault(status, errcode, errmsg, None, None, None, timeout, disconnect), times)

    @staticmethod
    def _answer(errcode: int, errmsg: str | None = None) -> Reply:
        text = errmsg or _WECOM_ERRMSG.get(errcode, "error")
        if errcode:
            text += f", more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
        return Reply.json(200, {"errcode": errcode, "errmsg": text if errcode else "ok"})

    def _fault_reply(self, request: RecordedRequest, fault: Fault) -> Reply:
        if fault.code is None:
            return Reply(fault.status or 500)
        reply = self._answer(fault.code, fault.message)
        return Reply(fault.status or 200, reply.body, reply.headers)

    def _handle(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or request.path != WECOM_PATH:
            return Reply(404)
        key = request.query.get("key", "")
        if not key or (self.keys is not None and key not in self.keys):
            return self._answer(93000)
        payload = request.json
        if not isinstance(payload, dict):
            return self._answer(40058)
        msgtype = payload.get("msgtype")
        if msgtype not in ("text", "markdown"):
            return self._answer(40008)
        part = payload.get(msgtype)
        content = part.get("content") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(content, str) or not content:
            return self._answer(44004)
        limit = WECOM_TEXT_LIMIT if msgtype == "text" else WECOM_MARKDOWN_LIMIT
        if len(content.encode("utf-8")) > limit:
            return self._answer(40058, f"{msgtype}.content exceed max length {limit}")
        mobiles = part.get("mentioned_mobile_list", [])
        if not isinstance(mobiles, list) or not all(isinstance(m, str) for m in mobiles):
            return self._answer(40058)
        if self.rate_limit is not None and not self._take_token(key):
            return self._answer(45009)
        self._accept(request)
        return self._answer(0)

    def _take_token(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            sent = self._sent_at.setdefault(key, deque())
            while sent and sent[0] <= now - 60.0:
                sent.popleft()
            if self.rate_limit is not None and len(sent) >= self.rate_limit:
                return False
            sent.append(now)
            return True


# =========================================================== SendGrid webhook


class SendGridWebhookSigner:
    """Signs event-webhook bodies as SendGrid does: ECDSA P-256 / SHA-256 over ``timestamp + body``."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> str:
        """The verification key as the SendGrid console shows it: base64 of the DER SubjectPublicKeyInfo."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    @property
    def public_key_pem(self) -> str:
        """The same key in PEM."""
        pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    def sign(self, payload: bytes, timestamp: str | int) -> str:
        """``X-Twilio-Email-Event-Webhook-Signature`` for ``payload`` sent at ``timestamp`` (Unix seconds)."""
        signature = self._key.sign(str(timestamp).encode("ascii") + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode("ascii")

    def headers(self, payload: bytes, timestamp: str | int) -> dict[str, str]:
        """Both webhook headers for ``payload``."""
        return {
            "X-Twilio-Email-Event-Webhook-Signature": self.sign(payload, timestamp),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        }


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
