"""No personal data in clear: masking of phones, e-mail addresses and names."""

from __future__ import annotations

from waterwatch.masking import mask_email, mask_name, mask_phone, mask_text


def test_phone_numbers_keep_only_prefix_and_last_four_digits() -> None:
    assert mask_phone("+8613912345678") == "+86139****5678"
    assert mask_phone("13912345678") == "139****5678"
    assert "12345678" not in mask_phone("13912345678")


def test_phones_and_emails_inside_free_text_are_masked_also_after_chinese_text() -> None:
    text = "物业电话13912345678，座机0635-8123456，邮件zhang.san@example.com"
    masked = mask_text(text)
    assert "13912345678" not in masked and "8123456" not in masked and "zhang.san" not in masked
    assert "139****5678" in masked and "z***@example.com" in masked


def test_dates_and_matter_ids_are_left_alone() -> None:
    text = "T-2026-1127-009 due 2026-10-01T04:40:00+08:00"
    assert mask_text(text) == text


def test_names_keep_the_first_character() -> None:
    assert mask_name("张三") == "张*"
    assert mask_email("a@b.cn") == "a***@b.cn"
