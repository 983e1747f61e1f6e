"""The imperative shell around the core, without Faust: decode, apply, encode.

The Faust agent (``streams.worker``) feeds each record of ``waterwatch.events``
and ``waterwatch.clock`` through :class:`Processor` together with the matter's
stored state, and writes back what it returns.  Keeping this free of Faust
makes every bad input testable in microseconds, and keeps the agent loop short
(STYLE.md: "the loop decodes, calls the core, writes the state, sends what the
core returned").
"""

from __future__ import annotations

import base64
import json
import json.encoder
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from waterwatch.core.engine import Alert, Engine, MatterState, Outcome
from waterwatch.events import MAX_EVENT_BYTES, EventError, parse_event


@dataclass(slots=True)
class Result:
    """What to write after one record."""

    state: bytes | None = None  # new state to store (None: leave the table alone; with ``encode=False``: see new_state)
    alerts: list[Alert] = field(default_factory=list)
    deadletter: bytes | None = None
    error: str | None = None  # dead-letter error class, for metrics
    duplicate: bool = False
    next_due: int | None = None
    matter_id: str | None = None
    # the state written (for metrics; do not mutate); with ``encode=False`` set instead of ``state`` when one is
    # to be stored: the caller encodes it (``encode_state(new_state, next_due, tag)``)
    new_state: MatterState | None = None
    decided: list[Outcome] = field(default_factory=list)  # deadlines this record decided (met/missed)


