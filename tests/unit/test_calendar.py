"""Business calendar: working time on Chinese working days, exact to the second.

Expected instants below were worked out by hand from chinesecalendar 1.11's data
(e.g. 2026: Mid-autumn Sep 25-27, National Day Oct 1-7, make-up working days
Sun Sep 20 and Sat Oct 10).
"""

from __future__ import annotations

import logging
import textwrap
from datetime import UTC, date, datetime, time, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from waterwatch.core.calendar import (
    BusinessCalendar,
    ConfigError,
    DayOverride,
    MissingHolidayData,
    load_calendar,
)

SH = ZoneInfo("Asia/Shanghai")
REPO = Path(__file__).resolve().parents[2]
CAL = BusinessCalendar()
HOUR = 3600
WORKDAY = 7 * HOUR + 30 * 60  # 08:30-12:00 + 13:30-17:30


def sh(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=SH)


# --------------------------------------------------------------------------- the package data


def test_package_data_for_2026_national_day_is_what_the_examples_assume() -> None:
    # guards the hand-computed expectations below against a data change upstream
    holidays = [date(2026, 10, d) for d in range(1, 8)]
    assert all(not chinese_calendar.is_workday(d) for d in holidays)
    assert chinese_calendar.is_workday(date(2026, 9, 30))
    assert chinese_calendar.is_workday(date(2026, 10, 8))  # Thursday, back to work
    assert chinese_calendar.get_holiday_detail(date(2026, 10, 10)) == (False, "National Day")
    assert chinese_calendar.get_holiday_detail(date(2026, 9, 20)) == (False, "National Day")


# --------------------------------------------------------------------------- rules


def test_R13_accept_clock_skips_national_day_holiday() -> None:
    # Wed 2026-09-30 17:00: 30 min left that day (until 17:30); Oct 1-7 is the
    # National Day holiday; Thu Oct 8 is a working day again (the package has no
    # holiday on Oct 8), so the remaining 30 min end at 2026-10-08 09:00.
    start = sh(2026, 9, 30, 17, 0)
    due = CAL.add_working(start, HOUR)
    assert due == sh(2026, 10, 8, 9, 0)
    assert due.tzinfo == SH
    assert CAL.working_seconds(start, due) == HOUR
    holidays = [s for s in CAL.skipped(start, due) if s.kind == "holiday"]
    assert len(holidays) == 1  # the seven days merged into one stretch
    assert holidays[0].name == "National Day"
    assert (holidays[0].first_day, holidays[0].last_day) == (date(2026, 10, 1), date(2026, 10, 7))
    assert holidays[0].describe().startswith("holiday National Day 2026-10-01..2026-10-07")


def test_operator_holiday_override_wins_over_the_package() -> None:
    cal = BusinessCalendar(
        overrides={date(2026, 10, 8): DayOverride(date(2026, 10, 8), False, "extra day off")}
    )
    assert cal.add_working(sh(2026, 9, 30, 17, 0), HOUR) == sh(2026, 10, 9, 9, 0)
    info = cal.day_kind(date(2026, 10, 8))
    assert (info.kind, info.workday, info.name) == ("override_holiday", False, "extra day off")


def test_makeup_workday_on_a_saturday_counts_as_working() -> None:
    # Fri 2026-10-09 17:00 + 1 h: 30 min on Friday, then Sat Oct 10 (调休) from 08:30
    assert CAL.add_working(sh(2026, 10, 9, 17, 0), HOUR) == sh(2026, 10, 10, 9, 0)
    info = CAL.day_kind(date(2026, 10, 10))
    assert (info.workday, info.kind, info.name, info.name_zh) == (
        True,
        "makeup_workday",
        "National Day",
        "国庆节",
    )
    assert CAL.working_seconds(sh(2026, 10, 10), sh(2026, 10, 11)) == WORKDAY
    notes = [s for s in CAL.skipped(sh(2026, 10, 9, 17), sh(2026, 10, 10, 9)) if s.counted]
    assert [(n.kind, n.start, n.end) for n in notes] == [
        ("makeup_workday", sh(2026, 10, 10, 8, 30), sh(2026, 10, 10, 9, 0))
    ]


