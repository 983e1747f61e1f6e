"""The in-memory deadline index of one worker: which matter is due when, per partition.

It is derived state: rebuilt from the ``matters`` table after recovery,
dropped for revoked partitions, updated after every record the agent
processes.  The timer pops what is due and sends a check command for it; the
matter comes back into the index when the agent has processed that check
(with its next due instant), so a matter is never checked twice at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class DeadlineIndex:
    def __init__(self) -> None:
        self._due: dict[str, tuple[int, int]] = {}  # matter -> (due, partition)
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def set(self, matter_id: str, partition: int, due: int | None) -> None:
        """Record the next due instant of a matter (None: nothing due any more)."""
        if due is None:
            self._due.pop(matter_id, None)
            return
        current = self._due.get(matter_id)
        if current is not None and current[0] == due:
            return
        self._due[matter_id] = (due, partition)
        heapq.heappush(self._heap, (due, matter_id))
        if len(self._heap) > 4 * len(self._due) + 1024:
            self._compact()

    def pop_due(self, now: float, limit: int = 10_000) -> list[tuple[str, int, int]]:
        """Remove and return up to ``limit`` (matter, partition, due) with due ≤ now, earliest first."""
        out: list[tuple[str, int, int]] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(out) < limit:
            due, matter = heapq.heappop(heap)
            current = self._due.get(matter)
            if current is None or current[0] != due:
                continue  # superseded
            del self._due[matter]
            out.append((matter, current[1], due))
        return out

    def next_due(self) -> int | None:
        while self._heap:
            due, matter = self._heap[0]
            current = self._due.get(matter)
            if current is not None and current[0] == due:
                return due
            heapq.heappop(self._heap)
        return None

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget every matter of the given partitions (revoked); return how many."""
        gone = set(partitions)
        before = len(self._due)
        self._due = {m: v for m, v in self._due.items() if v[1] not in gone}
        self._compact()
        return before - len(self._due)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()

    def _compact(self) -> None:
        self._heap = [(due, m) for m, (due, _) in self._due.items()]
        heapq.heapify(self._heap)
