"""WeCom (企业微信) group robots: ``POST {base}/cgi-bin/webhook/send?key=KEY``.

``message.to`` names the environment variable that holds the robot's key (the key
is a secret: it never appears in an error, a log line or a repr).  The message is
sent as ``markdown`` (at most 4096 bytes, cut at a UTF-8 boundary with ``…``).

**Mentions.**  A markdown message cannot @-mention by mobile number, so when
``message.mentions`` is non-empty a short ``text`` message with
``mentioned_mobile_list`` follows the markdown.  That is a second message
against the robot's 20 per minute.  If the markdown went out but the follow-up
failed, ``send`` still succeeds (sending again would repeat the alert) and the
returned :class:`WeComOutcome` says why the mention is missing.

The robot answers HTTP 200 for nearly everything; ``errcode`` decides:
0 ok; 45009 → ``rate_limited`` (60 s); 93000 (invalid webhook URL: a wrong key)
and other robot/parameter errors → ``permanent``; anything else → ``transient``.
HTTP 5xx and network errors → ``transient``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from notifiers.channels import DEFAULT_TIMEOUT, parse_retry_after
from notifiers.channels.base import Channel, Message, SendError, SendOutcome
from waterwatch.masking import mask_text

PROVIDER = "wecom_robot"
DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
SEND_PATH = "/cgi-bin/webhook/send"
MARKDOWN_LIMIT = 4096
"""Bytes of UTF-8 a robot accepts in ``markdown.content``."""
RATE_LIMITED_WAIT = 60.0
"""Seconds to wait after errcode 45009: the robot's window is a minute and its position is unknown."""

ERRCODE_RATE_LIMITED = 45009
PERMANENT_ERRCODES = frozenset({
    40008,  # invalid message type
    40014,  # invalid access token / key
    40058,  # invalid parameter (e.g. content too long)
    41001,  # key missing
    44004,  # empty content
    45002,  # content too large
    93000,  # invalid webhook URL: the key is wrong or the robot was removed
})  # fmt: skip
"""Errcodes retrying cannot fix; every 93xxx (robot/webhook errors) counts as permanent too."""

MENTION_TEXT = {"zh": "请及时处理上述告警。", "en": "Please act on the alert above."}
"""Text of the follow-up message that carries the @-mentions."""

_KEY_IN_TEXT = re.compile(r"(key=)[^&\s'\"]+")


class _RedactKey(logging.Filter):
    """Masks ``key=…`` in urllib3's DEBUG line ``"POST /cgi-bin/webhook/send?key=… HTTP/1.1" 200``."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "key=" in text:
            record.msg, record.args = _KEY_IN_TEXT.sub(r"\1***", text), None
        return True


def _redact_urllib3_log() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactKey) for f in logger.filters):
        logger.addFilter(_RedactKey())


@dataclass(frozen=True)
class WeComOutcome(SendOutcome):
    """A sent robot message; ``mention_error`` says why the @-mention follow-up is missing, if it is."""

    mention_error: SendError | None = None


class WeComRobot:
    """Posts markdown to the group robot whose key is in the variable ``message.to`` of ``env``."""

    channel: Channel = "wecom"
    provider = PROVIDER

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        env: Mapping[str, str] = os.environ,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        _redact_urllib3_log()
        self.url = base_url.rstrip("/") + SEND_PATH
        self.timeout = timeout
        self._env = env
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WeComRobot({self.url!r})"

    def send(self, message: Message) -> WeComOutcome:
        """Send the markdown, then the mention follow-up when there are mentions."""
        key = (self._env.get(message.to) or "").strip()
        if not key:
            raise SendError("permanent", "no_robot_key", f"robot key variable {message.to} not set", provider=PROVIDER)
        content = message.rendered.markdown or message.rendered.text or ""
        if not content.strip():
            raise SendError("permanent", "empty_body", "the rendered message has no markdown", provider=PROVIDER)
        self._post(key, {"msgtype": "markdown", "markdown": {"content": truncate_utf8(content, MARKDOWN_LIMIT)}})
        mention_error: SendError | None = None
        if message.mentions:
            text = MENTION_TEXT.get(message.language, MENTION_TEXT["en"])
            payload = {"msgtype": "text", "text": {"content": text, "mentioned_mobile_list": list(message.mentions)}}
            try:
                self._post(key, payload)
            except SendError as exc:
                mention_error = exc
        return WeComOutcome(provider=PROVIDER, mention_error=mention_error)

    def close(self) -> None:
        """Close the HTTP sessions of all threads."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    # ------------------------------------------------------------------ helpers

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _post(self, key: str, payload: dict[str, Any]) -> None:
        try:
            response = self._session().post(self.url, params={"key": key}, json=payload, timeout=self.timeout)
        except requests.Timeout:
            raise SendError("transient", "timeout", "no answer in time", provider=PROVIDER) from None
        except requests.ConnectionError:
            raise SendError("transient", "connection", "connection failed", provider=PROVIDER) from None
        except requests.RequestException as exc:
            raise SendError("transient", "http", type(exc).__name__, provider=PROVIDER) from None
        status = response.status_code
        if status == 429:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            retry_after = RATE_LIMITED_WAIT if wait is None else wait
            raise SendError("rate_limited", "http_429", "HTTP 429", provider=PROVIDER, retry_after=retry_after)
        if status >= 500:
            raise SendError("transient", f"http_{status}", f"HTTP {status}", provider=PROVIDER)
        if status != 200:
            raise SendError("permanent", f"http_{status}", f"HTTP {status}", provider=PROVIDER)
        try:
            data = response.json()
            errcode = int(data.get("errcode", -1))
            errmsg = str(data.get("errmsg") or "")
        except (ValueError, TypeError, AttributeError):
            raise SendError("transient", "bad_response", "unreadable robot answer", provider=PROVIDER) from None
        if errcode == 0:
            return
        detail = f"errcode {errcode}: {_scrub(errmsg, key)}"
        if errcode == ERRCODE_RATE_LIMITED:
            raise SendError("rate_limited", str(errcode), detail, provider=PROVIDER, retry_after=RATE_LIMITED_WAIT)
        if errcode in PERMANENT_ERRCODES or 93000 <= errcode < 94000:
            raise SendError("permanent", str(errcode), detail, provider=PROVIDER)
        raise SendError("transient", str(errcode), detail, provider=PROVIDER)


def truncate_utf8(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` if its UTF-8 fits in ``limit`` bytes, else its longest prefix that fits with ``ellipsis`` added."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    budget = limit - len(ellipsis.encode("utf-8"))
    if budget < 0:
        return ""
    return data[:budget].decode("utf-8", errors="ignore").rstrip() + ellipsis


def _scrub(text: str, key: str) -> str:
    """Robot text without the key (the robot may echo its URL) and with numbers and addresses masked."""
    return mask_text(_KEY_IN_TEXT.sub(r"\1***", text.replace(key, "***")))