def test_makeup_workday_on_a_sunday_counts_as_working() -> None:
    # Fri 2026-09-18 17:00 + 1 h -> Sat 19 is weekend, Sun 20 is a make-up day
    assert CAL.add_working(sh(2026, 9, 18, 17, 0), HOUR) == sh(2026, 9, 20, 9, 0)


def test_lunch_break_is_skipped() -> None:
    # Tue 2026-03-10 11:30 + 1 h: 30 min until 12:00, lunch, 30 min from 13:30
    assert CAL.add_working(sh(2026, 3, 10, 11, 30), HOUR) == sh(2026, 3, 10, 14, 0)
    assert CAL.working_seconds(sh(2026, 3, 10, 11, 0), sh(2026, 3, 10, 14, 0)) == 90 * 60
    kinds = [
        (s.kind, s.start, s.end) for s in CAL.skipped(sh(2026, 3, 10, 11), sh(2026, 3, 10, 14))
    ]
    assert kinds == [("lunch", sh(2026, 3, 10, 12), sh(2026, 3, 10, 13, 30))]


def test_friday_evening_start_rolls_to_monday_morning() -> None:
    assert CAL.add_working(sh(2026, 3, 13, 18, 0), 30 * 60) == sh(2026, 3, 16, 9, 0)
    assert CAL.next_working_instant(sh(2026, 3, 13, 18, 0)) == sh(2026, 3, 16, 8, 30)
    kinds = [s.kind for s in CAL.skipped(sh(2026, 3, 13, 18, 0), sh(2026, 3, 16, 9, 0))]
    assert kinds == ["after_hours", "weekend", "before_hours"]


def test_overnight_gap_between_working_days_is_one_night() -> None:
    skips = CAL.skipped(sh(2026, 3, 10, 17), sh(2026, 3, 11, 9))
    assert [(s.kind, s.start, s.end) for s in skips] == [
        ("night", sh(2026, 3, 10, 17, 30), sh(2026, 3, 11, 8, 30))
    ]


def test_add_working_can_end_exactly_at_the_end_of_a_period() -> None:
    # the earliest instant with one working hour done is 17:30, not next morning
    assert CAL.add_working(sh(2026, 3, 10, 16, 30), HOUR) == sh(2026, 3, 10, 17, 30)
    assert CAL.add_working(sh(2026, 3, 10, 16, 30), HOUR + 1) == sh(2026, 3, 11, 8, 30, 1)


def test_zero_seconds_returns_t_inside_working_time_else_next_period_start() -> None:
    assert CAL.add_working(sh(2026, 3, 10, 8, 30), 0) == sh(2026, 3, 10, 8, 30)
    assert CAL.add_working(sh(2026, 3, 10, 11, 59, 59), 0) == sh(2026, 3, 10, 11, 59, 59)
    assert CAL.add_working(sh(2026, 3, 10, 12, 0), 0) == sh(2026, 3, 10, 13, 30)  # half-open
    assert CAL.add_working(sh(2026, 3, 10, 17, 30), 0) == sh(2026, 3, 11, 8, 30)
    assert CAL.add_working(sh(2026, 3, 10, 6, 0), 0) == sh(2026, 3, 10, 8, 30)
    assert CAL.is_working_time(sh(2026, 3, 10, 8, 30))
    assert not CAL.is_working_time(sh(2026, 3, 10, 17, 30))


def test_instant_inside_a_holiday_moves_to_the_next_working_period() -> None:
    assert CAL.next_working_instant(sh(2026, 10, 3, 12, 0)) == sh(2026, 10, 8, 8, 30)
    assert CAL.next_working_instant(sh(2026, 2, 17, 10, 0)) == sh(2026, 2, 24, 8, 30)  # 春节


def test_inputs_with_any_utc_offset_are_accepted_and_results_are_in_shanghai() -> None:
    utc = datetime(2026, 3, 10, 3, 30, tzinfo=UTC)  # = 11:30 in Shanghai
    ny = datetime(2026, 3, 9, 22, 30, tzinfo=timezone(timedelta(hours=-5)))  # same instant
    for start in (utc, ny):
        due = CAL.add_working(start, HOUR)
        assert due == sh(2026, 3, 10, 14, 0)
        assert due.utcoffset() == timedelta(hours=8)
        assert due.tzinfo == SH


