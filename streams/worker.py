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

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from kafka.partitioner.default import murmur2

from streams import faust_fixes
from streams.deadlines import DeadlineIndex
from streams.processor import Processor, encode_alert, encode_check
from waterwatch import __version__
from waterwatch.core.config import Config
from waterwatch.metrics import WorkerMetrics
from waterwatch.topics import ALERTS, CLOCK, DEADLETTER, EVENTS, TopicSpec

log = logging.getLogger("waterwatch.worker")

APP_ID = "waterwatch-worker"
TABLE = "matters"


@dataclass
class WorkerSettings:
    bootstrap: str
    partitions: int = 8
    app_id: str = APP_ID
    data_dir: Path = field(default_factory=lambda: Path(".waterwatch") / "worker")
    web_port: int = 6066
    timer_interval: float = 0.1
    rocksdb_block_cache_mb: int = 8
    rocksdb_write_buffer_mb: int = 4
    rocksdb_write_buffers: int = 2
    topic_prefix: str = "waterwatch"  # topics are {prefix}.events, .clock, .alerts, .deadletter
    metrics_port: int = field(default_factory=lambda: int(os.environ.get("WATERWATCH_METRICS_PORT", "9464")))
    metrics_addr: str = field(default_factory=lambda: os.environ.get("WATERWATCH_METRICS_ADDR", "127.0.0.1"))
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


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as every producer of matter-keyed records uses."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Worker:
    """The Faust app and the state around it (health, deadline index, counters)."""

    def __init__(self, settings: WorkerSettings, config: Config) -> None:
        self.settings = settings
        self.config = config
        self.engine = config.engine()
        self.processor = Processor(self.engine, settings.events_topic)
        self.index = DeadlineIndex()
        self.state = "starting"
        self.counters: dict[str, int] = {
            "events": 0, "duplicates": 0, "deadletters": 0, "alerts": 0, "checks": 0, "checks_sent": 0,
        }  # fmt: skip
        self.fire_lag: list[float] = []  # seconds between a stage's instant and its alert leaving
        self.metrics = WorkerMetrics.from_config(config)
        self.metrics.build_info(__version__)
        self.metrics.watch_calendar(config.calendar)
        self._last_offset: dict[int, int] = {}  # events partition -> last offset processed
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
        worker = self
        events_topic = s.events_topic

        @app.agent(source, concurrency=1)
        async def process(stream: faust.StreamT[Any]) -> None:
            async for event in stream.events():
                msg = event.message
                key: bytes | None = event.key
                now = s.now()
                stored = matters.get(key) if key is not None else None
                metrics = worker.metrics
                if msg.topic == events_topic:
                    worker.counters["events"] += 1
                    metrics.event("event")
                    worker._last_offset[msg.partition] = msg.offset
                    result = worker.processor.on_event(key, event.value, topic=msg.topic, partition=msg.partition,
                                                       offset=msg.offset, stored=stored, now=now)  # fmt: skip
                else:
                    worker.counters["checks"] += 1
                    metrics.event("check")
                    result = worker.processor.on_check(key, stored, now=now)
                if result.alerts:
                    for alert in result.alerts:
                        await alerts.send(key=alert.matter_id.encode(), value=encode_alert(alert))
                    await app.producer.flush()  # alerts are out before the state says they fired
                    sent = s.now()
                    worker.counters["alerts"] += len(result.alerts)
                    metrics.alerts(result.alerts)
                    if msg.topic != events_topic:  # fired by the timer: how late after its threshold
                        for a in result.alerts:
                            lag = max(0.0, sent - a.fired_at)
                            metrics.fire_lag(lag)
                            worker.fire_lag.append(lag)
                        if len(worker.fire_lag) > 100_000:
                            del worker.fire_lag[:50_000]
                if result.deadletter is not None:
                    worker.counters["deadletters"] += 1
                    metrics.rejected(result.error)
                    await deadletter.send(key=key, value=result.deadletter)
                if result.duplicate:
                    worker.counters["duplicates"] += 1
                    metrics.duplicate()
                if result.state is not None and key is not None:
                    matters[key] = result.state
                if result.decided:
                    metrics.deadlines_decided(result.decided)
                if result.new_state is not None:
                    metrics.track(result.new_state, now, partition=msg.partition)
                if result.matter_id is not None:
                    worker.index.set(result.matter_id, msg.partition, result.next_due)

        @app.timer(interval=s.timer_interval, on_leader=False)
        async def tick() -> None:
            if worker.state != "ready":
                return
            for matter_id, partition, due in worker.index.pop_due(s.now()):
                worker.counters["checks_sent"] += 1
                await clock.send(key=matter_id.encode(), value=encode_check(matter_id, due), partition=partition)

        @app.timer(interval=5.0, on_leader=False)
        async def lag() -> None:
            worker._report_consumer_lag()

        @app.task
        async def started() -> None:
            log.info("worker starting: %d partitions, time scale %s, topics %s.*", s.partitions,
                     worker.config.policy.time_scale, s.topic_prefix)  # fmt: skip

        @matters.on_recover
        async def recovered() -> None:
            # Faust calls this before it resumes the stream partitions: position them now, so
            # nothing is fetched from a wrong offset and dropped (see streams/faust_fixes.py)
            try:
                await app.consumer.perform_seek()
            except Exception as exc:  # never let positioning stop the index rebuild
                log.warning("seek before resuming failed (%s); Faust seeks again after resuming", exc)
            worker._rebuild_index()

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            ready = worker.state == "ready"
            body = {"status": worker.state, "ready": ready, "matters_indexed": len(worker.index),
                    **worker.counters}  # fmt: skip
            return web.json(body, status=200 if ready else 503)

        @app.on_partitions_revoked.connect
        async def revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
            parts = {tp.partition for tp in revoked if tp.topic in (s.events_topic, s.clock_topic)}
            dropped = worker.index.drop_partitions(parts)
            worker.metrics.drop_partitions(parts)
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

    def _rebuild_index(self) -> None:
        """After recovery: index every matter this worker now owns (and count the open ones)."""
        self.index.clear()
        self.metrics.reset_open()
        n = 0
        parts = self.settings.partitions
        now = self.settings.now()
        for key, raw in self.matters.items():
            if raw is None:
                continue
            state = self.processor_state(raw)
            if state is None:
                continue
            partition = partition_for(key, parts)
            self.index.set(state.matter_id, partition, self.engine.next_due(state))
            self.metrics.track(state, now, partition=partition)
            n += 1
        self._set_state("ready", f"recovered {n} matters, {len(self.index)} with a pending deadline")

    def processor_state(self, raw: bytes) -> Any:
        from streams.processor import decode_state

        try:
            return decode_state(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable state skipped while indexing")
            return None


def run_worker(settings: WorkerSettings, config: Config, loglevel: str = "INFO") -> None:
    """Create the topics (explicitly), then run the Faust worker until stopped."""
    from waterwatch.admin import ensure_topics

    ensure_topics(settings.bootstrap, settings.topic_specs())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    w = Worker(settings, config)
    if settings.metrics_port:
        try:
            w.metrics.serve(settings.metrics_port, settings.metrics_addr)
            log.info("metrics on http://%s:%d/metrics", settings.metrics_addr, settings.metrics_port)
        except OSError as exc:
            log.warning("metrics page not served: %s:%d: %s (set --metrics-port)", settings.metrics_addr,
                        settings.metrics_port, exc.strerror)  # fmt: skip
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    faust.Worker(w.app, loglevel=loglevel, quiet=True).execute_from_commandline()
