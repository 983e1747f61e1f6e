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

Partitions: a record added without one goes where Kafka's default partitioner
(murmur2 of the key, as :func:`streams.worker.partition_for`) would put it,
over the topic's partition count from the producer's metadata.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from kafka.partitioner.default import murmur2


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

    __slots__ = ("_counts", "_full", "_open", "_parts", "_producer", "_unplaced")

    _PARTS_MAX = 200_000  # keys whose partition is remembered (murmur2 in Python costs ~5 µs a key)

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], Any] = {}  # (topic, partition) -> builder being filled
        self._full: list[tuple[str, int, Any]] = []  # builders filled up, in order, not yet submitted
        self._unplaced: list[tuple[str, bytes, bytes | None]] = []  # records waiting for their partition
        self._parts: dict[tuple[str, bytes], int] = {}
        self._counts: dict[str, int] = {}  # topic -> partition count (from the producer's metadata)

    def __len__(self) -> int:
        n = sum(b.record_count() for b in self._open.values()) + sum(b.record_count() for _t, _p, b in self._full)
        return n + len(self._unplaced)

    def add(self, topic: str, partition: int | None, key: bytes | None, value: bytes | None) -> None:
        """Queue one record (timestamped now).  ``partition=None``: by the key, as Kafka's default partitioner."""
        if partition is None:
            if key is None:
                raise ValueError(f"a record for {topic} without a partition needs a key")
            count = self._counts.get(topic)
            if count is None:  # the topic's partition count not read yet: placed at submit time
                self._unplaced.append((topic, key, value))
                return
            partition = self._partition(topic, key, count)
        self._append(topic, partition, key, value)

    def _partition(self, topic: str, key: bytes, count: int) -> int:
        parts = self._parts
        p = parts.get((topic, key))
        if p is None:
            if len(parts) >= self._PARTS_MAX:
                parts.clear()
            p = parts[(topic, key)] = (murmur2(key) & 0x7FFFFFFF) % count
        return p

    def _append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
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
        if self._unplaced:
            unplaced, self._unplaced = self._unplaced, []
            for topic, key, value in unplaced:
                count = self._counts.get(topic)
                if count is None:
                    await producer.client._wait_on_metadata(topic)
                    count = self._counts[topic] = len(producer.client.cluster.partitions_for_topic(topic))
                self._append(topic, self._partition(topic, key, count), key, value)
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
        self._unplaced.clear()
