"""The console sender: one readable block per message on a text stream (the default without credentials)."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from notifiers.channels import mask_recipient
from notifiers.channels.base import Channel, Message, SendOutcome

_LOCK = threading.Lock()
"""One lock for all console senders: blocks of several threads never interleave."""


class ConsoleSender:
    """Prints each message (channel, masked recipient, subject and body) to ``stream`` (default: ``sys.stdout``).

    ``channel`` is the channel this instance stands in for; the provider is always ``console``.
    """

    provider = "console"

    def __init__(self, stream: TextIO | None = None, *, channel: Channel = "console") -> None:
        self.channel: Channel = channel
        self._stream = stream

    def send(self, message: Message) -> SendOutcome:
        """Write the message block and flush."""
        stream = self._stream if self._stream is not None else sys.stdout
        with _LOCK:
            stream.write(format_block(message))
            stream.flush()
        return SendOutcome(provider=self.provider)

    def close(self) -> None:
        """Nothing to release (the stream belongs to the caller)."""


def format_block(message: Message) -> str:
    """The console block of one message: a header line, the subject when there is one, the body."""
    r = message.rendered
    to = mask_recipient(message.channel, message.to)
    lines = [f"── {message.channel} → {to} [{message.language}, {r.kind}] delivery {message.delivery_id}"]
    if message.mentions:
        lines.append(f"@ {len(message.mentions)} mention(s)")
    if r.subject:
        lines.append(f"Subject: {r.subject}")
    body = r.markdown if message.channel == "wecom" and r.markdown else (r.text or r.markdown or "")
    lines.append(body.rstrip("\n"))
    return "\n".join(lines) + "\n\n"
