"""Rate limits and the WeCom merge window, pure and deterministic.

:class:`TokenBucket` is a token bucket kept as one number, its *theoretical
arrival time* (the GCRA form): a token is worth ``1/rate_per_s`` seconds and up
to ``burst`` tokens can be taken at once.  Over any interval of ``d`` seconds
at most ``burst + rate_per_s * d`` tokens are handed out.  ``take(now)``
returns 0 when it took a token, else the seconds to wait (and takes nothing),
so the caller can turn the wait into a ``next_at`` instead of sleeping.

A WeCom group robot accepts 20 messages a minute (errcode 45009 beyond), so
the notifier keeps one bucket per robot (``rate 20/60, burst 20``, configured
under ``wecom:`` in ``config/routing.yaml``) and merges the alerts of one group
that arrive within :attr:`MergeWindow.window` seconds into as few markdown
messages as :func:`merge_markdown` can make, each at most 4096 bytes (the
robot's markdown limit, UTF-8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WECOM_PER_MINUTE = 20
WECOM_MARKDOWN_BYTES = 4096
DEFAULT_MERGE_WINDOW = 10.0
ELLIPSIS = "…"
SEPARATOR = "\n\n"
_EPS = 1e-6
"""A take within a microsecond of its due time counts as on time: ``now + wait`` is rounded to the float
grid of epoch seconds (about 0.24 µs apart today), and a caller that waits exactly the answer must succeed."""


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` at once; ``now`` is always a parameter.

    The theoretical arrival time is kept as ``base + offset`` with ``base`` the
    last time the bucket was full, so the arithmetic runs on small offsets and
    stays exact to far below a microsecond even with epoch-sized ``now``.
    """

    __slots__ = ("_base", "_off", "_tau", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, *, tat: float | None = None) -> None:
        if not (isinstance(rate_per_s, int | float) and math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a positive number, not {rate_per_s!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be a whole number >= 1, not {burst!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self._tau = (burst - 1) / self.rate_per_s
        self._base: float | None = None if tat is None else float(tat)
        self._off = 0.0

    @property
    def interval(self) -> float:
        """Seconds one token is worth."""
        return 1.0 / self.rate_per_s

    @property
    def state(self) -> float | None:
        """The theoretical arrival time (``None``: never used): pass it back as ``tat=`` to restore the bucket."""
        return None if self._base is None else self._base + self._off

    def _wait(self, now: float) -> tuple[float, float]:
        """(seconds to wait, ``now`` relative to base); a bucket never used waits for nothing."""
        if self._base is None:
            return -self._tau, 0.0
        now_off = now - self._base
        return max(self._off, now_off) - self._tau - now_off, now_off

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0: now), without taking one."""
        wait, _ = self._wait(now)
        return wait if wait > _EPS else 0.0

    def take(self, now: float) -> float:
        """Take a token: 0.0 when taken, else the seconds to wait (nothing taken)."""
        wait, now_off = self._wait(now)
        if wait > _EPS:
            return wait
        if self._base is None or now_off >= self._off:  # the bucket had refilled: restart from now
            self._base, self._off = now, self.interval
        else:
            self._off += self.interval
        return 0.0

    def available(self, now: float) -> int:
        """Whole tokens that could be taken at ``now``."""
        wait, _ = self._wait(now)
        return max(0, min(self.burst, math.floor(-wait / self.interval + _EPS) + 1))

    def __repr__(self) -> str:
        return f"TokenBucket(rate_per_s={self.rate_per_s!r}, burst={self.burst}, tat={self.state!r})"


def wecom_bucket(per_minute: float = WECOM_PER_MINUTE, burst: int = WECOM_PER_MINUTE) -> TokenBucket:
    """A fresh bucket for one WeCom robot (20 a minute, burst 20 unless configured)."""
    return TokenBucket(per_minute / 60.0, burst)


def _header(lang: str, total: int, index: int, count: int) -> str:
    if lang == "en":
        head = f"**{total} alert{'s' if total != 1 else ''}"
        return head + (f" ({index}/{count})**" if count > 1 else "**")
    return f"**共{total}条预警" + (f"（{index}/{count}）**" if count > 1 else "**")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def truncate_utf8(text: str, limit_bytes: int, ellipsis: str = ELLIPSIS) -> str:
    """``text`` if it fits ``limit_bytes`` (UTF-8), else its longest prefix that fits with ``ellipsis`` appended."""
    raw = text.encode("utf-8")
    if len(raw) <= limit_bytes:
        return text
    room = limit_bytes - _nbytes(ellipsis)
    if room < 0:
        raise ValueError(f"limit of {limit_bytes} bytes leaves no room for the ellipsis")
    return raw[:room].decode("utf-8", errors="ignore") + ellipsis


def merge_markdown(
    parts: Sequence[str], limit_bytes: int = WECOM_MARKDOWN_BYTES, lang: str = "zh", *, separator: str = SEPARATOR
) -> list[str]:
    """Pack rendered markdown ``parts`` in order into as few messages as fit ``limit_bytes`` each.

    Several parts become ``header + separator + part + separator + part ...``,
    the header counting all parts (``**共5条预警（1/2）**`` / ``**5 alerts (1/2)**``;
    the ``(i/n)`` only when split).  A part is never split across messages; one
    too long for a message on its own is cut at a UTF-8 boundary and ends in
    ``…``.  One part alone is returned without a header.
    """
    if not parts:
        return []
    if len(parts) == 1:
        return [truncate_utf8(parts[0], limit_bytes)]
    n = len(parts)
    sep = _nbytes(separator)
    header_max = max(_nbytes(_header(lang, n, n, n)), _nbytes(_header(lang, n, 1, 1)))
    room = limit_bytes - header_max - sep  # bytes for the parts of one message, separators between them included
    if room < _nbytes(ELLIPSIS) + 1:
        raise ValueError(f"limit of {limit_bytes} bytes is too small for a header and a part")
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0
    for part in parts:
        size = _nbytes(part)
        if size > room:
            if current:
                groups.append(current)
            groups.append([truncate_utf8(part, room)])
            current, used = [], 0
            continue
        cost = size + (sep if current else 0)
        if current and used + cost > room:
            groups.append(current)
            current, used = [part], size
        else:
            current.append(part)
            used += cost
    if current:
        groups.append(current)
    count = len(groups)
    return [_header(lang, n, i, count) + separator + separator.join(group) for i, group in enumerate(groups, start=1)]


@dataclass(frozen=True, slots=True)
class MergeWindow:
    """Alerts for one WeCom group within ``window`` seconds of the first go out together."""

    window: float = DEFAULT_MERGE_WINDOW
    limit_bytes: int = WECOM_MARKDOWN_BYTES

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window) and self.window >= 0):
            raise ValueError(f"merge window must be >= 0 seconds, not {self.window!r}")
        if self.limit_bytes < 64:
            raise ValueError(f"limit_bytes must be at least 64, not {self.limit_bytes!r}")

    def release_at(self, first_at: float) -> float:
        """When the batch opened by a message at ``first_at`` is sent."""
        return first_at + self.window

    def merge(self, parts: Sequence[str], lang: str = "zh") -> list[str]:
        """:func:`merge_markdown` with this window's byte limit."""
        return merge_markdown(parts, self.limit_bytes, lang)
