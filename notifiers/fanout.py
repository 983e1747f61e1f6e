"""Resident fan-out: a ``notice.due`` for an outage area → one deliver job per household and channel.

Theory of operation
-------------------
Every notifier instance keeps the whole resident directory in memory
(:class:`ResidentsReader`, a daemon thread reading the compacted
``{prefix}.residents`` topic from the beginning, like the consent reader).
The *plan* agent, given an alert whose plan says ``residents``, waits until
the directory has caught up, takes the sorted account list of the outage's
``area`` (about 8 bytes per household; nothing else is held) and walks it
(:func:`expand`), producing one job per household and channel (sms, email)
keyed by ``resident:{account}``: the jobs spread over the job partitions, so
several instances share the sending.  ``delivery_id`` = hash(alert id,
``resident:{account}``, channel), so a notifier killed mid-fan-out that reads
the alert again (its offset is not committed before every job is flushed)
plans the same deliveries: those in the ``deliveries`` table are skipped,
the missing ones sent.  No duplicates, no gaps.

Opted-out households are planned too and the *deliver* agent checks consent
at send time (the directory's consent *and* the STOP book), so their record
says ``skipped`` and a household that opts out after the expansion is still
respected.  A household without an address on a channel gets no job there.

Quiet hours for residents (:func:`quiet_gate`, ``routing.quiet_hours("residents")``,
default 21:00-08:00): ``emergency_outage`` and ``restoration`` are urgent and
never held; ``delay_update`` and ``correction`` wait for the end of the window;
a ``pre_outage`` notice waits only if the window ends no later than
start − 48 h (R19.1).  The engine fires ``notice.due`` *at* start − 48 h, so a
pre-notice due inside quiet hours is sent at once: holding it would break
R19.1.  Sending it *before* the window (at ``last_moment_before(start − 48 h)``)
needs the engine to schedule it then (a follow-up, see the report).

Pure helpers take ``now`` as a parameter; only :class:`ResidentsReader` does I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from notifiers.quiet import QuietHours
from notifiers.topicreader import CompactedTopicReader
from waterwatch.residents import ResidentDirectory

log = logging.getLogger("waterwatch.notifier.fanout")

ROLE = "residents"
CHANNELS: tuple[str, ...] = ("sms", "email")
URGENT_NOTICES = frozenset({"emergency_outage", "restoration"})
"""Resident notices sent during quiet hours."""
PRE_NOTICE_LEAD_S = 48 * 3600.0
"""R19.1: residents hear of a planned outage at least 48 hours before it starts."""
KEY_PREFIX = "resident:"


class Recipient(NamedTuple):
    """One job of a fan-out: a household on one channel (``consent`` as the directory says at expansion)."""

    account: str
    channel: str
    address: str
    language: str
    consent: bool


# ------------------------------------------------------------------ alert fields


def _data(alert: Mapping[str, Any]) -> Mapping[str, Any]:
    data = alert.get("data")
    return data if isinstance(data, Mapping) else alert


def notice_kind(alert: Mapping[str, Any]) -> str:
    """``pre_outage``, ``delay_update`` ... of a ``notice.due`` (``""`` if none)."""
    kind = _data(alert).get("notice")
    return kind if isinstance(kind, str) else ""


def outage_area(alert: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``data.context.area`` (districts, compounds, zones, accounts), or None when missing or empty.

    A correction reaches the households of the old area too (``context.previous.area``): they are the
    ones who may have got the notice it corrects.
    """
    ctx = _data(alert).get("context")
    area = ctx.get("area") if isinstance(ctx, Mapping) else None
    previous = ctx.get("previous") if isinstance(ctx, Mapping) and supersedes(alert) else None
    old = previous.get("area") if isinstance(previous, Mapping) else None
    if isinstance(area, Mapping) and isinstance(old, Mapping):
        keys = ("districts", "compounds", "zones", "accounts")
        area = {k: sorted({*(area.get(k) or ()), *(old.get(k) or ())}) for k in keys}
    elif not isinstance(area, Mapping):
        area = old
    if not isinstance(area, Mapping):
        return None
    if not any(area.get(k) for k in ("districts", "compounds", "zones", "accounts")):
        return None
    return area


def supersedes(alert: Mapping[str, Any]) -> str | None:
    """The alert id of the notice a correction replaces (``context.supersedes``), else None."""
    ctx = _data(alert).get("context")
    value = ctx.get("supersedes") if isinstance(ctx, Mapping) else None
    return value if isinstance(value, str) and value else None


