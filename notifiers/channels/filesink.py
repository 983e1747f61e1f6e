"""The JSON-lines file sink: one line per message, for ``--sink-file`` runs and tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from notifiers.channels import mask_recipient
from notifiers.channels.base import Channel, Message, SendOutcome

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


class JsonlFileSender:
    """Appends one JSON object per message to ``path``.

    Keys: ``delivery_id, channel, to`` (masked), ``language, kind, subject, text, html, markdown, at``
    (UTC, ISO 8601).  Each line is written and flushed under a per-file lock, and the file is
    opened for each line, so several senders (one per channel) can share one file.
    """

    provider = "file"

    def __init__(
        self,
        path: Path | str,
        *,
        channel: Channel = "file",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.path = Path(path).resolve()
        self.channel: Channel = channel
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = _lock_for(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def send(self, message: Message) -> SendOutcome:
        """Append the message's line."""
        r = message.rendered
        record = {
            "delivery_id": message.delivery_id,
            "channel": message.channel,
            "to": mask_recipient(message.channel, message.to),
            "language": message.language,
            "kind": r.kind,
            "subject": r.subject,
            "text": r.text,
            "html": r.html,
            "markdown": r.markdown,
            "at": self._clock().isoformat(),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
        return SendOutcome(provider=self.provider)

    def close(self) -> None:
        """Nothing to release: the file is closed after each line."""
