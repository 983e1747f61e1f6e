"""Read a whole compacted topic into memory, in a daemon thread, on every notifier instance.

The consent records and the resident directory are small enough to keep whole
and every instance needs all of them (a job for any recipient may land here),
so they are not Faust tables: a plain consumer without a group reads every
partition from the beginning and keeps following. ``ready`` is set once the
end offsets seen at start are reached; a broker that goes away is retried.
Subclasses say what one record does (:meth:`apply`), under :attr:`lock`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

log = logging.getLogger("waterwatch.notifier")


class CompactedTopicReader(ABC):
    name = "topic"

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @abstractmethod
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic (``value`` None: a tombstone). Called with :attr:`lock` held."""

    def caught_up(self, seconds: float) -> None:
        """Called once, when the end offsets seen at start are reached."""
        log.info("%s reader caught up in %.1f s", self.name, seconds)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        while not self._stop.is_set():
            try:
                consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                                         consumer_timeout_ms=500, max_partition_fetch_bytes=8 << 20)  # fmt: skip
                tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or {0})]
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                end = consumer.end_offsets(tps)
                t0 = time.monotonic()
                while not self._stop.is_set():
                    batch = consumer.poll(timeout_ms=500, max_records=5000)
                    if batch:
                        with self.lock:
                            for records in batch.values():
                                for rec in records:
                                    self.apply(rec.key, rec.value)
                    if not self.ready.is_set() and all(consumer.position(tp) >= end[tp] for tp in tps):
                        self.caught_up(time.monotonic() - t0)
                        self.ready.set()
                consumer.close()
            except Exception as exc:  # broker away: keep trying, never stop the notifier
                log.warning("%s reader: %s; retrying", self.name, type(exc).__name__)
                self._stop.wait(2.0)
