"""Run ``waterwatch worker`` as a real subprocess against the real broker, and talk to it.

* :class:`WorkerProcess` starts ``python -m waterwatch.cli worker`` with its own
  ``--topic-prefix``/``--app-id``/``--data-dir``/``--web-port`` and a time scale,
  logs stdout+stderr to a file, waits for ``/healthz`` to answer 200, and stops
  it with SIGTERM (graceful) or SIGKILL (a crash).  Every wait is bounded; the
  log tail goes into every failure message.
* :class:`WorkerPool` owns every process a test started and kills what is
  still alive in teardown, so no worker outlives its test.
* :class:`Producer` sends events (original bytes, key = subject) and waits for
  the broker's acknowledgements; :func:`make_event` builds a CloudEvent whose
  ``time`` is *now* in Asia/Shanghai.
* :class:`TopicReader` reads a topic from the beginning, incrementally, without
  a consumer group; :meth:`TopicReader.wait_until` is bounded.
* :func:`replay_alerts` runs the pure core (``Replayer``) over the same events
  with the SAME scaled config as the worker, the way ``waterwatch replay``
  prints them; :func:`compare_alerts` checks the alerts topic against it.

Test-only tuning, passed through the environment (faust reads these settings
from the environment; nothing in the worker's code is changed):
``BROKER_SESSION_TIMEOUT`` / ``BROKER_HEARTBEAT_INTERVAL`` are shortened so that
a SIGKILLed member leaves the consumer group in seconds instead of faust's
default 60 s.  ``WATERWATCH_STATE_PREFETCH_MIN=1`` makes every start bulk-read
whatever the local state lacks of the changelog before Faust starts (the
worker does that only from 20,000 records on), so the tests cover that path.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from waterwatch.admin import supported_configs

TZ = ZoneInfo("Asia/Shanghai")
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = float(os.environ.get("WATERWATCH_TEST_WORKER_READY_TIMEOUT", "90"))
STOP_TIMEOUT_S = 30.0
MIB = 1024 * 1024

# faust settings read from the environment (see the module docstring)
FAST_GROUP_ENV = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1"}
PREFETCH_ENV = {"WATERWATCH_STATE_PREFETCH_MIN": "1"}


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never send 127.0.0.1 to a proxy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerFailed(AssertionError):
    """The worker died or did not become ready; the message carries its log tail."""


@dataclass
class WorkerProcess:
    bootstrap: str
    topic_prefix: str
    app_id: str
    data_dir: Path
    log_path: Path
    time_scale: float = 3600
    web_port: int = field(default_factory=free_port)
    partitions: int = 8
    config_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    # ----------------------------------------------------------- lifecycle

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "waterwatch.cli", "worker",
               "--time-scale", str(self.time_scale), "--app-id", self.app_id,
               "--topic-prefix", self.topic_prefix, "--data-dir", str(self.data_dir),
               "--web-port", str(self.web_port), "--partitions", str(self.partitions)]  # fmt: skip
        if self.config_dir is not None:
            cmd += ["--config", str(self.config_dir)]
        return cmd

    def start(self) -> WorkerProcess:
        assert not self.alive, "already running"
        self.starts += 1
        env = {**os.environ, "WATERWATCH_KAFKA": self.bootstrap, "PYTHONUNBUFFERED": "1", **FAST_GROUP_ENV,
               **PREFETCH_ENV, **self.extra_env}  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), cwd=self.data_dir.parent, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def health(self, timeout: float = 2.0) -> tuple[int, dict[str, Any]] | None:
        """(status code, body) of ``/healthz``, or None when nothing answers."""
        url = f"http://127.0.0.1:{self.web_port}/healthz"
        try:
            with _NO_PROXY.open(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                body = {}
            return exc.code, body
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Wait for ``/healthz`` 200; :class:`WorkerFailed` (with the log tail) otherwise."""
        deadline = time.monotonic() + timeout
        last: tuple[int, dict[str, Any]] | None = None
        while time.monotonic() < deadline:
            if not self.alive:
                raise WorkerFailed(f"worker exited with {self.returncode} before it was ready\n{self.log_tail()}")
            last = self.health()
            if last is not None and last[0] == 200:
                return last[1]
            time.sleep(0.2)
        raise WorkerFailed(f"worker not ready after {timeout:.0f} s (last /healthz: {last})\n{self.log_tail()}")

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait (graceful: faust commits and leaves the group); SIGKILL if it hangs."""
        if not self.alive:
            return self.returncode
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise WorkerFailed(f"worker ignored SIGTERM for {timeout:.0f} s\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL (a crash: nothing flushed, nothing committed) and reap."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)

    # ----------------------------------------------------------------- logs

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def assigned(self) -> list[int] | None:
        """The partitions of the worker's latest assignment, from its log (``worker recovering: partitions [...]``)."""
        found = re.findall(r"worker recovering: partitions \[([0-9, ]*)\]", self.log_text())
        if not found:
            return None
        return [int(x) for x in found[-1].split(",") if x.strip()]

    def wait_assigned(self, wanted: Callable[[list[int]], bool], timeout: float = 60) -> list[int]:
        """Wait until the latest assignment satisfies ``wanted`` and /healthz says ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parts = self.assigned()
            h = self.health()
            if parts is not None and wanted(parts) and h is not None and h[0] == 200:
                return parts
            if not self.alive:
                break
            time.sleep(0.2)
        raise WorkerFailed(f"assignment {self.assigned()} never became the wanted one in {timeout:.0f} s\n"
                           f"{self.log_tail()}")  # fmt: skip

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- {self.log_path} (last {len(tail)} lines) ---\n" + "\n".join(tail)


class WorkerPool:
    """Every worker process of one test; :meth:`close` kills the ones still running."""

    def __init__(self, bootstrap: str, prefix: str, base_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.base_dir = base_dir
        self.workers: list[WorkerProcess] = []

    def new(self, name: str = "w1", *, app_id: str | None = None, time_scale: float = 3600,
            config_dir: Path | None = None, topic_prefix: str | None = None) -> WorkerProcess:  # fmt: skip
        """A worker (not started) with its own data dir, port and log; app id ``{prefix}-app`` by default."""
        w = WorkerProcess(bootstrap=self.bootstrap, topic_prefix=topic_prefix or self.prefix,
                          app_id=app_id or f"{self.prefix}-app", data_dir=self.base_dir / name / "data",
                          log_path=self.base_dir / f"{name}.log", time_scale=time_scale,
                          config_dir=config_dir)  # fmt: skip
        w.data_dir.mkdir(parents=True, exist_ok=True)
        self.workers.append(w)
        return w

    def logs(self) -> str:
        """Health counters and log tail of every worker (for failure messages)."""
        out = []
        for w in self.workers:
            h = w.health() if w.alive else None
            out.append(f"=== worker {w.data_dir.parent.name} pid {w.pid} alive={w.alive} rc={w.returncode} "
                       f"healthz={h}")  # fmt: skip
            out.append(w.log_tail())
        return "\n".join(out)

    def close(self) -> None:
        """Stop what still runs: SIGTERM first (the member leaves the group, which can then be deleted), else kill."""
        for w in self.workers:
            if w.alive and w.proc is not None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    w.kill()


def group_offsets(bootstrap: str, group: str) -> dict[str, int]:
    """Committed offsets of a consumer group, ``topic[partition]`` -> offset (for failure messages)."""
    from waterwatch.admin import admin_client

    try:
        with admin_client(bootstrap) as client:
            lister = getattr(client, "list_group_offsets", None) or client.list_consumer_group_offsets  # 3.x / 2.x
            found = lister(group)
        if group in found and isinstance(found[group], dict):  # 3.x: {group: {tp: meta}}
            found = found[group]
        return {f"{tp.topic}[{tp.partition}]": getattr(meta, "offset", meta) for tp, meta in sorted(found.items())}
    except Exception as exc:  # diagnostics only
        return {"error": type(exc).__name__}  # type: ignore[dict-item]


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = KafkaConsumer(**supported_configs(KafkaConsumer, bootstrap_servers=bootstrap, group_id=None,
                                          bootstrap_timeout_ms=10_000))  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


# ------------------------------------------------------------------ events

_ids = itertools.count(1)


def now_iso() -> str:
    return datetime.now(TZ).isoformat()


def make_event(type_: str, subject: str, data: dict[str, Any] | None = None, *, id_: str | None = None,
               time_: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A CloudEvent dict with ``time`` = now (Asia/Shanghai offset) unless given."""
    return {
        "specversion": "1.0",
        "id": id_ or f"{subject}-{type_}-{next(_ids)}",
        "source": "tests/integration/worker",
        "type": type_,
        "time": time_ or now_iso(),
        "subject": subject,
        "data": data or {},
    }


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def sleep_to_second_start(max_fraction: float = 0.15) -> None:
    """Sleep until early in a wall-clock second (events stamped now stay in that second for a while)."""
    frac = time.time() % 1
    if frac > max_fraction:
        time.sleep(1 - frac + 0.01)


