"""Dead letters: read them back (masked) and re-drive them after a fix.

The worker puts every rejected input on ``{prefix}.deadletter`` as a
``DeadLetter`` record (``schemas/DeadLetter.json``): the reason, an error
class, the source topic/partition/offset and the ORIGINAL key and value bytes
(base64).  This module

* reads that topic from the beginning up to the end offsets seen when it
  started (:func:`read_deadletters`: bounded, a live topic never keeps it
  reading),
* selects records by dead-letter offset and/or error class (:func:`select`),
* shows them without personal data (:func:`masked_row`: reasons go through
  :func:`waterwatch.masking.mask_text`; the original bytes are never shown,
  only their size), and
* re-produces the original bytes, keyed by the original key, to
  ``{prefix}.events`` (:func:`redrive`) -- e.g. after a unit was added to
  ``units.yaml``, the ``unknown_unit`` rejections are replayed and now apply.

The logic is free of console output; ``waterwatch.cli_deadletter`` formats it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from waterwatch.admin import connect
from waterwatch.masking import mask_text
from waterwatch.publish import make_producer

DEFAULT_PREFIX = "waterwatch"
READ_TIMEOUT_S = 30.0
"""Longest a listing reads before it gives up waiting for the end offsets it saw at start."""

MAX_RECORD_BYTES = 16 * 1024 * 1024
"""Fetch limit: a dead letter carries up to an 8 MiB event as base64 (the topic allows 12 MiB)."""

UNREADABLE = "unreadable"
"""Error class shown for a dead-letter record that is not a readable ``DeadLetter`` JSON."""


def deadletter_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.deadletter"


def events_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.events"


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record of the dead-letter topic, decoded (the original bytes included: never print them)."""

    offset: int  # offset in the dead-letter topic (what ``replay --offset`` selects)
    partition: int
    error: str
    reason: str
    rejected_at: str | None
    event_type: str | None
    matter_id: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    key: bytes | None  # the original Kafka key
    value: bytes | None  # the original value; None when the record is unreadable

    @property
    def size(self) -> int:
        return len(self.value) if self.value is not None else 0

    @property
    def replayable(self) -> bool:
        return self.value is not None


def _b64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_entry(offset: int, partition: int, raw: bytes | None) -> DeadLetterEntry:
    """Decode one dead-letter record; a record that does not decode is kept as ``unreadable``."""

    def broken(why: str) -> DeadLetterEntry:
        return DeadLetterEntry(offset=offset, partition=partition, error=UNREADABLE, reason=why,
                               rejected_at=None, event_type=None, matter_id=None, source_topic=None,
                               source_partition=None, source_offset=None, key=None, value=None)  # fmt: skip

    if raw is None:
        return broken("empty record")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return broken("not a DeadLetter JSON record")
    if not isinstance(body, dict):
        return broken("not a DeadLetter JSON object")
    value = _b64(body.get("value_b64"))
    if value is None:
        return broken("value_b64 missing or not base64")
    key_text = body.get("key_b64")
    key = _b64(key_text)
    if key_text is not None and key is None:
        return broken("key_b64 not base64")
    return DeadLetterEntry(
        offset=offset,
        partition=partition,
        error=_opt_str(body.get("error")) or UNREADABLE,
        reason=_opt_str(body.get("reason")) or "",
        rejected_at=_opt_str(body.get("rejected_at")),
        event_type=_opt_str(body.get("event_type")),
        matter_id=_opt_str(body.get("matter_id")),
        source_topic=_opt_str(body.get("source_topic")),
        source_partition=_opt_int(body.get("partition")),
        source_offset=_opt_int(body.get("offset")),
        key=key,
        value=value,
    )


# ------------------------------------------------------------------ selection


class SelectionError(ValueError):
    """The replay selection is empty or ambiguous; ``str()`` says what to give."""


def select(
    entries: Iterable[DeadLetterEntry],
    *,
    offsets: Sequence[int] = (),
    errors: Sequence[str] = (),
    all_: bool = False,
) -> list[DeadLetterEntry]:
    """The entries matching every filter given (offsets: any of them; errors: any of them).

    Re-driving needs an explicit choice: without ``offsets``, ``errors`` or
    ``all_`` nothing is selected and :class:`SelectionError` says so.  With
    ``all_`` and a filter, the filter still applies (``--all`` only confirms).
    """
    if not (offsets or errors or all_):
        raise SelectionError("choose what to re-drive: --offset N (repeatable), --error CODE or --all")
    wanted_offsets = set(offsets)
    wanted_errors = set(errors)
    out = []
    for e in entries:
        if wanted_offsets and e.offset not in wanted_offsets:
            continue
        if wanted_errors and e.error not in wanted_errors:
            continue
        out.append(e)
    return out


