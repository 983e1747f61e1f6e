"""Replay: the pure core over a stream of events with a virtual clock.

Events are applied in time order (stable for equal times).  Between events
the virtual clock jumps to each matter's next due stage, so every alert is
fired exactly at its threshold and comes out in global time order.  The same
input always gives the same output, byte for byte.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from waterwatch.core.engine import Alert, Engine, MatterState, Rejection
from waterwatch.events import CloudEvent


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector during a bulk replay.

    A replay keeps every matter's state alive, so the collector's full passes
    walk an ever larger heap while finding nothing: the core's objects form
    no reference cycles and are freed by reference counting.  Measured on the
    city-year benchmark this pause takes two thirds of the time away.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int  # position of the event in the input (line number if given)
    event_id: str
    matter_id: str
    rejection: Rejection


@dataclass(slots=True)
class ReplayStats:
    events: int = 0
    applied: int = 0
    rejected: int = 0
    duplicates: int = 0
    alerts: int = 0
    matters: int = 0


class Replayer:
    """Holds all matter states in memory and drives the engine with a virtual clock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.states: dict[str, MatterState] = {}
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}
        self.stats = ReplayStats()
        self.clock = 0

    def _schedule(self, state: MatterState) -> None:
        nxt = self.engine.next_due(state)
        mid = state.matter_id
        if nxt is None:
            self._due.pop(mid, None)
            return
        if self._due.get(mid) != nxt:
            self._due[mid] = nxt
            heapq.heappush(self._heap, (nxt, mid))

    def run_until(self, t: int, *, inclusive: bool) -> Iterator[Alert]:
        """Fire every due stage before ``t`` (or at ``t`` if inclusive), in time order."""
        heap = self._heap
        while heap and (heap[0][0] < t or (inclusive and heap[0][0] == t)):
            due, mid = heapq.heappop(heap)
            if self._due.get(mid) != due:
                continue  # superseded entry
            del self._due[mid]
            self.clock = max(self.clock, due)
            step = self.engine.advance(self.states[mid], due, copy=False)
            assert step.state is not None
            self.states[mid] = step.state
            self.stats.alerts += len(step.alerts)
            yield from step.alerts
            self._schedule(step.state)

    def feed(self, event: CloudEvent, index: int = 0, t: int | None = None) -> tuple[list[Alert], Rejected | None]:
        """Apply one event (``t``: its time in POSIX seconds, if the caller has it already)."""
        if t is None:
            t = int(event.time.timestamp() // 1)
        self.stats.events += 1
        heap = self._heap
        pre = list(self.run_until(t, inclusive=False)) if heap and heap[0][0] < t else []
        if t > self.clock:
            self.clock = t
        state = self.states.get(event.subject)
        step = self.engine.apply(state, event, t, copy=False, t=t)
        if step.duplicate:
            self.stats.duplicates += 1
            return pre, None
        if step.rejection is not None:
            self.stats.rejected += 1
            self.stats.alerts += len(step.alerts)
            if state is not None:
                self._schedule(state)
            return pre + step.alerts, Rejected(index, event.id, event.subject, step.rejection)
        assert step.state is not None
        if state is None:
            self.stats.matters += 1
        self.states[event.subject] = step.state
        self.stats.applied += 1
        self.stats.alerts += len(step.alerts)
        self._schedule(step.state)
        return pre + step.alerts, None


def replay(
    engine: Engine, events: Iterable[tuple[int, CloudEvent]], until: int | None = None
) -> Iterator[Alert | Rejected]:
    """Replay ``(index, event)`` pairs (sorted here by time, stably) and yield alerts and rejections.

    With ``until`` the virtual clock runs on to that instant after the last event.
    """
    ordered = sorted(((int(e.time.timestamp() // 1), i, e) for i, e in events), key=lambda p: p[0])
    r = Replayer(engine)
    with gc_paused():
        for t, index, event in ordered:
            alerts, rejected = r.feed(event, index, t=t)
            yield from alerts
            if rejected is not None:
                yield rejected
        if until is not None:
            yield from r.run_until(until, inclusive=True)
