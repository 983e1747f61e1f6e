"""A local single-node Apache Kafka (KRaft) broker for development and tests.

The broker is plain Kafka from Maven Central: the jars listed by
``deploy/kafka/pom.xml`` are fetched once with Maven into a cache outside the
source tree and started with ``java -cp '<lib>/*' kafka.Kafka``. Nothing runs
in containers and nothing listens on anything but 127.0.0.1.

Where things live:

* jar cache: ``$WATERWATCH_CACHE/kafka-<version>/lib`` (``$WATERWATCH_CACHE``
  defaults to ``~/.cache/waterwatch``). A marker file ``lib.complete`` next to
  ``lib`` is written only after a complete copy, so an interrupted download is
  redone on the next :func:`up`.
* state: ``$WATERWATCH_HOME/kafka`` (``$WATERWATCH_HOME`` defaults to
  ``./.waterwatch`` in the current directory) holds ``server.properties``,
  ``data/`` (the KRaft log dirs), ``kafka.log`` and ``kafka.pid``.
* ports: ``$WATERWATCH_KAFKA_PORT`` (default 9092) for clients, that port + 1
  for the KRaft controller.

When ``$WATERWATCH_KAFKA`` is set, an existing cluster is used instead:
:func:`bootstrap_servers` returns it and :func:`up` / :func:`down` start or
stop nothing.

Every failure a user can fix is raised as :class:`KafkaLocalError`, whose
message is one line saying what is wrong and what to do.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "MIN_JAVA_MAJOR",
    "BrokerStatus",
    "KafkaLocalError",
    "KafkaPaths",
    "bootstrap_servers",
    "broker_port",
    "cache_dir",
    "check_java",
    "controller_port",
    "down",
    "ensure_jars",
    "external_cluster",
    "find_java",
    "kafka_paths",
    "lib_dir",
    "new_cluster_id",
    "parse_java_major",
    "render_server_properties",
    "status",
    "up",
]

KAFKA_VERSION = "4.1.1"
"""Kafka version pinned in ``deploy/kafka/pom.xml``."""

MIN_JAVA_MAJOR = 17
"""Kafka 4.x brokers need Java 17 or newer."""

DEFAULT_PORT = 9092
"""Client (PLAINTEXT) port when ``$WATERWATCH_KAFKA_PORT`` is not set."""

NODE_ID = 1
HOST = "127.0.0.1"

JVM_HEAP_OPTS = ("-Xms256m", "-Xmx768m")
JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_JAVA_INSTALL_HINT = "install openjdk-17-jre-headless or set JAVA_HOME"
_MAVEN_TIMEOUT_S = 1800.0
_FORMAT_TIMEOUT_S = 120.0
_LOG_TAIL_LINES = 15
_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEPLOY_DIR = _REPO_ROOT / "deploy" / "kafka"

_log = logging.getLogger(__name__)


class KafkaLocalError(Exception):
    """A problem with the local broker that the user can act on.

    ``str(error)`` is always a single line: the problem, then what to do.
    ``log_tail`` carries the last lines of the broker log when the broker
    itself failed (``None`` otherwise); callers may show it below the message.
    """

    def __init__(self, message: str, *, log_tail: str | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.log_tail = log_tail


@dataclass(frozen=True)
class BrokerStatus:
    """What :func:`status` (and :func:`up`) found.

    ``running`` is true when our broker process is alive (for an external
    cluster, when it answered a metadata request). ``reachable`` is true when
    a real metadata request to ``bootstrap`` succeeded within a short timeout.
    """

    running: bool
    pid: int | None
    bootstrap: str
    version: str
    data_dir: Path
    rss_bytes: int | None
    external: bool
    reachable: bool
    log_file: Path

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the fields (paths as strings)."""
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["log_file"] = str(self.log_file)
        return out


@dataclass(frozen=True)
class KafkaPaths:
    """Files of the local broker under ``$WATERWATCH_HOME/kafka``."""

    root: Path
    data_dir: Path
    config_file: Path
    log_file: Path
    pid_file: Path
    lock_file: Path

    @property
    def meta_properties(self) -> Path:
        """``meta.properties`` written by the KRaft storage format step."""
        return self.data_dir / "meta.properties"


