"""streams/sending.py on the real broker: whole batches per partition, as per-record sends would place them."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from kafka_helpers import consume_all

from streams.sending import RecordBatches
from streams.worker import partition_for
from waterwatch.admin import ensure_topics
from waterwatch.topics import TopicSpec

pytestmark = pytest.mark.integration


def spec(name: str, partitions: int, **configs: str) -> TopicSpec:
    return TopicSpec(name=name, key="matter id", description="test topic", messages=("input",),
                     partitions=partitions, configs={"retention.ms": str(3600 * 1000), **configs})  # fmt: skip


async def _send(
    bootstrap: str, fill: object, *, max_batch_size: int = 16384
) -> tuple[list[tuple[str, int, int, int]], int]:
    """Run ``fill(box)``, submit, await every batch: ([(topic, partition, first offset, count)], records)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=max_batch_size)
    await producer.start()
    try:
        box = RecordBatches(producer)
        fill(box)  # type: ignore[operator]
        n = len(box)
        sent = await box.submit()
        metas = await asyncio.gather(*(b.future for b in sent))
        assert len(box) == 0
        return [(b.topic, b.partition, m.offset, b.count) for b, m in zip(sent, metas, strict=True)], n
    finally:
        await producer.stop()


def test_records_land_where_the_default_partitioner_puts_them_in_order_with_offsets_and_timestamps(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    keyed, placed = f"{unique_topic_prefix}.alerts", f"{unique_topic_prefix}.changelog"
    ensure_topics(kafka_bootstrap, [spec(keyed, 4), spec(placed, 3)])
    keys = [f"T-{i % 97:04d}".encode() for i in range(3000)]  # ~600-byte values: many 16 KiB batches a partition

    def fill(box: RecordBatches) -> None:
        for i, k in enumerate(keys):
            box.add(keyed, partition_for(k, 4), k, b"%d:" % i + b"x" * 600)  # as the worker places alerts
            box.add(placed, i % 3, k, b"%d" % i)

    t0 = time.time()
    sent, n = asyncio.run(_send(kafka_bootstrap, fill))
    t1 = time.time()
    assert n == 6000
    assert sum(c for t, _p, _o, c in sent if t == keyed) == 3000
    assert len([s for s in sent if s[0] == keyed]) > 4  # the 16 KiB limit split them: several batches a partition

    got = consume_all(kafka_bootstrap, keyed, 3000, timeout=60)
    assert len(got) == 3000
    for rec in got:
        assert rec.partition == partition_for(rec.key, 4)
        assert t0 - 1 <= rec.timestamp / 1000 <= t1 + 1  # CreateTime: set when added
    for p in range(4):  # per partition, the order they were added in
        seq = [int(r.value.split(b":")[0]) for r in sorted(got, key=lambda r: r.offset) if r.partition == p]
        assert seq == sorted(seq) and seq
    got_placed = consume_all(kafka_bootstrap, placed, 3000, timeout=60)
    assert {(r.partition, int(r.value)) for r in got_placed} == {(i % 3, i) for i in range(3000)}
    # a batch's future gives its first record's offset: first + count - 1 is its last record's
    last = {}
    for t, p, first, count in sent:
        if t == placed:
            last[p] = max(last.get(p, -1), first + count - 1)
    assert last == {p: max(r.offset for r in got_placed if r.partition == p) for p in range(3)}


def test_a_record_the_topic_refuses_fails_its_batch_future(kafka_bootstrap: str, unique_topic_prefix: str) -> None:
    topic = f"{unique_topic_prefix}.small"
    ensure_topics(kafka_bootstrap, [spec(topic, 1, **{"max.message.bytes": "2000"})])

    def fill(box: RecordBatches) -> None:
        box.add(topic, 0, b"k", b"y" * 5000)

    with pytest.raises(MessageSizeTooLargeError):
        asyncio.run(_send(kafka_bootstrap, fill))


def test_queued_records_can_be_dropped() -> None:
    class Producer:
        def create_batch(self) -> object:
            from aiokafka.producer.message_accumulator import BatchBuilder

            return BatchBuilder(16384, 0)

    box = RecordBatches(Producer())
    box.add("t", 0, b"k", b"v")
    box.add("t", 1, b"k", b"v")
    assert len(box) == 2
    box.clear_queued()
    assert len(box) == 0