def test_microseconds_are_floored_to_the_second() -> None:
    t = sh(2026, 3, 10, 11, 59, 59, 999_999)  # treated as 11:59:59
    assert CAL.add_working(t, 0) == sh(2026, 3, 10, 11, 59, 59)
    assert CAL.add_working(t, 1) == sh(2026, 3, 10, 12, 0)
    assert CAL.add_working(t, 2) == sh(2026, 3, 10, 13, 30, 1)
    assert CAL.working_seconds(t, sh(2026, 3, 10, 12, 0, 0, 500_000)) == 1
    assert CAL.working_seconds(sh(2026, 3, 10, 9, 0, 0, 1), sh(2026, 3, 10, 9, 0, 0, 999_999)) == 0
    assert CAL.add_working(t, 5).microsecond == 0


def test_working_seconds_is_zero_for_empty_or_reversed_ranges() -> None:
    t = sh(2026, 3, 10, 10)
    assert CAL.working_seconds(t, t) == 0
    assert CAL.working_seconds(t, t - timedelta(hours=5)) == 0
    assert CAL.skipped(t, t) == []


def test_working_seconds_over_a_normal_week_is_five_workdays() -> None:
    assert CAL.working_seconds(sh(2026, 3, 9), sh(2026, 3, 16)) == 5 * WORKDAY


def test_naive_datetimes_and_negative_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        CAL.add_working(datetime(2026, 3, 10, 10), 1)
    with pytest.raises(ValueError, match="naive"):
        CAL.working_seconds(datetime(2026, 3, 10, 10), sh(2026, 3, 10, 11))
    with pytest.raises(ValueError, match=">= 0"):
        CAL.add_working(sh(2026, 3, 10, 10), -1)


def test_day_kinds() -> None:
    assert CAL.day_kind(date(2026, 10, 1)).kind == "holiday"
    assert CAL.day_kind(date(2026, 10, 1)).name_zh == "国庆节"
    assert CAL.day_kind(date(2026, 10, 3)).kind == "holiday"  # a Saturday inside the holiday
    assert CAL.day_kind(date(2026, 10, 11)).kind == "weekend"
    assert CAL.day_kind(date(2026, 10, 12)).kind == "workday"
    assert CAL.is_workday(date(2026, 10, 10))
    assert not CAL.is_workday(date(2026, 10, 7))
    assert CAL.day_kind(sh(2026, 10, 1, 1, 0).astimezone(UTC)).date == date(2026, 10, 1)


def test_invalid_working_hours_are_refused() -> None:
    with pytest.raises(ValueError, match="end 12:00 is not after start 13:30"):
        BusinessCalendar(periods=[(time(8, 30), time(12)), (time(13, 30), time(12))])
    with pytest.raises(ValueError, match="previous period"):
        BusinessCalendar(periods=[(time(8, 30), time(12)), (time(11, 30), time(17))])
    with pytest.raises(ValueError, match="at least one"):
        BusinessCalendar(periods=[])


def test_a_calendar_without_any_working_day_fails_loudly_instead_of_looping() -> None:
    start = date(2026, 1, 1)
    days = {
        start + timedelta(n): DayOverride(start + timedelta(n), False, "closed") for n in range(900)
    }
    cal = BusinessCalendar(overrides=days)
    with pytest.raises(RuntimeError, match="no working time"):
        cal.add_working(sh(2026, 1, 1), 1)


# --------------------------------------------------------------------------- missing data


