"""Masking of personal data for logs, console output, metrics and error messages.

Phone numbers, e-mail addresses and personal names must never appear in
clear outside the delivery itself.  ``mask_phone("+8613912345678")`` gives
``+86139****5678``; ``mask_email("zhang.san@example.com")`` gives
``z***@example.com``; ``mask_name("张三")`` gives ``张*``; ``mask_text`` finds
phone numbers and e-mail addresses inside free text.
"""

from __future__ import annotations

import re

# A run of 7-15 digits (optionally +), or a landline like 0635-8888888; dates and
# matter ids (groups of at most 4 digits) are left alone.
_PHONE_IN_TEXT = re.compile(r"(?<![0-9A-Za-z+])(\+?\d{7,15}|0\d{2,3}-\d{7,8})(?!\d)")
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def mask_phone(phone: str | None) -> str:
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    plus = "+" if phone.strip().startswith("+") else ""
    if len(digits) <= 4:
        return "*" * len(digits)
    if len(digits) <= 7:
        return plus + "*" * (len(digits) - 2) + digits[-2:]
    return plus + digits[: len(digits) - 8] + "****" + digits[-4:]


def mask_email(email: str | None) -> str:
    if not email or "@" not in email:
        return "***" if email else ""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_name(name: str | None) -> str:
    if not name:
        return ""
    return name[0] + "*" * max(1, len(name) - 1)


def mask_text(text: str | None) -> str:
    """Mask phone numbers and e-mail addresses found inside free text."""
    if not text:
        return ""
    text = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group(1)), text)
