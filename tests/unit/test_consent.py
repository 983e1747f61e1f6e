"""Consent: address normalisation, keys without personal data, STOP/START keywords, the consent book."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifiers.consent import (
    ConsentBook,
    ConsentRecord,
    consent_key,
    normalize_address,
    parse_keyword,
)

PHONE = "+8613912345678"
T = 1_800_000_000.0


@pytest.mark.parametrize(
    "written",
    ["+8613912345678", "13912345678", "139 1234 5678", "139-1234-5678", "8613912345678", "0086 139 1234 5678",
     " +86 (139) 1234-5678 ", "+86.139.1234.5678", "１３９１２３４５６７８", "＋８６ １３９ １２３４ ５６７８"],
)  # fmt: skip
def test_mainland_mobiles_normalise_to_e164(written: str) -> None:
    assert normalize_address("sms", written) == PHONE


@pytest.mark.parametrize(
    ("written", "e164"),
    [("0635-8123456", "+866358123456"), ("010 6512 3456", "+861065123456"), ("+1 (415) 555-0100", "+14155550100"),
     ("0044 20 7946 0958", "+442079460958")],
)  # fmt: skip
def test_landlines_and_foreign_numbers(written: str, e164: str) -> None:
    assert normalize_address("sms", written) == e164


@pytest.mark.parametrize("bad", ["", "abc", "12345", "4155550100", "+12", "+1234567890123456", "139１2345678x"])
def test_what_is_not_a_phone_number_raises_without_repeating_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_address("sms", bad)
    if len(bad) > 3:
        assert bad not in str(info.value)


def test_emails_and_robot_names() -> None:
    assert normalize_address("email", "  Zhang.San@Example.COM ") == "zhang.san@example.com"
    assert normalize_address("wecom", " WATERWATCH_WECOM_RUNDA_KEY ") == "WATERWATCH_WECOM_RUNDA_KEY"
    with pytest.raises(ValueError, match="not an e-mail"):
        normalize_address("email", "zhang.san")
    with pytest.raises(ValueError, match="env-var name"):
        normalize_address("wecom", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=secret")
    with pytest.raises(ValueError, match="unknown channel"):
        normalize_address("fax", PHONE)
    with pytest.raises(ValueError, match="must be text"):
        normalize_address("sms", 13912345678)  # type: ignore[arg-type]


def test_consent_keys_are_short_hashes_equal_for_every_spelling() -> None:
    key = consent_key("sms", PHONE)
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert key == consent_key("sms", "139 1234 5678") == consent_key("sms", "0086-139-1234-5678")
    assert "12345678" not in key
    assert consent_key("email", "A@B.cn") == consent_key("email", "a@b.CN") != key


# --------------------------------------------------------------------------- keywords


@pytest.mark.parametrize(
    ("body", "word"),
    [
        *[(w, "stop") for w in ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"]],
        *[(w, "start") for w in ["START", "YES", "UNSTOP"]],
        ("HELP", "help"), ("INFO", "help"),
        ("退订", "stop"), ("TD", "stop"), ("td", "stop"), ("T", "stop"), ("t", "stop"), ("订阅", "start"),
        (" stop ", "stop"), ("Stop", "stop"), ("\\tSTOP\\n", "stop"), ("ＳＴＯＰ", "stop"),
        ("\u3000退订\u3000", "stop"), ("StopAll", "stop"), ("yes", "start"), ("Help", "help"),
    ],
)  # fmt: skip
def test_keywords(body: str, word: str) -> None:
    assert parse_keyword(body.replace("\\t", "\t").replace("\\n", "\n")) == word


@pytest.mark.parametrize(
    "body", ["", "   ", "stop please", "please stop", "STOP!", "S T O P", "退订谢谢", "不要退订", "no", "TDD", "STOPP"]
)
def test_only_the_whole_message_counts(body: str) -> None:
    assert parse_keyword(body) is None


def test_non_text_bodies_are_no_keyword() -> None:
    assert parse_keyword(None) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------- records


def test_records_round_trip_through_json() -> None:
    record = ConsentRecord(consent_key("sms", PHONE), "sms", False, T, "sms_inbound")
    text = record.to_json()
    assert PHONE not in text and "13912345678" not in text
    assert json.loads(text) == {
        "key": record.key,
        "channel": "sms",
        "allowed": False,
        "at": "2027-01-15T08:00:00+00:00",
        "source": "sms_inbound",
    }
    assert ConsentRecord.from_json(text) == record
    assert ConsentRecord.from_json(text.encode()) == record
    assert record.record_key == f"{record.key}:sms"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"key": "x"}', "lacks channel, allowed, at, source"),
        ('{"key": "x", "channel": "sms", "allowed": false, "at": "2027-01-15T08:00:00Z", "source": "s"}', "key"),
        ('{"key": "' + "a" * 32 + '", "channel": "fax", "allowed": false, "at": "2027-01-15T08:00:00Z", "source": "s"}',
         "channel"),
        ('{"key": "' + "a" * 32 + '", "channel": "sms", "allowed": "no", "at": "2027-01-15T08:00:00Z", "source": "s"}',
         "allowed"),
        ('{"key": "' + "a" * 32 + '", "channel": "sms", "allowed": false, "at": "2027-01-15T08:00:00", "source": "s"}',
         "no UTC offset"),
        ('{"key": "' + "a" * 32 + '", "channel": "sms", "allowed": false, "at": 1800000000, "source": "s"}', "at"),
        ('{"key": "' + "a" * 32 + '", "channel": "sms", "allowed": false, "at": "2027-01-15T08:00:00Z", "source": ""}',
         "source"),
    ],
)  # fmt: skip
def test_bad_records_raise_naming_the_field(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ConsentRecord.from_json(text)


# --------------------------------------------------------------------------- the book


def test_everyone_is_allowed_until_they_say_stop() -> None:
    book = ConsentBook()
    assert book.allowed("sms", PHONE) and book.allowed("email", "a@b.cn") and len(book) == 0


def test_stop_on_sms_stops_sms_to_that_number_only_and_start_undoes_it() -> None:
    book = ConsentBook()
    record = book.record_inbound("sms", "139 1234 5678", " stop ", T, "sms_inbound")
    assert record is not None and (record.channel, record.allowed, record.source) == ("sms", False, "sms_inbound")
    assert not book.allowed("sms", PHONE)
    assert book.allowed("sms", "+8613900000000") and book.allowed("email", "a@b.cn")
    assert book.allowed_key(record.key, "email")  # a STOP on sms is about sms only
    again = book.record_inbound("sms", PHONE, "START", T + 60)
    assert again is not None and (again.channel, again.allowed) == ("all", True)
    assert book.allowed("sms", PHONE)


def test_stopall_stops_every_channel_of_the_address() -> None:
    book = ConsentBook()
    record = book.record_inbound("sms", PHONE, "STOPALL", T)
    assert record is not None and record.channel == "all" and not record.allowed
    assert not book.allowed_key(record.key, "sms") and not book.allowed_key(record.key, "email")
    book.record_inbound("sms", PHONE, "订阅", T + 1)
    assert book.allowed_key(record.key, "sms") and book.allowed_key(record.key, "email")


def test_chinese_carrier_keywords_and_email_replies() -> None:
    book = ConsentBook()
    book.record_inbound("sms", PHONE, "退订", T)
    assert not book.allowed("sms", PHONE)
    book.record_inbound("email", "Zhang@Example.com", "unsubscribe", T)
    assert not book.allowed("email", "zhang@example.com")


def test_help_and_ordinary_texts_record_nothing() -> None:
    book = ConsentBook()
    assert book.record_inbound("sms", PHONE, "HELP", T) is None
    assert book.record_inbound("sms", PHONE, "水什么时候来？", T) is None
    assert len(book) == 0


def test_the_latest_decision_wins_even_when_records_arrive_out_of_order() -> None:
    key = consent_key("sms", PHONE)
    stop = ConsentRecord(key, "sms", False, T + 10, "sms_inbound")
    start = ConsentRecord(key, "sms", True, T, "import")
    book = ConsentBook([stop])
    assert not book.apply(start)  # older: ignored
    assert not book.allowed("sms", PHONE)
    assert [r.source for r in book.records()] == ["sms_inbound"]
    # a channel record and an "all" record of the same instant: the refusal wins
    book = ConsentBook([ConsentRecord(key, "sms", True, T, "a"), ConsentRecord(key, "all", False, T, "b")])
    assert not book.allowed("sms", PHONE)
    later = ConsentBook([ConsentRecord(key, "all", False, T, "b"), ConsentRecord(key, "sms", True, T + 1, "a")])
    assert later.allowed("sms", PHONE) and not later.allowed_key(key, "email")


def test_book_errors() -> None:
    book = ConsentBook()
    with pytest.raises(ValueError, match="unknown channel"):
        book.allowed_key("a" * 32, "fax")
    with pytest.raises(ValueError, match="unknown channel"):
        book.record_inbound("fax", PHONE, "STOP", T)
    with pytest.raises(ValueError, match="not a phone number"):
        book.allowed("sms", "call me")
    with pytest.raises(ValueError, match="channel"):
        ConsentRecord("a" * 32, "fax", False, T, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="allowed"):
        ConsentRecord("a" * 32, "sms", 0, T, "x")  # type: ignore[arg-type]


@settings(max_examples=60)
@given(st.text(max_size=30))
def test_keywords_never_raise_and_are_case_and_space_insensitive(body: str) -> None:
    word = parse_keyword(body)
    assert word in (None, "stop", "start", "help")
    assert parse_keyword(f"  {body.lower()}\n") == parse_keyword(body.upper()) or not body.isascii()


@settings(max_examples=40)
@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), st.sampled_from(["", " ", "-"]))
def test_every_mainland_mobile_has_one_key_however_spaced(digits: str, sep: str) -> None:
    spaced = sep.join([digits[:3], digits[3:7], digits[7:]])
    assert normalize_address("sms", spaced) == "+86" + digits
    assert consent_key("sms", spaced) == consent_key("sms", "+86" + digits)
