"""Quiet hours: local windows (possibly across midnight) in which non-urgent messages wait."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifiers.quiet import RESIDENT_DEFAULT, UNIT_DEFAULT, QuietHours, parse_hhmm

SH = ZoneInfo("Asia/Shanghai")
RESIDENTS = QuietHours(RESIDENT_DEFAULT)  # 21:00-08:00 Asia/Shanghai
UNITS = QuietHours(UNIT_DEFAULT, "Asia/Shanghai")  # 22:00-07:00


def at(text: str, tz: ZoneInfo = SH) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def local(t: float | None, tz: ZoneInfo = SH) -> str:
    assert t is not None
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(
    ("now", "release"),
    [
        ("2026-11-27 22:30", "2026-11-28 08:00:00"),
        ("2026-11-27 21:00", "2026-11-28 08:00:00"),  # the start minute is quiet
        ("2026-11-28 00:00", "2026-11-28 08:00:00"),
        ("2026-11-28 07:59:59", "2026-11-28 08:00:00"),
    ],
)
def test_inside_the_window_a_message_waits_for_its_end(now: str, release: str) -> None:
    assert local(RESIDENTS.release_at(at(now), urgent=False)) == release
    assert RESIDENTS.is_quiet(at(now))


@pytest.mark.parametrize("now", ["2026-11-28 08:00", "2026-11-27 20:59:59", "2026-11-27 12:00"])
def test_outside_the_window_a_message_goes_now(now: str) -> None:
    assert RESIDENTS.release_at(at(now), urgent=False) is None
    assert not RESIDENTS.is_quiet(at(now))


def test_urgent_messages_ignore_quiet_hours() -> None:
    assert RESIDENTS.release_at(at("2026-11-27 23:00"), urgent=True) is None


def test_units_have_their_own_shorter_window() -> None:
    assert UNITS.release_at(at("2026-11-27 21:30"), urgent=False) is None
    assert local(UNITS.release_at(at("2026-11-27 22:30"), urgent=False)) == "2026-11-28 07:00:00"


def test_a_daytime_window_and_several_windows() -> None:
    lunch = QuietHours([("12:00", "14:00"), ("22:00", "06:00")])
    assert local(lunch.release_at(at("2026-11-27 13:00"), urgent=False)) == "2026-11-27 14:00:00"
    assert lunch.release_at(at("2026-11-27 14:00"), urgent=False) is None
    assert local(lunch.release_at(at("2026-11-27 23:00"), urgent=False)) == "2026-11-28 06:00:00"


def test_touching_and_overlapping_windows_act_as_one() -> None:
    split = QuietHours([("21:00", "23:00"), ("23:00", "02:00"), ("01:00", "08:00")])
    assert local(split.release_at(at("2026-11-27 21:30"), urgent=False)) == "2026-11-28 08:00:00"
    assert local(split.last_moment_before(at("2026-11-28 03:00"), at("2026-11-27 12:00"))) == "2026-11-27 20:59:59"


def test_a_window_ending_at_midnight() -> None:
    late = QuietHours([("20:00", "00:00")])
    assert local(late.release_at(at("2026-11-27 23:59"), urgent=False)) == "2026-11-28 00:00:00"
    assert late.release_at(at("2026-11-28 00:00"), urgent=False) is None


# --------------------------------------------------------------------------- last_moment_before


def test_a_deadline_outside_quiet_hours_is_itself_the_last_moment() -> None:
    now = at("2026-11-25 10:00")
    assert RESIDENTS.last_moment_before(at("2026-11-27 15:00"), now) == at("2026-11-27 15:00")
    assert RESIDENTS.last_moment_before(at("2026-11-27 08:00"), now) == at("2026-11-27 08:00")  # end is not quiet


def test_a_deadline_inside_quiet_hours_moves_to_just_before_the_window_started() -> None:
    # an outage at 23:00 on the 29th: residents must be told by 23:00 on the 27th, i.e. by 20:59:59
    now = at("2026-11-25 10:00")
    assert local(RESIDENTS.last_moment_before(at("2026-11-27 23:00"), now)) == "2026-11-27 20:59:59"
    assert local(RESIDENTS.last_moment_before(at("2026-11-28 07:00"), now)) == "2026-11-27 20:59:59"
    assert local(RESIDENTS.last_moment_before(at("2026-11-27 21:00"), now)) == "2026-11-27 20:59:59"


def test_when_no_moment_is_left_the_answer_is_now() -> None:
    assert RESIDENTS.last_moment_before(at("2026-11-28 07:00"), at("2026-11-27 22:00")) == at("2026-11-27 22:00")
    assert RESIDENTS.last_moment_before(at("2026-11-27 10:00"), at("2026-11-27 11:00")) == at("2026-11-27 11:00")
    assert RESIDENTS.last_moment_before(at("2026-11-27 23:00"), at("2026-11-27 20:59:59.5")) == at(
        "2026-11-27 20:59:59.5"
    )


# --------------------------------------------------------------------------- why, validation, time zones


def test_why_names_the_window_and_its_end() -> None:
    assert RESIDENTS.why(at("2026-11-27 23:00")) == "quiet hours (21:00-08:00 Asia/Shanghai) until 2026-11-28 08:00"
    assert RESIDENTS.why(at("2026-11-27 12:00")) == "outside quiet hours (21:00-08:00 Asia/Shanghai)"
    assert QuietHours([]).why(at("2026-11-27 23:00")) == "outside quiet hours (none Asia/Shanghai)"
    assert repr(UNITS) == "QuietHours([22:00-07:00], Asia/Shanghai)"


@pytest.mark.parametrize(
    ("windows", "problem"),
    [
        ([("24:00", "08:00")], "not a time of day"),
        ([("7:00", "08:00")], "not a time of day"),
        ([("21:00", "8am")], "not a time of day"),
        ([("21:00", "21:00")], "empty"),
        ([("00:00", "12:00"), ("12:00", "00:00")], "whole day"),
        ([("21:00", "08:00", "09:00")], "pair"),
    ],
)
def test_bad_windows_raise(windows: list[tuple[str, ...]], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        QuietHours(windows)  # type: ignore[arg-type]


def test_parse_hhmm() -> None:
    assert f"{parse_hhmm('08:05'):%H:%M}" == "08:05"
    with pytest.raises(ValueError):
        parse_hhmm(800)  # type: ignore[arg-type]


def test_a_zone_with_daylight_saving_time_uses_wall_clock_windows() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    night = QuietHours([("01:00", "04:00")], berlin)
    # 2026-03-29: clocks jump from 02:00 to 03:00, so this night's window lasts two real hours
    start = at("2026-03-29 01:30", berlin)
    release = night.release_at(start, urgent=False)
    assert local(release, berlin) == "2026-03-29 04:00:00" and release == start + 1.5 * 3600
    # 2026-10-25: 03:00 falls back to 02:00; the window lasts four real hours
    end = night.release_at(at("2026-10-25 01:00", berlin), urgent=False)
    assert end == at("2026-10-25 01:00", berlin) + 4 * 3600
    assert local(end, berlin) == "2026-10-25 04:00:00"


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(0, 1439),
    length=st.integers(1, 1200),
    now=st.floats(1.5e9, 2.5e9),
    ahead=st.floats(0, 5 * 86400),
)
def test_the_answers_are_never_inside_quiet_hours(start: int, length: int, now: float, ahead: float) -> None:
    end = (start + length) % 1440
    quiet = QuietHours([(f"{start // 60:02d}:{start % 60:02d}", f"{end // 60:02d}:{end % 60:02d}")])
    release = quiet.release_at(now, urgent=False)
    if release is None:
        assert not quiet.is_quiet(now)
    else:
        assert quiet.is_quiet(now) and release > now and not quiet.is_quiet(release)
        assert release - now <= length * 60 + 3600  # (+1 h margin for offsets; Shanghai has none)
    deadline = now + ahead
    last = quiet.last_moment_before(deadline, now)
    assert now <= last <= deadline
    assert last == now or not quiet.is_quiet(last)
    if not quiet.is_quiet(deadline):
        assert last == deadline