def filter_entries(
    entries: Iterable[DeadLetterEntry], *, errors: Sequence[str] = (), limit: int | None = None
) -> list[DeadLetterEntry]:
    """For ``list``: the entries of the given error classes, the most recent ``limit`` of them."""
    wanted = set(errors)
    out = [e for e in entries if not wanted or e.error in wanted]
    if limit is not None:
        out = out[-limit:] if limit > 0 else []
    return out


# -------------------------------------------------------------------- masking


def masked_row(e: DeadLetterEntry) -> dict[str, Any]:
    """What may be shown of a dead letter: masked texts, sizes, never the original bytes."""
    return {
        "offset": e.offset,
        "partition": e.partition,
        "rejected_at": e.rejected_at,
        "error": e.error,
        "event_type": mask_text(e.event_type) or None,
        "matter_id": mask_text(e.matter_id) or None,
        "reason": mask_text(e.reason),
        "source_topic": e.source_topic,
        "source_partition": e.source_partition,
        "source_offset": e.source_offset,
        "size": e.size,
        "key_size": None if e.key is None else len(e.key),
        "replayable": e.replayable,
    }


# ---------------------------------------------------------------------- Kafka


def _consumer(bootstrap: str) -> KafkaConsumer:
    consumer: KafkaConsumer = connect(
        KafkaConsumer,
        bootstrap,
        client_id="waterwatch-deadletter",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        bootstrap_timeout_ms=10_000,
        reconnect_backoff_max_ms=1000,
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        fetch_max_bytes=MAX_RECORD_BYTES,
    )
    return consumer


class TopicMissing(LookupError):
    """The dead-letter topic does not exist (no worker ran with this prefix)."""


def read_deadletters(
    bootstrap: str, prefix: str = DEFAULT_PREFIX, *, timeout: float = READ_TIMEOUT_S
) -> list[DeadLetterEntry]:
    """Every record of ``{prefix}.deadletter`` from the beginning to the end offsets seen at start.

    Raises :class:`TopicMissing` when the topic does not exist and
    :class:`TimeoutError` when the end offsets were not reached in ``timeout``.
    """
    topic = deadletter_topic(prefix)
    consumer = _consumer(bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise TopicMissing(f"topic {topic} does not exist (has a worker run with --topic-prefix {prefix}?)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        out: list[DeadLetterEntry] = []
        if not pending:
            return out
        consumer.assign(sorted(pending, key=lambda tp: tp.partition))
        consumer.seek_to_beginning(*pending)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"read {len(out)} dead letters of {topic} but did not reach its end in "
                                   f"{timeout:.0f} s")  # fmt: skip
            for tp, batch in consumer.poll(timeout_ms=500).items():
                for rec in batch:
                    if rec.offset < ends[tp]:
                        out.append(parse_entry(rec.offset, rec.partition, rec.value))
            for tp in list(pending):
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
        out.sort(key=lambda e: (e.partition, e.offset))
        return out
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


@dataclass(frozen=True)
class RedriveResult:
    produced: int
    skipped: list[DeadLetterEntry]  # unreadable records: nothing to re-drive
    topic: str


def redrive(
    bootstrap: str, entries: Sequence[DeadLetterEntry], prefix: str = DEFAULT_PREFIX, *, timeout: float = 30.0
) -> RedriveResult:
    """Re-produce the original bytes of ``entries`` to ``{prefix}.events``, keyed by the original key.

    Returns once the broker acknowledged every record (``acks=all``); a
    failure raises the Kafka error (nothing is reported as produced that was
    not acknowledged).
    """
    topic = events_topic(prefix)
    todo = [e for e in entries if e.replayable]
    skipped = [e for e in entries if not e.replayable]
    if not todo:
        return RedriveResult(0, skipped, topic)
    producer = make_producer(bootstrap, client_id="waterwatch-deadletter", max_request_size=MAX_RECORD_BYTES)
    try:
        futures = [producer.send(topic, key=e.key, value=e.value) for e in todo]
        producer.flush(timeout=timeout)
        for f in futures:
            f.get(timeout=timeout)
    finally:
        with contextlib.suppress(Exception):
            producer.close(timeout=10)
    return RedriveResult(len(todo), skipped, topic)
