"""Records sent as whole batches: one builder per topic partition instead of one ``send`` per record.

The worker produces an alert per fired stage and a changelog record per changed
matter.  aiokafka's per-record ``send`` (through Faust's producer) costs the
event loop 20-30 µs of CPU a record: a coroutine, the metadata wait, the
partitioner, a future per record, and that future's resolution when the broker
answers.  Appending to a ``BatchBuilder`` (the producer's public batch API,
``create_batch``/``send_batch``) costs about 4 µs, and one future stands for the
whole batch (measured in docs/decisions/0005-worker.md, "Sending in batches").

The guarantees are the same as per-record sends: a batch's future resolves only
once the broker has acknowledged every record in it (the producer's ``acks``),
fails if any of them failed, and records of one partition keep their order
(aiokafka queues a submitted batch behind the partition's pending ones).  Record
timestamps are set when a record is added (CreateTime), as ``send`` sets them.

The caller names each record's partition: the worker places alerts by
:func:`streams.worker.partition_for` (Kafka's default partitioner) over its own
partition count, which every topic it writes has (it refuses to start otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Sent:
    """One submitted batch: its topic partition, how many records, and the future of the broker's answer
    (``RecordMetadata`` whose ``offset`` is the batch's first record's)."""

    topic: str
    partition: int
    count: int
    future: Awaitable[Any]


class RecordBatches:
    """Records gathered per (topic, partition), submitted to the producer by :meth:`submit`.

    ``producer`` is an ``aiokafka.AIOKafkaProducer`` (Faust's ``app.producer`` wraps one).  Not thread-safe;
    used by the one event-loop task that owns it between two ``submit`` calls.
    """

    __slots__ = ("_full", "_open", "_producer")

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], Any] = {}  # (topic, partition) -> builder being filled
        self._full: list[tuple[str, int, Any]] = []  # builders filled up, in order, not yet submitted

    def __len__(self) -> int:
        return sum(b.record_count() for b in self._open.values()) + sum(b.record_count() for _t, _p, b in self._full)

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        """Queue one record for ``partition`` of ``topic`` (timestamped now)."""
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self._producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:  # full: a fresh builder takes it
            self._full.append((topic, partition, builder))
            builder = self._open[tp] = self._producer.create_batch()
            if builder.append(timestamp=None, key=key, value=value) is None:  # (an empty builder takes any size)
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit in an empty batch of {topic}")

    async def submit(self) -> list[Sent]:
        """Hand every queued record to the producer, whole batches in the order they filled; return them.

        Awaiting a returned future waits for the broker's acknowledgement of its batch.  A partition with
        more than one batch waits here until the producer has taken the earlier one (aiokafka's rule).
        """
        producer = self._producer
        batches = self._full
        batches.extend((t, p, b) for (t, p), b in self._open.items())
        self._full, self._open = [], {}
        sent: list[Sent] = []
        for topic, partition, builder in batches:
            builder.close()  # ready to go now, no linger
            fut = await producer.send_batch(builder, topic, partition=partition)
            sent.append(Sent(topic, partition, builder.record_count(), fut))
        return sent

    @property
    def producer(self) -> Any:
        return self._producer

    def clear_queued(self) -> None:
        """Drop what is queued and not submitted (records of a batch that will never be written)."""
        self._open.clear()
        self._full.clear()
