"""Quiet hours: local-time windows in which non-urgent messages wait.

A window is ``("HH:MM", "HH:MM")`` in local wall-clock time of ``tz``; it is
half-open (the start minute is quiet, the end minute is not) and crosses
midnight when the end is not after the start (``("21:00", "08:00")``).
Windows repeat every local day; overlapping or touching windows act as one.

Times in and out are epoch seconds (floats).  Local days are built with
:mod:`zoneinfo` (``datetime.combine(day, hh:mm, tzinfo=tz)``), so a zone with
daylight saving time works too: a wall-clock time skipped by a spring-forward
gap maps to the instant after the gap, a repeated one to its first occurrence.
Asia/Shanghai has had no DST since 1991.

Pure: ``now`` is always a parameter; nothing here reads the clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"
RESIDENT_DEFAULT = (("21:00", "08:00"),)
"""Residents are not messaged between 21:00 and 08:00 unless urgent."""
UNIT_DEFAULT = (("22:00", "07:00"),)
"""Units' non-urgent reminders and warnings wait between 22:00 and 07:00."""

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_GRAIN = 1.0
"""``last_moment_before`` answers one second before a window starts."""


def parse_hhmm(text: str) -> time:
    """``"21:00"`` → ``time(21, 0)``; ``ValueError`` for anything but zero-padded 00:00-23:59."""
    m = _HHMM.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a time of day like 21:00 (00:00-23:59)")
    return time(int(m.group(1)), int(m.group(2)))


class QuietHours:
    """Daily quiet windows in one time zone.

    ``release_at(now, urgent)`` says when a message may go (``None``: now);
    ``last_moment_before(deadline, now)`` the latest non-quiet instant for a
    message that must be out by a deadline; ``why(now)`` a reason for logs.
    """

    __slots__ = ("_spans", "tz", "windows")

    def __init__(self, windows: Sequence[tuple[str, str]], tz: str | ZoneInfo = DEFAULT_TZ) -> None:
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        parsed: list[tuple[time, time]] = []
        for pair in windows:
            if len(pair) != 2:
                raise ValueError(f"a quiet window is a (start, end) pair, not {pair!r}")
            start, end = parse_hhmm(pair[0]), parse_hhmm(pair[1])
            if start == end:
                raise ValueError(f"quiet window {pair[0]}-{pair[1]} is empty (start equals end)")
            parsed.append((start, end))
        self.windows: tuple[tuple[time, time], ...] = tuple(parsed)
        minutes: set[int] = set()
        for start, end in parsed:
            a, b = start.hour * 60 + start.minute, end.hour * 60 + end.minute
            minutes.update(range(a, b) if a < b else (*range(a, 1440), *range(0, b)))
        if len(minutes) == 1440:
            raise ValueError("quiet hours cover the whole day: nothing could ever be sent")
        # (start offset from local midnight in minutes, length in minutes) for each window
        self._spans = tuple(
            (s.hour * 60 + s.minute, ((e.hour * 60 + e.minute) - (s.hour * 60 + s.minute)) % 1440) for s, e in parsed
        )

    def __repr__(self) -> str:
        spans = ", ".join(f"{s:%H:%M}-{e:%H:%M}" for s, e in self.windows)
        return f"QuietHours([{spans}], {self.tz.key})"

    # ------------------------------------------------------------------ internals

    def _local_day(self, t: float) -> date:
        return datetime.fromtimestamp(t, self.tz).date()

    def _intervals(self, t: float) -> list[tuple[float, float]]:
        """Quiet intervals ``[start, end)`` (epoch) of the local days around ``t``, merged and sorted."""
        day = self._local_day(t)
        raw: list[tuple[float, float]] = []
        for offset in (-2, -1, 0, 1, 2):
            d = day + timedelta(days=offset)
            for start_min, length in self._spans:
                start = datetime.combine(d, time(start_min // 60, start_min % 60), tzinfo=self.tz)
                end_day = d if start_min + length < 1440 else d + timedelta(days=1)
                end_min = (start_min + length) % 1440
                end = datetime.combine(end_day, time(end_min // 60, end_min % 60), tzinfo=self.tz)
                a, b = start.timestamp(), end.timestamp()
                if b > a:
                    raw.append((a, b))
        raw.sort()
        merged: list[tuple[float, float]] = []
        for a, b in raw:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def _containing(self, t: float) -> tuple[float, float] | None:
        for a, b in self._intervals(t):
            if a <= t < b:
                return a, b
        return None

    # ------------------------------------------------------------------ API

    def is_quiet(self, t: float) -> bool:
        """Is ``t`` inside a quiet window?"""
        return self._containing(t) is not None

    def release_at(self, now: float, urgent: bool) -> float | None:
        """When a message planned at ``now`` may go: ``None`` = now (urgent, or not quiet), else the window's end."""
        if urgent:
            return None
        t = now
        for _ in range(8):  # merged windows are separated by a gap; one step is the norm
            span = self._containing(t)
            if span is None:
                return None if t == now else t
            t = span[1]
        return t

    def last_moment_before(self, deadline: float, now: float) -> float:
        """The latest instant in ``[now, deadline]`` outside quiet hours.

        A deadline inside a window gives one second before that window started.
        When no such instant is left (the deadline has passed, or ``now`` and the
        deadline sit in the same window) the answer is ``now``: a deadline set by
        the rules outranks quiet hours.
        """
        if deadline <= now:
            return now
        t = deadline
        for _ in range(8):
            span = self._containing(t)
            if span is None:
                return t if t >= now else now
            t = span[0] - _GRAIN
            if t < now:
                return now
        return now

    def why(self, now: float) -> str:
        """A short reason for logs: the window ``now`` is in and when it ends, or that it is not quiet."""
        span = self._containing(now)
        spans = ", ".join(f"{s:%H:%M}-{e:%H:%M}" for s, e in self.windows) or "none"
        if span is None:
            return f"outside quiet hours ({spans} {self.tz.key})"
        until = datetime.fromtimestamp(span[1], self.tz)
        return f"quiet hours ({spans} {self.tz.key}) until {until:%Y-%m-%d %H:%M}"
