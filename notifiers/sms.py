"""SMS length as carriers bill it: encoding, units and segments.

A message that uses only the GSM 03.38 default alphabet travels as **GSM-7**:
160 septets fit one SMS; a longer text is split into segments of 153 septets
(7 septets go to the concatenation header).  The characters of the GSM-7
extension table (``^ { } [ ] ~ \\ | €`` and form feed) are sent as an escape
plus a character, so they count **2** septets, and an escape pair is never
split across two segments.

Any other character (every Chinese character, ``【】``, curly quotes, emoji)
makes the whole message **UCS-2**: 70 UTF-16 code units in one SMS, 67 per
segment when split.  A character outside the Basic Multilingual Plane (most
emoji) is a surrogate pair and counts **2** units; a pair is never split
across two segments either.

``segments(text)`` packs the text into segments in order, the way the sending
side does, so the count never goes down when characters are added anywhere.
An empty text is 0 segments (there is nothing to send).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 default alphabet (the escape code 0x1B itself is not a character one can send)."""

GSM7_EXTENSION = frozenset("^{}[]~\\|€\f")
"""The GSM 03.38 extension table: each is sent as ESC + character, 2 septets."""

GSM7_SINGLE, GSM7_SEGMENT = 160, 153
UCS2_SINGLE, UCS2_SEGMENT = 70, 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class SmsCount:
    """How a text is billed: ``encoding``, total ``units`` (septets or UTF-16 units), ``segments``."""

    encoding: Encoding
    units: int
    segments: int

    @property
    def single_limit(self) -> int:
        return GSM7_SINGLE if self.encoding == "GSM-7" else UCS2_SINGLE

    @property
    def segment_limit(self) -> int:
        return GSM7_SEGMENT if self.encoding == "GSM-7" else UCS2_SEGMENT

    def __str__(self) -> str:
        return f"{self.segments} × {self.encoding} ({self.units} units)"


def is_gsm7(text: str) -> bool:
    """True when every character of ``text`` is in the GSM-7 default alphabet or its extension table."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def _widths(text: str, encoding: Encoding) -> list[int]:
    if encoding == "GSM-7":
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def _pack(widths: list[int], capacity: int) -> int:
    """Segments needed to send characters of these widths in order, never splitting one character."""
    segments, used = 1, 0
    for w in widths:
        if used + w > capacity:
            segments += 1
            used = 0
        used += w
    return segments


def segments(text: str) -> SmsCount:
    """Encoding, billed units and number of segments of ``text``."""
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    widths = _widths(text, encoding)
    units = sum(widths)
    single, per_segment = (GSM7_SINGLE, GSM7_SEGMENT) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_SEGMENT)
    if units == 0:
        count = 0
    elif units <= single:
        count = 1
    else:
        count = _pack(widths, per_segment)
    return SmsCount(encoding, units, count)


def utf16_units(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (what UCS-2 billing counts)."""
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


def fits(text: str, max_segments: int) -> bool:
    """True when ``text`` goes out in at most ``max_segments`` SMS."""
    return segments(text).segments <= max_segments
