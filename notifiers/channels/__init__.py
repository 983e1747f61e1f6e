"""Channel senders (interface in ``base.py``) and the choice of provider per channel.

:func:`build_senders` reads the environment once, at start-up:

* **sms**: Twilio when ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and ``TWILIO_FROM_NUMBER``
  or ``TWILIO_MESSAGING_SERVICE_SID`` are set; ``WATERWATCH_TWILIO_BASE_URL`` redirects the API.
* **email**: SendGrid when ``SENDGRID_API_KEY`` and ``SENDGRID_FROM_EMAIL`` (or ``SENDGRID_FROM``)
  are set, ``SENDGRID_FROM_NAME`` optional; ``WATERWATCH_SENDGRID_HOST`` redirects the API.
* **wecom**: group robots when ``WATERWATCH_WECOM=on`` or ``WATERWATCH_WECOM_BASE_URL`` is set;
  each recipient names the variable that holds its robot's key.
* otherwise the channel goes to the JSON-lines file sink when ``sink_file`` is given, else to the console.

The SDKs are imported only for the providers in use.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TextIO

from notifiers.channels.base import Channel, Sender
from waterwatch.masking import mask_email, mask_phone, mask_text

CHANNELS = ("sms", "email", "wecom")
"""The channels :func:`build_senders` provides a sender for."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a provider call may take (connect and read) before it counts as ``transient``."""

_ON = frozenset({"1", "on", "true", "yes"})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date); ``None`` when unusable."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def mask_recipient(channel: str, to: str) -> str:
    """``to`` as logs may show it: phone and e-mail masked; a WeCom robot's key *variable name* as is."""
    if channel == "sms":
        return mask_phone(to)
    if channel == "email":
        return mask_email(to)
    if channel == "wecom":
        return to
    return mask_text(to)


class Senders(Mapping[str, Sender]):
    """Channel (``sms``/``email``/``wecom``) → its sender, with a start-up description of the choice."""

    def __init__(self, senders: Mapping[str, Sender], notes: Mapping[str, str]) -> None:
        self._senders = dict(senders)
        self._notes = dict(notes)

    def __getitem__(self, channel: str) -> Sender:
        return self._senders[channel]

    def __iter__(self) -> Iterator[str]:
        return iter(self._senders)

    def __len__(self) -> int:
        return len(self._senders)

    def describe(self) -> list[str]:
        """One line per channel for the start-up log: provider and non-secret settings, or why the fallback."""
        return [f"{ch}: {self._senders[ch].provider} ({self._notes.get(ch, '')})" for ch in self._senders]

    def close(self) -> None:
        """Close every sender once."""
        seen: set[int] = set()
        for sender in self._senders.values():
            if id(sender) not in seen:
                seen.add(id(sender))
                sender.close()


def _get(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _missing(env: Mapping[str, str], *names: str) -> list[str]:
    return [n for n in names if not _get(env, n)]


def build_senders(
    env: Mapping[str, str] = os.environ,
    *,
    sink_file: Path | None = None,
    stream: TextIO | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Senders:
    """The sender of each channel, chosen from ``env`` (see the module docstring); never reads other state."""
    senders: dict[str, Sender] = {}
    notes: dict[str, str] = {}

    def fallback(channel: Channel, why: str) -> None:
        if sink_file is not None:
            from notifiers.channels.filesink import JsonlFileSender

            senders[channel] = JsonlFileSender(sink_file, channel=channel)
            notes[channel] = f"{why}; writing JSON lines to {sink_file}"
        else:
            from notifiers.channels.console import ConsoleSender

            senders[channel] = ConsoleSender(stream, channel=channel)
            notes[channel] = f"{why}; printing to the console"

    # ---- sms
    sid, token = _get(env, "TWILIO_ACCOUNT_SID"), _get(env, "TWILIO_AUTH_TOKEN")
    from_number, service = _get(env, "TWILIO_FROM_NUMBER"), _get(env, "TWILIO_MESSAGING_SERVICE_SID")
    if sid and token and (from_number or service):
        from notifiers.channels.twilio_sms import TwilioSms

        base_url = _get(env, "WATERWATCH_TWILIO_BASE_URL") or None
        senders["sms"] = TwilioSms(sid, token, from_number or None, service or None, base_url=base_url, timeout=timeout)
        sender_id = f"messaging service {service}" if service else f"from {mask_phone(from_number)}"
        notes["sms"] = f"account {sid[:6]}…, {sender_id}, {base_url or 'api.twilio.com'}"
    else:
        missing = _missing(env, "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
        if not (from_number or service):
            missing.append("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        fallback("sms", "Twilio not configured: " + ", ".join(missing) + " not set")

    # ---- email
    key = _get(env, "SENDGRID_API_KEY")
    from_email = _get(env, "SENDGRID_FROM_EMAIL") or _get(env, "SENDGRID_FROM")
    if key and from_email:
        from notifiers.channels.sendgrid_email import SendGridEmail

        host = _get(env, "WATERWATCH_SENDGRID_HOST") or None
        from_name = _get(env, "SENDGRID_FROM_NAME") or None
        senders["email"] = SendGridEmail(key, from_email, from_name, host=host, timeout=timeout)
        notes["email"] = f"from {mask_email(from_email)}, {host or 'api.sendgrid.com'}"
    else:
        missing = _missing(env, "SENDGRID_API_KEY")
        if not from_email:
            missing.append("SENDGRID_FROM_EMAIL")
        fallback("email", "SendGrid not configured: " + ", ".join(missing) + " not set")

    # ---- wecom
    wecom_base = _get(env, "WATERWATCH_WECOM_BASE_URL")
    if wecom_base or _get(env, "WATERWATCH_WECOM").lower() in _ON:
        from notifiers.channels.wecom import DEFAULT_BASE_URL, WeComRobot

        senders["wecom"] = WeComRobot(wecom_base or DEFAULT_BASE_URL, env=env, timeout=timeout)
        notes["wecom"] = f"{wecom_base or DEFAULT_BASE_URL}, robot keys from the variables recipients name"
    else:
        fallback("wecom", "WeCom robots off: set WATERWATCH_WECOM=on or WATERWATCH_WECOM_BASE_URL")

    return Senders(senders, notes)
