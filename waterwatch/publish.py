"""Publish a JSON-lines file of CloudEvents to Kafka (``waterwatch publish FILE``).

The file is streamed line by line in binary, so one bad line (invalid JSON,
bad UTF-8, an unknown type, a missing field, an oversized line) is rejected
with its line number and reason and the rest of the file goes on.  Valid
lines are produced as their original bytes (never re-serialized), keyed by
the event's ``subject`` (the matter id), and counted as produced only once
the broker acknowledged them (``acks=all``).

Reject reasons come from :class:`~waterwatch.events.EventError`: they name
fields and problems, never a whole line, so no personal data is printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import kafka.errors as kerrors
from kafka import KafkaProducer
from rich.console import Console

from waterwatch.admin import connect, ensure_topics
from waterwatch.events import MAX_EVENT_BYTES, CloudEvent, EventError, parse_event
from waterwatch.topics import ALL_TOPICS, EVENTS, TopicSpec

DEFAULT_TOPIC = EVENTS.name
PROGRESS_MIN_BYTES = 512 * 1024
"""Files at least this large (about 2,000 typical events) get a progress bar."""
MAX_KEPT = 10_000
"""At most this many rejects (and failures) are kept with their reasons; all are counted."""
MAX_REASON_CHARS = 300
FLUSH_TIMEOUT_S = 120.0
_BOM = b"\xef\xbb\xbf"


class Checked(NamedTuple):
    """One non-blank line of the input, validated."""

    line_no: int
    event: CloudEvent | None
    raw: bytes
    reason: str | None
    error: str | None = None


@dataclass
class PublishSummary:
    """What ``publish_file`` did.

    ``rejected``/``rejects``: lines that are not valid events (not sent).
    ``failed``/``failures``: valid lines the broker did not acknowledge.
    ``stopped_at``: the line at which publishing gave up because the broker
    went away (the rest of the file was not read), else None.
    """

    produced: int = 0
    rejected: int = 0
    rejects: list[tuple[int, str]] = field(default_factory=list)
    failed: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    stopped_at: int | None = None

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and self.failed == 0 and self.stopped_at is None


# ------------------------------------------------------------------ pure part


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Collapse a reason to one line of bounded length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def read_lines(stream: BinaryIO, max_bytes: int = MAX_EVENT_BYTES) -> Iterator[bytes]:
    """Yield the lines of a binary stream without their line ending, in bounded memory.

    A line longer than ``max_bytes`` is yielded as its first ``max_bytes + 1``
    bytes (enough to be recognised as too large) and the rest is skipped.
    """
    limit = max_bytes + 2  # room for the content plus "\r\n"
    while True:
        chunk = stream.readline(limit)
        if not chunk:
            return
        if not chunk.endswith(b"\n") and len(chunk) >= limit:
            # an overlong line: keep a prefix, skip to the end of the line
            while True:
                rest = stream.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield chunk[: max_bytes + 1]
            continue
        if chunk.endswith(b"\n"):
            chunk = chunk[:-1]
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
        yield chunk


def check_line(line_no: int, raw: bytes) -> Checked:
    """Validate one line (without its line ending) as an input event."""
    if len(raw) > MAX_EVENT_BYTES:
        return Checked(
            line_no, None, raw, f"line is over the {MAX_EVENT_BYTES}-byte event limit", "too_large"
        )
    try:
        event = parse_event(raw)
    except EventError as exc:
        return Checked(line_no, None, raw, one_line(str(exc)), exc.error)
    return Checked(line_no, event, raw, None, None)


def validate_lines(lines: Iterable[bytes]) -> Iterator[Checked]:
    """Validate JSON-lines input; line numbers count from 1, blank lines are skipped.

    Each item of ``lines`` is one line's bytes (a trailing ``\\n``/``\\r\\n`` is
    removed).  A UTF-8 byte-order mark at the start of the first line is dropped.
    """
    for line_no, line in enumerate(lines, start=1):
        raw = line
        if raw.endswith(b"\n"):
            raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if not raw.strip():
            continue
        yield check_line(line_no, raw)


def spec_for(topic: str) -> tuple[list[TopicSpec], bool]:
    """The specs to ensure before publishing to ``topic``, and whether to check partitions.

    A waterwatch topic brings the whole set (so ``waterwatch.clock`` is
    co-partitioned from the start); another topic name is created like
    ``waterwatch.events`` if missing, and taken as it is if it exists.
    """
    names = {spec.name for spec in ALL_TOPICS}
    if topic in names:
        return list(ALL_TOPICS), True
    return [dataclasses.replace(EVENTS, name=topic)], False


# ------------------------------------------------------------------ Kafka part


class _Tally:
    """Delivery outcomes, updated from the producer's I/O thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.produced = 0
        self.failed = 0
        self.failures: list[tuple[int, str]] = []
        self.in_flight: set[int] = set()

    def sending(self, line_no: int) -> None:
        with self.lock:
            self.in_flight.add(line_no)

    def ok(self, line_no: int, _metadata: object) -> None:
        with self.lock:
            self.in_flight.discard(line_no)
            self.produced += 1

    def error(self, line_no: int, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else f"not delivered: {type(exc).__name__}"
        with self.lock:
            self.in_flight.discard(line_no)
            self.failed += 1
            if len(self.failures) < MAX_KEPT:
                self.failures.append((line_no, reason))

    def unacknowledged(self) -> None:
        """Count what is still in flight after the producer closed as failed."""
        with self.lock:
            pending = sorted(self.in_flight)
        for line_no in pending:
            self.error(line_no, "not delivered: no acknowledgement from the broker in time")


def make_producer(bootstrap: str, client_id: str = "waterwatch-publish", **extra: Any) -> KafkaProducer:
    """An idempotent ``acks=all`` producer; :class:`BrokerUnavailable` if none answers."""
    producer: KafkaProducer = connect(
        KafkaProducer,
        bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=5,
        enable_idempotence=True,
        allow_auto_create_topics=False,
        max_block_ms=30_000,
        bootstrap_timeout_ms=10_000,
        reconnect_backoff_max_ms=1000,
        **extra,
    )
    return producer


class _Bar:
    """A transient progress bar on stderr, advanced by bytes read."""

    STEP = 64 * 1024

    def __init__(self, path: Path, size: int, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("publishing {task.fields[name]}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("publish", total=size, name=path.name)
        self.pending = 0

    @classmethod
    def maybe(cls, path: Path, enabled: bool) -> _Bar | None:
        """A bar for a large file when stderr is a terminal, else None."""
        size = path.stat().st_size if enabled and path.is_file() else 0
        if size < PROGRESS_MIN_BYTES:
            return None
        console = Console(stderr=True)
        return cls(path, size, console) if console.is_terminal else None

    def count(self, lines: Iterator[bytes]) -> Iterator[bytes]:
        for line in lines:
            self.pending += len(line) + 1
            if self.pending >= self.STEP:
                self.progress.advance(self.task, self.pending)
                self.pending = 0
            yield line

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def publish_file(
    path: Path,
    bootstrap: str,
    topic: str = DEFAULT_TOPIC,
    progress: bool = True,
) -> PublishSummary:
    """Validate and produce every line of a JSON-lines file; see the module doc.

    Raises :class:`~waterwatch.admin.BrokerUnavailable` if the broker cannot be
    reached at the start, :class:`~waterwatch.admin.TopicMismatch` if a
    waterwatch topic exists with the wrong partition count, and ``OSError``
    if the file cannot be read.
    """
    path = Path(path)
    specs, check = spec_for(topic)
    with path.open("rb"):  # fail on an unreadable file before touching Kafka
        pass
    ensure_topics(bootstrap, specs, check_existing=check)

    summary = PublishSummary()
    tally = _Tally()
    bar = _Bar.maybe(path, progress)
    producer = make_producer(bootstrap)
    try:
        with path.open("rb") as stream, bar or contextlib.nullcontext():
            lines = read_lines(stream)
            for item in validate_lines(bar.count(lines) if bar else lines):
                if item.event is None:
                    summary.rejected += 1
                    if len(summary.rejects) < MAX_KEPT:
                        summary.rejects.append((item.line_no, item.reason or "invalid"))
                    continue
                tally.sending(item.line_no)
                try:
                    future = producer.send(
                        topic, value=item.raw, key=item.event.subject.encode("utf-8")
                    )
                except kerrors.KafkaTimeoutError as exc:  # no metadata / buffer stays full
                    tally.error(item.line_no, exc)
                    summary.stopped_at = item.line_no
                    break
                except kerrors.KafkaError as exc:
                    tally.error(item.line_no, exc)
                    continue
                future.add_callback(tally.ok, item.line_no)
                future.add_errback(tally.error, item.line_no)
        # what is still unacknowledged after this is counted below as failed
        with contextlib.suppress(kerrors.KafkaTimeoutError):
            producer.flush(timeout=FLUSH_TIMEOUT_S)
    finally:
        producer.close(timeout=10)

    tally.unacknowledged()
    with tally.lock:
        summary.produced = tally.produced
        summary.failed = tally.failed
        summary.failures = sorted(tally.failures)
    return summary


def default_bootstrap() -> str:
    """The broker address: ``WATERWATCH_KAFKA`` or the local broker (``waterwatch kafka up``)."""
    from waterwatch.kafka_local import bootstrap_servers

    return bootstrap_servers()
