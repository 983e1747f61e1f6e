"""Targeted fixes for upstream faust-streaming/aiokafka behaviours that lose events or state.

1. Records fetched for partitions that move in a rebalance (below).
2. ``ProducerBuffer.flush`` gives up while table changelog records are still
   buffered.  Faust writes a table change with ``send_soon``: the record waits
   in the producer buffer until a background task hands it to aiokafka, and
   Faust calls ``producer.flush()`` before every offset commit so that a
   committed offset never runs ahead of the changelog.  But the buffer's
   ``flush`` returns as soon as 0.1 s pass without a record leaving it (a busy
   event loop on a loaded machine), so an offset could be committed while the
   state change it produced was still in memory; a worker stopping then (its
   buffer task is cancelled) or taken over before the record was sent left
   the changelog without that change, and the next owner of the partition
   recovered a state that never saw the event: the matter's deadlines were
   lost.  (It was not the cause of the flaky hand-over test ``test_d_…``:
   that was 3.)  The fix makes ``flush`` drain the buffer completely, sending
   what is left itself when the background task is gone, and logs a warning
   each time Faust's flush would have given up.
3. ``FlowControlEvent.resume`` empties every agent queue, also when the flow
   is not suspended.  After a rebalance Faust's recovery resumes the flow
   while it reads the changelogs, then (``Recovery.on_recovery_completed``)
   resumes the stream partitions, awaits ``perform_seek`` (one committed-offset
   request per partition: a second and more on a loaded machine) and only
   then calls ``resume`` again.  Records fetched meanwhile and still in the
   agent's queue were thrown away (and, in the failing run, not read again);
   the next record of that partition was processed and acked, and its offset
   committed over the lost one (Faust checks no gap at the head of a
   never-committed partition).
   The event was lost for good, with every alert of its matter: the cause of
   ``test_d_…`` failing (``events[4]@0`` discarded at the last resume, then
   ``events[4]`` committed at 2; see docs/decisions/0005-worker.md).  The fix
   empties the queues only when the flow really was suspended (what was put
   in them meanwhile is stale); a ``resume`` of a flowing app keeps them.

The first fix in detail:

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

import asyncio
import contextlib
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
    _patch_producer_buffer_flush()
    _patch_flow_control_resume()
    _APPLIED = True


def _patch_producer_buffer_flush() -> None:
    from faust.transport.producer import ProducerBuffer

    async def flush(self: Any) -> None:
        """Flush every buffered message (Faust's own gives up after 0.1 s without progress)."""
        gave_up = 0
        drained_task = False
        while self.size:
            if self.state == "running" and not self.should_stop:
                await self.flush_atmost(None)
                if self.size:
                    gave_up += 1  # here Faust's flush would have returned, records still buffered
                    if gave_up % 50 == 1:
                        log.warning("producer buffer flush: %d record(s) still buffered, waiting for them", self.size)
                continue
            if not drained_task:  # stopping: let the buffer's task finish the record it may be sending
                drained_task = True
                self.message_sent.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.message_sent.wait(), timeout=0.5)
                continue
            # the buffer's task is gone: send what is left ourselves, in order
            fut = self.pending.get_nowait()
            await self._send_pending(fut)

    ProducerBuffer.flush = flush  # type: ignore[method-assign]


def _patch_flow_control_resume() -> None:
    from mode.utils.queues import FlowControlEvent

    original = FlowControlEvent.resume

    def resume(self: Any) -> None:
        """Resume; empty the queues only when the flow really was suspended (Faust empties them every time)."""
        if self.is_active():  # already flowing: the queues hold records of the current assignment, keep them
            self._resume.set()
            return
        original(self)

    FlowControlEvent.resume = resume  # type: ignore[method-assign]
