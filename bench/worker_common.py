"""Shared plumbing of the worker benchmarks (bench_worker_*.py).

- :class:`WorkerProc`: one ``waterwatch worker`` subprocess with its own app id,
  topic prefix, data dir and web port; polls ``/healthz``; stops with SIGTERM
  (a kill after a bounded wait); dies with the benchmark (PR_SET_PDEATHSIG)
  and is killed at exit in any case.
- :class:`Bench`: unique names, and the cleanup of everything a run created
  (topics, consumer groups, data dirs), registered at exit.
- Fast producing and consuming with aiokafka, the table printer, and the
  synthetic events of ``synth.py`` moved to "now".

Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
WATERWATCH = str(VENV_BIN / "waterwatch")
TZ = timezone(timedelta(hours=8))

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from waterwatch import kafka_local  # noqa: E402
from waterwatch.admin import admin_client, delete_topics  # noqa: E402


def bootstrap() -> str:
    return kafka_local.bootstrap_servers()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).isoformat()


def parse_iso(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


# ------------------------------------------------------------------ processes

_LIVE: list[subprocess.Popen[bytes]] = []


def _pdeathsig() -> None:  # runs in the child: die when the benchmark dies
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_live() -> None:
    for p in list(_LIVE):
        if p.poll() is None:
            with contextlib.suppress(Exception):
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=15)
        if p.poll() is None:
            with contextlib.suppress(Exception):
                p.kill()
                p.wait(timeout=10)


atexit.register(_kill_live)


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through finally blocks and atexit


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM (kB) of a live process from /proc/<pid>/status ({} if gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return None


def main_thread_sched(pid: int) -> tuple[float, float] | None:
    """(seconds on CPU, seconds runnable but waiting for a CPU) of a process's main thread (the event loop)."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            run_ns, wait_ns, _ = fh.read().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None


