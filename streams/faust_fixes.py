"""A targeted fix for an upstream faust-streaming/aiokafka behaviour that loses events.

During a rebalance Faust (0.15.x) drops records it fetched for partitions that
are being moved, and relies on ``perform_seek`` → aiokafka's
``seek_to_committed`` to read them again.  aiokafka repositions only partitions
whose committed offset is above 0, so on a partition this consumer group has
never committed (a new deployment, a quiet partition) the dropped records are
skipped and their offsets committed later, unprocessed: events and every alert
they imply are lost.  Found by ``tests/integration/test_worker.py::test_d2_…``.

The fix has two parts: ``seek_to_committed`` also seeks every assigned
partition without a committed offset back to its beginning; and the worker
seeks from the table's recovery callback, which Faust calls *before* it
resumes the stream partitions, so the first fetch after a rebalance already
starts at the right offset (Faust's own seek comes only after resuming, when
records may already have been fetched and dropped).  Re-reading is safe: the
engine ignores an event id it has already applied (principle 3), so the only
cost is reading a partition's uncommitted head once more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("waterwatch.worker")
_APPLIED = False


def apply() -> None:
    """Patch faust's aiokafka consumer thread once per process."""
    global _APPLIED
    if _APPLIED:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self: Any) -> Mapping[Any, int]:
        committed = await original(self)
        fresh = [tp for tp, offset in committed.items() if not offset]
        if fresh:
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *fresh)
            log.info("re-reading %d never-committed partition(s) from the beginning", len(fresh))
        return committed

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    _APPLIED = True
