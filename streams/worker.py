"""``waterwatch worker``: the SLA core on Kafka (faust-streaming).

    waterwatch.events ─┐
                       ├─► agent ``process`` (concurrency 1) ──► waterwatch.alerts
    waterwatch.clock ──┘      │ table ``matters`` (RocksDB + changelog)      waterwatch.deadletter
                              └─► deadline index ──► timer ──► waterwatch.clock

One agent owns both co-partitioned input topics, so only the owner of a
matter's partition ever changes its state (DESIGN.md principle 2).  The timer
never fires alerts: it sends a check command keyed by the matter to the clock
topic, and the agent fires whatever the core says is due by then.  Alerts are
flushed to Kafka before the new state is written, so a crash can repeat an
alert (same ``alert_id``: consumers de-duplicate) but never lose one
(principle 3).  Agent concurrency stays 1 (upstream loss at > 1) and
``exactly_once`` is not used.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP
from kafka.partitioner.default import murmur2

from streams import faust_fixes
from streams.deadlines import DeadlineIndex
from streams.processor import (
    Processor,
    Result,
    decode_state,
    encode_alert,
    encode_check,
    encode_state,
    stored_next_due,
)
from streams.sending import RecordBatches
from waterwatch import __version__
from waterwatch.core.config import Config
from waterwatch.core.engine import Alert, MatterState
from waterwatch.metrics import WorkerMetrics, serve_metrics
from waterwatch.topics import ALERTS, CLOCK, DEADLETTER, EVENTS, TopicSpec

log = logging.getLogger("waterwatch.worker")

APP_ID = "waterwatch-worker"
TABLE = "matters"


@dataclass(slots=True, eq=False)
class _Batch:
    """A processed batch, until the writer has made it durable and acked its records."""

    records: list[Any]  # Faust's ConsumerMessage of each record, in order
    sends: list[Awaitable[Any]] = field(default_factory=list)  # alerts and dead letters sent
    states: dict[bytes, tuple[Any, bytes]] = field(default_factory=dict)  # key -> (message, newest state)
    alerts: list[Alert] = field(default_factory=list)
    timer_alerts: list[Alert] = field(default_factory=list)  # fired by check commands (fire lag)


@dataclass
class WorkerSettings:
    bootstrap: str
    partitions: int = 8
    app_id: str = APP_ID
    data_dir: Path = field(default_factory=lambda: Path(".waterwatch") / "worker")
    web_port: int = 6066
    timer_interval: float = 0.1
    batch_max: int = 500  # records processed (and their alerts flushed) together at most
    check_limit: int = 2000  # due matters one check command fires at most (the next tick sends another)
    # when more is due on a partition than one check fires, its matters due within this many seconds go before
    # its older, late ones (at least a quarter of each check is late work): see deadlines.py and 0005 "Timers"
    check_fresh: float = 0.5
    check_resend: float = 1.0  # seconds before a partition's unanswered check command is sent again
    producer_linger: float = 0.005  # seconds the producer waits to batch records (changelog, alerts) per request
    write_ahead: int = 2000  # records processed before the writer has made the earlier ones durable, at most
    write_linger: float = 0.01  # seconds the writer waits for more batches to join a group (fewer requests)
    inbox_max: int = 4000  # records fetched and not yet taken by the agent before the fetcher waits
    state_cache: int = 10_000  # decoded states of recently changed matters kept (0: decode every stored state)
    # allocations between the cyclic collector's youngest-generation runs (Python's default: 700); 0: leave it
    gc_gen0: int = 10_000
    rocksdb_block_cache_mb: int = 8
    rocksdb_write_buffer_mb: int = 4
    rocksdb_write_buffers: int = 2
    topic_prefix: str = "waterwatch"  # topics are {prefix}.events, .clock, .alerts, .deadletter
    metrics_port: int = field(default_factory=lambda: int(os.environ.get("WATERWATCH_METRICS_PORT", "9464")))
    metrics_addr: str = field(default_factory=lambda: os.environ.get("WATERWATCH_METRICS_ADDR", "127.0.0.1"))
    # before Faust starts, bulk-read the changelog into the local stores when they are this many records behind
    # (Faust's own recovery handles a record at a time); 0: never
    prefetch_min_records: int = field(
        default_factory=lambda: int(os.environ.get("WATERWATCH_STATE_PREFETCH_MIN", "20000"))
    )
    now: Callable[[], float] = time.time

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def clock_topic(self) -> str:
        return f"{self.topic_prefix}.clock"

    @property
    def alerts_topic(self) -> str:
        return f"{self.topic_prefix}.alerts"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-{TABLE}-changelog"

    def topic_specs(self) -> list[TopicSpec]:
        """The topics this worker needs, with explicit partitions and configs."""
        n = self.partitions
        return [
            TopicSpec(self.events_topic, EVENTS.key, EVENTS.description, EVENTS.messages, n, EVENTS.configs),
            TopicSpec(self.clock_topic, CLOCK.key, CLOCK.description, CLOCK.messages, n, CLOCK.configs),
            TopicSpec(self.alerts_topic, ALERTS.key, ALERTS.description, ALERTS.messages, n, ALERTS.configs),
            TopicSpec(self.deadletter_topic, DEADLETTER.key, DEADLETTER.description, DEADLETTER.messages, 1,
                      DEADLETTER.configs),
            TopicSpec(self.changelog_topic, "matter id", "changelog of the matters table", ("state",), n,
                      {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
        ]  # fmt: skip


@functools.lru_cache(maxsize=65_536)  # murmur2 in Python costs ~3.6 µs a key; the worker places every alert with it
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every producer of matter-keyed records uses."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def config_tag(config: Config) -> str:
    """A short fingerprint of what a matter's next due instant depends on: the config files, the time scale
    and the engine's code.  Stored in each state's header (``streams.processor.encode_state``); a state
    written under another tag is decoded and its due recomputed when the index is rebuilt."""
    import waterwatch.core

    # the source, not engine.__file__: compiled (mypyc), that is a stub extension that does not change with the code
    engine_source = Path(waterwatch.core.__file__).parent / "engine.py"
    h = hashlib.sha1()
    for name in ("policy.yaml", "units.yaml", "calendar.yaml"):
        try:
            h.update((Path(config.directory) / name).read_bytes())
        except OSError:
            h.update(b"-")
    h.update(repr(config.policy.time_scale).encode())
    try:
        h.update(engine_source.read_bytes())
    except OSError:
        h.update(__version__.encode())
    return h.hexdigest()[:10]


def _as_current(app: faust.App, message: Any) -> None:
    """Make ``message`` Faust's current event, as during its own iteration step: the table reads and writes the
    store and changelog partition of that message (batches write after the whole batch is done).  Only when the
    table is not RocksDB-backed (then the worker uses Faust's own table writes)."""
    event = faust.Event(app, message.key, message.value, message.headers, message)
    _current_event.set(weakref.ref(event))
    _CURRENT.append(event)  # the context holds a weak reference: keep the newest alive
    del _CURRENT[:-1]


_CURRENT: list[Any] = []


class Worker:
    """The Faust app and the state around it (health, deadline index, counters)."""

    def __init__(self, settings: WorkerSettings, config: Config) -> None:
        self.settings = settings
        self.config = config
        self.engine = config.engine()
        self.tag = config_tag(config)
        self.processor = Processor(self.engine, settings.events_topic, state_tag=self.tag)
        self.index = DeadlineIndex()
        self._check_sent: dict[int, float] = {}  # partition -> monotonic time its check command was sent
        self._generation = 0  # bumped at every revocation: a rebuild of an older generation stops
        self._touched: set[str] | None = None  # matters the agent indexed while a rebuild runs
        self._gauge_task: asyncio.Task[None] | None = None
        self._gauge_skip: set[str] | None = None  # matters the agent counted while the gauge is refilled
        # events partition -> offset of the last record of the backlog found at recovery: until the agent has
        # processed it, checks of that partition fire nothing (an event waiting there may stop a due deadline)
        self._catchup: dict[int, int] = {}
        self.state = "starting"
        self.counters: dict[str, int] = {
            "events": 0, "duplicates": 0, "deadletters": 0, "alerts": 0, "checks": 0, "checks_sent": 0, "batches": 0,
        }  # fmt: skip
        self.fire_lag: list[float] = []  # seconds between a stage's instant and its alert leaving
        self.metrics = WorkerMetrics.from_config(config)
        self.metrics.build_info(__version__)
        self.metrics.watch_calendar(config.calendar)
        self.metrics_port: int | None = None  # where /metrics is served (run_worker binds it); None: not served
        self._last_offset: dict[int, int] = {}  # events partition -> last offset processed
        # matter key -> the batch holding its newest state not yet written (changelog, RocksDB) by the writer
        self._unwritten: dict[bytes, _Batch] = {}
        # matter key -> the decoded form of its stored state (the newest this worker wrote), least recent first;
        # only the owner of a partition writes its matters, so it stays valid until the partition is revoked
        # least recently used first; an OrderedDict, because deleting a plain dict's first key again and again
        # leaves dummies that each later next(iter()) skips (~8 us per eviction at 10,000 kept)
        self._state_cache: OrderedDict[bytes, MatterState] = OrderedDict()
        # alerts (queued by the agent's processing) and changelog records (by the writer), sent as whole batches
        self._outboxes: dict[str, RecordBatches] = {}
        self.app = self._build()

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self.state = state
            log.info("worker %s%s", state, f": {detail}" if detail else "")

    # ------------------------------------------------------------------ app

    def _build(self) -> faust.App:
        faust_fixes.apply()
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=f"kafka://{s.bootstrap}",
            store="rocksdb://",
            datadir=str(s.data_dir),
            topic_partitions=s.partitions,
            topic_replication_factor=1,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            web_enabled=True,
            web_bind="127.0.0.1",
            web_port=s.web_port,
            web_host="127.0.0.1",
            # a dead letter carries the original bytes (base64, in JSON): room for an 8 MiB event
            producer_max_request_size=16 * 1024 * 1024,
            consumer_max_fetch_size=8 * 1024 * 1024,
            broker_commit_every=1000,
            broker_commit_interval=1.0,
            table_standby_replicas=0,
            producer_linger=s.producer_linger,
            # alerts and changelog records go as whole batches (streams/sending.py): room for ~800 of each
            producer_max_batch_size=512 * 1024,
        )
        source = app.topic(s.events_topic, s.clock_topic, key_serializer="raw", value_serializer="raw",
                           partitions=s.partitions)  # fmt: skip
        alerts = app.topic(s.alerts_topic, key_serializer="raw", value_serializer="raw", partitions=s.partitions)
        clock = app.topic(s.clock_topic, key_serializer="raw", value_serializer="raw", partitions=s.partitions)
        deadletter = app.topic(s.deadletter_topic, key_serializer="raw", value_serializer="raw", partitions=1)
        mb = 1024 * 1024
        matters = app.Table(
            TABLE,
            default=None,
            partitions=s.partitions,
            key_type=bytes,  # bytes in, bytes out: the "raw" serializer
            value_type=bytes,
            options={
                "block_cache_size": s.rocksdb_block_cache_mb * mb,
                "block_cache_compressed_size": 0,
                "write_buffer_size": s.rocksdb_write_buffer_mb * mb,
                "max_write_buffer_number": s.rocksdb_write_buffers,
                "max_open_files": 256,
            },
        )
        self.matters = matters
        # the agent's topics skip Faust's per-message delivery (streams/faust_fixes.py: BatchInbox)
        self._inbox = faust_fixes.BatchInbox({s.events_topic, s.clock_topic}, limit=max(s.inbox_max, s.batch_max))
        faust_fixes.install_batch_delivery(app, self._inbox)
        self.alerts_topic, self.clock_topic, self.deadletter_topic = alerts, clock, deadletter
        worker = self

        @app.agent(source, concurrency=1)
        async def process(stream: faust.StreamT[Any]) -> None:
            # Records are taken in batches: whatever has arrived (up to batch_max) is processed, its alerts
            # and dead letters are sent and acknowledged together, then the states are written and the
            # records acked.  Acks are ours: Faust commits an offset only after its record is acked.
            stream.enable_acks = False
            await worker._consume(stream)

        @app.timer(interval=s.timer_interval, on_leader=False)
        async def tick() -> None:
            # One check command per partition that has something due, keyed by its earliest due matter (so it
            # lands on that partition): the agent owning the partition fires all of the partition's due
            # matters.  Sends are not awaited one by one: a send only queues the record.
            if worker.state != "ready":
                return
            mono = time.monotonic()
            for partition, matter_id, due in worker.index.due_partitions(s.now()):
                if partition in worker._catchup:
                    continue  # its backlog of events first
                sent = worker._check_sent.get(partition)
                if sent is not None and mono - sent < s.check_resend:
                    continue  # one is on its way
                worker._check_sent[partition] = mono
                worker.counters["checks_sent"] += 1
                await clock.send(key=matter_id.encode(), value=encode_check(matter_id, due), partition=partition)

        @app.timer(interval=5.0, on_leader=False)
        async def lag() -> None:
            worker._report_consumer_lag()

        @app.task
        async def started() -> None:
            log.info("worker starting: %d partitions, time scale %s, topics %s.*", s.partitions,
                     worker.config.policy.time_scale, s.topic_prefix)  # fmt: skip
            if worker.metrics_port is not None:
                log.info("metrics on http://%s:%d/metrics", s.metrics_addr, worker.metrics_port)

        @matters.on_recover
        async def recovered() -> None:
            # Faust calls this before it resumes the stream partitions: position them now, so
            # nothing is fetched from a wrong offset and dropped (see streams/faust_fixes.py)
            try:
                await app.consumer.perform_seek()
            except Exception as exc:  # never let positioning stop the index rebuild
                log.warning("seek before resuming failed (%s); Faust seeks again after resuming", exc)
            await worker._note_backlog()
            await worker._rebuild_index()

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            ready = worker.state == "ready"
            body = {"status": worker.state, "ready": ready, "matters_indexed": len(worker.index),
                    "metrics_port": worker.metrics_port, **worker.counters}  # fmt: skip
            return web.json(body, status=200 if ready else 503)

        @app.on_partitions_revoked.connect
        async def revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
            parts = {tp.partition for tp in revoked if tp.topic in (s.events_topic, s.clock_topic)}
            worker._generation += 1  # a rebuild still running is for an assignment that is gone
            dropped = worker.index.drop_partitions(parts)
            for p_ in parts:
                worker._check_sent.pop(p_, None)
                worker._catchup.pop(p_, None)
            worker.metrics.drop_partitions(parts)
            worker._state_cache.clear()  # another worker may change these matters now
            for k_, b_ in list(worker._unwritten.items()):  # (none: Faust waited for every ack)
                if b_.states[k_][0].partition in parts:
                    del worker._unwritten[k_]
            for p_ in parts:
                worker._last_offset.pop(p_, None)
            worker._set_state("rebalancing", f"{len(parts)} partition(s) revoked, {dropped} deadlines dropped")

        @app.on_partitions_assigned.connect
        async def assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
            parts = sorted({tp.partition for tp in assigned if tp.topic == s.events_topic})
            worker._set_state("recovering", f"partitions {parts}")

        self._agent = process
        return app

    def _report_consumer_lag(self) -> None:
        """Messages not yet processed on the events topic (high watermark − 1 − last offset processed)."""
        consumer = getattr(self.app, "consumer", None)
        if consumer is None:
            return
        total = 0
        try:
            assignment = consumer.assignment()
        except Exception:  # not assigned yet
            return
        for tp in assignment:
            if tp.topic != self.settings.events_topic:
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            last = self._last_offset.get(tp.partition, -1)
            total += max(0, high - 1 - last)
        self.metrics.consumer_lag_messages(self.settings.events_topic, total)

    async def _consume(self, stream: Any) -> None:
        """The agent's loop: processes the records of its two topics in batches (up to ``batch_max``) and hands
        each processed batch to a writer task, which makes it durable (alerts acknowledged, then states written)
        and acks its records.

        The records come from the batch inbox (``faust_fixes.BatchInbox``: the fetcher appends each fetched
        batch as Faust ``ConsumerMessage`` objects, without Faust's per-message event, queue and stream step);
        ``inbox.take`` tracks them as unacked in Faust's consumer as the stream iterator would.  A reader task
        still iterates the agent's stream: records Faust delivers the usual way (none while the batch delivery
        is installed) are processed too, and the stream's end (Faust stops the agent) ends this loop.

        No record taken ever waits for another one to arrive.  Faust waits, before it gives partitions up (a
        rebalance) or stops, until every record handed out is acked, and it empties the agent's queues (and the
        inbox) at that moment; a batch held "because more was queued" was then never completed, and the worker
        hung until it was killed.  Here the loop processes whatever it has without waiting, and the writer
        completes every batch handed to it on its own.

        The writer works on all the batches waiting for it at once (a group commit): one wait for all their
        alerts, one changelog write per changed matter, one RocksDB write batch per partition, then one
        ``Consumer.ack`` per record.  Meanwhile the loop processes the next records, reading states not yet
        written from ``self._unwritten``; it stops for the writer when ``write_ahead`` records are processed but
        not yet written.
        """
        limit = self.settings.batch_max
        ahead_max = max(limit, self.settings.write_ahead)
        linger = self.settings.write_linger
        app = self.app
        inbox = self._inbox
        consumer_ack = app.consumer.ack
        buf: list[Any] = []  # messages of events the stream delivered (Faust's own path)
        arrived = inbox.arrived  # buf or the inbox got a record, or the reader or the writer ended
        room = asyncio.Event()  # buf has fewer than ``limit`` records
        room.set()
        queued: list[_Batch] = []  # processed batches the writer has not taken yet
        wake = asyncio.Event()  # queued got a batch
        written = asyncio.Event()  # the writer completed a group (or ended)
        ahead = 0  # records processed and not yet acked by the writer
        closing = False

        async def read() -> None:
            async for event in stream.events():
                buf.append(event.message)  # tracked by the stream already
                arrived.set()
                if len(buf) >= limit:
                    room.clear()
                    await room.wait()

        async def write() -> None:
            nonlocal ahead
            while True:
                if not queued:
                    if closing:
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                if linger > 0 and not closing and ahead < limit:  # let a few more batches join this group
                    await asyncio.sleep(linger)
                group = queued[:]
                del queued[:]
                await self._complete(group)
                for b in group:
                    for m in b.records:  # their states are durable: the offsets may be committed
                        consumer_ack(m)
                    ahead -= len(b.records)
                written.set()

        def ended(_: Any) -> None:
            arrived.set()
            written.set()

        def take() -> list[Any]:
            batch = buf[:limit]
            del buf[:limit]
            if buf:
                return batch
            room.set()
            if len(batch) < limit and inbox.items and not reader.done():  # (stopping: nothing more from the inbox)
                batch += inbox.take(limit - len(batch), app)
            return batch

        self._unwritten.clear()
        self._state_cache.clear()  # (a restarted agent: what a failed writer did not store may be in it)
        reader = asyncio.ensure_future(read())
        reader.add_done_callback(ended)
        writer = asyncio.ensure_future(write())
        writer.add_done_callback(ended)
        try:
            while True:
                if writer.done():
                    writer.result()  # the writer failed: raise what it raised (the agent crashes)
                    raise RuntimeError("the state writer ended")
                if not buf and (not inbox.items or reader.done()):
                    if reader.done():  # the agent stops: complete what was processed, take nothing more
                        reader.result()  # what ended the stream, if it raised
                        closing = True
                        wake.set()
                        await writer  # complete what was processed
                        return
                    arrived.clear()
                    await arrived.wait()
                    continue
                if ahead >= ahead_max:  # far enough ahead of the writer: let it catch up
                    written.clear()
                    await written.wait()
                    continue
                batch = take()
                if not batch:  # stale records dropped
                    continue
                queued.append(await self._process_batch(batch))
                ahead += len(batch)
                wake.set()
        finally:
            reader.cancel()
            writer.cancel()
            self._state_cache.clear()

    async def _process_batch(self, batch: list[Any]) -> _Batch:
        """Process records in order and send every alert and dead letter (not awaited); return what the writer
        must complete.  The states go to ``self._unwritten`` at once (later records read them from there); the
        deadline index and the gauges are updated here too.

        Principle 3: no state that records an alert as fired is written (to RocksDB or the changelog)
        before that alert is acknowledged by the broker, so a crash can repeat an alert but never lose it:
        the writer (:meth:`_complete`) awaits the alerts before it writes the states.
        A check command fires every due matter of its partition (from this worker's index) in one go.
        """
        s = self.settings
        matters = self.matters
        metrics = self.metrics
        counters = self.counters
        processor = self.processor
        events_topic = s.events_topic
        producer = self.app.producer
        outbox = self._outbox("alerts")
        alerts_name, deadletter_name = s.alerts_topic, s.deadletter_topic
        n_partitions = s.partitions  # of the alerts topic too (run_worker refuses one with another count)
        store = self._rocks_store()
        unwritten = self._unwritten
        cache = self._state_cache
        cache_max = s.state_cache
        index = self.index
        touched = self._touched
        out = _Batch(records=batch)
        counters["batches"] += 1
        n_events = n_checks = 0
        now = s.now()

        def stored(key: bytes, partition: int) -> bytes | None:
            w = unwritten.get(key)
            if w is not None:
                return w.states[key][1]
            if store is not None:  # the partition's own RocksDB, as Faust's table reads it (no sensors, no lookups)
                value: bytes | None = store._db_for_partition(partition).get(key)
                return value
            return matters.get(key)

        # matter key -> (message, newest state, its due) of the matters this batch changed: each is encoded once,
        # at the end of the batch (a matter's records often come together; intermediate states are never stored)
        pending: dict[bytes, tuple[Any, MatterState, int | None]] = {}

        def lookup(key: bytes, partition: int) -> tuple[bytes | None, MatterState | None]:
            """(stored bytes, decoded state) of a matter: this batch's newest, a kept one, or the stored bytes."""
            p = pending.get(key)
            if p is not None:
                cache.pop(key, None)  # (re-added if this record stores a state)
                return None, p[1]
            cached = cache.pop(key, None)
            return (stored(key, partition) if cached is None else None), cached

        try:
            for msg in batch:
                key: bytes | None = msg.key
                partition = msg.partition
                now = s.now()
                if store is None:
                    _as_current(self.app, msg)
                results: list[tuple[bytes | None, Result, bool]]
                if msg.topic == events_topic:
                    counters["events"] += 1
                    n_events += 1
                    self._last_offset[partition] = msg.offset
                    if self._catchup and msg.offset >= self._catchup.get(partition, msg.offset + 1):
                        del self._catchup[partition]  # backlog done: checks of this partition fire again
                        self._check_sent.pop(partition, None)
                    raw, cached = (None, None) if key is None else lookup(key, partition)
                    result = processor.on_event(key, msg.value, topic=msg.topic, partition=partition,
                                                offset=msg.offset, stored=raw, now=now, cached=cached,
                                                encode=False)  # fmt: skip
                    results = [(key, result, False)]
                else:
                    counters["checks"] += 1
                    n_checks += 1
                    results = []
                    if partition in self._catchup:
                        continue  # the tick sends another once the partition's backlog of events is processed
                    self._check_sent.pop(partition, None)
                    for matter_id, _due in index.pop_due_in(partition, now, s.check_limit, s.check_fresh):
                        mkey = matter_id.encode()
                        raw, cached = lookup(mkey, partition)
                        results.append((mkey, processor.on_check(mkey, raw, now=now, cached=cached, encode=False),
                                        True))  # fmt: skip
                for k, result, timer in results:
                    for alert in result.alerts:  # keyed by matter: Kafka's default partitioner, as Topic.send
                        akey = alert.matter_id.encode()
                        outbox.add(alerts_name, partition_for(akey, n_partitions), akey, encode_alert(alert))
                    if result.alerts:
                        out.alerts.extend(result.alerts)
                        if timer:
                            out.timer_alerts.extend(result.alerts)
                    if result.deadletter is not None:
                        out.sends.append(await producer.send(deadletter_name, k, result.deadletter, None, None, None))
                        counters["deadletters"] += 1
                        metrics.rejected(result.error)
                    if result.new_state is not None and k is not None:  # a state to store
                        pending[k] = (msg, result.new_state, result.next_due)
                        if cache_max > 0:  # the decoded form of what is stored
                            cache[k] = result.new_state
                            if len(cache) > cache_max:
                                cache.popitem(last=False)  # the least recently used
                    if result.duplicate:
                        counters["duplicates"] += 1
                        metrics.duplicate()
                    if result.decided:
                        metrics.deadlines_decided(result.decided)
                    if result.matter_id is not None:
                        index.set(result.matter_id, partition, result.next_due)
                        if touched is not None:
                            touched.add(result.matter_id)
            # the newest state of each changed matter, encoded now that the batch is done (no await between
            # this and the hand-over to the writer: no later record can have changed them)
            tag = processor.state_tag
            for k, (m, st, due) in pending.items():
                out.states[k] = (m, encode_state(st, due, tag))
                unwritten[k] = out
            # the gauges, once per batch: each changed matter's newest state, the records counted
            gauge_skip = self._gauge_skip
            for msg_, st, _due in pending.values():
                metrics.track(st, now, partition=msg_.partition)
                if gauge_skip is not None:
                    gauge_skip.add(st.matter_id)
            if n_events:
                metrics.event("event", n_events)
            if n_checks:
                metrics.event("check", n_checks)
            out.sends.extend(b.future for b in await outbox.submit())  # the alerts, whole batches per partition
        except BaseException:
            outbox.clear_queued()
            cache.clear()  # a state may have been changed in place without being stored
            for k in out.states:  # this batch is never written
                if unwritten.get(k) is out:
                    del unwritten[k]
            raise
        return out

    async def _complete(self, group: list[_Batch]) -> None:
        """The writer's step for processed batches, in order: await all their alerts and dead letters, then
        write each changed matter's newest state (changelog, then RocksDB).  Their records are acked after."""
        s = self.settings
        sends = [f for b in group for f in b.sends]
        if sends:
            await self._await_sent(sends)  # every alert and dead letter is acknowledged before any state is written
        sent = s.now()
        metrics, counters = self.metrics, self.counters
        for b in group:
            if b.alerts:
                counters["alerts"] += len(b.alerts)
                metrics.alerts(b.alerts)
            for a in b.timer_alerts:  # fired by a check: how late after its threshold
                lag = max(0.0, sent - a.fired_at)
                metrics.fire_lag(lag)
                self.fire_lag.append(lag)
        if len(self.fire_lag) > 100_000:
            del self.fire_lag[:50_000]
        states: dict[bytes, tuple[Any, bytes]] = {}
        for b in group:
            states.update(b.states)  # a later batch's state of a matter replaces an earlier one's
        if states:
            store = self._rocks_store()
            if store is not None:
                await self._write_states(store, states)
            else:
                matters = self.matters
                for k, (ev, state) in states.items():
                    _as_current(self.app, ev)
                    matters[k] = state
            unwritten = self._unwritten
            for b in group:
                for k in b.states:
                    if unwritten.get(k) is b:  # not replaced by a batch the writer has not taken yet
                        del unwritten[k]

    async def _note_backlog(self) -> None:
        """Before the stream partitions resume: remember, per events partition, the last offset already in
        the log beyond the committed position.  Deadlines that passed while no worker ran fire only after
        that backlog is applied, so an event that stopped a clock meanwhile wins over the late check."""
        self._catchup.clear()
        consumer = self.app.consumer
        try:
            tps = [tp for tp in consumer.assignment() if tp.topic == self.settings.events_topic]
            if not tps:
                return
            ends = await consumer.highwaters(*tps)
            for tp in tps:
                end, pos = ends.get(tp), await consumer.position(tp)
                if end is not None and pos is not None and pos < end:
                    self._catchup[tp.partition] = end - 1
        except Exception as exc:  # never let this stop recovery: late deadlines then fire without waiting
            log.warning("could not read the events backlog (%r); late deadlines do not wait for it", exc)
            self._catchup.clear()
        if self._catchup:
            log.info("events backlog to apply before late deadlines fire: %s",
                     {p: off for p, off in sorted(self._catchup.items())})  # fmt: skip

    async def _await_sent(self, sends: list[Awaitable[Any]]) -> None:
        """Wait for the broker's acknowledgement of every record sent (raises if one failed)."""
        await asyncio.gather(*sends)

    def _outbox(self, name: str) -> RecordBatches:
        """The batches of one task (``alerts``: the agent's processing; ``changelog``: the writer) for the
        producer Faust runs now (a new one if Faust replaced its producer)."""
        producer = self.app.producer._ensure_producer()
        box = self._outboxes.get(name)
        if box is None or box.producer is not producer:
            box = self._outboxes[name] = RecordBatches(producer)
        return box

    def _rocks_store(self) -> Any:
        """The ``matters`` table's RocksDB store, or None when the table is kept elsewhere (then Faust's own
        per-record table writes are used)."""
        store = self.matters.data
        if hasattr(store, "_db_for_partition") and hasattr(store, "offset_key") and hasattr(store, "_dbs"):
            return store
        return None

    async def _write_states(self, store: Any, written: dict[bytes, tuple[Any, bytes]]) -> None:
        """Write a batch's new states: to the changelog first, then to RocksDB, as Faust's recovery would.

        Every changed matter's newest state is produced once to its changelog partition (the partition of the
        record that changed it, as the table's own ``send_changelog``), all sends queued before any is
        awaited; once the broker has acknowledged them all, each partition's states go into its RocksDB in one
        write batch together with Faust's persisted changelog offset (the offset of the newest record of that
        partition), the form ``Store.apply_changelog_batch`` uses in recovery.  So the store never holds a
        state the changelog lacks, and a crash in between costs only a re-read of those changelog records at
        the next recovery.  Faust's table ``__setitem__`` per record did the opposite order, one buffered send
        and two RocksDB writes (state, persisted offset) each.
        """
        from rocksdict import WriteBatch

        outbox = self._outbox("changelog")
        topic = self.matters.changelog_topic_name
        try:
            for k, (ev, state) in written.items():
                outbox.add(topic, ev.partition, k, state)
            sent = await outbox.submit()
        except BaseException:
            outbox.clear_queued()
            raise
        acked = await asyncio.gather(*(b.future for b in sent))
        newest: dict[int, int] = {}
        for b, meta in zip(sent, acked, strict=True):  # a batch's offset is its first record's
            last = meta.offset + b.count - 1
            if last > newest.get(b.partition, -1):
                newest[b.partition] = last
        batches: dict[int, Any] = {}
        for k, (ev, state) in written.items():
            partition = ev.partition
            wb = batches.get(partition)
            if wb is None:
                wb = batches[partition] = WriteBatch(raw_mode=True)
            wb.put(k, state)
        offset_key = store.offset_key
        for partition, wb in batches.items():
            wb.put(offset_key, str(newest[partition]).encode())  # Faust's persisted offset of this partition
            store._db_for_partition(partition).write(wb)

    def _stored_partitions(self) -> list[tuple[int, Iterator[tuple[bytes, bytes]]]]:
        """(partition, iterator of (key, stored state)) of every active partition of the ``matters`` table."""
        store = self.matters.data
        dbs = getattr(store, "_dbs", None)
        if dbs is None or not hasattr(store, "_visible_items"):  # not the RocksDB store: hash the keys
            groups: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, raw in self.matters.items():
                groups.setdefault(partition_for(key, self.settings.partitions), []).append((key, raw))
            return [(p, iter(items)) for p, items in sorted(groups.items())]
        actives = self.app.assignor.assigned_actives()
        topic = self.matters.changelog_topic_name
        return [(p, store._visible_items(db)) for p, db in sorted(dbs.items()) if TP(topic, p) in actives]

    async def _rebuild_index(self) -> None:
        """After recovery: index every matter this worker now owns, from the due in each stored state's header.

        Runs in the table's recovery callback, before Faust resumes the stream partitions.  It reads the
        stored partitions directly (the partition is known, no hashing), decodes only states without a
        header of this configuration, yields to the event loop every few thousand matters (/healthz and the
        consumer stay responsive) and stops if partitions are revoked meanwhile.  The open-matters gauge,
        which needs every state decoded, is refilled in the background once the worker is ready.
        """
        gen = self._generation
        started = time.monotonic()
        self.index.clear()
        if self._gauge_task is not None:
            self._gauge_task.cancel()
            self._gauge_task = None
        self.metrics.reset_open()
        self._touched = touched = set()
        tag = self.tag.encode()
        engine = self.engine
        n = decoded = 0
        try:
            for partition, items in self._stored_partitions():
                entries: list[tuple[str, int]] = []
                for key, raw in items:
                    if raw is None:
                        continue
                    n += 1
                    if not n % 5000:
                        await asyncio.sleep(0)
                        if gen != self._generation:
                            log.info("index rebuild stopped after %d matters: partitions revoked", n)
                            return
                    ok, due = stored_next_due(raw, tag)
                    matter_id = key.decode("utf-8", "replace")
                    if not ok:  # no header, or written under another configuration
                        decoded += 1
                        state = self.processor_state(raw)
                        if state is None:
                            continue
                        matter_id, due = state.matter_id, engine.next_due(state)
                    if due is not None:
                        entries.append((matter_id, due))
                self.index.load(partition, entries, skip=touched)
        finally:
            self._touched = None
        took = time.monotonic() - started
        settled = settle_gc()
        detail = (f"recovered {n} matters, {len(self.index)} with a pending deadline ({decoded} decoded, "
                  f"{took:.1f} s; collector settled in {settled:.2f} s)")  # fmt: skip
        self._set_state("ready", detail)
        self._gauge_task = asyncio.ensure_future(self._rebuild_gauge(gen))

    async def _rebuild_gauge(self, gen: int) -> None:
        """Count the recovered open matters in the gauge (decodes every state): in the background, yielding."""
        self._gauge_skip = skip = set()
        try:
            now = self.settings.now()
            n = 0
            for partition, items in self._stored_partitions():
                for _key, raw in items:
                    n += 1
                    if not n % 500:
                        await asyncio.sleep(0)
                        if gen != self._generation:
                            return
                    state = self.processor_state(raw) if raw is not None else None
                    if state is not None and state.matter_id not in skip:
                        self.metrics.track(state, now, partition=partition)
            log.info("open-matters gauge refilled from %d stored matters", n)
        except asyncio.CancelledError:
            raise
        except Exception:  # the gauge is not worth a crash
            log.exception("refilling the open-matters gauge failed")
        finally:
            if self._gauge_skip is skip:
                self._gauge_skip = None

    def prefetch_state(self, timeout: float = 900.0) -> dict[str, float]:
        """Before Faust starts: bring every local partition store of ``matters`` up to the changelog's end.

        Faust's recovery applies a changelog a record at a time (a few thousand per second); this reads it
        in bulk with its own consumer (no group) and writes each fetched chunk to the partition's RocksDB in
        one write batch together with Faust's persisted offset, the offset of the last record applied.
        Faust then recovers from there as usual, so the worst an interruption costs is the time spent:
        the store never holds a record without its offset.  Runs only when the stores are at least
        ``prefetch_min_records`` behind in total; reads every partition (the assignment is not known yet).
        """
        s = self.settings
        if s.prefetch_min_records <= 0:
            return {}
        store = self.matters.data  # created here, outside the loop below (a Service binds the loop it first sees)
        paths = {p: store.partition_path(p) for p in range(s.partitions)}
        loop = asyncio.new_event_loop()  # its own loop, closed after: Faust's is not touched
        handler = None
        if not logging.getLogger().handlers and not log.handlers:  # Faust sets up logging only when it starts
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        try:
            return loop.run_until_complete(
                asyncio.wait_for(self._prefetch(paths, store.rocksdb_options, store.offset_key), timeout)
            )
        except Exception as exc:  # Faust's recovery does the rest
            log.warning("state prefetch stopped (%r); Faust's recovery reads the rest", exc)
            return {}
        finally:
            loop.close()
            if handler is not None:
                log.removeHandler(handler)
                log.setLevel(logging.NOTSET)

    async def _prefetch(self, paths: dict[int, Path], options: Any, offset_key: bytes) -> dict[str, float]:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from rocksdict import WriteBatch

        s = self.settings
        started = time.monotonic()
        tps = [TopicPartition(s.changelog_topic, p) for p in range(s.partitions)]
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False,
                                    max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
                                    request_timeout_ms=60_000)  # fmt: skip
        await consumer.start()
        dbs: dict[int, Any] = {}
        try:
            consumer.assign(tps)
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            start: dict[Any, int] = {}
            for tp in tps:
                path = paths[tp.partition]
                path.parent.mkdir(parents=True, exist_ok=True)
                db = dbs[tp.partition] = options.open(path)
                persisted = db.get(offset_key)
                start[tp] = max(begin[tp], int(persisted) + 1 if persisted is not None else 0)
            behind = {tp: end[tp] - start[tp] for tp in tps if end[tp] > start[tp]}
            total = sum(behind.values())
            if total < s.prefetch_min_records:
                return {}
            log.info("state prefetch: local stores %d changelog records behind; reading them in bulk", total)
            for tp in behind:
                consumer.seek(tp, start[tp])
            consumer.pause(*[tp for tp in tps if tp not in behind])
            applied = 0
            pending = set(behind)
            while pending:
                got = await consumer.getmany(*pending, timeout_ms=1000, max_records=20_000)
                for tp, records in got.items():
                    if not records:
                        continue
                    batch = WriteBatch(raw_mode=True)
                    for r in records:
                        if r.value is None:
                            batch.delete(r.key)
                        else:
                            batch.put(r.key, r.value)
                    batch.put(offset_key, str(records[-1].offset).encode())  # Faust's persisted offset
                    dbs[tp.partition].write(batch)
                    applied += len(records)
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
                        consumer.pause(tp)
                await asyncio.sleep(0)
            took = time.monotonic() - started
            log.info("state prefetch: %d records applied in %.1f s", applied, took)
            return {"records": applied, "seconds": took}
        finally:
            for db in dbs.values():
                db.close()
            await consumer.stop()

    def processor_state(self, raw: bytes) -> Any:
        try:
            return decode_state(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable state skipped while indexing")
            return None


def settle_gc() -> float:
    """Collect cyclic garbage once, then freeze what is alive (``gc.freeze``); returns the seconds it took.

    Called when the worker becomes ready.  Everything alive then (modules, Faust's and aiokafka's objects,
    the deadline index just rebuilt) is long-lived; frozen, the collector's full runs no longer walk it.
    Before, collections cost the worker ~2.4 s of 14 s over 200,000 events, full ones up to 290 ms each;
    with this and a youngest generation of 10,000, 0.74 s in all (0005, "Sending in batches, orjson, the
    cyclic collector").  Frozen objects are still freed by reference counting; only cycles among them wait
    for the next ready (unfreeze, collect, freeze).
    """
    started = time.monotonic()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.monotonic() - started


def run_worker(settings: WorkerSettings, config: Config, loglevel: str = "INFO") -> None:
    """Create the topics (explicitly), then run the Faust worker until stopped."""
    from waterwatch.admin import ensure_topics

    ensure_topics(settings.bootstrap, settings.topic_specs())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.gc_gen0 > 0:
        _gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0, gen1, gen2)
    w = Worker(settings, config)
    w.prefetch_state()
    if settings.metrics_port > 0:  # 0 (or less): off
        # the port in use (a second worker on this host): serve on a free port, and say which
        try:
            server, taken = serve_metrics(w.metrics, settings.metrics_port, settings.metrics_addr)
            w.metrics_port = server.server_port
            if taken:
                log.warning("metrics port %s; /metrics is on http://%s:%d/metrics instead (also in /healthz): "
                            "point Prometheus there or give each worker its own --metrics-port", taken,
                            settings.metrics_addr, w.metrics_port)  # fmt: skip
        except OSError as exc:
            log.warning("metrics page not served: %s:%d: %s (set --metrics-port)", settings.metrics_addr,
                        settings.metrics_port, exc.strerror)  # fmt: skip
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    faust.Worker(w.app, loglevel=loglevel, quiet=True).execute_from_commandline()