def _ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.timestamp() if dt.tzinfo is not None else None


def starts_at(alert: Mapping[str, Any]) -> float | None:
    """The outage start (``context.starts_at``) in epoch seconds, or None."""
    ctx = _data(alert).get("context")
    return _ts(ctx.get("starts_at")) if isinstance(ctx, Mapping) else None


def unit_of(alert: Mapping[str, Any]) -> str | None:
    unit = _data(alert).get("unit")
    return unit if isinstance(unit, str) and unit else None


def alert_id_of(alert: Mapping[str, Any]) -> str:
    return str(_data(alert).get("alert_id") or alert.get("id") or "")


def recipient_key(account: str) -> str:
    return f"{KEY_PREFIX}{account}"


def account_of(key: str) -> str | None:
    return key[len(KEY_PREFIX) :] if key.startswith(KEY_PREFIX) else None


def is_urgent(kind: str) -> bool:
    return kind in URGENT_NOTICES


# ------------------------------------------------------------------ quiet hours


def quiet_gate(alert: Mapping[str, Any], quiet: QuietHours, now: float) -> tuple[float | None, str]:
    """``(hold until, reason)`` for a resident notice at ``now``; ``(None, reason)``: send now."""
    release = quiet.release_at(now, False)
    if release is None:
        return None, ""
    kind = notice_kind(alert)
    if is_urgent(kind):
        return None, f"{kind} is urgent: not held by {quiet.why(now)}"
    if kind == "pre_outage":
        start = starts_at(alert)
        if start is None:
            return None, "pre_outage without starts_at: sent at once (R19.1 deadline unknown)"
        deadline = start - PRE_NOTICE_LEAD_S
        if release > deadline:
            return None, f"pre_outage due in {quiet.why(now)}: sent at once, holding it would pass start - 48 h"
    return release, quiet.why(now)


# ------------------------------------------------------------------ expansion


def target_accounts(directory: ResidentDirectory, area: Mapping[str, Any]) -> list[str]:
    """The accounts an outage area names (districts, compounds, zones, explicit accounts), each once, sorted."""
    out: set[str] = set()
    for kind, name in (("district", "districts"), ("compound", "compounds"), ("zone", "zones")):
        for code in area.get(name) or ():
            out |= directory.members(kind, str(code))  # type: ignore[arg-type]
    out.update(a for a in (str(x).strip() for x in area.get("accounts") or ()) if a in directory)
    return sorted(out)


def expand(
    directory: ResidentDirectory, accounts: Sequence[str], channels: Iterable[str] = CHANNELS, *, start: int = 0
) -> Iterator[Recipient]:
    """One :class:`Recipient` per household (from ``accounts[start:]``) and channel it has an address for.

    Streams: the directory is read one household at a time (a household
    removed meanwhile is skipped).  Opted-out households are yielded with
    ``consent=False``: the deliver agent records them as skipped.
    """
    chans = tuple(channels)
    for i in range(start, len(accounts)):
        r = directory.get(accounts[i])
        if r is None:
            continue
        for ch in chans:
            address = r.phone if ch == "sms" else r.email if ch == "email" else None
            if address:
                yield Recipient(r.account, ch, address, r.language, bool(r.consent.get(ch, True)))  # type: ignore[call-overload]


def consents(directory: ResidentDirectory, account: str, channel: str) -> bool:
    """Does the household (still) accept notices on ``channel``?  An unknown household does not."""
    r = directory.get(account)
    return r is not None and bool(r.consent.get(channel, True))  # type: ignore[call-overload]


# ------------------------------------------------------------------ progress


_DONE = {"sent": "sent", "delivered": "sent", "undelivered": "failed", "failed": "failed", "dead": "failed",
         "fallen_back": "failed", "skipped": "skipped", "expired": "skipped", "in_doubt": "in_doubt",
         "superseded": "skipped"}  # fmt: skip


