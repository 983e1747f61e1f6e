"""Retry by error class: what to do after a failed send, and until when retrying is useful.

A channel sender fails with one of three kinds (``notifiers/channels/base.py``):

``rate_limited``  wait ``Retry-After`` (or :attr:`RetryPolicy.rate_limit_wait`);
                  the first :attr:`RetryPolicy.rate_limit_cap` of these are free:
                  they count neither toward ``max_attempts`` nor toward the
                  fallback, later ones count as failures.
``transient``     exponential back-off with full jitter:
                  ``uniform(0, min(max_delay, base_delay * factor ** (failures - 1)))``,
                  at least ``min_delay``.
``permanent``     never retried: ``fallback`` when the channel has one and
                  :attr:`RetryPolicy.permanent_fallback` is on, else ``give_up``.

After ``fallback_after`` counted failures on a channel the answer is
``fallback``; after ``max_attempts`` it is ``give_up``.  A retry is never
scheduled after ``give_up_at`` (normally :func:`useful_until` of the alert):
the answer is then ``give_up`` and the delivery is dead-lettered.

:func:`useful_until` ties ``give_up_at`` to the alert: a warning is useless
after its deadline, a pre-outage notice after the outage started, an overdue
alert some hours after it fired (:class:`Usefulness`, configured under
``retry.useful_for`` in ``config/routing.yaml``).

Pure: ``now`` and the random source are parameters.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

ErrorKind = Literal["rate_limited", "transient", "permanent"]
Action = Literal["retry", "give_up", "fallback"]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)
ANCHORS = ("due_at", "starts_at", "expected_end_at")
"""Alert fields a usefulness window may end at (looked up in ``data``, then ``data.context``)."""
HOUR = 3600.0


def parse_time(value: Any) -> float:
    """An RFC 3339 time with offset (text, or an aware ``datetime``) → epoch seconds; ``ValueError`` otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an RFC 3339 time like 2026-11-27T09:00:00+08:00") from None
    else:
        raise ValueError(f"{value!r} is not an RFC 3339 time like 2026-11-27T09:00:00+08:00")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{value!r} has no UTC offset (RFC 3339 times carry one, e.g. +08:00)")
    return moment.timestamp()


