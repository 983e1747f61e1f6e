"""Create and check the service's Kafka topics (kafka-python admin client).

Broker auto-creation is off (and must stay off), so every topic is created
here, explicitly, with the partition count and configs of its
:class:`~waterwatch.topics.TopicSpec`.  A topic that already exists with a
different partition count is an error (:class:`TopicMismatch`): co-partitioning
of ``waterwatch.events`` and ``waterwatch.clock`` depends on it, and running
mis-partitioned would silently break "one writer per matter".
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import kafka.errors as kerrors
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from waterwatch.topics import ALL_TOPICS, TopicSpec

CONNECT_TIMEOUT_S = 10.0
"""How long to try to reach the broker before giving up with :class:`BrokerUnavailable`."""

READY_TIMEOUT_S = 30.0
"""How long to wait for newly created topics to have a leader on every partition."""


class BrokerUnavailable(Exception):
    """The Kafka broker cannot be reached. ``str()`` is one line saying what to do."""

    def __init__(self, bootstrap: str, detail: str = "") -> None:
        self.bootstrap = bootstrap
        self.detail = detail
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"cannot reach the Kafka broker at {bootstrap}{why}: "
            "run `waterwatch kafka up` or set WATERWATCH_KAFKA to a reachable broker"
        )


@dataclass(frozen=True)
class Mismatch:
    topic: str
    actual: int
    expected: int
    hint: str


class TopicMismatch(Exception):
    """An existing topic has a partition count other than the one waterwatch expects."""

    def __init__(self, mismatches: Sequence[Mismatch]) -> None:
        self.mismatches = list(mismatches)
        first = self.mismatches[0]
        line = (
            f"topic {first.topic} has {first.actual} partitions, "
            f"waterwatch expects {first.expected}: {first.hint}"
        )
        if len(self.mismatches) > 1:
            others = ", ".join(m.topic for m in self.mismatches[1:])
            line += f" (also mis-partitioned: {others})"
        super().__init__(line)


# ------------------------------------------------------------------ client plumbing

# kafka-python errors raised when no broker answers: 3.x times out while
# bootstrapping, 2.x raises NoBrokersAvailable.
_UNREACHABLE: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (
        getattr(kerrors, "NoBrokersAvailable", None),
        getattr(kerrors, "KafkaTimeoutError", None),
        getattr(kerrors, "KafkaConnectionError", None),
        getattr(kerrors, "NodeNotReadyError", None),
    )
    if isinstance(cls, type)
)


def supported_configs(client_cls: type, **configs: Any) -> dict[str, Any]:
    """Keep only the configs this kafka-python version knows (2.x refuses unknown ones)."""
    known = getattr(client_cls, "DEFAULT_CONFIG", None)
    if not isinstance(known, dict):
        return configs
    return {k: v for k, v in configs.items() if k in known}


def connect(client_cls: type, bootstrap: str, **configs: Any) -> Any:
    """Build a kafka-python client; :class:`BrokerUnavailable` when no broker answers."""
    import kafka.errors as kerrors

    try:
        return client_cls(**supported_configs(client_cls, bootstrap_servers=bootstrap, **configs))
    except (kerrors.KafkaTimeoutError, kerrors.KafkaConnectionError) as exc:
        raise BrokerUnavailable(bootstrap, type(exc).__name__) from None
    except kerrors.KafkaError as exc:
        if type(exc).__name__ == "NoBrokersAvailable":  # kafka-python 2.x
            raise BrokerUnavailable(bootstrap, type(exc).__name__) from None
        raise


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "9092"
        try:
            out.append((host.strip("[]"), int(port)))
        except ValueError:
            continue
    return out


def probe(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if some bootstrap address accepts a TCP connection (a quick pre-check)."""
    addresses = _addresses(bootstrap)
    if not addresses:
        return True  # let the client report what is wrong with the address
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


@contextlib.contextmanager
def admin_client(
    bootstrap: str, *, connect_timeout: float | None = None
) -> Iterator[KafkaAdminClient]:
    """A connected admin client, closed on exit; :class:`BrokerUnavailable` if none answers."""
    if connect_timeout is None:
        connect_timeout = CONNECT_TIMEOUT_S
    if not probe(bootstrap):
        raise BrokerUnavailable(bootstrap, "no TCP connection")
    configs = supported_configs(
        KafkaAdminClient,
        bootstrap_servers=bootstrap,
        client_id="waterwatch-admin",
        request_timeout_ms=30_000,
        bootstrap_timeout_ms=int(connect_timeout * 1000),
        reconnect_backoff_max_ms=1000,
    )
    try:
        client = KafkaAdminClient(**configs)
    except _UNREACHABLE as exc:
        raise BrokerUnavailable(bootstrap, type(exc).__name__) from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _topic_name(info: dict[str, Any]) -> str | None:
    name = info.get("name", info.get("topic"))  # 3.x: name, 2.x: topic
    return name if isinstance(name, str) else None


def _partitions(info: dict[str, Any]) -> list[dict[str, Any]]:
    parts = info.get("partitions") or []
    return list(parts)