# ---------------------------------------------------------------------------
# configuration from the environment


def external_cluster() -> str | None:
    """The existing cluster named by ``$WATERWATCH_KAFKA``, or None for the local broker."""
    value = os.environ.get("WATERWATCH_KAFKA", "").strip()
    return value or None


def broker_port() -> int:
    """Client port: ``$WATERWATCH_KAFKA_PORT`` or 9092."""
    raw = os.environ.get("WATERWATCH_KAFKA_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65534:
        raise KafkaLocalError(
            f"WATERWATCH_KAFKA_PORT must be a port number from 1 to 65534, got {raw!r}: "
            "fix it or unset it to use 9092"
        )
    return port


def controller_port(port: int | None = None) -> int:
    """KRaft controller port: the client port + 1."""
    return (broker_port() if port is None else port) + 1


def bootstrap_servers() -> str:
    """Bootstrap address for clients.

    ``$WATERWATCH_KAFKA`` when set (an existing cluster), else the local
    broker's ``127.0.0.1:<port>``.
    """
    return external_cluster() or f"{HOST}:{broker_port()}"


def _home() -> Path:
    raw = os.environ.get("WATERWATCH_HOME", "").strip()
    base = Path(raw).expanduser() if raw else Path.cwd() / ".waterwatch"
    return base.absolute()


def kafka_paths() -> KafkaPaths:
    """Paths of the local broker's state (nothing is created)."""
    root = _home() / "kafka"
    return KafkaPaths(
        root=root,
        data_dir=root / "data",
        config_file=root / "server.properties",
        log_file=root / "kafka.log",
        pid_file=root / "kafka.pid",
        lock_file=root / ".lock",
    )


def cache_dir() -> Path:
    """Per-version jar cache folder, outside the source tree."""
    raw = os.environ.get("WATERWATCH_CACHE", "").strip()
    base = Path(raw).expanduser() if raw else Path.home() / ".cache" / "waterwatch"
    return base.absolute() / f"kafka-{KAFKA_VERSION}"


def lib_dir() -> Path:
    """Folder holding the broker's runtime jars (the ``-cp`` wildcard)."""
    return cache_dir() / "lib"


def _marker_file() -> Path:
    return cache_dir() / "lib.complete"


# ---------------------------------------------------------------------------
# Java


def find_java() -> Path:
    """The ``java`` to use: ``$JAVA_HOME/bin/java`` if JAVA_HOME is set, else PATH."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise KafkaLocalError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run Kafka {KAFKA_VERSION}, but "
            f"JAVA_HOME={java_home} has no bin/java: point JAVA_HOME at a Java "
            f"{MIN_JAVA_MAJOR}+ installation, or unset it and install openjdk-17-jre-headless"
        )
    found = shutil.which("java")
    if found is None:
        raise KafkaLocalError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run Kafka {KAFKA_VERSION}, "
            f"but no java was found on PATH: {_JAVA_INSTALL_HINT}"
        )
    return Path(found)


_JAVA_VERSION_RE = re.compile(r'version\s+"([^"]+)"')


def parse_java_major(version_output: str) -> int | None:
    """Major Java version from ``java -version`` output, or None if not found.

    Handles both the old ``1.8.0_292`` scheme (-> 8) and the modern
    ``17.0.15`` / ``21`` / ``22-ea`` scheme.
    """
    match = _JAVA_VERSION_RE.search(version_output)
    if match is None:
        return None
    parts = re.split(r"[.\-+_]", match.group(1))
    try:
        first = int(parts[0])
        if first == 1 and len(parts) > 1:
            return int(parts[1])
        return first
    except ValueError:
        return None


def check_java() -> tuple[Path, int]:
    """Find java and make sure it is new enough; returns (path, major version)."""
    java = find_java()
    try:
        proc = subprocess.run(
            [str(java), "-version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaLocalError(
            f"could not run {java} -version ({exc}): {_JAVA_INSTALL_HINT}"
        ) from exc
    output = (proc.stderr or "") + (proc.stdout or "")
    major = parse_java_major(output)
    if major is None:
        first = next((line for line in output.splitlines() if line.strip()), "no output")
        raise KafkaLocalError(
            f"could not tell the Java version of {java} (it said: {first.strip()[:120]}): "
            f"{_JAVA_INSTALL_HINT}"
        )
    if major < MIN_JAVA_MAJOR:
        raise KafkaLocalError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run Kafka {KAFKA_VERSION}, "
            f"found Java {major} at {java}: {_JAVA_INSTALL_HINT}"
        )
    return java, major


# ---------------------------------------------------------------------------
# jars


def _deploy_file(name: str) -> Path:
    path = _DEPLOY_DIR / name
    if not path.is_file():
        raise KafkaLocalError(
            f"{path} is missing: waterwatch's local Kafka needs the deploy/kafka folder of a "
            "source checkout; run from the repository (or restore the file from git)"
        )
    return path


def _jars_cached() -> bool:
    marker = _marker_file()
    lib = lib_dir()
    if not marker.is_file() or not lib.is_dir():
        return False
    names = [n for n in marker.read_text(encoding="utf-8").splitlines() if n.endswith(".jar")]
    return bool(names) and all((lib / n).is_file() for n in names)


_NETWORK_HINTS = (
    "could not transfer",
    "unknown host",
    "unknownhost",
    "connection refused",
    "connect timed out",
    "read timed out",
    "network is unreachable",
    "no route to host",
    "could not resolve",
    "failed to read artifact descriptor",
    "resolution will not be reattempted",
    "temporary failure in name resolution",
    "offline mode",
    "no plugin found for prefix",
    "plugin could not be resolved",
    "non-resolvable",
)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_error_line(output: str) -> str:
    output = _ANSI_RE.sub("", output)
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    found = lines[-1] if lines else "no output"
    for line in lines:
        if line.startswith("[ERROR]") and len(line) > len("[ERROR]") + 1:
            found = line[len("[ERROR]") :]
            break
    found = re.sub(r"\s*->\s*\[Help \d+\]", "", found).strip()
    return found if len(found) <= 240 else found[:237] + "..."


def _run_maven(mvn: str, pom: Path, out_dir: Path) -> None:
    cmd = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]
    _log.info(
        "downloading Kafka %s jars with Maven into %s (one time, may take a minute)",
        KAFKA_VERSION,
        out_dir.parent,
    )
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaLocalError(
            f"Maven did not finish fetching the Kafka {KAFKA_VERSION} jars within "
            f"{_MAVEN_TIMEOUT_S:.0f}s: check that Maven Central (or your mirror in "
            "~/.m2/settings.xml) is reachable and retry"
        ) from exc
    if proc.returncode == 0:
        return
    output = (proc.stdout or "") + "\n" + (proc.stderr or "")
    detail = _first_error_line(output)
    if any(hint in output.lower() for hint in _NETWORK_HINTS):
        raise KafkaLocalError(
            f"could not download the Kafka {KAFKA_VERSION} jars: the Maven registry is "
            f"unreachable ({detail}); check the network or the mirror/proxy in "
            "~/.m2/settings.xml, then retry"
        )
    raise KafkaLocalError(
        f"Maven failed to fetch the Kafka {KAFKA_VERSION} jars ({detail}); run "
        f"`mvn -f {pom} dependency:copy-dependencies -DincludeScope=runtime` to see why"
    )


def ensure_jars() -> Path:
    """Return the jar folder, downloading it with Maven the first time.

    The copy goes to a temporary folder that is renamed into place; the
    marker file is written last, so a half-finished download is redone.
    """
    lib = lib_dir()
    if _jars_cached():
        return lib
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with _flock(cache / ".lock"):
        if _jars_cached():  # another process finished while we waited
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaLocalError(
                f"Maven (mvn) is needed once to download the Kafka {KAFKA_VERSION} jars into "
                f"{lib}: install Maven (e.g. apt-get install maven) and retry"
            )
        pom = _deploy_file("pom.xml")
        partial = cache / f"lib.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _run_maven(mvn, pom, partial)
            jars = sorted(p.name for p in partial.glob("*.jar"))
            if f"kafka_2.13-{KAFKA_VERSION}.jar" not in jars:
                raise KafkaLocalError(
                    f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {partial}: "
                    f"check {pom} and retry"
                )
            _marker_file().unlink(missing_ok=True)
            shutil.rmtree(lib, ignore_errors=True)
            partial.rename(lib)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        marker_tmp = cache / "lib.complete.tmp"
        marker_tmp.write_text("\n".join(jars) + "\n", encoding="utf-8")
        marker_tmp.replace(_marker_file())
        _log.info("cached %d jars in %s", len(jars), lib)
    return lib


# ---------------------------------------------------------------------------
# server.properties and storage


def _escape_property_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\")
    if escaped.startswith(" "):
        escaped = "\\" + escaped
    return escaped


def render_server_properties(port: int, ctrl_port: int, data_dir: Path) -> str:
    """Text of ``server.properties`` for a combined broker+controller node.

    Everything binds to 127.0.0.1; replication settings are all 1, topic
    auto-creation is off, and a few defaults are scaled down for a laptop.
    """
    if "," in str(data_dir):
        raise KafkaLocalError(
            f"the Kafka data folder {data_dir} contains a comma, which Kafka's log.dirs "
            "cannot hold: set WATERWATCH_HOME to a path without commas"
        )
    settings: list[tuple[str, str | int]] = [
        ("process.roles", "broker,controller"),
        ("node.id", NODE_ID),
        ("controller.quorum.voters", f"{NODE_ID}@{HOST}:{ctrl_port}"),
        ("listeners", f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{ctrl_port}"),
        ("advertised.listeners", f"PLAINTEXT://{HOST}:{port}"),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("controller.listener.names", "CONTROLLER"),
        ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"),
        ("log.dirs", str(data_dir)),
        ("num.partitions", 1),
        ("default.replication.factor", 1),
        ("min.insync.replicas", 1),
        ("offsets.topic.replication.factor", 1),
        ("offsets.topic.num.partitions", 1),
        ("transaction.state.log.replication.factor", 1),
        ("transaction.state.log.min.isr", 1),
        ("transaction.state.log.num.partitions", 1),
        ("share.coordinator.state.topic.replication.factor", 1),
        ("share.coordinator.state.topic.min.isr", 1),
        ("share.coordinator.state.topic.num.partitions", 1),
        ("group.initial.rebalance.delay.ms", 0),
        ("auto.create.topics.enable", "false"),
        ("log.cleaner.enable", "true"),
        ("log.cleaner.dedupe.buffer.size", 16 * 1024 * 1024),
        ("log.segment.bytes", 16 * 1024 * 1024),
        ("log.retention.hours", 168),
        ("log.retention.check.interval.ms", 60_000),
        ("num.network.threads", 2),
        ("num.io.threads", 4),
        ("num.recovery.threads.per.data.dir", 1),
    ]
    lines = [
        f"# Written by waterwatch.kafka_local for Kafka {KAFKA_VERSION}; rewritten on every",
        "# `waterwatch kafka up`, so edits here are lost.",
    ]
    lines += [f"{key}={_escape_property_value(str(value))}" for key, value in settings]
    return "\n".join(lines) + "\n"


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return props
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        props[key.strip()] = value.strip()
    return props


def _configured_port(config_file: Path) -> int | None:
    listeners = _read_properties(config_file).get("advertised.listeners", "")
    match = re.search(r"PLAINTEXT://[^:,]+:(\d+)", listeners)
    return int(match.group(1)) if match else None


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, base64url without padding.

    Like Kafka's own generator, ids starting with '-' are avoided because the
    command-line parser would read them as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def _java_base(java: Path, lib: Path, paths: KafkaPaths) -> list[str]:
    return [
        str(java),
        f"-Dlog4j2.configurationFile={_deploy_file('log4j2.xml')}",
        f"-Dwaterwatch.kafka.log.file={paths.log_file}",
        "-cp",
        f"{lib}/*",
    ]


def _format_storage(java: Path, lib: Path, paths: KafkaPaths) -> None:
    if paths.meta_properties.is_file():
        return
    cluster_id = new_cluster_id()
    _log.info("formatting KRaft storage in %s (cluster id %s)", paths.data_dir, cluster_id)
    cmd = [
        *_java_base(java, lib, paths),
        "-Xmx256m",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(paths.config_file),
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=_FORMAT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaLocalError(
            f"formatting Kafka storage in {paths.data_dir} took over {_FORMAT_TIMEOUT_S:.0f}s: "
            "check the machine's load and retry"
        ) from exc
    if proc.returncode != 0 or not paths.meta_properties.is_file():
        output = ((proc.stdout or "") + (proc.stderr or "")).strip()
        tail = "\n".join(output.splitlines()[-_LOG_TAIL_LINES:])
        raise KafkaLocalError(
            f"formatting Kafka storage in {paths.data_dir} failed (exit {proc.returncode}): "
            "retry with `waterwatch kafka up --fresh`",
            log_tail=tail or None,
        )


# ---------------------------------------------------------------------------
# processes, ports and probes


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Brokers started by this Python process: kept so they are reaped (no zombie
# that looks alive) and never garbage-collected with a "still running" warning.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rpartition(")")[2].split()[:1]
    return bool(state) and state[0] not in ("Z", "X")


def _is_our_broker(pid: int, paths: KafkaPaths) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return "kafka.Kafka" in args and str(paths.config_file) in args


def _read_pid(paths: KafkaPaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _live_pid(paths: KafkaPaths) -> int | None:
    """Pid of our running broker; a stale or foreign pid file is removed."""
    if not paths.pid_file.exists():
        return None
    pid = _read_pid(paths)
    if pid is not None and pid > 0 and _pid_alive(pid) and _is_our_broker(pid, paths):
        return pid
    _log.info("removing stale pid file %s (pid %s is not our Kafka broker)", paths.pid_file, pid)
    paths.pid_file.unlink(missing_ok=True)
    return None


def _rss_bytes(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _port_bindable(port: int) -> bool:
    """True when 127.0.0.1:port can be bound (TIME_WAIT leftovers are ignored)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_owner(port: int) -> tuple[int, str] | None:
    """Best effort (pid, command name) of a process holding a TCP port, via /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[3] == "06":  # 06 = TIME_WAIT
                continue
            local_port = cols[1].rpartition(":")[2]
            if int(local_port, 16) == port and cols[9] != "0":
                inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            for fd in (proc_dir / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc_dir.name), (proc_dir / "comm").read_text().strip()
        except OSError:
            continue
    return None


def _tcp_open(bootstrap: str, timeout: float) -> bool:
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]") or HOST
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def _metadata(bootstrap: str, timeout: float) -> dict[str, Any] | None:
    """Describe the cluster with a real metadata request; None when it fails."""
    if not _tcp_open(bootstrap, min(timeout, 2.0)):
        return None
    from kafka import KafkaAdminClient  # imported lazily: keeps the CLI quick

    timeout_ms = max(500, int(timeout * 1000))
    wanted = {
        "bootstrap_servers": bootstrap,
        "client_id": "waterwatch-kafka-local",
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
        "api_version_auto_timeout_ms": timeout_ms,
        "reconnect_backoff_max_ms": 500,
    }
    known = getattr(KafkaAdminClient, "DEFAULT_CONFIG", wanted)
    config = {key: value for key, value in wanted.items() if key in known}
    try:
        admin = KafkaAdminClient(**config)
    except Exception:  # any failure here just means "not reachable yet"
        return None
    try:
        result = admin.describe_cluster()
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()
    if not isinstance(result, dict) or not result.get("brokers"):
        return None
    return result


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str | None:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    kept = [line for line in data.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) or None


def _check_ports(port: int, ctrl_port: int, paths: KafkaPaths) -> None:
    for which, number in (("port", port), ("controller port", ctrl_port)):
        if _port_bindable(number):
            continue
        owner = _port_owner(number)
        held_by = f"by pid {owner[0]} ({owner[1]})" if owner else "by another process"
        if which == "port" and _metadata(f"{HOST}:{number}", 2.0) is not None:
            raise KafkaLocalError(
                f"port {number} on {HOST} is taken {held_by}: a Kafka broker not started from "
                f"{paths.root} answers there; use it with WATERWATCH_KAFKA={HOST}:{number}, "
                "stop it, or set WATERWATCH_KAFKA_PORT to another port"
            )
        extra = f" (the broker port {port} + 1)" if which == "controller port" else ""
        raise KafkaLocalError(
            f"Kafka {which} {number}{extra} on {HOST} is already in use {held_by}: stop that "
            "process or set WATERWATCH_KAFKA_PORT to a free port (Kafka also needs port + 1)"
        )


def _start_broker(java: Path, lib: Path, paths: KafkaPaths) -> int:
    cmd = [
        *_java_base(java, lib, paths),
        *JVM_HEAP_OPTS,
        *JVM_OPTS,
        "kafka.Kafka",
        str(paths.config_file),
    ]
    _log.info("starting Kafka %s (log: %s)", KAFKA_VERSION, paths.log_file)
    with paths.log_file.open("ab") as log_handle:
        log_handle.write(f"\n==== waterwatch: starting Kafka {KAFKA_VERSION} ====\n".encode())
        log_handle.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    tmp = paths.pid_file.with_suffix(".pid.tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(paths.pid_file)
    return proc.pid


def _wait_ready(pid: int, bootstrap: str, paths: KafkaPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not _pid_alive(pid):
            paths.pid_file.unlink(missing_ok=True)
            raise KafkaLocalError(
                f"Kafka exited during startup: see the log lines below or {paths.log_file}; "
                "fix the cause, or retry with `waterwatch kafka up --fresh` if the data is damaged",
                log_tail=_log_tail(paths.log_file),
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if _metadata(bootstrap, min(3.0, max(0.5, remaining))) is not None:
            return
        time.sleep(min(0.3, max(0.0, deadline - time.monotonic())))
    tail = _log_tail(paths.log_file)
    _stop_pid(pid, paths, 15.0)
    raise KafkaLocalError(
        f"Kafka did not answer a metadata request on {bootstrap} within {timeout:.0f}s and was "
        f"stopped: see {paths.log_file}, then retry with a larger --timeout",
        log_tail=tail,
    )


def _adopt_orphan(port: int, paths: KafkaPaths) -> int | None:
    """Our broker still holding the port after its pid file was lost: take it back."""
    owner = _port_owner(port)
    if owner is None or not _pid_alive(owner[0]) or not _is_our_broker(owner[0], paths):
        return None
    _log.info("found our broker (pid %d) without a pid file; recording it", owner[0])
    paths.pid_file.write_text(f"{owner[0]}\n")
    return owner[0]


def _find_broker(paths: KafkaPaths) -> int | None:
    """Pid of our running broker, from the pid file or (if it was lost) the port."""
    pid = _live_pid(paths)
    if pid is None and paths.config_file.is_file():
        pid = _adopt_orphan(_configured_port(paths.config_file) or broker_port(), paths)
    return pid


def _stop_pid(pid: int, paths: KafkaPaths, timeout: float) -> None:
    _log.info("stopping Kafka (pid %d)", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        _log.warning("Kafka (pid %d) ignored SIGTERM for %.0fs; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10.0
        while _pid_alive(pid) and time.monotonic() < kill_deadline:
            time.sleep(0.05)
    paths.pid_file.unlink(missing_ok=True)


def _stop(paths: KafkaPaths, timeout: float) -> bool:
    pid = _find_broker(paths)
    if pid is None:
        return False
    _stop_pid(pid, paths, timeout)
    return True


# ---------------------------------------------------------------------------
# public operations


def status() -> BrokerStatus:
    """State of the local broker (or of ``$WATERWATCH_KAFKA`` when set).

    A stale pid file is removed on the way. Takes at most a few seconds: the
    metadata probe uses a short timeout.
    """
    paths = kafka_paths()
    external = external_cluster()
    if external is not None:
        reachable = _metadata(external, 3.0) is not None
        return BrokerStatus(
            running=reachable,
            pid=None,
            bootstrap=external,
            version=KAFKA_VERSION,
            data_dir=paths.data_dir,
            rss_bytes=None,
            external=True,
            reachable=reachable,
            log_file=paths.log_file,
        )
    pid = _find_broker(paths)
    port = (_configured_port(paths.config_file) if pid else None) or broker_port()
    bootstrap = f"{HOST}:{port}"
    return BrokerStatus(
        running=pid is not None,
        pid=pid,
        bootstrap=bootstrap,
        version=KAFKA_VERSION,
        data_dir=paths.data_dir,
        rss_bytes=_rss_bytes(pid) if pid else None,
        external=False,
        reachable=_metadata(bootstrap, 3.0) is not None,
        log_file=paths.log_file,
    )


def up(fresh: bool = False, timeout: float = 90.0) -> BrokerStatus:
    """Start the local broker if needed and wait until it serves metadata.

    Harmless when our broker already runs. ``fresh`` stops it and deletes
    its data first (a new cluster id is formatted). Jars are fetched with
    Maven the first time. With ``$WATERWATCH_KAFKA`` set nothing is started.

    Raises:
        KafkaLocalError: Java/Maven missing or too old, registry unreachable,
            port taken, or the broker failed to come up in ``timeout`` seconds.
    """
    external = external_cluster()
    if external is not None:
        _log.info("WATERWATCH_KAFKA is set (%s): using that cluster, nothing started", external)
        return status()
    port = broker_port()
    ctrl_port = controller_port(port)
    bootstrap = f"{HOST}:{port}"
    paths = kafka_paths()
    paths.root.mkdir(parents=True, exist_ok=True)
    with _flock(paths.lock_file):
        if fresh:
            if _stop(paths, 30.0):
                _log.info("stopped the running broker for --fresh")
            if paths.data_dir.exists():
                _log.info("deleting %s", paths.data_dir)
                shutil.rmtree(paths.data_dir)
        pid = _find_broker(paths)
        if pid is not None:
            running_port = _configured_port(paths.config_file)
            if running_port is not None and running_port != port:
                raise KafkaLocalError(
                    f"the local Kafka from {paths.root} already runs on port {running_port}, "
                    f"but WATERWATCH_KAFKA_PORT asks for {port}: run `waterwatch kafka down` "
                    "first or use the same port"
                )
            if _metadata(bootstrap, 5.0) is None:
                _log.info("broker pid %d is alive but not answering yet; waiting", pid)
                _wait_ready(pid, bootstrap, paths, timeout)
            return status()
        java, _major = check_java()
        _check_ports(port, ctrl_port, paths)
        lib = ensure_jars()
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        config_text = render_server_properties(port, ctrl_port, paths.data_dir)
        paths.config_file.write_text(config_text, encoding="utf-8")
        _format_storage(java, lib, paths)
        pid = _start_broker(java, lib, paths)
        _wait_ready(pid, bootstrap, paths, timeout)
        _log.info("Kafka %s is ready on %s (pid %d)", KAFKA_VERSION, bootstrap, pid)
        return status()


def down(timeout: float = 30.0) -> bool:
    """Stop the local broker: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Data is kept. Returns True when a broker was stopped, False when none was
    running (or ``$WATERWATCH_KAFKA`` points at an external cluster).
    """
    external = external_cluster()
    if external is not None:
        _log.info("WATERWATCH_KAFKA is set (%s): not stopping an external cluster", external)
        return False
    paths = kafka_paths()
    if not paths.root.exists():
        return False
    with _flock(paths.lock_file):
        return _stop(paths, timeout)
