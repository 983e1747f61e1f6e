"""SMS length as carriers bill it: GSM-7 160/153 (extension characters count 2), UCS-2 70/67 (astral count 2)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifiers.sms import GSM7_BASIC, GSM7_EXTENSION, is_gsm7, segments, utf16_units

gsm_basic = st.sampled_from(sorted(GSM7_BASIC))
gsm_ext = st.sampled_from(sorted(GSM7_EXTENSION))
cjk = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)  # BMP, not GSM-7: one UCS-2 unit
astral = st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)  # emoji: a surrogate pair, two units
any_char = st.one_of(gsm_basic, gsm_ext, cjk, astral, st.characters(exclude_categories=("Cs",)))
texts = st.text(alphabet=any_char, max_size=400)


# ------------------------------------------------------------------ boundaries


@pytest.mark.parametrize(
    ("length", "expected"),
    [(0, 0), (1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_boundaries_70_single_67_per_segment(length: int, expected: int) -> None:
    count = segments("水" * length)
    assert (count.encoding, count.units, count.segments) == ("UCS-2" if length else "GSM-7", length, expected)


@pytest.mark.parametrize(
    ("length", "expected"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_boundaries_160_single_153_per_segment(length: int, expected: int) -> None:
    count = segments("a" * length)
    assert (count.encoding, count.units, count.segments) == ("GSM-7", length, expected)


@given(st.lists(cjk, min_size=70, max_size=70), cjk)
def test_ucs2_70_is_one_segment_71_is_two_whatever_the_characters(chars: list[str], extra: str) -> None:
    text = "".join(chars)
    assert segments(text).segments == 1
    assert segments(text + extra).segments == 2


@given(st.lists(cjk, min_size=134, max_size=134), cjk)
def test_ucs2_134_is_two_segments_135_is_three(chars: list[str], extra: str) -> None:
    text = "".join(chars)
    assert segments(text).segments == 2
    assert segments(text + extra).segments == 3


@given(st.lists(gsm_basic, min_size=160, max_size=160), gsm_basic)
def test_gsm7_160_is_one_segment_161_is_two_whatever_the_characters(chars: list[str], extra: str) -> None:
    text = "".join(chars)
    assert segments(text) == segments(text)  # deterministic
    assert (segments(text).encoding, segments(text).segments) == ("GSM-7", 1)
    assert segments(text + extra).segments == 2


@given(st.lists(gsm_basic, min_size=306, max_size=306), gsm_basic)
def test_gsm7_306_is_two_segments_307_is_three(chars: list[str], extra: str) -> None:
    text = "".join(chars)
    assert segments(text).segments == 2
    assert segments(text + extra).segments == 3


def test_gsm7_extension_characters_count_two() -> None:
    assert segments("€" * 80) == segments("€" * 80)
    assert (segments("€" * 80).units, segments("€" * 80).segments) == (160, 1)
    assert (segments("€" * 81).units, segments("€" * 81).segments) == (162, 2)
    assert segments("a" * 159 + "{").segments == 2  # 161 septets
    assert segments("^{}[]~\\|€").units == 18


def test_an_escape_pair_is_never_split_across_segments() -> None:
    # 152 + 2 + 152 = 306 septets, but the € cannot start in the last septet of segment 1
    text = "a" * 152 + "€" + "a" * 152
    assert segments(text).units == 306
    assert segments(text).segments == 3


def test_characters_outside_the_bmp_count_two_units_and_are_never_split() -> None:
    assert (segments("😀" * 35).units, segments("😀" * 35).segments) == (70, 1)
    assert (segments("😀" * 36).units, segments("😀" * 36).segments) == (72, 2)
    text = "水" * 66 + "😀" + "水" * 66  # 134 units, but the pair cannot straddle segments 1 and 2
    assert segments(text).units == 134
    assert segments(text).segments == 3


def test_one_character_outside_gsm7_makes_the_whole_message_ucs2() -> None:
    assert segments("Water back at 16:00").encoding == "GSM-7"
    assert segments("Water back at 16:00 【聊城】").encoding == "UCS-2"
    assert segments("a" * 100 + "’").encoding == "UCS-2"  # a curly apostrophe is not GSM-7
    assert segments("a" * 100 + "’").segments == 2


# ------------------------------------------------------------------ properties


@given(texts, st.integers(min_value=0), any_char)
def test_inserting_a_character_anywhere_never_lowers_the_count(text: str, where: int, char: str) -> None:
    i = where % (len(text) + 1)
    longer = text[:i] + char + text[i:]
    assert segments(longer).segments >= segments(text).segments
    assert segments(longer).units >= segments(text).units or segments(longer).encoding != segments(text).encoding


@given(texts, texts)
def test_appending_text_never_lowers_the_count(a: str, b: str) -> None:
    assert segments(a + b).segments >= segments(a).segments
    assert segments(b + a).segments >= segments(a).segments


@given(texts)
def test_units_are_septets_or_utf16_units(text: str) -> None:
    count = segments(text)
    if is_gsm7(text):
        assert count.encoding == "GSM-7"
        assert count.units == len(text) + sum(1 for c in text if c in GSM7_EXTENSION)
    else:
        assert count.encoding == "UCS-2"
        assert count.units == len(text.encode("utf-16-le")) // 2 == utf16_units(text)


@given(texts)
def test_segment_count_lies_between_the_packing_bounds(text: str) -> None:
    count = segments(text)
    if count.units == 0:
        assert count.segments == 0
    elif count.units <= count.single_limit:
        assert count.segments == 1
    else:
        cap = count.segment_limit
        # never fewer than a perfect fill, never more than losing one unit per segment to a pair
        assert math.ceil(count.units / cap) <= count.segments <= math.ceil(count.units / (cap - 1))