def test_missing_holiday_data_is_loud_once_per_year(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[date] = []
    cal = BusinessCalendar(on_missing=calls.append)
    with caplog.at_level(logging.WARNING, logger="waterwatch.calendar"):
        info = cal.day_kind(date(2027, 3, 1))
        assert (info.workday, info.kind, info.has_data) == (True, "workday", False)
        cal.add_working(sh(2027, 3, 1, 9), 20 * WORKDAY)  # many more 2027 days
        cal.working_seconds(sh(2027, 1, 1), sh(2027, 12, 31))
    assert calls == [date(2027, 3, 1)]
    assert cal.missing_years == {2027}
    warnings = [r for r in caplog.records if r.name == "waterwatch.calendar"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "2027" in warnings[0].getMessage()
    assert warnings[0].__dict__["missing_holiday_data"] == MissingHolidayData(
        2027, date(2027, 3, 1)
    )
    assert cal.missing == [MissingHolidayData(2027, date(2027, 3, 1))]

    cal.day_kind(date(2028, 6, 1))
    assert [d.year for d in calls] == [2027, 2028]
    assert cal.missing_years == {2027, 2028}


def test_missing_data_days_are_flagged_in_explain() -> None:
    cal = BusinessCalendar()
    skips = cal.skipped(sh(2027, 3, 5, 9), sh(2027, 3, 8, 10))  # Fri .. Mon
    weekend = next(s for s in skips if s.kind == "weekend")
    assert not weekend.has_data
    assert "guessed" in weekend.describe()
    assert any(s.kind == "unverified_workday" for s in skips)


def test_package_years_raise_no_missing_data_alarm() -> None:
    calls: list[date] = []
    cal = BusinessCalendar(on_missing=calls.append)
    cal.working_seconds(sh(2024, 1, 1), sh(2026, 12, 31, 23, 59, 59))
    assert calls == []
    assert cal.missing_years == set()


def test_operator_override_for_2027_is_honoured() -> None:
    calls: list[date] = []
    ny = date(2027, 1, 1)  # a Friday
    cal = BusinessCalendar(
        overrides={ny: DayOverride(ny, False, "元旦 New Year's Day")}, on_missing=calls.append
    )
    info = cal.day_kind(ny)
    assert (info.workday, info.kind, info.name, info.has_data) == (
        False,
        "override_holiday",
        "元旦 New Year's Day",
        True,
    )
    assert calls == []  # a declared day is not a guess
    # Thu 2026-12-31 17:00 + 1 h -> Fri holiday, Sat/Sun (guessed) weekend -> Mon 09:00
    assert cal.add_working(sh(2026, 12, 31, 17), HOUR) == sh(2027, 1, 4, 9)
    assert calls == [date(2027, 1, 2)]  # the guessed weekend is still reported


def test_complete_years_suppress_the_missing_data_warning(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[date] = []
    ny = date(2027, 1, 1)
    cal = BusinessCalendar(
        overrides={ny: DayOverride(ny, False, "元旦")},
        on_missing=calls.append,
        complete_years=[2027],
    )
    with caplog.at_level(logging.WARNING, logger="waterwatch.calendar"):
        cal.working_seconds(sh(2027, 1, 1), sh(2027, 12, 31))
        assert cal.day_kind(date(2027, 3, 1)).has_data
    assert calls == []
    assert cal.missing_years == set()
    assert not [r for r in caplog.records if r.name == "waterwatch.calendar"]


def test_horizon_is_the_end_of_contiguous_holiday_data() -> None:
    last = max(d.year for d in chinese_calendar.holidays)
    assert BusinessCalendar().horizon() == date(last, 12, 31)
    assert BusinessCalendar(complete_years=[last + 1]).horizon() == date(last + 1, 12, 31)
    # a declared year after a gap does not extend the horizon: the gap is still guessed
    assert BusinessCalendar(complete_years=[last + 2]).horizon() == date(last, 12, 31)


# --------------------------------------------------------------------------- properties

ZONES = st.sampled_from(
    [SH, UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=45))]
)
INSTANTS = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31, 23, 59, 59), timezones=ZONES
)
DURATIONS = st.integers(min_value=0, max_value=40 * WORKDAY)


def floor(t: datetime) -> datetime:
    return t.replace(microsecond=0)


@given(INSTANTS, DURATIONS)
def test_add_working_then_working_seconds_round_trips(t: datetime, n: int) -> None:
    due = CAL.add_working(t, n)
    assert CAL.working_seconds(t, due) == n
    assert due.tzinfo == SH
    assert due.microsecond == 0
    assert due >= floor(t)
    if n > 0:  # and it is the earliest such instant
        assert CAL.working_seconds(t, due - timedelta(seconds=1)) == n - 1


@given(INSTANTS, DURATIONS, DURATIONS)
def test_add_working_is_monotonic_in_the_duration(t: datetime, n1: int, n2: int) -> None:
    n1, n2 = sorted((n1, n2))
    assert CAL.add_working(t, n1) <= CAL.add_working(t, n2)


