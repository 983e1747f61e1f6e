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

Late work yields to what is coming due now (``pop_due_in`` with ``fresh``).
When more is due on a partition than one check fires (a burst of 10,000
deadlines in the same second, or the backlog of a worker that was down), the
check would otherwise fire strictly earliest first, and every deadline that
comes due while the backlog drains would wait behind all of it.  So matters
late by more than ``fresh`` seconds are moved out of the partition's heap into
its ``late`` heap, and a check fires the partition's fresh matters first, then
late ones; at least a quarter of each check is late work while there is any,
so the backlog always drains.  The backlog still drains at the same rate; only
the order in which *different* matters fire changes, never what fires.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class _Partition:
    __slots__ = ("due", "heap", "late")

    def __init__(self) -> None:
        self.due: dict[str, int] = {}  # matter -> due
        self.heap: list[tuple[int, str]] = []  # (due, matter), with stale entries skipped lazily
        self.late: list[tuple[int, str]] = []  # (due, matter) moved out of ``heap`` as late; stale ones skipped too

    def _current(self, heap: list[tuple[int, str]]) -> tuple[int, str] | None:
        due = self.due
        while heap:
            d, m = heap[0]
            if due.get(m) == d:
                return d, m
            heapq.heappop(heap)
        return None

    def head(self) -> tuple[int, str] | None:
        """The earliest current (due, matter), dropping stale entries on the way."""
        a, b = self._current(self.heap), self._current(self.late)
        if a is None or (b is not None and b < a):
            return b
        return a

    def pop_head(self) -> tuple[int, str] | None:
        """Remove and return the earliest current (due, matter)."""
        head = self.head()
        if head is not None:
            heapq.heappop(self.late if self.late and self.late[0] == head else self.heap)
            del self.due[head[1]]
        return head

    def pop_current(self, heap: list[tuple[int, str]], until: float, out: list[tuple[str, int]], limit: int) -> None:
        """Move current (due, matter) of ``heap`` with due <= ``until`` to ``out`` as (matter, due), up to ``limit``."""
        due = self.due
        while heap and heap[0][0] <= until and len(out) < limit:
            d, m = heapq.heappop(heap)
            if due.get(m) != d:
                continue  # superseded
            del due[m]
            out.append((m, d))

    def compact(self) -> None:
        self.heap = [(d, m) for m, d in self.due.items()]
        heapq.heapify(self.heap)
        self.late = []


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

    def pop_due_in(self, partition: int, now: float, limit: int = 10_000, fresh: float | None = None,
                   ) -> list[tuple[str, int]]:  # fmt: skip
        """Remove and return up to ``limit`` (matter, due) of one partition with due ≤ now.

        Without ``fresh``: earliest first.  With ``fresh`` (seconds): the matters due in ``(now - fresh, now]``
        first, earliest first, then the late ones, earliest first; while late ones are left, at least a quarter
        of ``limit`` goes to them (see the module's docstring)."""
        part = self._parts.get(partition)
        out: list[tuple[str, int]] = []
        if part is None:
            return out
        if fresh is None:
            while len(out) < limit:
                head = part.head()
                if head is None or head[0] > now:
                    break
                part.pop_head()
                out.append((head[1], head[0]))
            return out
        heap, late, due = part.heap, part.late, part.due
        cutoff = now - fresh
        moved = 0
        while heap and heap[0][0] <= cutoff:
            if moved >= 16 * limit:  # a huge backlog (a worker that was down) moves over a few checks: until then,
                return self.pop_due_in(partition, now, limit)  # nothing is fresh before it, earliest first
            entry = heapq.heappop(heap)
            if due.get(entry[1]) == entry[0]:
                heapq.heappush(late, entry)
                moved += 1
        behind: list[tuple[str, int]] = []
        part.pop_current(late, now, behind, max(1, limit // 4))
        part.pop_current(heap, now, out, limit - len(behind))
        part.pop_current(late, now, behind, limit - len(out))
        out.extend(behind)
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
            self._parts[p].pop_head()
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