class Producer:
    """kafka-python producer for the tests: acks=all, large requests allowed, every send acknowledged."""

    def __init__(self, bootstrap: str) -> None:
        self._p = KafkaProducer(**supported_configs(
            KafkaProducer, bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_request_size=8 * MIB,
            allow_auto_create_topics=False, bootstrap_timeout_ms=10_000, max_in_flight_requests_per_connection=1,
        ))  # fmt: skip

    def send(self, topic: str, records: Iterable[tuple[bytes | None, bytes]], timeout: float = 30) -> None:
        futures = [self._p.send(topic, key=k, value=v) for k, v in records]
        self._p.flush(timeout=timeout)
        for f in futures:
            f.get(timeout=timeout)

    def send_events(self, topic: str, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send events keyed by their subject; return them."""
        evs = list(events)
        self.send(topic, [(str(e["subject"]).encode(), encode(e)) for e in evs])
        return evs

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._p.close(timeout=10)


class TopicReader:
    """A topic read from the beginning (all partitions assigned, no group), incrementally."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = 30) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self._c = KafkaConsumer(**supported_configs(
            KafkaConsumer, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", allow_auto_create_topics=False, bootstrap_timeout_ms=10_000,
            max_partition_fetch_bytes=16 * MIB, fetch_max_bytes=16 * MIB,
        ))  # fmt: skip
        deadline = time.monotonic() + timeout
        parts = self._c.partitions_for_topic(topic)
        while not parts:
            if time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"topic {topic} does not exist after {timeout:.0f} s")
            time.sleep(0.2)
            parts = self._c.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._c.assign(tps)
        self._c.seek_to_beginning(*tps)

    def poll(self, timeout: float = 0.3) -> list[Any]:
        new: list[Any] = []
        for batch in self._c.poll(timeout_ms=int(timeout * 1000)).values():
            new.extend(batch)
        self.records.extend(new)
        return new

    def wait_until(self, done: Callable[[list[Any]], bool], timeout: float,
                   give_up: Callable[[], bool] | None = None) -> bool:  # fmt: skip
        """Poll until ``done(records)`` or ``timeout``; False on timeout (or when ``give_up()``)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if done(self.records):
                return True
            if time.monotonic() >= deadline or (give_up is not None and give_up()):
                self.poll()
                return done(self.records)

    def settle(self, seconds: float) -> None:
        """Keep reading for ``seconds`` (to catch late extras and duplicates)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(min(0.3, max(0.01, deadline - time.monotonic())))

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.records]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._c.close()


