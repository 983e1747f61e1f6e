"""``waterwatch notifier``: alerts in, messages out, each delivered once (in effect).

    waterwatch.alerts ──► agent ``plan`` ──► waterwatch.notifier.jobs (key = recipient)
    waterwatch.notifier.jobs ──► agent ``deliver`` (concurrency 1)
          │  table ``deliveries`` (RocksDB + changelog, key = delivery id)
          ├──► provider (Twilio / SendGrid / WeCom robot / console / file), in a thread pool
          ├──► waterwatch.deliveries (one record per attempt, outcome and receipt)
          └──► waterwatch.deadletter (given up, with the reason)
    timer ──► ``due`` jobs for deliveries waiting (back-off, Retry-After, quiet hours, merge window)
    /receipts/* (signed provider webhooks) ──► ``receipt`` jobs; inbound STOP/START ──► consent topic

Jobs are keyed by recipient, so one agent owns everything sent to one phone,
mailbox or WeCom robot: its rate limit, its merge window and its records
(docs/decisions/0007-notifier.md). The transitions are computed by the pure
:mod:`notifiers.delivery`; this module stores them, calls providers, and
schedules. The intent of every provider call is in Kafka (producer flushed)
before the call is made, so a crash between call and record leaves an
``intent`` that the next reader turns into ``in_doubt``: reported, not repeated.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import faust

from notifiers import delivery as dv
from notifiers import fanout as fo
from notifiers.channels.base import Message, SendError, SendOutcome
from notifiers.consent import ConsentBook, ConsentRecord
from notifiers.ratelimit import TokenBucket, merge_markdown
from notifiers.retry import useful_until
from notifiers.routing import Routing, delivery_id
from notifiers.templating import Rendered, Renderer, TemplateError
from notifiers.topicreader import CompactedTopicReader
from streams.worker import partition_for
from waterwatch import __version__
from waterwatch.core.config import Config
from waterwatch.masking import mask_text
from waterwatch.metrics import NotifierMetrics
from waterwatch.topics import ALERTS, DEADLETTER, DELIVERIES, RESIDENTS, TopicSpec

log = logging.getLogger("waterwatch.notifier")

APP_ID = "waterwatch-notifier"
TABLE = "deliveries"
CONSENT_TOPIC_SUFFIX = "consent"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class NotifierSettings:
    bootstrap: str
    partitions: int = 8
    app_id: str = APP_ID
    data_dir: Path = field(default_factory=lambda: Path(".waterwatch") / "notifier")
    web_port: int = 6068
    topic_prefix: str = "waterwatch"
    timer_interval: float = 0.2
    merge_window: float | None = None
    """Seconds several WeCom alerts for one group wait to be merged (None: routing.yaml's value)."""
    sink_file: Path | None = None
    public_url: str = field(default_factory=lambda: os.environ.get("WATERWATCH_PUBLIC_URL", ""))
    """Base URL providers call back (receipts); empty: no status callbacks are requested."""
    metrics_port: int = field(default_factory=lambda: int(os.environ.get("WATERWATCH_NOTIFIER_METRICS_PORT", "9465")))
    metrics_addr: str = field(default_factory=lambda: os.environ.get("WATERWATCH_METRICS_ADDR", "127.0.0.1"))
    send_threads: int = 8
    max_outstanding: int = field(default_factory=lambda: int(os.environ.get("WATERWATCH_NOTIFIER_OUTSTANDING", "16")))
    """Provider calls between their intent and their result at any time: throughput, and the most a crash
    can leave in doubt."""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    now: Callable[[], float] = time.time
    crash_after_send: bool = field(default_factory=lambda: os.environ.get("WATERWATCH_TEST_CRASH_AFTER_SEND") == "1")
    """Tests only: exit hard right after a provider call, before its outcome is recorded."""

    @property
    def alerts_topic(self) -> str:
        return f"{self.topic_prefix}.alerts"

    @property
    def jobs_topic(self) -> str:
        return f"{self.topic_prefix}.notifier.jobs"

    @property
    def deliveries_topic(self) -> str:
        return f"{self.topic_prefix}.deliveries"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter"

    @property
    def consent_topic(self) -> str:
        return f"{self.topic_prefix}.{CONSENT_TOPIC_SUFFIX}"

    @property
    def residents_topic(self) -> str:
        return f"{self.topic_prefix}.residents"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-{TABLE}-changelog"

    def topic_specs(self) -> list[TopicSpec]:
        n = self.partitions
        return [
            TopicSpec(self.alerts_topic, ALERTS.key, ALERTS.description, ALERTS.messages, n, ALERTS.configs),
            TopicSpec(self.jobs_topic, "recipient key", "deliveries to make, due and receipt commands", ("Job",), n,
                      {"retention.ms": str(7 * 24 * 3600 * 1000)}),
            TopicSpec(self.deliveries_topic, DELIVERIES.key, DELIVERIES.description, DELIVERIES.messages, None,
                      DELIVERIES.configs),
            TopicSpec(self.deadletter_topic, DEADLETTER.key, DEADLETTER.description, DEADLETTER.messages, 1,
                      DEADLETTER.configs),
            TopicSpec(self.consent_topic, "consent key (hash of the address)", "STOP/START per address and channel",
                      ("ConsentRecord",), 1, {"cleanup.policy": "compact"}),
            replace(RESIDENTS, name=self.residents_topic),
            TopicSpec(self.changelog_topic, "delivery id", "changelog of the deliveries table", ("Delivery",), n,
                      {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
        ]  # fmt: skip


class Pending:
    """Deliveries waiting for a time, per partition: a heap with lazy deletion."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._entries: dict[str, tuple[float, str, int, str]] = {}  # id -> (at, recipient, partition, channel)
        self.by_recipient: dict[str, set[str]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._entries)

    def set(self, d: dv.Delivery, partition: int) -> None:
        self.discard(d.delivery_id)
        if d.status not in ("waiting", "in_doubt") or d.next_at is None:
            return
        self._entries[d.delivery_id] = (d.next_at, d.recipient_key, partition, d.channel)
        self.by_recipient[d.recipient_key].add(d.delivery_id)
        heapq.heappush(self._heap, (d.next_at, d.delivery_id))

    def discard(self, delivery_id: str) -> None:
        entry = self._entries.pop(delivery_id, None)
        if entry is not None:
            ids = self.by_recipient.get(entry[1])
            if ids is not None:
                ids.discard(delivery_id)
                if not ids:
                    del self.by_recipient[entry[1]]

    def pop_due(self, now: float) -> list[tuple[str, str, int, float]]:
        """(delivery id, recipient key, partition, at) of every entry due by ``now``; they leave the heap."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            at, did = heapq.heappop(self._heap)
            entry = self._entries.get(did)
            if entry is None or entry[0] != at:
                continue
            out.append((did, entry[1], entry[2], at))
        return out

    def drop_partitions(self, parts: AbstractSet[int]) -> int:
        gone = [did for did, e in self._entries.items() if e[2] in parts]
        for did in gone:
            self.discard(did)
        return len(gone)

    def clear(self) -> None:
        self._heap.clear()
        self._entries.clear()
        self.by_recipient.clear()


class ConsentReader(CompactedTopicReader):
    """Every instance's copy of the compacted consent topic (STOP/START per address and channel)."""

    name = "consent"

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.book = ConsentBook()

    def allowed(self, channel: str, address: str) -> bool:
        try:
            return self.book.allowed(channel, address)
        except ValueError:  # an address that does not normalise: the provider will refuse it
            return True

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        try:
            self.book.apply(ConsentRecord.from_json(value))
        except ValueError:
            log.warning("unreadable consent record skipped")


class Notifier:
    """The Faust app and what it keeps in memory (pending index, rate buckets, consent)."""

    def __init__(self, settings: NotifierSettings, config: Config, routing: Routing, senders: Any,
                 renderer: Renderer | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.config = config
        self.routing = routing
        self.senders = senders
        self.renderer = renderer or Renderer(units=config.units, policy=config.policy)
        self.pending = Pending()
        self.state = "starting"
        self.rng = random.Random()
        self.buckets: dict[str, TokenBucket] = {}
        self.provider_buckets: dict[str, TokenBucket] = {
            ch: b for ch, limits in routing.providers.items() if (b := limits.bucket()) is not None
        }
        """Per channel: the provider's call rate (``providers:`` in routing.yaml), paced in :meth:`_call`."""
        email = routing.providers.get("email")
        self.email_batch = email.batch if email is not None else 1
        self.batch_wait = email.batch_wait if email is not None else 1.0
        self.recovered_intents: set[str] = set()
        """Deliveries the recovery found in ``intent``: their due job decides in doubt (any other due is stale)."""
        self.batches: dict[tuple[int, str, str, int], dict[str, None]] = {}
        """(partition, notice alert id, language, attempt) → resident e-mails waiting to share one request."""
        self.merge_window = settings.merge_window if settings.merge_window is not None else routing.wecom.merge_window
        self.consent = ConsentReader(settings.bootstrap, settings.consent_topic)
        self.residents = fo.ResidentsReader(settings.bootstrap, settings.residents_topic)
        self.notices: dict[str, fo.Progress] = {}
        """Resident notices this instance expanded or delivers for (progress, coverage)."""
        self.pool = ThreadPoolExecutor(max_workers=settings.send_threads, thread_name_prefix="send")
        self.outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._rendered: dict[tuple[str, str, str], Rendered] = {}
        self._slots = asyncio.Semaphore(settings.max_outstanding)
        self._inflight: set[asyncio.Future[None]] = set()
        self.in_doubt_counts: dict[str, int] = defaultdict(int)
        self.metrics = NotifierMetrics.from_config(config)
        self.metrics.build_info(__version__)
        self.counters: dict[str, int] = defaultdict(int)
        self.forged = 0
        self.app = self._build()

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self.state = state
            log.info("notifier %s%s", state, f": {detail}" if detail else "")

    # ------------------------------------------------------------------ app

    def _build(self) -> faust.App:
        from streams import faust_fixes

        faust_fixes.apply()  # the worker's fixes: never-committed partitions, producer-buffer flush
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
            web_bind="127.0.0.1" if not os.environ.get("WATERWATCH_WEB_BIND") else os.environ["WATERWATCH_WEB_BIND"],
            web_port=s.web_port,
            web_host="127.0.0.1",
            broker_commit_every=100,
            broker_commit_interval=1.0,
            table_standby_replicas=0,
        )
        alerts_t = app.topic(s.alerts_topic, key_serializer="raw", value_serializer="raw")
        jobs_t = app.topic(s.jobs_topic, key_serializer="raw", value_serializer="raw", partitions=s.partitions)
        deliveries_t = app.topic(s.deliveries_topic, key_serializer="raw", value_serializer="raw")
        deadletter_t = app.topic(s.deadletter_topic, key_serializer="raw", value_serializer="raw", partitions=1)
        consent_t = app.topic(s.consent_topic, key_serializer="raw", value_serializer="raw", partitions=1)
        table = app.Table(TABLE, default=None, partitions=s.partitions, key_type=bytes, value_type=bytes,
                          options={"block_cache_size": 8 << 20, "block_cache_compressed_size": 0,
                                   "write_buffer_size": 4 << 20, "max_write_buffer_number": 2,
                                   "max_open_files": 256})  # fmt: skip
        self.table, self.jobs_t, self.deliveries_t, self.deadletter_t = table, jobs_t, deliveries_t, deadletter_t
        self.alerts_t = alerts_t
        self.consent_t = consent_t
        n = self

        @app.agent(alerts_t, concurrency=1)
        async def plan(stream: faust.StreamT[Any]) -> None:
            async for value in stream:
                await n.on_alert(value)

        @app.agent(jobs_t, concurrency=1)
        async def deliver(stream: faust.StreamT[Any]) -> None:
            async for event in stream.events():
                await n.on_job(event.key, event.value, event.message.partition)

        @app.task
        async def sender() -> None:
            await n._sender_loop()

        @app.timer(interval=s.timer_interval, on_leader=False)
        async def tick() -> None:
            if n.state != "ready":
                return
            for did, recipient, _partition, at in n.pending.pop_due(s.now()):
                await jobs_t.send(key=recipient.encode(), value=_job("due", id=did, at=at))

        @app.timer(interval=10.0, on_leader=False)
        async def gauges() -> None:
            n._report_in_doubt()

        @app.timer(interval=5.0, on_leader=False)
        async def notice_progress() -> None:
            await n._report_notices()

        @table.on_recover
        async def recovered() -> None:
            await n._rebuild()

        @app.on_partitions_revoked.connect
        async def revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
            parts = {tp.partition for tp in revoked if tp.topic == s.jobs_topic}
            n.pending.drop_partitions(parts)
            for key in [k for k in n.batches if k[0] in parts]:
                del n.batches[key]
            n._set_state("rebalancing", f"{len(parts)} partition(s) revoked")

        @app.on_partitions_assigned.connect
        async def assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
            n._set_state("recovering", f"partitions {sorted({tp.partition for tp in assigned})}")

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            directory = n.residents.ready.is_set()
            ready = n.state == "ready" and directory
            status = n.state if directory or n.state != "ready" else "loading residents"
            return web.json({"status": status, "ready": ready, "pending": len(n.pending),
                             "households": len(n.residents.directory), **n.counters},
                            status=200 if ready else 503)  # fmt: skip

        from notifiers.receipts import install

        install(app, self)
        return app

    # ------------------------------------------------------------- planning

    async def on_alert(self, raw: bytes) -> None:
        """Plan the deliveries of one alert: one ``deliver`` job per recipient and channel."""
        now = self.settings.now()
        try:
            alert = json.loads(raw)
            plan = self.routing.plan(alert)
            until = useful_until(alert, self.routing.useful)
        except Exception as exc:  # a bad alert must not stop planning: dead-letter it
            self.counters["bad_alerts"] += 1
            await self._deadletter(None, raw, "bad_alert", f"alert not routable: {mask_text(str(exc))[:300]}", now)
            return
        if plan.empty:
            self.counters["unroutable"] += 1
            await self._deadletter(None, raw, "no_recipient", "; ".join(plan.unresolved) or "nobody to tell", now)
            return
        for t in plan.targets:
            d = dv.new(delivery_id=delivery_id(plan.alert_id, t.recipient_key, t.channel), alert=alert,
                       recipient_key=t.recipient_key, channel=t.channel, address=t.address, language=t.language,
                       role=t.role, urgent=plan.urgent, useful_until=until, now=now, mentions=t.mentions,
                       fallback=t.fallback, fallback_address=t.fallback_address,
                       fallback_key=t.fallback_key)  # fmt: skip
            await self.jobs_t.send(
                key=t.recipient_key.encode(), value=b'{"op":"deliver","delivery":' + d.to_json() + b"}"
            )
        self.counters["alerts"] += 1
        self.counters["planned"] += len(plan.targets)
        if plan.residents:
            await self._fan_out(alert, plan.alert_id, until, now)

    async def _fan_out(self, alert: dict[str, Any], alert_id: str, until: float, now: float) -> None:
        """One ``deliver`` job per household of the outage area and channel, keyed ``resident:{account}``.

        Streams the sorted account list and yields to the loop regularly; the
        producer is flushed before returning, so the alert's offset is committed
        only once every job is in Kafka.  Re-reading the alert plans the same
        delivery ids: the deliver agent skips those it already has.
        """
        area = fo.outage_area(alert)
        if area is None:
            self.counters["notices_without_area"] += 1
            await self._deadletter(None, json.dumps(alert, ensure_ascii=False).encode(), "no_area",
                                   "resident notice without context.area", now)  # fmt: skip
            return
        if not self.residents.ready.is_set():
            log.info("notice %s waits for the resident directory to catch up", alert_id)
            while not self.residents.ready.is_set():
                await asyncio.sleep(0.2)
        kind = fo.notice_kind(alert)
        urgent = fo.is_urgent(kind)
        old_notice = fo.supersedes(alert)
        t0 = time.perf_counter()
        accounts = self.residents.accounts(area)
        held, why = fo.quiet_gate(alert, self.routing.quiet_hours("residents"), now)
        if why:
            log.info("notice %s: %s%s", alert_id, why, f" (held until {_iso(held)})" if held is not None else "")
        prog = self.notices.get(alert_id)
        first = prog is None or not prog.expanded
        if prog is None:
            prog = self.notices[alert_id] = fo.Progress(alert_id, fo.unit_of(alert), kind, fo.starts_at(alert))
        prog.matter_id = str(alert.get("subject") or (alert.get("data") or {}).get("matter_id") or "") or None
        households = jobs = 0
        last = None
        counted = False
        for i, r in enumerate(fo.expand(self.residents.directory, accounts)):
            if r.account != last:
                last, counted = r.account, False
            if r.consent and not counted:
                households += 1
                counted = True
            key = fo.recipient_key(r.account)
            d = dv.new(delivery_id=delivery_id(alert_id, key, r.channel), alert=alert, recipient_key=key,
                       channel=r.channel, address=r.address, language=r.language, role=fo.ROLE, urgent=urgent,
                       useful_until=until, now=now)  # fmt: skip
            if old_notice is not None:
                d.supersedes = old_notice
            await self.jobs_t.send(key=key.encode(), value=b'{"op":"deliver","delivery":' + d.to_json() + b"}")
            jobs += 1
            if i % 500 == 499:
                await asyncio.sleep(0)
        await self.app.producer.flush()
        prog.households, prog.jobs, prog.expanded = households, jobs, True
        took = time.perf_counter() - t0
        if first:
            self.metrics.households_targeted.labels(self.metrics.unit(prog.unit), self.metrics.notice(kind)).inc(
                prog.households
            )
        self.counters["notices"] += 1
        self.counters["resident_jobs"] += jobs
        log.info("notice %s (%s): %d households in the area, %d targeted, %d jobs planned in %.1f s",
                 alert_id, kind, len(accounts), households, jobs, took)  # fmt: skip

    # ------------------------------------------------------------- delivery

    def _get(self, did: str) -> dv.Delivery | None:
        raw = self.table.get(did.encode())
        return None if raw is None else dv.Delivery.from_json(raw)

    def _put(self, d: dv.Delivery, partition: int) -> None:
        self.table[d.delivery_id.encode()] = d.to_json()
        self.pending.set(d, partition)
        if d.role == fo.ROLE and d.terminal:
            self._notice_outcome(d)

    def _notice_outcome(self, d: dv.Delivery) -> None:
        prog = self.notices.get(d.alert_id)
        if prog is None:  # planned by another instance (or before a restart): progress of our share only
            prog = self.notices[d.alert_id] = fo.Progress(d.alert_id, fo.unit_of(d.alert), fo.notice_kind(d.alert),
                                                          fo.starts_at(d.alert))  # fmt: skip
        prog.outcome(d.delivery_id, d.status, fo.account_of(d.recipient_key))

    async def on_job(self, key: bytes | None, raw: bytes, partition: int) -> None:
        now = self.settings.now()
        try:
            job = json.loads(raw)
            op = job["op"]
        except (ValueError, KeyError, TypeError):
            await self._deadletter(key, raw, "bad_job", "unreadable notifier job", now)
            return
        if op == "deliver":
            d = dv.Delivery.from_dict(job["delivery"])
            existing = self._get(d.delivery_id)
            if existing is not None:
                if existing.status == "intent":
                    # read again after a restart: the recovery scheduled a check of this intent behind any
                    # result still in the topic (see _rebuild), so it is not declared in doubt too early
                    self.counters["duplicates"] += 1
                    return
                await self._seen_again(existing, partition, now)
                return
            await self._advance(d, partition, now)
        elif op == "due":
            raw0 = self.table.get(str(job["id"]).encode())
            if raw0 is None or not any(m in raw0 for m in _DUE_STATUSES):
                self.counters["stale_due"] += 1  # sent in a batch or a merge meanwhile: no need to decode it
                return
            d0 = dv.Delivery.from_json(raw0)
            if d0.status == "intent":
                if d0.delivery_id in self.recovered_intents:  # found by the recovery: the call's outcome is lost
                    self.recovered_intents.discard(d0.delivery_id)
                    await self._seen_again(d0, partition, now)
                else:  # a due time that passed while the delivery was being sent (e.g. in a batch): stale
                    self.counters["stale_due"] += 1
            elif d0.status == "waiting" and d0.next_at is not None and d0.next_at <= now + 0.001:
                await self._advance(d0, partition, now)
            elif d0.status == "in_doubt" and d0.next_at is not None and d0.next_at <= now + 0.001:
                await self._settle(d0, partition, now)
        elif op == "result":
            await self._on_result(job, partition, now)
        elif op == "receipt":
            d0 = self._get(job["id"])
            if d0 is None:
                self.counters["receipts_unknown"] += 1
                return
            d1 = dv.receipt(d0, now, str(job.get("status", "")), job.get("error"))
            if d1 is not None:
                if d0.status in ("intent", "in_doubt"):
                    self._settled(d0, d1, "a receipt")
                self._put(d1, partition)
                await self._record(d1, now)
            self.counters["receipts"] += 1

    def _can_settle(self, channel: str) -> bool:
        """Whether the provider of ``channel`` can tell us what it got: Twilio lists its messages; SendGrid
        reports every message it accepted through its signed event webhook (when its key is configured)."""
        sender = self.senders.get(channel)
        if channel == "sms":
            return callable(getattr(sender, "find", None))
        if channel == "email":
            return getattr(sender, "provider", "") == "sendgrid" and bool(
                self.settings.env.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
            )
        return False

    async def _seen_again(self, d: dv.Delivery, partition: int, now: float) -> None:
        if d.status == "intent":
            settle = self._can_settle(d.channel)
            check_at = now + self.routing.retry_policy(d.channel).in_doubt_check if settle else None
            d1 = dv.recover(d, now, check_at)
            self._put(d1, partition)
            await self._record(d1, now)
            self.metrics.delivery(d.channel, self._provider(d.channel), "in_doubt")
            self.counters["in_doubt"] += 1
            self.in_doubt_counts[d.channel] += 1
            if check_at is not None:
                log.warning("delivery %s (%s, %s) in doubt: the process stopped during the provider call; "
                            "settled with the provider's evidence at %s (not sent again unless unknown to it)",
                            d.delivery_id, d.channel, d.recipient_key, _iso(check_at))  # fmt: skip
            else:
                log.warning("delivery %s (%s, %s) in doubt: the process stopped during the provider call; "
                            "not re-sent", d.delivery_id, d.channel, d.recipient_key)  # fmt: skip
        else:
            self.metrics.delivery(d.channel, self._provider(d.channel), "skipped")
            self.counters["duplicates"] += 1
            if d.role == fo.ROLE and d.terminal:
                self._notice_outcome(d)

    def _settled(self, before: dv.Delivery, after: dv.Delivery, how: str) -> None:
        """Bookkeeping when an ``intent`` / ``in_doubt`` record is settled as sent, delivered or undelivered."""
        if before.status == "in_doubt":
            self.in_doubt_counts[before.channel] = max(0, self.in_doubt_counts[before.channel] - 1)
            self.counters["in_doubt_resolved"] += 1
            log.info("delivery %s (%s) no longer in doubt: %s by %s", before.delivery_id, before.channel,
                     after.status, how)  # fmt: skip
        else:
            self.counters["intent_settled_by_receipt"] += 1

    async def _settle(self, d: dv.Delivery, partition: int, now: float) -> None:
        """An in-doubt delivery at its check time, no receipt so far: ask the provider, else send it again."""
        sender = self.senders.get(d.channel)
        provider = self._provider(d.channel)
        if d.channel == "sms" and callable(getattr(sender, "find", None)):
            try:
                body = self._render(d.alert, d.channel, d.language).text or ""
                found = await asyncio.get_running_loop().run_in_executor(
                    self.pool,
                    sender.find,
                    d.address,
                    body,
                    d.created_at,  # type: ignore[union-attr]
                )
            except (SendError, TemplateError, ValueError, KeyError) as exc:
                retry = dv.recover(d, now, now + 30)
                self._put(retry, partition)
                log.warning("delivery %s still in doubt: cannot ask %s now (%s); asking again in 30 s",
                            d.delivery_id, provider, type(exc).__name__)  # fmt: skip
                return
            if found is not None:
                sid, status = found
                ok = dv.confirmed(d, now, provider, sid)
                final = dv.receipt(ok, now, status) if status in dv.RECEIPT_FINAL_BAD | dv.RECEIPT_FINAL_OK else None
                r = final or ok
                self._settled(d, r, f"{provider}'s list of messages")
                self.metrics.delivery(d.channel, provider, "sent")
                self._put(r, partition)
                await self._record(r, now)
                return
        # no receipt and not listed by the provider: the request never arrived
        self.in_doubt_counts[d.channel] = max(0, self.in_doubt_counts[d.channel] - 1)
        self.counters["in_doubt_resent"] += 1
        log.warning("delivery %s (%s, %s) was in doubt and is unknown to %s: sending it now",
                    d.delivery_id, d.channel, d.recipient_key, provider)  # fmt: skip
        await self._advance(dv.resend(d, now), partition, now)

    async def _correct(self, d: dv.Delivery, partition: int, now: float) -> bool:
        """A correction goes only where the notice it supersedes may have arrived; that notice, if it has not
        been sent yet, is superseded (a stale notice is never sent). True: send the correction."""
        assert d.supersedes is not None
        old = self._get(delivery_id(d.supersedes, d.recipient_key, d.channel))
        if old is not None and old.status in dv.NOTIFIED:
            return True
        if old is not None and not old.terminal:
            stale = dv.superseded(old, now, d.alert_id)
            self.pending.discard(old.delivery_id)
            self._put(stale, partition)
            await self._record(stale, now)
            self.counters["superseded"] += 1
        why = "no earlier notice reached this household on this channel"
        skipped = replace(d, status="skipped", reason=why, updated_at=now)
        self._put(skipped, partition)
        await self._record(skipped, now)
        self.counters["corrections_skipped"] += 1
        return False

    def _provider(self, channel: str) -> str:
        sender = self.senders.get(channel)
        return getattr(sender, "provider", "console")

    async def _advance(self, d: dv.Delivery, partition: int, now: float) -> None:
        """Gates, then rate limit and merge, then the provider call."""
        if d.supersedes and d.status == "new" and not await self._correct(d, partition, now):
            return
        if d.role == fo.ROLE:
            quiet_until, why = fo.quiet_gate(d.alert, self.routing.quiet_hours("residents"), now)
            account = fo.account_of(d.recipient_key)
            allowed = self.consent.allowed(d.channel, d.address) and (
                account is None or self.residents.consents(account, d.channel)
            )
        else:
            quiet = self.routing.quiet_hours("units")
            quiet_until = quiet.release_at(now, False)
            why = quiet.why(now) if quiet_until is not None else ""
            allowed = self.consent.allowed(d.channel, d.address) if d.channel in ("sms", "email") else True
        gates = dv.Gates(consent=allowed, quiet_until=quiet_until, quiet_reason=why)
        g = dv.gate(d, now, gates)
        if g.status != "ready":
            self._put(g, partition)
            await self._record(g, now)
            if g.status == "waiting":
                log.info("delivery %s held until %s: %s", g.delivery_id, _iso(g.next_at or now), g.reason)
            elif g.status == "skipped":
                self.metrics.delivery(d.channel, self._provider(d.channel), "skipped")
            elif g.status == "expired":
                self.metrics.delivery(d.channel, self._provider(d.channel), "dead_lettered")
                await self._deadletter(d.recipient_key.encode(), d.to_json(), "expired", g.reason or "", now)
            return
        if d.urgent and quiet_until is not None:
            log.info("delivery %s is urgent: sent during quiet hours (%s)", d.delivery_id, why)
        if g.channel == "email" and g.role == fo.ROLE and self.email_batch > 1 and self._batches_email():
            batch = self._batch(g, d, partition, now)
            if batch is not None:
                await self._send(batch, partition, now)
            return
        group = [g]
        if g.channel == "wecom":
            # a fresh WeCom alert waits for the merge window; a due one takes every waiting one along
            if g.created_at == d.created_at and d.status == "new" and self.merge_window > 0:
                w = dv.wait(g, now, now + self.merge_window, "merge window")
                self._put(w, partition)
                return
            others = [self._get(i) for i in sorted(self.pending.by_recipient.get(g.recipient_key, ()))]
            group += [
                o
                for o in others
                if o is not None
                and o.status == "waiting"
                and o.channel == "wecom"
                and o.delivery_id != g.delivery_id
                and o.reason in ("merge window", "rate limited")
            ]
            bucket = self.buckets.get(g.recipient_key)
            if bucket is None:
                bucket = self.buckets[g.recipient_key] = self.routing.wecom.bucket()
            wait_s = bucket.take(now)
            if wait_s > 0:
                for m in group:
                    self._put(dv.wait(m, now, now + wait_s, "rate limited"), partition)
                self.counters["rate_limited_local"] += 1
                return
        await self._send(group, partition, now)

    def _batches_email(self) -> bool:
        return callable(getattr(self.senders.get("email"), "send_batch", None))

    def _batch(self, g: dv.Delivery, d: dv.Delivery, partition: int, now: float) -> list[dv.Delivery] | None:
        """A resident e-mail joins its notice's batch (same partition, language and attempt); the batch to send now.

        The batch goes when it holds ``providers.email.batch`` e-mails, or when a member's
        wait (``batch_wait``) ends; until then each member waits as a ``batch`` record, so a
        restart finds it again.  One partition only: every record of the batch, and the
        result of its request, stay with the instance that owns them.
        """
        key = (partition, g.alert_id, g.language, g.attempt)
        members = self.batches.setdefault(key, {})
        members[g.delivery_id] = None
        due = d.status == "waiting" and d.reason == "batch"
        if len(members) < self.email_batch and not due:
            self._put(dv.wait(g, now, now + self.batch_wait, "batch"), partition)
            return None
        group = [g]
        del members[g.delivery_id]
        for did in list(members):
            if len(group) >= self.email_batch:
                break
            del members[did]
            m = self._get(did)
            if m is not None and m.status == "waiting" and m.reason == "batch" and m.attempt == g.attempt:
                self.pending.discard(did)
                group.append(m)
        if not members:
            self.batches.pop(key, None)
        return group

    async def _send(self, group: list[dv.Delivery], partition: int, now: float) -> None:
        lead = group[0]
        batch: list[Message] | None = None
        try:
            message, fits = self._message(group)
            if lead.channel == "email" and len(group) > 1:
                batch = [message] + [self._message([m])[0] for m in group[1:]]
                fits = len(group)
            group = group[:fits]  # the rest of a WeCom merge waits for the next message
        except (TemplateError, ValueError, KeyError) as exc:
            for m in group:
                self.metrics.delivery(m.channel, self._provider(m.channel), "failed")
                f = dv.failed(m, now, provider="template", action="permanent", at=None, error=str(exc)[:300])
                self._put(f, partition)
                await self._record(f, now)
                await self._deadletter(m.recipient_key.encode(), m.to_json(), "template", f.error or "", now)
            return
        # at most `max_outstanding` calls between intent and result: what a crash can leave in doubt
        await self._slots.acquire()
        started = [dv.begin(m, now) for m in group]
        for m in started:
            self._put(m, partition)
        # the sender task flushes (every intent durable) before it calls the provider
        notice = lead.alert_id if lead.role == fo.ROLE else None
        self.outbox.put_nowait(_Outgoing(message, [m.delivery_id for m in started], lead.attempt + 1, notice, batch))

    async def _sender_loop(self) -> None:
        """Take what the agent queued, flush once (the intents are in Kafka), then call providers concurrently.

        The outcome goes back through the jobs topic (a ``result`` job on the recipient's partition), so only
        the deliver agent writes delivery records (DESIGN.md principle 2). A crash after a call and before its
        result job is durable leaves the record in ``intent``: in doubt after recovery, never re-sent.
        """
        while True:
            batch = [await self.outbox.get()]
            while not self.outbox.empty() and len(batch) < 500:
                batch.append(self.outbox.get_nowait())
            while True:  # no call before its intent is in Kafka; a failed flush is retried, never skipped
                try:
                    await self.app.producer.flush()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("flush before %d provider call(s) failed (%s); retrying", len(batch), exc)
                    await asyncio.sleep(0.5)
            for out in batch:
                task = asyncio.ensure_future(self._call(out))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _call(self, out: _Outgoing) -> None:
        try:
            message = out.message
            sender = self.senders[message.channel]
            provider = getattr(sender, "provider", "console")
            bucket = self.provider_buckets.get(message.channel)
            while bucket is not None and (wait := bucket.take(time.monotonic())) > 0:
                await asyncio.sleep(wait)  # the provider's rate: one token per call (an e-mail batch is one call)
            t0 = time.perf_counter()
            results: list[tuple[list[str], dict[str, Any]]] = []
            try:
                if out.batch:
                    answers = await asyncio.get_running_loop().run_in_executor(self.pool, sender.send_batch, out.batch)
                    for a in answers:
                        results.append((list(a.delivery_ids), _result(a.outcome, a.error, provider)))
                else:
                    outcome: SendOutcome | None = await asyncio.get_running_loop().run_in_executor(
                        self.pool, sender.send, message
                    )
                    results.append((out.ids, _result(outcome, None, provider)))
            except SendError as exc:
                results = [(out.ids, _result(None, exc, provider))]
            except Exception as exc:  # a sender bug is a transient failure, not a crash of the notifier
                results = [(out.ids, {"ok": False, "provider": provider, "kind": "transient",
                                      "code": type(exc).__name__, "detail": mask_text(str(exc))[:200],
                                      "retry_after": None})]  # fmt: skip
            took = time.perf_counter() - t0
            prog = self.notices.get(out.notice) if out.notice else None
            if prog is not None:
                prog.called += len(out.ids)
            if self.settings.crash_after_send:
                os._exit(17)
            for ids, result in results:
                value = _job("result", ids=ids, attempt=out.attempt, took=took, **result)
                sent = await self.jobs_t.send(key=message.recipient_key.encode(), value=value)
                await sent  # in Kafka before the slot is free: a crash leaves ≤ max_outstanding calls in doubt
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the record stays in intent: in doubt after the next recovery, never re-sent
            log.error("outcome of delivery %s not recorded (%s): it will be reported in doubt",
                      out.ids[0], type(exc).__name__)  # fmt: skip
        finally:
            self._slots.release()

    async def _on_result(self, job: dict[str, Any], partition: int, now: float) -> None:
        """A provider call's outcome, for the deliveries its message carried."""
        ids: list[str] = list(job.get("ids") or [])
        records = [self._get(i) for i in ids]
        live = [d for d in records if d is not None and d.status in ("intent", "in_doubt")
                and d.attempt == job.get("attempt")]  # fmt: skip
        if not live:
            self.counters["stale_results"] += 1
            return
        lead_id = ids[0]
        provider = str(job.get("provider") or "console")
        took = job.get("took")
        for i, m in enumerate(live):
            seconds = took if i == 0 else None
            if m.status == "in_doubt":
                self.counters["in_doubt_resolved"] += 1
                self.in_doubt_counts[m.channel] = max(0, self.in_doubt_counts[m.channel] - 1)
            if job.get("ok"):
                r = dv.succeeded(m, now, provider, job.get("provider_id"))
                if m.delivery_id != lead_id:
                    r = dv.merged(r, now, lead_id)
                self.metrics.delivery(m.channel, provider, "sent", seconds)
                self.counters["sent"] += 1
            else:
                err = SendError(job.get("kind") or "transient", str(job.get("code") or ""),
                                str(job.get("detail") or ""), provider=provider,
                                retry_after=job.get("retry_after"))  # fmt: skip
                r = await self._failure(m, err, now, partition)
                self.metrics.delivery(m.channel, provider, _outcome_label(r.status), seconds)
            self._put(r, partition)
            await self._record(r, now)

    async def _failure(self, m: dv.Delivery, err: SendError, now: float, partition: int) -> dv.Delivery:
        detail = f"{err.code}: {err.detail}"[:300]
        limited = m.rate_limited + (1 if err.kind == "rate_limited" else 0)
        policy = self.routing.retry_policy(m.channel)
        decision = policy.decide(err.kind, m.attempt, now, err.retry_after, m.useful_until, self.rng,
                                 rate_limited=limited)  # fmt: skip
        action: str = decision.action
        at = decision.at
        if action == "fallback" and not (m.fallback and m.fallback_address and m.fallback_key):
            action = "give_up"
        if action == "give_up" and err.kind == "permanent":
            action = "permanent"
        r = dv.failed(m, now, provider=err.provider, action=action, at=at, error=detail,
                      counts=err.kind != "rate_limited")  # fmt: skip
        r = replace(r, rate_limited=limited)
        self.counters[f"error_{err.kind}"] += 1
        if r.status == "fallen_back":
            await self._fallback(r, now)
        elif r.status == "dead":
            await self._deadletter(m.recipient_key.encode(), r.to_json(), "delivery_failed",
                                   f"gave up after {r.attempt} attempt(s): {detail}", now)  # fmt: skip
        elif r.status == "failed":
            log.warning("delivery %s failed permanently (%s)", m.delivery_id, detail)
        return r

    async def _fallback(self, d: dv.Delivery, now: float) -> None:
        assert d.fallback and d.fallback_address and d.fallback_key
        f = dv.new(delivery_id=delivery_id(d.alert_id, d.fallback_key, d.fallback), alert=d.alert,
                   recipient_key=d.fallback_key, channel=d.fallback, address=d.fallback_address, language=d.language,
                   role=d.role, urgent=d.urgent, useful_until=d.useful_until, now=now,
                   fallback_of=d.delivery_id)  # fmt: skip
        log.info("delivery %s falls back from %s to %s", d.delivery_id, d.channel, f.channel)
        await self.jobs_t.send(key=f.recipient_key.encode(), value=b'{"op":"deliver","delivery":' + f.to_json() + b"}")

    def _render(self, alert: dict[str, Any], channel: str, language: str) -> Rendered:
        """Render once per (alert, channel, language): a resident notice to 100,000 households is one text."""
        key = (str((alert.get("data") or {}).get("alert_id") or alert.get("id")), channel, language)
        hit = self._rendered.get(key)
        if hit is None:
            if len(self._rendered) >= 512:
                self._rendered.clear()
            hit = self._rendered[key] = self.renderer.render(alert, channel, language)
        return hit

    def _message(self, group: list[dv.Delivery]) -> tuple[Message, int]:
        """The message for ``group`` and how many of its deliveries it carries (a WeCom merge fills one message)."""
        lead = group[0]
        channel = lead.channel if lead.channel in ("sms", "email", "wecom") else "sms"
        rendered = self._render(lead.alert, channel, lead.language)
        fits = 1
        if len(group) > 1:
            parts = [rendered.markdown or ""] + [
                self._render(m.alert, "wecom", m.language).markdown or "" for m in group[1:]
            ]
            fits = len(parts)
            merged = merge_markdown(parts, self.routing.wecom.max_bytes, lead.language)
            while len(merged) > 1 and fits > 1:  # never record as sent what the message does not carry
                fits -= 1
                merged = merge_markdown(parts[:fits], self.routing.wecom.max_bytes, lead.language)
            rendered = replace(rendered, markdown=merged[0])
            group = group[:fits]
        callback = None
        if self.settings.public_url and lead.channel == "sms":
            query = urlencode({"d": lead.delivery_id, "r": lead.recipient_key})
            callback = f"{self.settings.public_url.rstrip('/')}/receipts/twilio/status?{query}"
        mentions: list[str] = []
        for m in group:
            mentions += [x for x in m.mentions if x not in mentions]
        message = Message(delivery_id=lead.delivery_id, channel=lead.channel,  # type: ignore[arg-type]
                          to=lead.address, language=lead.language, rendered=rendered, recipient_key=lead.recipient_key,
                          mentions=tuple(mentions), status_callback=callback,
                          custom_args={"delivery_id": lead.delivery_id,
                                       "recipient_key": lead.recipient_key})  # fmt: skip
        return message, fits

    # -------------------------------------------------------------- outputs

    async def _record(self, d: dv.Delivery, now: float) -> None:
        """One record on ``waterwatch.deliveries`` (recipient masked)."""
        status = "failed" if d.status == "waiting" and d.reason == "retry" else _record_status(d.status)
        if status is None:
            return
        rec = {"delivery_id": d.delivery_id, "alert_id": d.alert_id, "channel": d.channel,
               "recipient": d.recipient_key, "attempt": d.attempt, "status": status,
               "provider_id": d.provider_id, "error": d.error, "at": _iso(now),
               "kind": d.kind, "reason": d.reason}  # fmt: skip
        await self.deliveries_t.send(key=d.delivery_id.encode(), value=json.dumps(rec, ensure_ascii=False).encode())

    async def _deadletter(self, key: bytes | None, raw: bytes, error: str, reason: str, now: float) -> None:
        import base64

        self.counters["deadletters"] += 1
        rec = {"reason": reason, "error": error, "source_topic": self.settings.jobs_topic, "partition": None,
               "offset": None, "key_b64": base64.b64encode(key).decode() if key else None,
               "value_b64": base64.b64encode(raw).decode(), "rejected_at": _iso(now)}  # fmt: skip
        await self.deadletter_t.send(key=key, value=json.dumps(rec).encode())

    async def _report_notices(self) -> None:
        """A progress line per active resident notice; coverage (and lead time) once one is complete.

        A pre-outage notice whose fan-out, at the rate seen so far, would end after start − 48 h raises one
        alert to ops (R19.1), delivered like any other alert: send more capacity, or other channels.
        """
        now = self.settings.now()
        for aid, prog in list(self.notices.items()):
            if prog.finished:
                continue
            line = prog.line()
            eta = prog.eta(now)
            if eta is not None and prog.pending > 0:
                line += f"; ETA {eta:.0f} s"
            if line != prog.last_line:
                log.info("%s", line)
                prog.last_line = line
            late = prog.late_by(now)
            if late is not None and not prog.eta_alerted and prog.matter_id:
                prog.eta_alerted = True
                await self._eta_alert(prog, now, late)
            if prog.complete:
                prog.finished = True
                m = self.metrics
                u, k = m.unit(prog.unit), m.notice(prog.notice)
                reached = min(len(prog.reached), prog.households)
                m.households_reached.labels(u, k).inc(reached)
                if prog.households:
                    m.coverage.labels(u, k).set(reached / prog.households)
                if prog.notice == "pre_outage" and prog.starts_at is not None:
                    m.notice_lead(prog.unit, prog.starts_at - self.settings.now())
                log.info("notice %s complete: %d of %d households reached", aid, reached, prog.households)
                prog.done_ids.clear()
                prog.reached.clear()

    async def _eta_alert(self, prog: fo.Progress, now: float, late: float) -> None:
        assert prog.starts_at is not None and prog.matter_id is not None
        deadline = prog.starts_at - fo.PRE_NOTICE_LEAD_S
        aid = f"{prog.alert_id}/fanout_eta"
        eta = prog.eta(now) or 0.0
        event = {
            "specversion": "1.0", "id": aid, "source": "waterwatch/notifier", "type": "alert.warning",
            "time": _iso(now), "subject": prog.matter_id, "datacontenttype": "application/json",
            "data": {"alert_id": aid, "matter_id": prog.matter_id, "matter_kind": "outage", "rule": "R19.1",
                     "clock": "pre_notice", "level": "warning", "stage": "fanout_eta", "due_at": _iso(deadline),
                     "fired_at": _iso(now), "unit": prog.unit, "notify": ["ops"],
                     "message": (f"R19.1: resident pre-notice fan-out would finish {late:.0f} s after start - 48 h "
                                 f"({prog.pending} deliveries pending, ETA {eta:.0f} s)"),
                     "context": {"pending": prog.pending, "eta_seconds": round(eta),
                                 "starts_at": _iso(prog.starts_at)}},
        }  # fmt: skip
        self.counters["eta_alerts"] += 1
        log.warning("notice %s: fan-out ETA passes start - 48 h by %.0f s: ops alerted", prog.alert_id, late)
        await self.alerts_t.send(key=prog.matter_id.encode(), value=json.dumps(event, ensure_ascii=False).encode())

    def _report_in_doubt(self) -> None:
        """In-doubt deliveries of this instance's partitions (counted at recovery and as they happen)."""
        for ch in ("sms", "email", "wecom"):
            self.metrics.in_doubt(ch, self._provider(ch), self.in_doubt_counts.get(ch, 0))

    async def _rebuild(self) -> None:
        """After recovery: waiting deliveries back into the pending index; intents become due now."""
        self.pending.clear()
        self.recovered_intents.clear()
        now = self.settings.now()
        waiting = intents = 0
        assigned = self._assigned_partitions()
        self.in_doubt_counts.clear()
        for i, (_k, raw) in enumerate(self.table.items()):
            if i % 1000 == 999:
                await asyncio.sleep(0)
            if raw is None or (b'"status":"waiting"' not in raw and b'"status":"intent"' not in raw
                               and b'"status":"in_doubt"' not in raw):  # fmt: skip
                continue
            d = dv.Delivery.from_json(raw)
            partition = partition_for(d.recipient_key.encode(), self.settings.partitions)
            if assigned and partition not in assigned:
                continue
            if d.status == "in_doubt":
                self.in_doubt_counts[d.channel] += 1
                self.pending.set(d, partition)  # its check with the provider, if it has one
            elif d.status == "intent":
                # due now, in the index only: the due job (behind any result in the topic) decides in doubt
                self.pending.set(replace(d, status="waiting", next_at=now), partition)
                self.recovered_intents.add(d.delivery_id)
                intents += 1
            else:
                self.pending.set(d, partition)
                waiting += 1
        self._set_state("ready", f"{waiting} deliveries waiting, {intents} interrupted during a provider call")

    def _assigned_partitions(self) -> set[int]:
        try:
            return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.settings.jobs_topic}
        except Exception:
            return set()


@dataclass
class _Outgoing:
    """A message whose intents are written (not yet flushed), waiting for the sender task."""

    message: Message
    ids: list[str]
    attempt: int
    notice: str | None = None
    """The resident notice (alert id) this call serves, for its progress."""
    batch: list[Message] | None = None
    """E-mails of one notice sent as one request (``send_batch``); ``message`` is the first."""


def _job(op: str, **fields: Any) -> bytes:
    return json.dumps({"op": op, **fields}, ensure_ascii=False, separators=(",", ":")).encode()


_RECORD_STATUS = {"waiting": None, "new": None, "ready": None, "intent": "intent", "sent": "sent",
                  "delivered": "delivered", "undelivered": "failed", "failed": "permanent_failure",
                  "fallen_back": "failed", "dead": "failed", "skipped": "skipped", "expired": "skipped",
                  "superseded": "skipped",
                  "in_doubt": "in_doubt"}  # fmt: skip


def _result(outcome: SendOutcome | None, error: SendError | None, provider: str) -> dict[str, Any]:
    """The fields of a ``result`` job: the provider's answer to one call (or one request of a batch)."""
    if error is not None:
        return {"ok": False, "provider": error.provider, "kind": error.kind, "code": error.code,
                "detail": error.detail, "retry_after": error.retry_after}  # fmt: skip
    return {"ok": True, "provider": outcome.provider if outcome else provider,
            "provider_id": outcome.provider_id if outcome else None}  # fmt: skip


_DUE_STATUSES = (b'"status":"waiting"', b'"status":"intent"', b'"status":"in_doubt"')
"""A due job only concerns records in one of these states (checked on the stored bytes before decoding)."""


def _record_status(status: str) -> str | None:
    return _RECORD_STATUS.get(status)


def _outcome_label(status: str) -> str:
    return {"waiting": "retried", "failed": "failed", "fallen_back": "failed", "dead": "dead_lettered"}.get(
        status, "failed"
    )


def run_notifier(settings: NotifierSettings, config: Config, routing: Routing, loglevel: str = "INFO") -> None:
    """Create the topics, pick the channels from the environment, then run until stopped."""
    from notifiers.channels import build_senders
    from waterwatch.admin import ensure_topics

    ensure_topics(settings.bootstrap, settings.topic_specs())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    senders = build_senders(settings.env, sink_file=settings.sink_file)
    for line in senders.describe():
        log.info("channel %s", line)
    n = Notifier(settings, config, routing, senders)
    n.consent.start()
    n.residents.start()
    if settings.metrics_port:
        try:
            n.metrics.serve(settings.metrics_port, settings.metrics_addr)
            log.info("metrics on http://%s:%d/metrics", settings.metrics_addr, settings.metrics_port)
        except OSError as exc:
            log.warning("metrics page not served: %s:%d: %s (set --metrics-port)", settings.metrics_addr,
                        settings.metrics_port, exc.strerror)  # fmt: skip
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    faust.Worker(n.app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


__all__ = ["Notifier", "NotifierSettings", "Pending", "run_notifier"]