@given(INSTANTS, DURATIONS, st.integers(min_value=1, max_value=5 * WORKDAY))
def test_add_working_composes(t: datetime, n1: int, n2: int) -> None:
    assert CAL.add_working(CAL.add_working(t, n1), n2) == CAL.add_working(t, n1 + n2)


@given(INSTANTS, INSTANTS)
def test_a_later_start_never_counts_more(a: datetime, b: datetime) -> None:
    a, b = sorted((a, b))
    c = max(b, a + timedelta(days=9))
    assert CAL.working_seconds(a, c) >= CAL.working_seconds(b, c)


@given(INSTANTS, INSTANTS, INSTANTS)
def test_working_seconds_is_additive(a: datetime, b: datetime, c: datetime) -> None:
    a, b, c = sorted((a, b, c))
    assert CAL.working_seconds(a, c) == CAL.working_seconds(a, b) + CAL.working_seconds(b, c)


@given(INSTANTS)
def test_add_working_zero_is_the_next_working_instant(t: datetime) -> None:
    nxt = CAL.add_working(t, 0)
    assert nxt == CAL.next_working_instant(t)
    assert CAL.working_seconds(t, nxt) == 0
    assert CAL.is_working_time(nxt)
    if CAL.is_working_time(t):
        assert nxt == floor(t)
    else:  # the start of a working period
        assert nxt.time() in {s for s, _ in CAL.periods}


EPOCH_SECONDS = st.integers(
    min_value=int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
    max_value=int(datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()),
)
BERLIN = BusinessCalendar(tz="Europe/Berlin", periods=[(time(1), time(2, 30)), (time(3), time(23))])


@given(EPOCH_SECONDS, DURATIONS, st.integers(min_value=0, max_value=20 * 86400))
def test_epoch_second_api_agrees_with_the_datetime_api(ts: int, n: int, span: int) -> None:
    for cal in (CAL, BERLIN):  # Berlin: hours with a UTC-offset change take the slow path
        t = datetime.fromtimestamp(ts, UTC)
        assert cal.add_working_ts(ts, n) == int(cal.add_working(t, n).timestamp())
        b = t + timedelta(seconds=span)
        assert cal.working_seconds_ts(ts, ts + span) == cal.working_seconds(t, b)


NON_WORKING_DAYS = sorted(
    date(2024, 1, 1) + timedelta(n)
    for n in range((date(2026, 12, 31) - date(2024, 1, 1)).days + 1)
    if not chinese_calendar.is_workday(date(2024, 1, 1) + timedelta(n))
)


@given(st.sampled_from(NON_WORKING_DAYS), st.integers(min_value=0, max_value=86399))
def test_an_instant_inside_a_day_off_moves_to_the_next_working_period(d: date, sec: int) -> None:
    t = datetime.combine(d, time(0), SH) + timedelta(seconds=sec)
    nxt = CAL.next_working_instant(t)
    assert nxt.date() > d
    assert CAL.is_workday(nxt.date())
    assert all(not CAL.is_workday(d + timedelta(k)) for k in range((nxt.date() - d).days))
    assert nxt.time() == CAL.periods[0][0]
    assert CAL.working_seconds(t, nxt) == 0


def reference_working_seconds(cal: BusinessCalendar, a: datetime, b: datetime) -> int:
    """Naive, independent model: intersect [a, b) with each day's periods."""
    a, b = floor(a.astimezone(SH)), floor(b.astimezone(SH))
    total = 0
    d = a.date()
    while d <= b.date():
        if cal.is_workday(d):
            for s, e in cal.periods:
                lo = max(a, datetime.combine(d, s, SH))
                hi = min(b, datetime.combine(d, e, SH))
                total += max(0, int((hi - lo).total_seconds()))
        d += timedelta(days=1)
    return total


@given(INSTANTS, st.integers(min_value=0, max_value=20 * 86400))
def test_working_seconds_matches_a_naive_model(a: datetime, span: int) -> None:
    b = a + timedelta(seconds=span)
    assert CAL.working_seconds(a, b) == reference_working_seconds(CAL, a, b)