@dataclass
class WorkerProc:
    """One ``waterwatch worker`` subprocess."""

    app_id: str
    topic_prefix: str
    data_dir: Path
    log_path: Path
    partitions: int = 8
    time_scale: float = 1.0
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    peak_hwm_kb: int = 0
    variant: Sequence[str] = ()  # flags of bench/worker_variant.py: run a patched worker (experiments)

    def start(self) -> None:
        head = ([sys.executable, str(HERE / "worker_variant.py"), *self.variant, "--"] if self.variant
                else [WATERWATCH])  # fmt: skip
        cmd = [*head, "worker", "--partitions", str(self.partitions), "--time-scale", str(self.time_scale),
               "--app-id", self.app_id, "--topic-prefix", self.topic_prefix, "--data-dir", str(self.data_dir),
               "--web-port", str(self.web_port)]  # fmt: skip
        # a free metrics port: the default 9464 may be taken by another worker on this machine
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "WATERWATCH_KAFKA": bootstrap(),
               "WATERWATCH_METRICS_PORT": str(free_port())}  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=str(self.log_path.parent), env=env, stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig)  # fmt: skip
        fh.close()
        _LIVE.append(self.proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthz(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The /healthz body (also when 503), or None if it does not answer."""
        url = f"http://127.0.0.1:{self.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except (OSError, ValueError):
            return None
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    def sample_memory(self) -> dict[str, int]:
        st = proc_status(self.pid) if self.alive() else {}
        self.peak_hwm_kb = max(self.peak_hwm_kb, st.get("VmHWM", 0))
        return st

    def wait_until(self, pred: Callable[[dict[str, Any]], bool], timeout: float, *, what: str,
                   interval: float = 0.05, on_poll: Callable[[dict[str, Any]], None] | None = None,
                   progress_key: str | None = None, stall: float = 120.0,
                   ) -> dict[str, Any]:  # fmt: skip
        """Poll /healthz until ``pred(body)``; raise if the worker exits or ``timeout`` passes, or, with
        ``progress_key``, if that /healthz counter has not moved for ``stall`` seconds (an agent that crashes
        on every batch keeps the process alive and the counter still)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        moved_at, seen = time.monotonic(), None
        while True:
            if not self.alive():
                raise RuntimeError(f"worker exited ({self.proc.returncode if self.proc else '?'}) while waiting "
                                   f"for {what}; log tail:\n{self.log_tail()}")  # fmt: skip
            body = self.healthz()
            if body is not None:
                last = body
                if on_poll is not None:
                    on_poll(body)
                if pred(body):
                    return body
                if progress_key is not None:
                    now_seen = body.get(progress_key)
                    if now_seen != seen:
                        moved_at, seen = time.monotonic(), now_seen
                    elif time.monotonic() - moved_at > stall:
                        raise TimeoutError(f"no progress in /healthz {progress_key!r} ({seen}) for {stall:.0f} s "
                                           f"while waiting for {what}; log tail:\n{self.log_tail()}")  # fmt: skip
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no {what} after {timeout:.0f} s (last /healthz: {last}); log tail:\n"
                                   f"{self.log_tail()}")  # fmt: skip
            time.sleep(interval)

    def wait_ready(self, timeout: float) -> float:
        """Wait for ``ready``; return seconds since start()."""
        self.wait_until(lambda b: bool(b.get("ready")), timeout, what="ready worker")
        return time.monotonic() - self.started_at

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM, wait (bounded), kill if needed; return seconds to exit."""
        if self.proc is None:
            return 0.0
        self.sample_memory()
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"worker {self.pid} did not stop within {timeout:.0f} s of SIGTERM: killed")
                self.proc.kill()
                self.proc.wait(timeout=15)
        took = time.monotonic() - t0
        if self.proc in _LIVE:
            _LIVE.remove(self.proc)
        return took

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# ------------------------------------------------------------------ one run's names and cleanup


class Bench:
    """Unique names for one run, and the cleanup of what it created (registered at exit)."""

    def __init__(self, label: str, *, keep_logs: bool = False) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"wwbench.{label}-{self.run_id}"
        self.app_id = f"wwbench-{label}-{self.run_id}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"wwbench-{label}-{self.run_id}-"))
        self.extra_topics: list[str] = []
        self.extra_groups: list[str] = []
        self.keep_logs = keep_logs
        self._cleaned = False
        atexit.register(self.cleanup)

    @property
    def events_topic(self) -> str:
        return f"{self.prefix}.events"

    @property
    def alerts_topic(self) -> str:
        return f"{self.prefix}.alerts"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-matters-changelog"

    def worker(self, name: str = "worker", *, data_dir: Path | None = None, **kw: Any) -> WorkerProc:
        return WorkerProc(
            app_id=self.app_id,
            topic_prefix=self.prefix,
            data_dir=data_dir or (self.tmp / "data"),
            log_path=self.tmp / f"{name}.log",
            **kw,
        )

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        _kill_live()
        bs = bootstrap()
        try:
            with admin_client(bs) as client:
                topics = [
                    t
                    for t in client.list_topics()
                    if t.startswith((self.prefix + ".", self.app_id + "-")) or t in self.extra_topics
                ]
                groups = [self.app_id, *self.extra_groups]
                with contextlib.suppress(Exception):
                    existing = {
                        g[0] if isinstance(g, tuple) else getattr(g, "group_id", g) for g in client.list_groups()
                    }
                    groups = [g for g in groups if g in existing]
                if groups:
                    try:
                        client.delete_groups(groups)
                    except Exception as exc:  # reported, not fatal
                        log(f"cleanup: deleting groups {groups} failed: {exc!r}")
            if topics:
                delete_topics(bs, topics)
            log(f"cleanup: deleted {len(topics)} topic(s) and {len(groups)} group(s) of {self.prefix}")
        except Exception as exc:
            log(f"cleanup: could not clean the broker: {exc!r}")
        if self.keep_logs:
            log(f"cleanup: logs kept in {self.tmp}")
            for p in self.tmp.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def leftovers(self) -> list[str]:
        with admin_client(bootstrap()) as client:
            return [t for t in client.list_topics() if t.startswith((self.prefix + ".", self.app_id + "-"))]

    def finish(self) -> None:
        """Clean up, and say so if any of the run's topics survived."""
        self.cleanup()
        left = self.leftovers()
        if left:
            log(f"LEFTOVER topics: {left}")


def ensure_worker_topics(b: Bench, partitions: int = 8) -> None:
    """Create the worker's topics up front (as run_worker would) so events can be produced first."""
    from streams.worker import WorkerSettings
    from waterwatch.admin import ensure_topics

    ws = WorkerSettings(bootstrap=bootstrap(), partitions=partitions, app_id=b.app_id, topic_prefix=b.prefix)
    ensure_topics(bootstrap(), ws.topic_specs())


# ------------------------------------------------------------------ Kafka I/O (aiokafka)


async def _produce(topic: str, records: Iterable[tuple[bytes, bytes]], *, chunk: int = 20_000,
                   timestamp_ms: int | None = None) -> int:  # fmt: skip
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks=1, linger_ms=20,
                                max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024,
                                request_timeout_ms=60_000)  # fmt: skip
    await producer.start()
    n = 0
    try:
        futs: list[asyncio.Future[Any]] = []
        for key, value in records:
            futs.append(await producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms))
            n += 1
            if len(futs) >= chunk:
                await asyncio.wait_for(asyncio.gather(*futs), timeout=120)
                futs.clear()
        await asyncio.wait_for(asyncio.gather(*futs), timeout=120)
    finally:
        await asyncio.wait_for(producer.stop(), timeout=60)
    return n