@dataclass
class Progress:
    """What this instance knows of one resident notice: jobs planned, outcomes seen."""

    alert_id: str
    unit: str | None = None
    notice: str = ""
    starts_at: float | None = None
    households: int = 0
    """Households targeted (at least one channel with an address and consent at expansion)."""
    jobs: int = 0
    expanded: bool = False
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "skipped": 0, "failed": 0, "in_doubt": 0})
    reached: set[str] = field(default_factory=set)
    done_ids: set[str] = field(default_factory=set)
    doubt_ids: set[str] = field(default_factory=set)
    """Done ids now in doubt: settled later, they are counted again under their final outcome."""
    started: float = field(default_factory=time.time)
    finished: bool = False
    last_line: str = ""
    matter_id: str | None = None
    eta_alerted: bool = False
    called: int = 0
    """Provider calls answered so far (ahead of the recorded outcomes, which queue behind the sends)."""

    def eta(self, now: float) -> float | None:
        """Seconds until every job is done at the rate seen so far (None: nothing done yet, or not expanded)."""
        done = max(self.done, self.called)
        if not self.expanded or done == 0 or now <= self.started:
            return None
        return max(0, self.jobs - done) / (done / (now - self.started))

    def late_by(self, now: float) -> float | None:
        """A pre-outage notice: how far its ETA passes start − 48 h (R19.1); None when on time or unknown."""
        eta = self.eta(now)
        if self.notice != "pre_outage" or self.starts_at is None or eta is None or self.pending <= 0:
            return None
        if now >= self.starts_at - PRE_NOTICE_LEAD_S:
            return None  # announced too late already: no fan-out speed can help; the engine's R19.1 violation says so
        if eta <= 0:
            return None
        late = now + eta - (self.starts_at - PRE_NOTICE_LEAD_S)
        return late if late > 0 else None

    def outcome(self, delivery_id: str, status: str, account: str | None) -> bool:
        """A delivery of this notice reached a terminal ``status``; False if already counted."""
        label = _DONE.get(status)
        if label is None:
            return False
        if delivery_id in self.done_ids:
            if delivery_id not in self.doubt_ids or label == "in_doubt":
                return False
            # an in-doubt delivery settled later (sent, or sent again): it moves out of in_doubt
            self.doubt_ids.discard(delivery_id)
            self.counts["in_doubt"] -= 1
        else:
            self.done_ids.add(delivery_id)
        if label == "in_doubt":
            self.doubt_ids.add(delivery_id)
        self.counts[label] += 1
        if label == "sent" and account is not None:
            self.reached.add(account)
        return True

    @property
    def done(self) -> int:
        return len(self.done_ids)

    @property
    def pending(self) -> int:
        return max(0, self.jobs - self.done) if self.expanded else -1

    @property
    def complete(self) -> bool:
        return self.expanded and self.done >= self.jobs

    def line(self) -> str:
        c = self.counts
        pending = "?" if self.pending < 0 else str(self.pending)
        return (f"notice {self.alert_id} ({self.notice}): {self.households} households, {self.jobs} jobs; "
                f"sent {c['sent']}, pending {pending}, failed {c['failed']}, skipped {c['skipped']}, "
                f"in doubt {c['in_doubt']}; {len(self.reached)} households reached")  # fmt: skip


# ------------------------------------------------------------------ the reader


class ResidentsReader(CompactedTopicReader):
    """Every instance reads the whole compacted residents topic into a :class:`ResidentDirectory` (a thread).

    ``ready`` is set once the reader has reached the end offsets it saw at start.
    ``lock`` is held while a batch is applied; take it to snapshot an area's accounts.
    """

    name = "residents"

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.directory = ResidentDirectory()
        self.applied = 0
        self.rejected = 0

    def accounts(self, area: Mapping[str, Any]) -> list[str]:
        with self.lock:
            return target_accounts(self.directory, area)

    def consents(self, account: str, channel: str) -> bool:
        return consents(self.directory, account, channel)

    def caught_up(self, seconds: float) -> None:
        log.info("resident directory caught up: %d households (%d records, %d rejected) in %.1f s",
                 len(self.directory), self.applied, self.rejected, seconds)  # fmt: skip

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            self.directory.apply(key, value)
            self.applied += 1
        except ValueError:
            self.rejected += 1
            if self.rejected <= 10:
                log.warning("unreadable resident record skipped")


__all__ = [
    "CHANNELS",
    "PRE_NOTICE_LEAD_S",
    "ROLE",
    "URGENT_NOTICES",
    "Progress",
    "Recipient",
    "ResidentsReader",
    "account_of",
    "consents",
    "expand",
    "notice_kind",
    "outage_area",
    "quiet_gate",
    "recipient_key",
    "starts_at",
    "target_accounts",
]
