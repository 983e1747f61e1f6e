"""Consent: who said STOP, keyed without personal data.

**Addresses** are normalised before they are compared or hashed:
phones to E.164 (``+8613800000000``: full-width characters folded; spaces,
dashes, dots and brackets dropped; ``00`` → ``+``; an 11-digit mainland
mobile or ``86…`` gets ``+86``; a mainland landline ``0635-8123456`` becomes
``+866358123456``); e-mail addresses trimmed and lower-cased; WeCom robot
env names trimmed.
:func:`consent_key` is the first 32 hex digits of the SHA-256 of the
normalised address: the key of the compacted ``waterwatch.consent`` topic,
never the address itself.

**Keywords** (:func:`parse_keyword`) are matched against the whole inbound
message, case-insensitively, after trimming whitespace and NFKC folding
(full-width ``ＳＴＯＰ`` is ``STOP``):

======  ===============================================================
stop    STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, REVOKE
        (Twilio's standard opt-out words); 退订, TD, T (mainland carriers)
start   START, YES, UNSTOP (Twilio); 订阅
help    HELP, INFO
======  ===============================================================

**Scope.** A STOP applies to the channel it arrived on (an SMS STOP stops
SMS to that number and nothing else).  STOPALL applies to *every* channel
that uses the same address (recorded with channel ``"all"``); a caller that
knows a person's other addresses (the residents directory) may record the
STOPALL for those too.  START (or 订阅) re-allows every channel of the
address, undoing both.  For one address and channel the most recent record
(by ``at``) among that channel's and the ``"all"`` record wins; on a tie the
refusal wins.  With no record a channel is allowed.

Records are kept per (key, channel): on a compacted topic use
:attr:`ConsentRecord.record_key` as the Kafka key, so a STOP and a STOPALL of
one address do not compact each other away.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

Keyword = Literal["stop", "start", "help"]
Scope = Literal["sms", "email", "wecom", "all"]
CHANNELS = ("sms", "email", "wecom")
SCOPES: tuple[str, ...] = get_args(Scope)

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE", "退订", "TD", "T"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP", "订阅"})
HELP_WORDS = frozenset({"HELP", "INFO"})
ALL_CHANNEL_WORDS = frozenset({"STOPALL"})

_PHONE_JUNK = re.compile(r"[\s\-().\u00a0]")
_DIGITS = re.compile(r"^\+?[0-9]+$")
_CN_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
_CN_LANDLINE = re.compile(r"^0[1-9][0-9]{8,10}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ENV = re.compile(r"^[A-Z][A-Z0-9_]*$")
_KEY = re.compile(r"^[0-9a-f]{32}$")


def normalize_phone(phone: str) -> str:
    """E.164-ish: ``+`` and 8-15 digits; mainland mobiles and landlines without a country code get ``+86``.

    Full-width digits and signs (``＋８６ １３９…``, common from Chinese input methods) are folded first.
    """
    text = _PHONE_JUNK.sub("", unicodedata.normalize("NFKC", phone).strip())
    if text.startswith("00"):
        text = "+" + text[2:]
    if not _DIGITS.match(text):
        raise ValueError("not a phone number (digits, optionally with + and separators)")
    if not text.startswith("+"):
        if _CN_MOBILE.match(text):
            text = "+86" + text
        elif text.startswith("86") and _CN_MOBILE.match(text[2:]):
            text = "+" + text
        elif _CN_LANDLINE.match(text):
            text = "+86" + text[1:]
        else:
            raise ValueError("not a phone number: no country code and not a mainland China number")
    if not 8 <= len(text) - 1 <= 15:
        raise ValueError("not a phone number: E.164 numbers have 8 to 15 digits")
    return text


def normalize_address(channel: str, address: str) -> str:
    """The canonical form of ``address`` on ``channel`` (``sms``, ``email``, ``wecom``); ``ValueError`` if invalid.

    Error texts never repeat the address (it is personal data).
    """
    if not isinstance(address, str):
        raise ValueError(f"{channel} address must be text")
    if channel == "sms":
        return normalize_phone(address)
    if channel == "email":
        text = address.strip().lower()
        if not _EMAIL.match(text):
            raise ValueError("not an e-mail address")
        return text
    if channel == "wecom":
        text = address.strip()
        if not _ENV.match(text):
            raise ValueError("not a WeCom robot env-var name (like WATERWATCH_WECOM_RUNDA_KEY)")
        return text
    raise ValueError(f"unknown channel {channel!r} (use {', '.join(CHANNELS)})")


def consent_key(channel: str, address: str) -> str:
    """SHA-256 (first 32 hex digits) of the normalised address: a key that holds no personal data."""
    return hashlib.sha256(normalize_address(channel, address).encode("utf-8")).hexdigest()[:32]


def _fold(body: str) -> str:
    return unicodedata.normalize("NFKC", body).strip().upper()


def parse_keyword(body: str) -> Keyword | None:
    """``"stop"``, ``"start"``, ``"help"`` when the whole message is such a keyword, else ``None``."""
    if not isinstance(body, str):
        return None
    word = _fold(body)
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _epoch(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError("at: must be an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"at: {text!r} is not an RFC 3339 time") from None
    if moment.utcoffset() is None:
        raise ValueError(f"at: {text!r} has no UTC offset")
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One consent decision for an address (by key) on one channel, or ``"all"`` channels of that address."""

    key: str
    channel: Scope
    allowed: bool
    at: float
    """Epoch seconds of the decision (the inbound message's time)."""
    source: str
    """Where it came from: ``sms_inbound``, ``import``, ``operator`` ..."""

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise ValueError("key: must be 32 lower-case hex digits (consent_key)")
        if self.channel not in SCOPES:
            raise ValueError(f"channel: {self.channel!r} is not one of {', '.join(SCOPES)}")
        if not isinstance(self.allowed, bool):
            raise ValueError("allowed: must be true or false")
        if isinstance(self.at, bool) or not isinstance(self.at, int | float):
            raise ValueError("at: must be epoch seconds")
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("source: must be a non-empty string")

    @property
    def record_key(self) -> str:
        """``key:channel``: the Kafka key on a compacted topic."""
        return f"{self.key}:{self.channel}"

    def to_json(self) -> str:
        """Compact JSON with ``at`` as RFC 3339 (UTC)."""
        return json.dumps(
            {"key": self.key, "channel": self.channel, "allowed": self.allowed, "at": _rfc3339(self.at),
             "source": self.source},
            ensure_ascii=False,
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> ConsentRecord:
        """Parse :meth:`to_json` output; ``ValueError`` naming the bad field otherwise."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"consent record is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("consent record must be a JSON object")
        missing = [f for f in ("key", "channel", "allowed", "at", "source") if f not in raw]
        if missing:
            raise ValueError(f"consent record lacks {', '.join(missing)}")
        channel = raw["channel"]
        if channel not in SCOPES:
            raise ValueError(f"channel: {channel!r} is not one of {', '.join(SCOPES)}")
        return cls(raw["key"], channel, raw["allowed"], _epoch(raw["at"]), raw["source"])


class ConsentBook:
    """In-memory consent records (e.g. the global table of ``waterwatch.consent``); default: allowed."""

    __slots__ = ("_records",)

    def __init__(self, records: Iterable[ConsentRecord] = ()) -> None:
        self._records: dict[tuple[str, str], ConsentRecord] = {}
        for record in records:
            self.apply(record)

    def apply(self, record: ConsentRecord) -> bool:
        """Keep ``record`` unless a more recent one is held for its (key, channel); True if kept (a tie: kept)."""
        held = self._records.get((record.key, record.channel))
        if held is not None and held.at > record.at:
            return False
        self._records[(record.key, record.channel)] = record
        return True

    def allowed_key(self, key: str, channel: str) -> bool:
        """:meth:`allowed` for an already hashed key."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r} (use {', '.join(CHANNELS)})")
        found = [r for r in (self._records.get((key, channel)), self._records.get((key, "all"))) if r is not None]
        if not found:
            return True
        latest = max(r.at for r in found)
        return all(r.allowed for r in found if r.at == latest)

    def allowed(self, channel: str, address: str) -> bool:
        """May ``address`` be messaged on ``channel``?  ``ValueError`` for an address that does not normalise."""
        return self.allowed_key(consent_key(channel, address), channel)

    def record_inbound(
        self, channel: str, address: str, body: str, at: float, source: str = "inbound"
    ) -> ConsentRecord | None:
        """Apply an inbound message's keyword and return the record to publish (``None``: help or no keyword).

        STOP → this channel refused; STOPALL → ``"all"`` refused; START → ``"all"`` allowed.
        """
        word = parse_keyword(body)
        if word is None or word == "help":
            return None
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r} (use {', '.join(CHANNELS)})")
        scope: Scope
        if word == "start" or _fold(body) in ALL_CHANNEL_WORDS:
            scope = "all"
        else:
            scope = "sms" if channel == "sms" else "email" if channel == "email" else "wecom"
        record = ConsentRecord(consent_key(channel, address), scope, word == "start", float(at), source)
        self.apply(record)
        return record

    def records(self) -> Iterator[ConsentRecord]:
        """Every record held, in (key, channel) order."""
        for k in sorted(self._records):
            yield self._records[k]

    def __len__(self) -> int:
        return len(self._records)
