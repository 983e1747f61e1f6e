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

Not a fix, but here because it replaces Faust internals too: the worker's batch delivery
(:class:`BatchInbox`, :func:`install_batch_delivery`, at the end of this module), which hands the records of
the worker's topics over a fetched batch at a time instead of through Faust's per-message path.

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
import time
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


# ---------------------------------------------------------------------------------------------------------------
# Batch delivery (not a fix: the worker's fast path; docs/decisions/0005-worker.md, "Batch delivery")


class BatchInbox:
    """Where the fetcher puts the raw messages of the worker's own topics, a fetched batch at a time.

    Faust delivers a record through ``Consumer._drain_messages`` → ``wait_first`` (two tasks per record) → the
    conductor (an ``Event`` decoded per record, a queue per channel) → the stream iterator (sensors, the current
    event, an ack per record): about half of the worker's time per event.  With :func:`install_batch_delivery`
    the records of ``topics`` skip all of that: the fetcher converts them to Faust's ``ConsumerMessage`` (as
    Faust does, stamped with the consumer generation) and appends each fetched batch here; the worker takes them
    (:meth:`take`), tracks them as Faust's stream would (``Consumer.unacked``: Faust waits for them to be acked
    before it gives partitions up or stops) and acks them through ``Consumer.ack`` once their states are
    durable, so offsets are committed exactly as before.

    Registered with ``app.flow_control`` like an agent's queue: what is here when Faust clears the queues (every
    revocation, and a resume after a suspension) is dropped, as Faust drops its queued events, and read again
    after Faust seeks to the committed offsets.  A message stamped with an older generation, or taken while the
    flow is suspended, is dropped too (Faust's stream skips it).
    """

    def __init__(self, topics: set[str] | frozenset[str], limit: int) -> None:
        self.topics = frozenset(topics)
        self.limit = limit  # the fetcher waits while this many messages are here
        self.items: list[Any] = []
        self.arrived = asyncio.Event()  # set when messages arrive (or anything the consumer loop must see)
        self.room = asyncio.Event()  # set while fewer than ``limit`` messages are here
        self.room.set()
        self.dropped = 0  # messages cleared or skipped (stale generation, flow suspended)

    def put(self, messages: list[Any]) -> None:
        self.items.extend(messages)
        self.arrived.set()
        if len(self.items) >= self.limit:
            self.room.clear()

    def clear(self) -> None:
        """Called by ``app.flow_control.clear()`` (Faust's rebalance and resume): forget what is queued."""
        self.dropped += len(self.items)
        self.items.clear()
        self.room.set()

    def take(self, n: int, app: Any) -> list[Any]:
        """Up to ``n`` messages, oldest first, each tracked as unacked by Faust's consumer (as the stream
        iterator does when it hands an event out); stale ones are dropped."""
        items = self.items
        if not items:
            return []
        got = items[:n]
        del items[:n]
        if len(items) < self.limit:
            self.room.set()
        generation = app.consumer_generation_id
        consumer = app.consumer
        unacked = consumer.unacked
        if not app.flow_control.is_active():
            self.dropped += len(got)
            return []
        out = []
        for m in got:
            if m.generation_id != generation:
                self.dropped += 1
                continue
            m.tracked = True
            unacked.add(m)
            out.append(m)
        if out:
            # Faust's stream sets this per event (the livelock detector's "stream idle" check reads it)
            inbound = app.monitor.stream_inbound_time
            now = time.monotonic()
            for tp in {m.tp for m in out}:
                inbound[tp] = now
        return out


def install_batch_delivery(app: Any, inbox: BatchInbox) -> None:
    """Deliver ``inbox.topics`` of ``app`` in batches (see :class:`BatchInbox`); other topics (the tables'
    changelogs during recovery) keep Faust's per-message path.  Patches ``Consumer._drain_messages`` once per
    process; the patched method uses the batch path only for an app that has an inbox."""
    global _BATCH_PATCHED
    app._waterwatch_inbox = inbox
    app.flow_control.manage_queue(inbox)
    if _BATCH_PATCHED:
        return
    from faust.transport.consumer import Consumer

    original = Consumer._drain_messages

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        box = getattr(self.app, "_waterwatch_inbox", None)
        if box is None:
            await original(self, fetcher)
        else:
            await _drain_batches(self, fetcher, box)

    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    _BATCH_PATCHED = True


_BATCH_PATCHED = False


async def _drain_batches(self: Any, fetcher: Any, inbox: BatchInbox) -> None:
    """``Consumer._drain_messages`` (faust-streaming 0.15.3) with the records of ``inbox.topics`` handed over a
    fetched batch at a time.  Per record it keeps what Faust's loop and ``Consumer.getmany`` do: drop records
    below the read offset, note gaps (``_add_gap``), skip partitions not active, stop at a generation change or
    a suspended flow, and set the read offset; ``commit_every`` is checked once per fetch.  Records of other
    topics go through Faust's own per-message delivery, unchanged."""
    from faust.transport.consumer import CONSUMER_FETCHING

    app = self.app
    callback = self.callback
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = self._read_offset
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = app.topics.acks_enabled_for
    to_message = self._to_message
    mine = inbox.topics
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            await self.sleep(0)
            if self.should_stop:
                continue
            records, active = await self._wait_next_records(1.0)
            generation = app.consumer_generation_id
            if records is None or self.should_stop:
                unset_flag(CONSUMER_FETCHING)
                continue
            if not self.flow_active:
                # as Consumer.getmany: records fetched while the flow is stopped are read again after a seek
                try:
                    await self.perform_seek()
                except Exception as ex:
                    self.log.warning(f"exception performing seek when flow not active {ex}")
                unset_flag(CONSUMER_FETCHING)
                continue
            others: dict[Any, list[Any]] = {}
            for tp, recs in records.items():
                if tp.topic not in mine:
                    others[tp] = recs
                    continue
                if not self.flow_active or app.consumer_generation_id != generation:
                    break
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                r_offset = read_offset[tp]
                msgs = []
                for record in recs:
                    offset = record.offset
                    if r_offset is not None and offset < r_offset:
                        continue  # read already (Faust logs "DROPPED MESSAGE")
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(tp.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    msgs.append(to_message(tp, record))
                    r_offset = offset
                if msgs:
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    inbox.put(msgs)
                    read_offset[tp] = r_offset
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            if others:
                await _deliver_each(self, others, active, generation, callback)
            unset_flag(CONSUMER_FETCHING)
            if not inbox.room.is_set():  # the worker is behind: fetch no more until it takes some
                await self.wait_first(inbox.room.wait(), self.suspend_flow.wait())
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


async def _deliver_each(self: Any, records: dict[Any, list[Any]], active: Any, generation: int, callback: Any) -> None:
    """Faust's per-message delivery (``Consumer.getmany`` + the body of ``_drain_messages``), for topics other
    than the inbox's."""
    app = self.app
    read_offset = self._read_offset
    acks_enabled_for = app.topics.acks_enabled_for
    commit_every = self._commit_every
    n = 0
    for tp, record in self.scheduler.iterate(records):
        if not self.flow_active or app.consumer_generation_id != generation:
            break
        if not (active is None or tp in active or tp in self._buffered_partitions):
            continue
        app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        message = self._to_message(tp, record)
        n += 1
        if n > 100:
            await asyncio.sleep(0)
            n = 0
        offset = message.offset
        r_offset = read_offset[tp]
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await self.wait_first(callback(message), self.suspend_flow.wait())
            read_offset[tp] = offset