def _compact_dumps() -> Callable[[Any], str]:
    """``json.dumps(o, ensure_ascii=False, separators=(",", ":"))``, byte for byte, without building an encoder
    per call and without the circular-reference bookkeeping (states are trees): the C encoder made once."""
    enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain encoder
        return enc.encode
    c = make(None, enc.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    join = "".join

    def dumps(o: Any) -> str:
        return join(c(o, 0))

    return dumps


_dumps = _compact_dumps()


def _json_bytes(o: Any) -> bytes:
    """``_dumps(o).encode()``, byte for byte, ~3x faster: orjson writes the same compact UTF-8 JSON for what
    states and alerts hold (str, int, bool, None, lists, tuples and str-keyed dicts; unit-tested against the
    stdlib over every code point).  What orjson refuses (an int beyond 64 bits, a non-str key) goes the stdlib
    way, with the stdlib's result or error (a lone surrogate fails both ways, as ``str.encode`` did)."""
    try:
        return orjson.dumps(o)
    except TypeError:
        return _dumps(o).encode()


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _json_loads(raw: bytes) -> Any:
    """``json.loads(raw)``, the same values, via orjson (~3x faster) where it agrees with the stdlib: bytes with
    a run of 19 digits go to the stdlib (orjson reads an int beyond 64 bits as a float), and so does anything
    orjson refuses (NaN, a byte order mark), with the stdlib's result or error."""
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def encode_state(state: MatterState, next_due: int | None = None, tag: str | None = None) -> bytes:
    """The stored form of a state: its JSON, after a one-line header ``#<next due|-> <tag>`` when ``tag`` is given.

    The header lets the worker rebuild its deadline index after recovery
    without decoding every state (:func:`stored_next_due`); ``tag`` names the
    configuration the due was computed with (``streams.worker.config_tag``),
    so a state written under another policy or time scale is decoded instead.
    """
    body = _json_bytes(state.to_dict())
    if tag is None:
        return body
    return b"#%s %s\n%s" % (b"-" if next_due is None else str(next_due).encode(), tag.encode(), body)


def decode_state(raw: bytes | None) -> MatterState | None:
    if raw is None:
        return None
    if raw[:1] == b"#":  # header (encode_state with a tag)
        raw = raw[raw.index(b"\n") + 1 :]
    return MatterState.from_dict(_json_loads(raw))


def stored_next_due(raw: bytes, tag: bytes) -> tuple[bool, int | None]:
    """(True, next due) from a stored state's header if it was written with ``tag``; (False, None) otherwise."""
    if raw[:1] != b"#":
        return False, None
    end = raw.find(b"\n", 1, 64)
    if end < 0:
        return False, None
    head = raw[1:end].split(b" ")
    if len(head) != 2 or head[1] != tag:
        return False, None
    if head[0] == b"-":
        return True, None
    try:
        return True, int(head[0])
    except ValueError:
        return False, None


def encode_alert(alert: Alert) -> bytes:
    return _json_bytes(alert.to_event())


def encode_check(matter_id: str, due: int, version: int = 0, clock: str = "", stage: str = "") -> bytes:
    """A ``ClockCheck`` command (schemas/ClockCheck.json)."""
    return json.dumps(
        {"matter_id": matter_id, "clock": clock, "stage": stage,
         "due_at": datetime.fromtimestamp(due, UTC).isoformat(), "version": version},
        separators=(",", ":"),
    ).encode()  # fmt: skip


def deadletter_record(
    *, reason: str, error: str, topic: str, partition: int | None, offset: int | None,
    key: bytes | None, value: bytes, now: float, event_type: str | None = None,
    matter_id: str | None = None,
) -> bytes:  # fmt: skip
    """A ``DeadLetter`` record (schemas/DeadLetter.json) with the original bytes."""
    body: dict[str, Any] = {
        "reason": reason,
        "error": error,
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "key_b64": base64.b64encode(key).decode() if key is not None else None,
        "value_b64": base64.b64encode(value).decode(),
        "rejected_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "event_type": event_type,
        "matter_id": matter_id,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class Processor:
    """Turns one input record plus the matter's stored state into what to write."""

    def __init__(self, engine: Engine, events_topic: str = "waterwatch.events", state_tag: str | None = None) -> None:
        self.engine = engine
        self.events_topic = events_topic
        self.state_tag = state_tag  # header tag of stored states (None: plain JSON)

    def on_event(
        self, key: bytes | None, value: bytes | None, *, topic: str, partition: int | None,
        offset: int | None, stored: bytes | None, now: float, cached: MatterState | None = None,
        encode: bool = True,
    ) -> Result:  # fmt: skip
        """One record of ``waterwatch.events``; never raises for any input.

        ``cached``: the decoded form of the matter's stored state, used instead of decoding ``stored`` (the
        worker keeps the states it wrote).  It may be changed in place: keep only ``Result.new_state``.  A
        record that stores no state (a duplicate, a record rejected before its matter's state is read) leaves
        it unchanged.  ``encode=False``: the state to store is left in ``Result.new_state`` (``state`` None),
        for a caller that stores only the newest of several (the worker, once per matter and batch).
        """
        raw = value if value is not None else b""

        def dead(error: str, reason: str, event_type: str | None = None, matter_id: str | None = None) -> Result:
            rec = deadletter_record(reason=reason, error=error, topic=topic, partition=partition,
                                    offset=offset, key=key, value=raw, now=now, event_type=event_type,
                                    matter_id=matter_id)  # fmt: skip
            return Result(deadletter=rec, error=error, matter_id=matter_id)

        if len(raw) > MAX_EVENT_BYTES:
            return dead("too_large", f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES}-byte limit")
        try:
            event = parse_event(raw)
        except EventError as exc:
            return dead(exc.error, str(exc), exc.event_type)
        if key is None or key.decode("utf-8", "replace") != event.subject:
            shown = "none" if key is None else repr(key.decode("utf-8", "replace")[:64])
            # no matter_id on the result: the record's partition is not the matter's, and the
            # deadline index must not be touched for it
            rec = dead("key_mismatch", f"the Kafka key ({shown}) is not the event's subject {event.subject!r}",
                       event.type, event.subject)  # fmt: skip
            rec.matter_id = None
            return rec
        try:
            state = cached if cached is not None else decode_state(stored)
        except (ValueError, KeyError, TypeError) as exc:  # a corrupt stored state: never crash
            return dead("state_corrupt", f"stored state of {event.subject} unreadable: {exc}", event.type,
                        event.subject)  # fmt: skip
        outcomes_before = state.outcomes_total if state is not None else 0
        step = self.engine.apply(state, event, int(now), copy=False)
        if step.duplicate:
            return Result(duplicate=True, matter_id=event.subject, alerts=[],
                          next_due=self.engine.next_due(state) if state else None)  # fmt: skip
        new_state = step.state
        result = Result(alerts=step.alerts, matter_id=event.subject)
        if step.rejection is not None:
            dl = dead(step.rejection.code, step.rejection.reason, event.type, event.subject)
            result.deadletter, result.error = dl.deadletter, dl.error
        if new_state is not None:
            due = self.engine.next_due(new_state)
            if due is not None and due <= now:  # due at once (a late notice): no need to wait for the timer
                more = self.engine.advance(new_state, int(now), copy=False)
                result.alerts += more.alerts
                due = self.engine.next_due(new_state)
            if encode:
                result.state = encode_state(new_state, due, self.state_tag)
            result.next_due = due
            result.new_state = new_state
            result.decided = _decided(new_state, outcomes_before)
        return result

    def on_check(
        self, key: bytes | None, stored: bytes | None, *, now: float, cached: MatterState | None = None,
        encode: bool = True,
    ) -> Result:  # fmt: skip
        """A check command from the timer: fire whatever of this matter is due by ``now``.

        ``cached``, ``encode``: as for :meth:`on_event` (a check with nothing due leaves ``cached`` unchanged)."""
        if key is None or (stored is None and cached is None):
            return Result()
        try:
            state = cached if cached is not None else decode_state(stored)
        except (ValueError, KeyError, TypeError):
            return Result()
        assert state is not None
        outcomes_before = state.outcomes_total
        due = self.engine.next_due(state)
        if due is None or due > now:  # stale or early check: nothing to do (principle 2)
            return Result(next_due=due, matter_id=state.matter_id)
        step = self.engine.advance(state, int(now), copy=False)
        assert step.state is not None
        nxt = self.engine.next_due(step.state)
        return Result(state=encode_state(step.state, nxt, self.state_tag) if encode else None, alerts=step.alerts,
                      next_due=nxt, matter_id=state.matter_id,
                      new_state=step.state, decided=_decided(step.state, outcomes_before))  # fmt: skip


def _decided(state: MatterState, total_before: int) -> list[Outcome]:
    """The outcomes this record appended (the list is trimmed at the front; the total is not)."""
    added = min(state.outcomes_total - total_before, len(state.outcomes))
    return list(state.outcomes[len(state.outcomes) - added :]) if added > 0 else []