def alert_data(alert_event: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` of a CloudEvent mapping, or the mapping itself when it is already the data."""
    data = alert_event.get("data")
    return data if isinstance(data, Mapping) else alert_event


def alert_level(alert_event: Mapping[str, Any]) -> str:
    """``data.level``, else the level implied by ``type`` (``alert.overdue`` → overdue, ``notice.due`` → notice)."""
    data = alert_data(alert_event)
    level = data.get("level")
    if isinstance(level, str) and level:
        return level
    kind = alert_event.get("type")
    if isinstance(kind, str):
        if kind == "notice.due":
            return "notice"
        if kind.startswith("alert."):
            return kind[len("alert.") :]
    raise ValueError("alert has no level (data.level or an alert.* / notice.due type)")


@dataclass(frozen=True, slots=True)
class Usefulness:
    """How long after an alert fired a delivery is still worth trying.

    ``windows`` maps a level (``warning``, ``overdue`` ...) or ``notice.<kind>``
    (``notice.pre_outage``) to either seconds after ``fired_at`` or the name of
    an alert field in :data:`ANCHORS` (``due_at``, ``starts_at``, ``expected_end_at``).
    Unlisted kinds, and anchors the alert lacks, get ``default`` seconds after ``fired_at``.
    """

    windows: Mapping[str, float | str] = field(
        default_factory=lambda: {
            "warning": "due_at",
            "overdue": 4 * HOUR,
            "escalation": 4 * HOUR,
            "reminder": 4 * HOUR,
            "violation": 24 * HOUR,
            "notice.pre_outage": "starts_at",
            "notice.emergency_outage": 6 * HOUR,
            "notice.delay_update": 6 * HOUR,
            "notice.restoration": 6 * HOUR,
            "notice.correction": 6 * HOUR,
        }
    )
    default: float = 4 * HOUR

    def __post_init__(self) -> None:
        for key, value in self.windows.items():
            if isinstance(value, str):
                if value not in ANCHORS:
                    raise ValueError(f"{key}: {value!r} is neither a duration nor one of {', '.join(ANCHORS)}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{key}: window must be longer than 0s")
        if not self.default > 0:
            raise ValueError("default window must be longer than 0s")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt: ``at`` is when to retry (or fall back), ``None`` for give_up."""

    action: Action
    at: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry rules of one channel (durations in seconds); see the module text for the algorithm."""

    max_attempts: int = 6
    base_delay: float = 30.0
    factor: float = 2.0
    max_delay: float = 1800.0
    min_delay: float = 1.0
    rate_limit_wait: float = 60.0
    rate_limit_cap: int = 5
    fallback_after: int | None = None
    """Counted failures after which the channel falls back; ``None``: this channel has no fallback."""
    permanent_fallback: bool = True
    useful: Usefulness = field(default_factory=Usefulness)
    in_doubt_check: float = 120.0
    """After a restart, how long an in-doubt delivery waits for the provider's evidence
    (a receipt; for SMS also Twilio's list of messages) before it is checked and,
    unknown to the provider, sent again."""

    def __post_init__(self) -> None:
        def whole(name: str, value: object, least: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, not {value!r}")

        whole("max_attempts", self.max_attempts, 1)
        whole("rate_limit_cap", self.rate_limit_cap, 0)
        if self.fallback_after is not None:
            whole("fallback_after", self.fallback_after, 1)
            if self.fallback_after > self.max_attempts:
                raise ValueError(f"fallback_after ({self.fallback_after}) exceeds max_attempts ({self.max_attempts})")
        for name in ("base_delay", "max_delay", "min_delay", "rate_limit_wait", "in_doubt_check"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, int | float) or not 1 <= self.factor < math.inf:
            raise ValueError(f"factor must be a number >= 1, not {self.factor!r}")
        if self.max_delay < self.min_delay:
            raise ValueError(f"max_delay ({self.max_delay}) is shorter than min_delay ({self.min_delay})")

    def backoff_ceiling(self, failures: int) -> float:
        """The upper end of the jittered wait after ``failures`` counted failures (>= 1)."""
        try:
            grown = self.base_delay * self.factor ** max(0, failures - 1)
        except OverflowError:
            grown = math.inf
        return min(self.max_delay, grown)

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Full jitter: ``uniform(0, ceiling)``, at least ``min_delay``."""
        return max(self.min_delay, rng.uniform(0.0, self.backoff_ceiling(failures)))

    def decide(
        self,
        kind: ErrorKind,
        attempt: int,
        now: float,
        retry_after: float | None,
        give_up_at: float,
        rng: random.Random,
        *,
        rate_limited: int = 0,
    ) -> Decision:
        """Decide after the failed ``attempt`` (1-based, every kind counted) on this channel.

        ``rate_limited`` is how many of the ``attempt`` attempts were answered
        ``rate_limited`` (this one included; it is taken as at least 1 when
        ``kind`` is ``rate_limited``).
        """
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r} (use {', '.join(ERROR_KINDS)})")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt must be a whole number >= 1, not {attempt!r}")
        limited = min(attempt, max(rate_limited, 1 if kind == "rate_limited" else 0))
        free = min(limited, self.rate_limit_cap)
        failures = attempt - free
        counted = kind != "rate_limited" or limited > self.rate_limit_cap
        late = now >= give_up_at
        if kind == "permanent":
            if self.fallback_after is not None and self.permanent_fallback and not late:
                return Decision("fallback", now, "permanent error: not retried, falling back")
            return Decision("give_up", None, "permanent error: not retried")
        if counted and self.fallback_after is not None and failures >= self.fallback_after and not late:
            return Decision("fallback", now, f"{failures} failed attempt(s): falling back")
        if failures >= self.max_attempts:
            return Decision("give_up", None, f"{failures} failed attempt(s): max_attempts is {self.max_attempts}")
        if late:
            return Decision("give_up", None, "no longer useful: past give_up_at")
        if kind == "rate_limited" and not counted:
            wait = self.rate_limit_wait if retry_after is None else max(self.min_delay, float(retry_after))
            why = "rate limited: " + ("Retry-After" if retry_after is not None else "default wait")
        else:
            wait = self.backoff(max(1, failures), rng)
            if kind == "rate_limited" and retry_after is not None:
                wait = max(wait, float(retry_after))
            why = f"{kind}: back-off after {failures} failure(s)"
        at = now + wait
        if not math.isfinite(at) or at > give_up_at:
            return Decision("give_up", None, f"{why}: next try would be after give_up_at")
        return Decision("retry", at, f"{why}, wait {wait:.1f}s")


def useful_until(alert_event: Mapping[str, Any], policy: RetryPolicy | Usefulness) -> float:
    """Epoch seconds after which retrying a delivery of this alert makes no sense.

    Takes the alert CloudEvent (or its ``data``); needs ``data.fired_at``.
    The result may lie before ``fired_at`` (a warning fired after its deadline).
    """
    useful = policy.useful if isinstance(policy, RetryPolicy) else policy
    data = alert_data(alert_event)
    if "fired_at" not in data:
        raise ValueError("alert has no fired_at")
    fired_at = parse_time(data["fired_at"])
    level = alert_level(alert_event)
    notice = data.get("notice")
    spec: float | str | None = None
    if level == "notice" and isinstance(notice, str):
        spec = useful.windows.get(f"notice.{notice}")
    if spec is None:
        spec = useful.windows.get(level)
    if isinstance(spec, str):
        context = data.get("context")
        raw = data.get(spec)
        if raw is None and isinstance(context, Mapping):
            raw = context.get(spec)
        return parse_time(raw) if raw is not None else fired_at + useful.default
    return fired_at + (useful.default if spec is None else float(spec))