def _topic_counts(client: KafkaAdminClient, names: Iterable[str] | None) -> dict[str, int]:
    """Partition counts of the given (existing) topics, or of all topics if ``names`` is None."""
    wanted = None if names is None else sorted(set(names))
    if wanted is not None and not wanted:
        return {}
    out: dict[str, int] = {}
    for info in client.describe_topics(wanted):
        name = _topic_name(info)
        if name is None or info.get("error_code", 0) != 0:
            continue
        out[name] = len(_partitions(info))
    return out


def _not_ready(info: dict[str, Any] | None) -> bool:
    if info is None or info.get("error_code", 0) != 0:
        return True
    parts = _partitions(info)
    if not parts:
        return True
    for p in parts:
        leader = p.get("leader_id", p.get("leader", -1))
        if p.get("error_code", 0) != 0 or leader is None or leader < 0:
            return True
    return False


def _wait_ready(client: KafkaAdminClient, names: Sequence[str], timeout: float) -> None:
    """Wait until every topic has a leader on every partition (KRaft propagates lazily)."""
    if not names:
        return
    deadline = time.monotonic() + timeout
    pending = list(names)
    while True:
        try:
            infos = {_topic_name(i): i for i in client.describe_topics(list(pending))}
        except kerrors.KafkaError:
            infos = {}
        pending = [n for n in pending if _not_ready(infos.get(n))]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise kerrors.KafkaTimeoutError(
                f"topics not ready after {timeout:.0f}s: {', '.join(pending)}"
            )
        time.sleep(0.1)


# ------------------------------------------------------------------------ the API


def expected_partitions(spec: TopicSpec, partitions: int | None = None) -> int:
    """The partition count a spec needs; ``partitions`` overrides the default, not a fixed count."""
    if spec.partitions is not None:
        return spec.partitions
    if partitions is not None:
        return partitions
    return spec.partition_count()


def _hint(spec: TopicSpec, actual: int, partitions: int | None) -> str:
    if spec.partitions is None and partitions is None:
        return f"set WATERWATCH_PARTITIONS={actual} or recreate the topic"
    return "recreate the topic"


def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec] = ALL_TOPICS,
    partitions: int | None = None,
    *,
    check_existing: bool = True,
    ready_timeout: float = READY_TIMEOUT_S,
) -> list[str]:
    """Create the missing topics of ``specs``; return the names created (in spec order).

    ``partitions`` replaces the default partition count (``WATERWATCH_PARTITIONS``)
    for specs that do not fix their own (e.g. the dead-letter topic keeps 1).
    Existing topics are checked: a different partition count raises
    :class:`TopicMismatch` before anything is created (``check_existing=False``
    skips that, for topics that are not waterwatch's own).  A topic created
    concurrently by someone else is accepted and checked like an existing one.
    Raises :class:`BrokerUnavailable` if the broker cannot be reached.
    """
    by_name = {spec.name: spec for spec in specs}
    with admin_client(bootstrap) as client:
        existing_names = set(client.list_topics())
        existing = _topic_counts(client, [n for n in by_name if n in existing_names])
        if check_existing:
            _check(by_name, existing, partitions)

        created: list[str] = []
        raced: list[str] = []
        for spec in specs:
            if spec.name in existing:
                continue
            topic = NewTopic(
                name=spec.name,
                num_partitions=expected_partitions(spec, partitions),
                replication_factor=1,
                topic_configs=dict(spec.configs),
            )
            try:
                client.create_topics([topic])
            except kerrors.TopicAlreadyExistsError:
                raced.append(spec.name)
            else:
                created.append(spec.name)

        _wait_ready(client, created + raced, ready_timeout)
        if raced and check_existing:
            _check(by_name, _topic_counts(client, raced), partitions)
    return created


def _check(by_name: dict[str, TopicSpec], counts: dict[str, int], partitions: int | None) -> None:
    mismatches = [
        Mismatch(
            name,
            actual,
            expected_partitions(by_name[name], partitions),
            _hint(by_name[name], actual, partitions),
        )
        for name, actual in counts.items()
        if actual != expected_partitions(by_name[name], partitions)
    ]
    if mismatches:
        order = list(by_name)
        mismatches.sort(key=lambda m: order.index(m.topic))
        raise TopicMismatch(mismatches)


def describe(bootstrap: str, topics: Iterable[str] | None = None) -> dict[str, int]:
    """Partition count of each existing topic (all topics, or those named that exist)."""
    with admin_client(bootstrap) as client:
        names = set(client.list_topics())
        if topics is not None:
            names &= set(topics)
        return dict(sorted(_topic_counts(client, names).items()))


def delete_topics(bootstrap: str, names: Iterable[str]) -> list[str]:
    """Delete the named topics that exist; return the names deleted (used by tests and tools)."""
    with admin_client(bootstrap) as client:
        present = sorted(set(names) & set(client.list_topics()))
        if present:
            with contextlib.suppress(kerrors.UnknownTopicOrPartitionError):
                client.delete_topics(present)
        return present
