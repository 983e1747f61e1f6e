"""Helpers for the integration tests that talk to the real Kafka broker."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from waterwatch.admin import admin_client, supported_configs

TEST_TOPIC_ROOT = "wwtest"


def unique_name(label: str = "t") -> str:
    """A topic-name-safe unique prefix such as ``wwtest.roundtrip-3f2a9c1d0b``.

    Only letters, digits, ``.`` and ``-`` (Kafka warns about names that mix
    ``.`` and ``_``), short enough to leave room for suffixes.
    """
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", label).strip("-").lower()[:40] or "t"
    return f"{TEST_TOPIC_ROOT}.{slug}-{uuid.uuid4().hex[:10]}"


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]], timeout: float = 30
) -> int:
    """Produce (key, value) records, wait for every acknowledgement; return the count."""
    producer = KafkaProducer(
        **supported_configs(
            KafkaProducer,
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            allow_auto_create_topics=False,
            bootstrap_timeout_ms=10_000,
        )
    )
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush(timeout=timeout)
        for future in futures:
            future.get(timeout=timeout)
        return len(futures)
    finally:
        producer.close(timeout=10)


def consume_all(
    bootstrap: str,
    topic: str,
    n: int,
    timeout: float = 30.0,
    *,
    give_up: Callable[[], bool] | None = None,
    settle: float = 0.0,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``n`` records arrived or ``timeout`` passed.

    No consumer group: all partitions are assigned directly.  Returns the
    records read (``ConsumerRecord``: ``.key``, ``.value``, ``.partition`` ...),
    which may be fewer than ``n`` on timeout, so callers assert on the result.
    ``give_up`` is polled between fetches (e.g. "the worker process died").
    ``settle`` keeps reading that many seconds after ``n`` arrived, to catch extras.
    """
    consumer = KafkaConsumer(
        **supported_configs(
            KafkaConsumer,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            bootstrap_timeout_ms=10_000,
        )
    )
    deadline = time.monotonic() + timeout
    out: list[Any] = []
    try:
        partitions: set[int] | None = None
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            if time.monotonic() >= deadline:
                return out
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline or (settle_until is not None and now >= settle_until):
                break
            if give_up is not None and give_up():
                # one last look, then stop
                for batch in consumer.poll(timeout_ms=500).values():
                    out.extend(batch)
                break
            for batch in consumer.poll(timeout_ms=300).values():
                out.extend(batch)
            if len(out) >= n and settle_until is None:
                if settle <= 0:
                    break
                settle_until = time.monotonic() + settle
        return out
    finally:
        consumer.close()


def topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    with admin_client(bootstrap) as client:
        return sorted(t for t in client.list_topics() if t.startswith(prefix))


def _group_ids(client: Any) -> list[str]:
    lister = getattr(client, "list_groups", None) or client.list_consumer_groups  # 3.x / 2.x
    out = []
    for group in lister():
        gid = group.get("group_id") if isinstance(group, dict) else group[0]
        if isinstance(gid, str):
            out.append(gid)
    return out


def delete_with_prefix(bootstrap: str, prefix: str) -> None:
    """Best-effort removal of a test's topics and consumer groups (names starting with prefix)."""
    with contextlib.suppress(Exception), admin_client(bootstrap) as client:
        names = [t for t in client.list_topics() if t.startswith(prefix)]
        if names:
            with contextlib.suppress(Exception):
                client.delete_topics(names)
        with contextlib.suppress(Exception):
            groups = [g for g in _group_ids(client) if g.startswith(prefix)]
            if groups:
                deleter = getattr(client, "delete_groups", None) or client.delete_consumer_groups
                deleter(groups)
