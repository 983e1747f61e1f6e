"""The Kafka topics of the service: names, partitions, configs, keys, messages.

Topics are always created explicitly with these settings (never by broker
auto-creation), so that co-partitioning of ``waterwatch.events`` and
``waterwatch.clock`` holds and compaction is where it must be.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000
MIB = 1024 * 1024


def default_partitions() -> int:
    """Partition count of the keyed-by-matter topics (``WATERWATCH_PARTITIONS``, default 8)."""
    return int(os.environ.get("WATERWATCH_PARTITIONS", "8"))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    description: str
    messages: tuple[str, ...]
    partitions: int | None = None  # None: the default partition count
    configs: dict[str, str] = field(default_factory=dict)

    def partition_count(self) -> int:
        return self.partitions if self.partitions is not None else default_partitions()


EVENTS = TopicSpec(
    name="waterwatch.events",
    key="matter id (= CloudEvents subject)",
    description="Input events from the 12345 gateway, OA, field apps and the CLI.",
    messages=("input",),
    # 8 MiB: an oversized event must reach the worker to be dead-lettered with its bytes
    configs={"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete", "max.message.bytes": str(8 * MIB)},
)
CLOCK = TopicSpec(
    name="waterwatch.clock",
    key="matter id; co-partitioned with waterwatch.events",
    description="Deadline check commands from the timer to the agent that owns the matter.",
    messages=("ClockCheck",),
    configs={"retention.ms": str(1 * DAY_MS), "cleanup.policy": "delete"},
)
ALERTS = TopicSpec(
    name="waterwatch.alerts",
    key="matter id (= CloudEvents subject)",
    description="Warnings, overdue, escalations, reminders, violations and resident notices due.",
    messages=("output",),
    configs={"retention.ms": str(90 * DAY_MS), "cleanup.policy": "delete"},
)
DELIVERIES = TopicSpec(
    name="waterwatch.deliveries",
    key="delivery id",
    description="One record per recipient, channel and attempt, and provider receipts.",
    messages=("DeliveryRecord",),
    configs={"retention.ms": str(90 * DAY_MS), "cleanup.policy": "delete"},
)
RESIDENTS = TopicSpec(
    name="waterwatch.residents",
    key="account",
    description="The resident directory (personal data): latest record per account.",
    messages=("Resident",),
    configs={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
)
DEADLETTER = TopicSpec(
    name="waterwatch.deadletter",
    key="the original key, if any",
    description="Rejected input with its original bytes, source offset and a readable reason.",
    messages=("DeadLetter",),
    partitions=1,
    configs={"retention.ms": str(90 * DAY_MS), "cleanup.policy": "delete", "max.message.bytes": str(12 * MIB)},
)

ALL_TOPICS: tuple[TopicSpec, ...] = (EVENTS, CLOCK, ALERTS, DELIVERIES, RESIDENTS, DEADLETTER)