# ------------------------------------------------------------ replay and compare


def replay_alerts(events: Sequence[dict[str, Any]], time_scale: float, until: float,
                  config_dir: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """What ``waterwatch replay`` prints for ``events`` with the worker's scaled config, up to ``until``.

    Same path as the CLI: events sorted by time (stable), fed one by one, then
    the virtual clock runs to ``until`` inclusive; each alert is printed as
    ``alert.to_event(engine.tz)``.
    """
    from waterwatch.core.config import load_config
    from waterwatch.core.replay import Replayer
    from waterwatch.events import parse_event

    engine = load_config(config_dir, time_scale=time_scale).engine()
    parsed = sorted((parse_event(encode(e)) for e in events), key=lambda e: e.time.timestamp())
    r = Replayer(engine)
    out: list[dict[str, Any]] = []
    for ev in parsed:
        alerts, _ = r.feed(ev)
        out += [a.to_event(engine.tz) for a in alerts]
    out += [a.to_event(engine.tz) for a in r.run_until(int(until), inclusive=True)]
    # round-trip through JSON like the worker's bytes on the topic
    return [json.loads(json.dumps(a, ensure_ascii=False)) for a in out]


def fired_ts(alert: dict[str, Any]) -> float:
    return datetime.fromisoformat(alert["data"]["fired_at"]).timestamp()


def without_late_by(alert: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in alert["data"].items() if k != "late_by"}
    return {**alert, "data": data}


def alert_id(alert: dict[str, Any]) -> str:
    return str(alert["data"]["alert_id"])


def dedupe(alerts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """First occurrence of each alert_id, in topic order."""
    seen: set[str] = set()
    out = []
    for a in alerts:
        if alert_id(a) not in seen:
            seen.add(alert_id(a))
            out.append(a)
    return out


def per_matter(alerts: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        out.setdefault(str(a["subject"]), []).append(a)
    return out


def duplicates(alerts: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in alerts:
        counts[alert_id(a)] = counts.get(alert_id(a), 0) + 1
    return {k: n for k, n in counts.items() if n > 1}


def has_all(expected: Iterable[dict[str, Any]]) -> Callable[[list[Any]], bool]:
    """A ``wait_until`` predicate: every expected alert_id is on the topic."""
    wanted = {alert_id(a) for a in expected}

    def done(records: list[Any]) -> bool:
        got = {json.loads(r.value)["data"]["alert_id"] for r in records}
        return wanted <= got

    return done


def compare_alerts(got: Sequence[dict[str, Any]], expected: Sequence[dict[str, Any]], until: float) -> list[str]:
    """Differences between the worker's alerts (de-duplicated, fired up to ``until``) and the replay.

    Content must be equal except ``late_by``; per matter, the order must be
    the replay's.  Returns readable lines; empty means equal.
    """
    mine = [without_late_by(a) for a in dedupe(got) if fired_ts(a) <= until]
    want = [without_late_by(a) for a in expected]
    problems: list[str] = []
    got_ids = {alert_id(a): a for a in mine}
    want_ids = {alert_id(a): a for a in want}
    for aid in sorted(want_ids.keys() - got_ids.keys()):
        problems.append(f"missing: {aid} (fired_at {want_ids[aid]['data']['fired_at']})")
    for aid in sorted(got_ids.keys() - want_ids.keys()):
        problems.append(f"extra: {aid} (fired_at {got_ids[aid]['data']['fired_at']})")
    for aid in sorted(got_ids.keys() & want_ids.keys()):
        if got_ids[aid] != want_ids[aid]:
            g, w = got_ids[aid], want_ids[aid]
            keys = sorted({*g["data"], *w["data"]})
            diff = {k: (g["data"].get(k), w["data"].get(k)) for k in keys if g["data"].get(k) != w["data"].get(k)}
            top = {k: (g.get(k), w.get(k)) for k in {*g, *w} - {"data"} if g.get(k) != w.get(k)}
            problems.append(f"content differs: {aid}: worker vs replay {top} {diff}")
    if not problems:
        mine_order = {m: [alert_id(a) for a in xs] for m, xs in per_matter(mine).items()}
        want_order = {m: [alert_id(a) for a in xs] for m, xs in per_matter(want).items()}
        for m in sorted(want_order):
            if mine_order.get(m) != want_order[m]:
                problems.append(f"order of {m}: worker {mine_order.get(m)} vs replay {want_order[m]}")
    return problems