def produce(topic: str, records: Iterable[tuple[bytes, bytes]], **kw: Any) -> int:
    """Produce keyed records with the default (murmur2) partitioner; wait for every ack."""
    return asyncio.run(_produce(topic, records, **kw))


def end_offsets(topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        return {tp.partition: off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def topic_bytes(topics: Sequence[str]) -> dict[str, int]:
    """On-disk size of each topic (sum over partitions) from DescribeLogDirs."""
    out: dict[str, int] = {t: 0 for t in topics}
    with admin_client(bootstrap()) as client:
        result = client.describe_log_dirs()
    text_ok = False
    for entry in _walk_log_dirs(result):
        topic, size = entry
        if topic in out:
            out[topic] += size
            text_ok = True
    if not text_ok:
        return {}
    return out


def _walk_log_dirs(result: Any) -> Iterable[tuple[str, int]]:
    """(topic, partition size) pairs from a DescribeLogDirs response, whatever its shape."""
    if hasattr(result, "to_object"):
        result = result.to_object()
    if isinstance(result, list):
        for r in result:
            yield from _walk_log_dirs(r)
        return
    if not isinstance(result, dict):
        return
    for d in result.get("results", result.get("log_dirs", [])) or []:
        for t in d.get("topics", []) or []:
            name = t.get("name", t.get("topic"))
            for p in t.get("partitions", []) or []:
                size = p.get("partition_size", p.get("size", 0))
                yield name, int(size)


# ------------------------------------------------------------------ output


def code_version() -> str:
    """Short content hashes of the worker code this run used (others edit it while benchmarks run)."""
    import hashlib

    parts = []
    for rel in ("streams/worker.py", "streams/processor.py", "streams/deadlines.py"):
        try:
            parts.append(f"{Path(rel).stem} {hashlib.sha1((REPO / rel).read_bytes()).hexdigest()[:8]}")
        except OSError:
            parts.append(f"{Path(rel).stem} ?")
    return ", ".join(parts)


_CODE_AT_IMPORT = code_version()


def machine_rows() -> list[tuple[str, str]]:
    load = os.getloadavg()
    now = code_version()
    code = _CODE_AT_IMPORT if now == _CODE_AT_IMPORT else f"{_CODE_AT_IMPORT} (CHANGED during the run: {now})"
    return [
        ("worker code (sha1 of file)", code),
        ("load average (1/5/15 min)", f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"),
        ("cpus", str(os.cpu_count())),
        ("python", platform.python_version()),
        ("machine", f"{platform.machine()}, {platform.processor() or 'cpu'}"),
    ]


def print_table(rows: Sequence[tuple[str, str]], title: str | None = None) -> None:
    if title:
        print(title)
    w = max(len(k) for k, _ in rows)
    print(f"{'metric':<{w}}  value")
    print(f"{'-' * w}  {'-' * 14}")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    sys.stdout.flush()


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


# ------------------------------------------------------------------ synthetic events at "now"

_TIME_FIELDS = ("due_at", "requested_due_at", "starts_at", "expected_end_at")


def city_events_now(matters: int, *, end: float, span: float = 3600.0, mode: str = "compress",
                    seed: int = 7) -> list[dict[str, Any]]:  # fmt: skip
    """synth.city_year(matters), sorted by time, with every time moved so the events end at ``end``.

    ``compress``: one monotone map t -> end - span + (t - t_min) * span / (t_max - t_min) for the
    event times and the data times alike, so the whole set lies in [end - span, end], per-matter
    order is kept (a monotone map of each event's time; ties keep file order, which is time order)
    and every data time stays on the same side of its event.  Lifecycles shrink by the same factor
    (~8,700 for a year into an hour): the policy's limits are not scaled, so few deadlines pass
    between a matter's events.
    ``shift``: every time moved by one constant (lifecycles unchanged; the set spans a year that
    ends at ``end``, so the stages that passed between a matter's events fire, late, as events
    are applied).
    Meter ``period`` fields are recomputed from the moved time.
    """
    from synth import city_year

    evs = list(city_year(matters, seed=seed))
    ts = [datetime.fromisoformat(e["time"]).timestamp() for e in evs]
    order = sorted(range(len(evs)), key=ts.__getitem__)
    t_min, t_max = ts[order[0]], ts[order[-1]]
    if mode == "compress":
        k = span / max(1.0, t_max - t_min)

        def f(t: float) -> float:
            return end - span + (t - t_min) * k
    elif mode == "shift":
        d = end - t_max

        def f(t: float) -> float:
            return t + d
    else:
        raise ValueError(mode)
    out = []
    for i in order:
        e = evs[i]
        t = f(ts[i])
        e["time"] = iso(t)
        data = e.get("data") or {}
        for name in _TIME_FIELDS:
            if name in data:
                data[name] = iso(f(datetime.fromisoformat(data[name]).timestamp()))
        if "period" in data:
            data["period"] = datetime.fromtimestamp(t, TZ).strftime("%Y-%m")
        out.append(e)
    return out


def encode_event(e: dict[str, Any]) -> tuple[bytes, bytes]:
    return e["subject"].encode(), json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode()


def simulate(events: Sequence[dict[str, Any]], now: float, time_scale: float = 1.0) -> dict[str, int]:
    """Run the worker's Processor in-process on the events (per matter, in order): the expected counts."""
    from streams.processor import Processor
    from waterwatch.core.config import load_config

    cfg = load_config(time_scale=time_scale)
    p = Processor(cfg.engine(), "x.events")
    states: dict[bytes, bytes | None] = {}
    c = {"events": 0, "alerts": 0, "deadletters": 0, "duplicates": 0, "pending_due_by_now": 0}
    for e in events:
        key, value = encode_event(e)
        r = p.on_event(key, value, topic="x.events", partition=0, offset=0, stored=states.get(key), now=now)
        c["events"] += 1
        c["alerts"] += len(r.alerts)
        c["deadletters"] += r.deadletter is not None
        c["duplicates"] += r.duplicate
        if r.state is not None:
            states[key] = r.state
    return c


# ------------------------------------------------------------------ optional profiling (py-spy)


def start_py_spy(py_spy: str | None, pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` with py-spy for ``seconds`` into collapsed stacks (``--py-spy BIN``), if given."""
    if not py_spy:
        return None
    p = subprocess.Popen([py_spy, "record", "-p", str(pid), "-r", "250", "-d", str(max(1, int(seconds))),
                          "-f", "raw", "-o", str(out), "--nonblocking", "--threads"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pdeathsig)  # fmt: skip
    _LIVE.append(p)
    return p


def summarize_profile(path: Path, top: int = int(os.environ.get("WW_PROFILE_TOP", "25"))) -> str:
    """Inclusive and self shares of the hottest frames of a py-spy raw (collapsed) profile (``top`` of each;
    the environment variable ``WW_PROFILE_TOP`` sets it for a bench run)."""
    from collections import Counter

    incl: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no profile)"
    for line in lines:
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]  # fmt: skip
        total += n
        for f in set(frames):
            incl[f] += n
        if frames:
            self_[frames[-1]] += n
    if not total:
        return "(empty profile)"
    out = [f"{total} samples; inclusive:"]
    out += [f"  {c / total * 100:5.1f}%  {f}" for f, c in incl.most_common(top)]
    out.append("self:")
    out += [f"  {c / total * 100:5.1f}%  {f}" for f, c in self_.most_common(top)]
    return "\n".join(out)


# ------------------------------------------------------------------ open matters with known deadlines

HYDRANT = {"channel": "phone", "category": "hydrant_fault"}  # one clock: R15.2 resolve, 12 h, warn at 50 %


def ticket_event(mid: str, t: int, eid: str | None = None) -> dict[str, Any]:
    """A ``ticket.created`` (phone, hydrant_fault) at ``t``: its first stage is warn_50 at t + 6 h / scale."""
    return {"specversion": "1.0", "id": eid or f"c-{mid}", "source": "/bench", "type": "ticket.created",
            "time": iso(t), "subject": mid, "data": dict(HYDRANT)}  # fmt: skip


class TicketStates:
    """What the worker would store for :func:`ticket_event` (the real Processor, then a checked template).

    Used to seed the ``matters`` changelog directly (``--load changelog``): the
    records are byte-for-byte those the worker writes (key = matter id, value =
    the state JSON, no headers, same murmur2 partition as the event).
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        from streams.processor import Processor
        from streams.worker import config_tag
        from waterwatch.core.config import load_config

        config = load_config(time_scale=time_scale)
        self.tag = config_tag(config)  # the worker's header tag: its index rebuild reads the due from the header
        self.processor = Processor(config.engine(), "x.events", state_tag=self.tag)
        t0 = 1_700_000_000
        r = self.processor.on_event(b"M-0", encode_event(ticket_event("M-0", t0))[1], topic="x.events",
                                    partition=0, offset=0, stored=None, now=t0 + 60)  # fmt: skip
        assert r.state is not None and r.next_due is not None and not r.alerts, r
        self.first_offset = r.next_due - t0
        header, _, body = r.state.partition(b"\n")
        assert header == b"#%d %s" % (r.next_due, self.tag.encode()), header
        text = body.decode()
        state = json.loads(text)
        due = state["clocks"]["resolve"]["due"]
        self.limit = due - t0
        assert str(t0) in text and "M-0" in text
        self._tmpl = (text.replace("{", "{{").replace("}", "}}").replace(str(due), "{due}")
                      .replace(str(t0), "{t}").replace('"c-M-0"', '"c-{mid}"').replace('"M-0"', '"{mid}"'))  # fmt: skip
        for i, t in ((7, t0 + 12345), (123456, t0 - 999)):
            assert self.state(f"M-{i}", t) == self.real_state(f"M-{i}", t), "state template does not match"

    def real_state(self, mid: str, t: int) -> bytes:
        r = self.processor.on_event(mid.encode(), encode_event(ticket_event(mid, t))[1], topic="x.events",
                                    partition=0, offset=0, stored=None, now=t + 60)  # fmt: skip
        assert r.state is not None
        return r.state

    def state(self, mid: str, t: int) -> bytes:
        body = self._tmpl.format(mid=mid, t=t, due=t + self.limit).encode()
        return b"#%d %s\n%s" % (t + self.first_offset, self.tag.encode(), body)


def wait_events(w: WorkerProc, n: int, *, timeout: float, what: str, progress_every: float = 30.0,
                ) -> tuple[float, float, int]:  # fmt: skip
    """Wait until /healthz ``events`` ≥ n; return (first-seen time, done time, events at first sight)."""
    first: list[Any] = [None, None]
    last_log = [time.monotonic()]

    def on_poll(body: dict[str, Any]) -> None:
        ev = int(body.get("events", 0))
        if first[0] is None and ev > 0:
            first[0], first[1] = time.monotonic(), ev
        w.sample_memory()
        if time.monotonic() - last_log[0] > progress_every:
            last_log[0] = time.monotonic()
            rate = ""
            if first[0] is not None and time.monotonic() > first[0]:
                rate = f", {(ev - first[1]) / (time.monotonic() - first[0]):,.0f}/s"
            log(f"{what}: {ev:,} of {n:,}{rate}, RSS {w.sample_memory().get('VmRSS', 0) / 1024:,.0f} MB")

    w.wait_until(lambda b: int(b.get("events", 0)) >= n, timeout, what=what, interval=0.1, on_poll=on_poll,
                 progress_key="events")  # fmt: skip
    done = time.monotonic()
    return (first[0] or done), done, int(first[1] or 0)