@given(INSTANTS, st.integers(min_value=0, max_value=12 * 86400))
def test_skips_and_working_time_tile_the_interval(a: datetime, span: int) -> None:
    b = a + timedelta(seconds=span)
    assume(floor(b) > floor(a))
    gaps = [s for s in CAL.skipped(a, b) if not s.counted]
    not_counted = sum(int((s.end - s.start).total_seconds()) for s in gaps)
    assert not_counted + CAL.working_seconds(a, b) == int((floor(b) - floor(a)).total_seconds())
    for x, y in pairwise(gaps):
        assert x.end <= y.start


# --------------------------------------------------------------------------- config file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calendar.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_shipped_config_loads_with_the_default_hours_and_no_overrides() -> None:
    cal = load_calendar(REPO / "config" / "calendar.yaml")
    assert cal.tz == "Asia/Shanghai"
    assert cal.periods == ((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30)))
    assert dict(cal.overrides) == {}
    assert cal.complete_years == frozenset()


def test_config_days_and_complete_years_are_loaded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        timezone: Asia/Shanghai
        working_hours:
          - [08:30, "12:00"]
          - ["13:30", "17:30:00"]
        days:
          - {date: 2027-01-01, kind: holiday, name: "元旦 New Year's Day"}
          - {date: 2027-02-20, kind: workday, name: "调休"}
        complete_years: [2027]
        """,
    )
    calls: list[date] = []
    cal = load_calendar(path, on_missing=calls.append)
    assert cal.periods == ((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30)))
    assert cal.day_kind(date(2027, 1, 1)).kind == "override_holiday"
    assert cal.day_kind(date(2027, 2, 20)).kind == "override_workday"
    assert cal.horizon() == date(2027, 12, 31)
    cal.working_seconds(sh(2027, 1, 1), sh(2027, 6, 1))
    assert calls == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            """
            # business calendar
            timezone: Asia/Shanghai

            working_hours:
              - ["08:30", "12:00"]
              - ["13:30", "12:00"]
            """,
            6,
            "working_hours[1]: end 12:00 is not after start 13:30",
        ),
        (
            """
            working_hours:
              - ["08:30", "12:00"]
              - ["11:00", "17:00"]
            """,
            3,
            "working_hours[1]: start 11:00 is before the previous period's end 12:00",
        ),
        (
            """
            working_hours:
              - ["8h30", "12:00"]
            """,
            2,
            "working_hours[0]: '8h30' is not a time HH:MM or HH:MM:SS",
        ),
        ("working_hours: []\n", 1, "working_hours: at least one working period is required"),
        ("timezone: Asia/Shanghia\n", 1, "timezone: unknown time zone 'Asia/Shanghia'"),
        (
            """
            days:
              - {date: 2027-01-01, kind: holiday}
              - {date: 2027-01-02, kind: vacation}
            """,
            3,
            "days[1].kind: 'vacation' is not 'holiday' or 'workday'",
        ),
        (
            """
            days:
              - {date: 2027-02-30, kind: holiday}
            """,
            2,
            "days[0].date: '2027-02-30' is not a date YYYY-MM-DD",
        ),
        (
            """
            days:
              - {date: 2027-01-01, kind: holiday}
              - date: 2027-01-01
                kind: workday
            """,
            3,
            "days[1]: 2027-01-01 is already declared on line 2",
        ),
        (
            """
            days:
              - {date: 2027-01-01, kind: holiday, nmae: x}
            """,
            2,
            "days[0]: unknown key 'nmae' (expected one of date, kind, name)",
        ),
        (
            """
            days:
              - {kind: holiday}
            """,
            2,
            "days[0]: missing 'date'",
        ),
        (
            """
            days: []
            complete_years: [2027]
            """,
            2,
            "complete_years[0]: 2027 is declared complete but `days` has no entry in 2027",
        ),
        ("holidays: []\n", 1, "unknown key 'holidays'"),
        ("- just a list\n", 1, "expected a mapping"),
        ("", 1, "the file is empty"),
        ("working_hours: [\n", 2, "invalid YAML"),
    ],
)
def test_config_errors_name_the_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_calendar(path)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert message in str(err.value)
    assert (str(err.value.path), err.value.line) == (str(path), line)
    assert isinstance(err.value, ValueError)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_calendar(tmp_path / "nope.yaml")
