"""Token bucket and WeCom message merging: pure, deterministic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifiers.ratelimit import MergeWindow, TokenBucket, merge_markdown, truncate_utf8, wecom_bucket

T0 = 1_800_000_000.0


# --------------------------------------------------------------------------- token bucket


def test_a_wecom_robot_takes_a_burst_of_20_then_one_every_3_seconds() -> None:
    bucket = wecom_bucket()
    assert bucket.rate_per_s == pytest.approx(20 / 60) and bucket.burst == 20
    assert [bucket.take(T0) for _ in range(20)] == [0.0] * 20
    assert bucket.take(T0) == pytest.approx(3.0)
    assert bucket.take(T0 + 1) == pytest.approx(2.0)  # a refusal takes nothing
    assert bucket.take(T0 + 3) == 0.0
    assert bucket.take(T0 + 3) == pytest.approx(3.0)


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.001, 100), burst=st.integers(1, 25), start=st.floats(1.5e9, 4e9))
def test_waiting_exactly_the_answer_always_succeeds(rate: float, burst: int, start: float) -> None:
    bucket = TokenBucket(rate, burst)
    now = start
    refused_last = False
    for _ in range(100):
        wait = bucket.take(now)
        if wait:
            assert not refused_last  # no float-rounding starvation at epoch-sized times
            assert wait == pytest.approx(bucket.wait(now))
            now += wait
        refused_last = bool(wait)


def test_wait_and_available_do_not_consume() -> None:
    bucket = TokenBucket(1.0, 2)
    assert bucket.available(T0) == 2 and bucket.wait(T0) == 0.0
    bucket.take(T0)
    bucket.take(T0)
    assert bucket.available(T0) == 0 and bucket.wait(T0) == pytest.approx(1.0)
    assert bucket.available(T0 + 1.5) == 1 and bucket.available(T0 + 100) == 2
    assert bucket.take(T0 + 1) == 0.0


def test_an_idle_bucket_refills_only_up_to_its_burst() -> None:
    bucket = TokenBucket(1.0, 3)
    assert [bucket.take(T0 + 1000) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert bucket.take(T0 + 1000) > 0


def test_time_going_backwards_hands_out_nothing_extra() -> None:
    bucket = TokenBucket(1.0, 1)
    assert bucket.take(T0) == 0.0
    assert bucket.take(T0 - 50) == pytest.approx(51.0)


def test_the_state_restores_the_bucket() -> None:
    bucket = TokenBucket(0.5, 2)
    bucket.take(T0)
    bucket.take(T0)
    copy = TokenBucket(0.5, 2, tat=bucket.state)
    assert copy.take(T0 + 1) == bucket.take(T0 + 1) == pytest.approx(1.0)
    assert "TokenBucket(rate_per_s=0.5, burst=2" in repr(copy)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0), (1, 1.5), (1, True)])
def test_invalid_buckets_raise(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(0.01, 50),
    burst=st.integers(1, 25),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=80),
)
def test_a_bucket_never_exceeds_its_rate_over_any_window(rate: float, burst: int, gaps: list[float]) -> None:
    bucket = TokenBucket(rate, burst)
    now = T0
    taken: list[float] = []
    for gap in gaps:
        now += gap
        if bucket.take(now) == 0.0:
            taken.append(now)
    for i in range(len(taken)):
        for j in range(i, len(taken)):
            assert j - i + 1 <= burst + rate * (taken[j] - taken[i] + 1e-6) + 1e-9


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.01, 50), burst=st.integers(1, 25), start=st.floats(0, 4e9))
def test_a_fresh_bucket_grants_exactly_its_burst_at_once(rate: float, burst: int, start: float) -> None:
    bucket = TokenBucket(rate, burst)
    assert sum(bucket.take(start) == 0.0 for _ in range(burst + 5)) == burst


# --------------------------------------------------------------------------- merging


def test_one_part_goes_alone_without_a_header() -> None:
    assert merge_markdown(["**R15.2** 超时"]) == ["**R15.2** 超时"]
    assert merge_markdown([]) == []


def test_several_parts_become_one_message_with_a_count() -> None:
    assert merge_markdown(["a", "b", "c"]) == ["**共3条预警**\n\na\n\nb\n\nc"]
    assert merge_markdown(["a", "b"], lang="en") == ["**2 alerts**\n\na\n\nb"]


def test_parts_that_do_not_fit_one_message_are_split_in_order_never_inside_a_part() -> None:
    parts = ["甲" * 30, "乙" * 30, "丙" * 30]  # 90 bytes each
    out = merge_markdown(parts, limit_bytes=220)
    assert out == [f"**共3条预警（1/2）**\n\n{parts[0]}\n\n{parts[1]}", f"**共3条预警（2/2）**\n\n{parts[2]}"]
    assert all(len(m.encode()) <= 220 for m in out)
    # "**3 alerts (i/n)**" is 18 bytes: at 220 two parts of 100 (202 with the separator) no longer fit
    assert len(merge_markdown(["x" * 100, "y" * 100, "z" * 100], limit_bytes=220, lang="en")) == 3
    en = merge_markdown(["x" * 100, "y" * 100, "z" * 100], limit_bytes=222, lang="en")
    assert [m.split("\n\n")[0] for m in en] == ["**3 alerts (1/2)**", "**3 alerts (2/2)**"]


def test_a_part_too_long_for_any_message_is_cut_at_a_character_boundary_with_an_ellipsis() -> None:
    long = "漏" * 2000  # 6000 bytes
    (alone,) = merge_markdown([long])
    assert len(alone.encode()) <= 4096 and alone.endswith("…") and alone[:-1] == "漏" * len(alone[:-1])
    out = merge_markdown(["short", long, "tail"], limit_bytes=300)
    assert out[0].endswith("\n\nshort") and out[2].endswith("\n\ntail")
    assert out[1].endswith("…") and len(out[1].encode()) <= 300
    assert out[1].split("\n\n", 1)[1].rstrip("…") == "漏" * ((300 - len("**共3条预警（3/3）**\n\n".encode()) - 3) // 3)


def test_truncate_utf8() -> None:
    assert truncate_utf8("abc", 3) == "abc"
    assert truncate_utf8("abcd", 3) == "…"
    assert truncate_utf8("水水", 5) == "…"  # 3 + 3 > 5: the 2 spare bytes cannot hold half a character
    assert truncate_utf8("水水水", 8) == "水…"
    with pytest.raises(ValueError):
        truncate_utf8("abcd", 2)


def test_the_limit_must_leave_room_for_a_header() -> None:
    with pytest.raises(ValueError, match="too small"):
        merge_markdown(["a", "b"], limit_bytes=20)


def test_the_merge_window_policy() -> None:
    window = MergeWindow()
    assert window.window == 10.0 and window.limit_bytes == 4096
    assert window.release_at(T0) == T0 + 10
    assert window.merge(["a", "b"], "en") == ["**2 alerts**\n\na\n\nb"]
    with pytest.raises(ValueError):
        MergeWindow(window=-1)
    with pytest.raises(ValueError):
        MergeWindow(limit_bytes=10)


SEP = "\n\n"


def consume(messages: list[str], parts: list[str]) -> None:
    """Each message is a header, then a run of consecutive parts (the last of a run maybe cut with …)."""
    i = 0
    for m in messages:
        body = m if len(parts) == 1 else m.partition(SEP)[2]
        if len(parts) > 1:
            assert m.startswith("**") and m.partition(SEP)[0].endswith("**")
        for j in range(i + 1, len(parts) + 1):
            if body == SEP.join(parts[i:j]):
                i = j
                break
        else:
            assert body.endswith("…") and parts[i].startswith(body[:-1]), (body, parts[i])
            i += 1
    assert i == len(parts)


text_part = st.text(alphabet=st.sampled_from(list("ab 水漏预警*#>\n-😀")), max_size=150)


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(text_part, min_size=1, max_size=40),
    limit=st.integers(100, 1000),
    lang=st.sampled_from(["zh", "en"]),
)
def test_merged_messages_fit_the_limit_and_hold_every_part_in_order(parts: list[str], limit: int, lang: str) -> None:
    out = merge_markdown(parts, limit_bytes=limit, lang=lang)
    assert all(len(m.encode("utf-8")) <= limit for m in out)
    assert 1 <= len(out) <= len(parts)
    if len(parts) > 1:
        assert all(str(len(parts)) in m.partition(SEP)[0] for m in out)
    consume(out, parts)


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.text(alphabet="ab水", max_size=60), min_size=2, max_size=30), limit=st.integers(200, 600))
def test_merging_is_greedy_a_message_is_only_closed_when_the_next_part_does_not_fit(
    parts: list[str], limit: int
) -> None:
    out = merge_markdown(parts, limit_bytes=limit)
    worst_header = len(f"**共{len(parts)}条预警（{len(parts)}/{len(parts)}）**".encode())
    bodies = [m.partition(SEP)[2] for m in out]
    for k in range(len(bodies) - 1):
        first_next = bodies[k + 1].split(SEP)[0] if not bodies[k + 1].startswith(SEP) else ""
        grown = worst_header + len(SEP) + len(bodies[k].encode()) + len(SEP) + len(first_next.encode())
        assert grown > limit
