"""The in-memory deadline index of one worker: which matter is due when, per partition.

It is derived state: rebuilt from the ``matters`` table after recovery,
dropped for revoked partitions, updated after every record the agent
processes.  Each partition has its own dict (matter -> due) and heap, so the
timer can ask "which partitions have something due" in O(partitions), the
agent can pop *its own* due matters of one partition when a check command for
that partition arrives, and a revoked partition is forgotten in O(1).

A matter's partition is fixed (the murmur2 hash of its key, which is also the
partition its events and its stored state are on): ``set`` with another
partition for the same matter adds a second entry rather than moving it.  A
popped matter comes back into the index when the agent has processed it (with
its next due instant), so a matter is never checked twice at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class _Partition:
    __slots__ = ("due", "heap")

    def __init__(self) -> None:
        self.due: dict[str, int] = {}  # matter -> due
        self.heap: list[tuple[int, str]] = []  # (due, matter), with stale entries skipped lazily

    def head(self) -> tuple[int, str] | None:
        """The earliest current (due, matter), dropping stale heap entries on the way."""
        heap, due = self.heap, self.due
        while heap:
            d, m = heap[0]
            if due.get(m) == d:
                return d, m
            heapq.heappop(heap)
        return None

    def compact(self) -> None:
        self.heap = [(d, m) for m, d in self.due.items()]
        heapq.heapify(self.heap)


class DeadlineIndex:
    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def __len__(self) -> int:
        return sum(len(p.due) for p in self._parts.values())

    def partitions(self) -> list[int]:
        return sorted(p for p, part in self._parts.items() if part.due)

    def set(self, matter_id: str, partition: int, due: int | None) -> None:
        """Record the next due instant of a matter (None: nothing due any more)."""
        part = self._parts.get(partition)
        if due is None:
            if part is not None:
                part.due.pop(matter_id, None)
            return
        if part is None:
            part = self._parts[partition] = _Partition()
        if part.due.get(matter_id) == due:
            return
        part.due[matter_id] = due
        heapq.heappush(part.heap, (due, matter_id))
        if len(part.heap) > 4 * len(part.due) + 1024:
            part.compact()

    def load(self, partition: int, entries: Iterable[tuple[str, int]], skip: set[str] | frozenset[str] = frozenset(),
             ) -> int:  # fmt: skip
        """Add many (matter, due) of one partition at once (the rebuild); matters in ``skip`` are left as they are."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        due = part.due
        n = 0
        for m, d in entries:
            if m in skip:
                continue
            due[m] = d
            n += 1
        part.compact()  # one heapify instead of a push per matter
        return n

    def pop_due_in(self, partition: int, now: float, limit: int = 10_000) -> list[tuple[str, int]]:
        """Remove and return up to ``limit`` (matter, due) of one partition with due ≤ now, earliest first."""
        part = self._parts.get(partition)
        out: list[tuple[str, int]] = []
        if part is None:
            return out
        heap, due = part.heap, part.due
        while heap and heap[0][0] <= now and len(out) < limit:
            d, m = heapq.heappop(heap)
            if due.get(m) != d:
                continue  # superseded
            del due[m]
            out.append((m, d))
        return out

    def due_partitions(self, now: float) -> list[tuple[int, str, int]]:
        """(partition, matter, due) of the earliest due matter of every partition that has one due by ``now``."""
        out = []
        for p, part in self._parts.items():
            head = part.head()
            if head is not None and head[0] <= now:
                out.append((p, head[1], head[0]))
        return out

    def pop_due(self, now: float, limit: int = 10_000) -> list[tuple[str, int, int]]:
        """Remove and return up to ``limit`` (matter, partition, due) with due ≤ now, earliest first (any partition)."""
        out: list[tuple[str, int, int]] = []
        while len(out) < limit:
            best: tuple[int, str, int] | None = None
            for p, part in self._parts.items():
                head = part.head()
                if head is not None and head[0] <= now and (best is None or head < best[:2]):
                    best = (head[0], head[1], p)
            if best is None:
                break
            d, m, p = best
            part = self._parts[p]
            heapq.heappop(part.heap)
            del part.due[m]
            out.append((m, p, d))
        return out

    def next_due(self) -> int | None:
        heads = [h[0] for h in (part.head() for part in self._parts.values()) if h is not None]
        return min(heads) if heads else None

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget every matter of the given partitions (revoked); return how many."""
        n = 0
        for p in set(partitions):
            part = self._parts.pop(p, None)
            if part is not None:
                n += len(part.due)
        return n

    def clear(self) -> None:
        self._parts.clear()
