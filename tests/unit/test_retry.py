"""Retry by error class, and how long retrying an alert's delivery is useful."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifiers.retry import Decision, ErrorKind, RetryPolicy, Usefulness, parse_time, useful_until

NOW = 1_800_000_000.0
LATER = NOW + 86400.0
H = 3600.0


def rng() -> random.Random:
    return random.Random(7)


SMS = RetryPolicy(fallback_after=3)  # max 6 attempts, 30 s base, x2, 30 min cap, 5 free 429s
EMAIL = RetryPolicy()  # no fallback


# --------------------------------------------------------------------------- transient


def test_transient_errors_back_off_with_full_jitter_under_a_growing_capped_ceiling() -> None:
    assert [SMS.backoff_ceiling(n) for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1800, 1800]
    assert SMS.backoff_ceiling(10_000) == 1800  # no overflow
    for attempt in (1, 2):
        d = SMS.decide("transient", attempt, NOW, None, LATER, rng())
        assert d.action == "retry" and d.at is not None
        assert NOW + SMS.min_delay <= d.at <= NOW + SMS.backoff_ceiling(attempt)
        assert d.reason.startswith("transient: back-off")


def test_the_jitter_is_deterministic_for_a_seeded_random_source() -> None:
    a = EMAIL.decide("transient", 4, NOW, None, LATER, random.Random(1))
    b = EMAIL.decide("transient", 4, NOW, None, LATER, random.Random(1))
    assert a == b
    spread = {EMAIL.decide("transient", 4, NOW, None, LATER, random.Random(s)).at for s in range(20)}
    assert len(spread) > 15  # full jitter: spread over the whole range


def test_the_minimum_delay_keeps_retries_from_spinning() -> None:
    class Zero(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a

    d = EMAIL.decide("transient", 1, NOW, None, LATER, Zero())
    assert d.at == NOW + EMAIL.min_delay


def test_after_fallback_after_failures_the_channel_falls_back() -> None:
    assert SMS.decide("transient", 2, NOW, None, LATER, rng()).action == "retry"
    d = SMS.decide("transient", 3, NOW, None, LATER, rng())
    assert d == Decision("fallback", NOW, "3 failed attempt(s): falling back")


def test_without_a_fallback_max_attempts_ends_in_give_up() -> None:
    assert EMAIL.decide("transient", 5, NOW, None, LATER, rng()).action == "retry"
    d = EMAIL.decide("transient", 6, NOW, None, LATER, rng())
    assert d.action == "give_up" and d.at is None and "max_attempts is 6" in d.reason


# --------------------------------------------------------------------------- rate limited


def test_rate_limited_waits_retry_after_or_the_default() -> None:
    d = SMS.decide("rate_limited", 1, NOW, 42.0, LATER, rng())
    assert d == Decision("retry", NOW + 42.0, "rate limited: Retry-After, wait 42.0s")
    d = SMS.decide("rate_limited", 1, NOW, None, LATER, rng())
    assert d.at == NOW + SMS.rate_limit_wait and "default wait" in d.reason
    assert SMS.decide("rate_limited", 1, NOW, 0.0, LATER, rng()).at == NOW + SMS.min_delay
    assert SMS.decide("rate_limited", 1, NOW, -5.0, LATER, rng()).at == NOW + SMS.min_delay


def test_free_rate_limits_count_neither_toward_fallback_nor_toward_max_attempts() -> None:
    # 2 transient failures, then 5 answers 429: attempts 3..7 are free
    for attempt in range(3, 8):
        d = SMS.decide("rate_limited", attempt, NOW, 10.0, LATER, rng(), rate_limited=attempt - 2)
        assert d.action == "retry" and d.at == NOW + 10.0
    # the sixth 429 is beyond the cap: it counts, and it is the third counted failure
    d = SMS.decide("rate_limited", 8, NOW, 10.0, LATER, rng(), rate_limited=6)
    assert d.action == "fallback"
    # a transient failure after the free 429s is only the third counted one
    d = SMS.decide("transient", 8, NOW, None, LATER, rng(), rate_limited=5)
    assert d.action == "fallback"
    d = EMAIL.decide("transient", 10, NOW, None, LATER, rng(), rate_limited=5)
    assert d.action == "retry"  # 5 counted failures of 6 allowed


def test_a_counted_rate_limit_backs_off_but_never_sooner_than_retry_after() -> None:
    policy = RetryPolicy(rate_limit_cap=0, max_attempts=10)
    d = policy.decide("rate_limited", 1, NOW, 600.0, LATER, rng())
    assert d.action == "retry" and d.at is not None and d.at >= NOW + 600.0
    assert d.reason.startswith("rate_limited: back-off after 1 failure(s)")


# --------------------------------------------------------------------------- permanent and give_up_at


def test_permanent_errors_are_never_retried() -> None:
    assert SMS.decide("permanent", 1, NOW, None, LATER, rng()) == Decision(
        "fallback", NOW, "permanent error: not retried, falling back"
    )
    assert EMAIL.decide("permanent", 1, NOW, None, LATER, rng()) == Decision(
        "give_up", None, "permanent error: not retried"
    )
    strict = RetryPolicy(fallback_after=3, permanent_fallback=False)
    assert strict.decide("permanent", 1, NOW, None, LATER, rng()).action == "give_up"


def test_nothing_is_scheduled_after_give_up_at() -> None:
    d = SMS.decide("rate_limited", 1, NOW, 120.0, NOW + 60.0, rng())
    assert d.action == "give_up" and "after give_up_at" in d.reason
    d = SMS.decide("transient", 1, NOW, None, NOW, rng())
    assert d.action == "give_up" and "past give_up_at" in d.reason
    # a fallback is no help either once the alert is no longer useful
    assert SMS.decide("transient", 3, NOW, None, NOW - 1, rng()).action == "give_up"
    assert SMS.decide("permanent", 1, NOW, None, NOW - 1, rng()).action == "give_up"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("boom", 1), "unknown error kind"),
        (("transient", 0), "attempt must be"),
        (("transient", True), "attempt must be"),
    ],
)
def test_bad_arguments_raise(args: tuple[Any, int], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SMS.decide(args[0], args[1], NOW, None, LATER, rng())


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"fallback_after": 7}, "exceeds max_attempts"),
        ({"fallback_after": 0}, "fallback_after"),
        ({"factor": 0.5}, "factor"),
        ({"base_delay": -1.0}, "base_delay"),
        ({"max_delay": 0.5}, "shorter than min_delay"),
        ({"rate_limit_cap": -1}, "rate_limit_cap"),
        ({"rate_limit_wait": float("inf")}, "rate_limit_wait"),
    ],
)
def test_invalid_policies_raise(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetryPolicy(**fields)


@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from(["rate_limited", "transient", "permanent"]),
    attempt=st.integers(1, 30),
    limited=st.integers(0, 30),
    retry_after=st.one_of(st.none(), st.floats(0, 10_000)),
    horizon=st.floats(-100, 100_000),
    seed=st.integers(0, 2**32),
    fallback=st.booleans(),
)
def test_decisions_never_retry_in_the_past_or_after_give_up_at(
    kind: ErrorKind, attempt: int, limited: int, retry_after: float | None, horizon: float, seed: int, fallback: bool
) -> None:
    policy = SMS if fallback else EMAIL
    d = policy.decide(kind, attempt, NOW, retry_after, NOW + horizon, random.Random(seed), rate_limited=limited)
    if d.action == "retry":
        assert d.at is not None and NOW + policy.min_delay <= d.at <= NOW + horizon
        assert kind != "permanent"
        if retry_after is not None and kind == "rate_limited":
            assert d.at >= NOW + retry_after
    elif d.action == "fallback":
        assert fallback and d.at == NOW and horizon > 0
    else:
        assert d.at is None


# --------------------------------------------------------------------------- useful_until


def alert(level: str, **data: Any) -> dict[str, Any]:
    base = {"alert_id": "A", "level": level, "fired_at": "2026-11-27T09:00:00+08:00", "context": {}}
    base.update(data)
    kind = "notice.due" if level == "notice" else f"alert.{level}"
    return {"type": kind, "data": base}


FIRED = datetime(2026, 11, 27, 9, tzinfo=timezone(timedelta(hours=8))).timestamp()


def test_a_warning_is_useful_until_its_deadline() -> None:
    assert useful_until(alert("warning", due_at="2026-11-27T12:00:00+08:00"), SMS) == FIRED + 3 * H
    assert useful_until(alert("warning", due_at="2026-11-27T04:00:00Z"), SMS) == FIRED + 3 * H
    assert useful_until(alert("warning", due_at=None), SMS) == FIRED + 4 * H  # no deadline yet: the default


@pytest.mark.parametrize(("level", "hours"), [("overdue", 4), ("escalation", 4), ("reminder", 4), ("violation", 24)])
def test_overdue_escalation_reminder_and_violation_windows(level: str, hours: int) -> None:
    assert useful_until(alert(level, due_at="2026-11-27T08:00:00+08:00"), EMAIL) == FIRED + hours * H


def test_notices_pre_outage_until_the_outage_starts_the_others_six_hours() -> None:
    pre = alert("notice", notice="pre_outage", context={"starts_at": "2026-11-29T09:00:00+08:00"})
    assert useful_until(pre, SMS) == FIRED + 48 * H
    assert useful_until(alert("notice", notice="pre_outage"), SMS) == FIRED + 4 * H  # start unknown
    for kind in ("restoration", "delay_update", "emergency_outage", "correction"):
        assert useful_until(alert("notice", notice=kind), SMS) == FIRED + 6 * H


def test_the_windows_are_configurable_and_the_data_alone_is_accepted() -> None:
    useful = Usefulness({"overdue": 600.0, "notice.restoration": "expected_end_at"}, default=60.0)
    assert useful_until(alert("overdue")["data"], useful) == FIRED + 600
    assert useful_until(alert("reminder"), useful) == FIRED + 60
    restored = alert("notice", notice="restoration", context={"expected_end_at": "2026-11-27T10:00:00+08:00"})
    assert useful_until(restored, useful) == FIRED + H
    assert useful_until(alert("overdue"), RetryPolicy(useful=useful)) == FIRED + 600


def test_times_may_be_aware_datetimes() -> None:
    event = alert(
        "warning", fired_at=datetime(2026, 11, 27, 1, tzinfo=UTC), due_at=datetime(2026, 11, 27, 2, tzinfo=UTC)
    )
    assert useful_until(event, SMS) == FIRED + H


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"fired_at": "2026-11-27T09:00:00"}, "no UTC offset"),
        ({"fired_at": "yesterday"}, "not an RFC 3339 time"),
        ({"fired_at": 1764205200}, "not an RFC 3339 time"),
        ({"due_at": "2026-13-01T00:00:00+08:00"}, "not an RFC 3339 time"),
    ],
)
def test_bad_times_raise(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        useful_until(alert("warning", **data), SMS)


def test_an_alert_without_fired_at_or_level_raises() -> None:
    event = alert("overdue")
    del event["data"]["fired_at"]
    with pytest.raises(ValueError, match="no fired_at"):
        useful_until(event, SMS)
    with pytest.raises(ValueError, match="no level"):
        useful_until({"data": {"fired_at": "2026-11-27T09:00:00+08:00"}}, SMS)


def test_bad_usefulness_tables_raise() -> None:
    with pytest.raises(ValueError, match="neither a duration"):
        Usefulness({"warning": "whenever"})
    with pytest.raises(ValueError, match="longer than 0s"):
        Usefulness({"warning": 0.0})
    assert parse_time("2026-11-27T01:00:00Z") == FIRED
