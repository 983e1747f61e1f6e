"""Invariants of the engine over random event stories (hypothesis).

A *story* is the life of one matter: a ticket (any category, 12345 tier,
urgency, dispatch / return / re-dispatch, accept, extensions, deadline set,
respond, resolve, close, reopen), a planned or emergency outage, a leak, an
outside-damage report or a billing meter.  Stories are mostly legal; the
engine may still reject an event (that is allowed, and checked separately).

Properties:

(a) the same events give the same alerts;
(b) no alert fires before its matter existed, and a stage alert fires exactly
    at the instant ``Engine.schedule`` gives for that clock version;
(c) each deadline version that is not stopped by its deadline gets exactly one
    overdue alert, and one stopped (or moved) before it gets none;
(d) interleaving other matters' events does not change a matter's alerts;
(e) every alert names a rule of the policy and is a valid output event;
(g) a deadline moves (new version) only when an event says so, never by
    the passing of time;
(f) ``Engine.apply`` never raises, for any order of events; a rejection
    changes nothing but the firing of the stages due before the event;
(h) the throughput fast paths (one-pass parsing of event text, the fast
    constructor of alerts and outcomes, the table-driven ISO times) build
    exactly what the plain paths build.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import FrozenInstanceError, dataclass, field, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers_engine import ENGINE, POLICY, TZ, ev, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waterwatch.codes import Category, HotlineTier, Urgency
from waterwatch.core.engine import Alert, MatterState, Outcome, _iso
from waterwatch.events import CloudEvent, EventError, dump_event, parse_event

MIN, HOUR, DAY = 60, 3600, 86400
BASE = int(datetime(2026, 11, 2, 8, 0, tzinfo=TZ).timestamp())
LAST = int(datetime(2026, 12, 31, 0, 0, tzinfo=TZ).timestamp())  # stay inside the calendar data

# The default run is small and derandomized (the same examples every time: CI never flakes).
# WATERWATCH_PROPERTY_EXAMPLES=1000 explores more, with fresh random examples each run.
EXAMPLES = int(os.environ.get("WATERWATCH_PROPERTY_EXAMPLES", "60"))
PROPS = settings(
    max_examples=EXAMPLES,
    derandomize="WATERWATCH_PROPERTY_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,  # write nothing into the source tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CATEGORIES = [c.value for c in Category]
TIERS = [t.value for t in HotlineTier]
URGENCIES = [u.value for u in Urgency]
UNITS = ["runda", "shuixing", "chengnan", "boyang_supply"]
AREA = {"districts": ["Dongchangfu"]}
METER = {"meter_id": "MT-1", "account": "ACC-1"}

# gaps between two events of one story, in minutes: ties, minutes, hours, days
GAPS = st.sampled_from([0, 0, 5, 10, 30, 55, 60, 65, 120, 240, 600, 720, 1440, 2880])


def local(t: int) -> str:
    return datetime.fromtimestamp(t, TZ).isoformat()


def at_(t: int) -> datetime:
    return datetime.fromtimestamp(t, TZ)


# ============================================================ stories


@st.composite
def ticket_story(draw: st.DrawFn, mid: str, t0: int) -> list[CloudEvent]:
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data["channel"] = "hotline_12345"
        shape = draw(st.sampled_from(["tier", "tier+category", "due", "tier+due"]))
        if "tier" in shape:
            data["hotline_tier"] = draw(st.sampled_from(TIERS))
        if "category" in shape:
            data["category"] = draw(st.sampled_from(CATEGORIES))
        if "due" in shape:
            data["due_at"] = at_(t0 + draw(st.integers(1, 96)) * 30 * MIN)
        if draw(st.booleans()):
            data["urgency"] = draw(st.sampled_from(URGENCIES))
    else:
        data["channel"] = draw(st.sampled_from(["phone", "visit", "media", "wechat"]))
        data["category"] = draw(st.sampled_from(CATEGORIES))
    if draw(st.booleans()):
        data["unit"] = draw(st.sampled_from(UNITS))
    events = [ev("ticket.created", mid, local(t0), **data)]
    unset = data.get("category") == "reputation_or_unforeseen"
    legal = {
        "created": ["dispatch", "dispatch", "respond", "resolve", "close", "extend_ask", "deadline"],
        "dispatched": ["accept", "accept", "return", "dispatch", "respond", "resolve", "extend_ask",
                       "extend_grant", "deadline"],
        "accepted": ["return", "respond", "resolve", "resolve", "extend_ask", "extend_grant",
                     "extend_deny", "close", "deadline"],
        "returned": ["dispatch", "close"],
        "resolved": ["close", "reopen"],
        "closed": ["reopen"],
        "reopened": ["resolve", "close", "extend_ask", "extend_grant"],
    }  # fmt: skip
    status, t = "created", t0
    for _ in range(draw(st.integers(0, 8))):
        action = draw(st.sampled_from(legal[status]))
        t += draw(GAPS) * MIN
        when = local(t)
        unit = draw(st.sampled_from(UNITS))
        if action == "dispatch":
            events.append(ev("ticket.dispatched", mid, when, unit=unit))
            status = "dispatched"
        elif action == "accept":
            events.append(ev("ticket.accepted", mid, when, unit=unit))
            status = "accepted"
        elif action == "return":
            events.append(ev("ticket.returned", mid, when, unit=unit, reason="not ours"))
            status = "returned"
        elif action == "respond":
            events.append(ev("ticket.responded", mid, when))
        elif action == "resolve":
            events.append(ev("ticket.resolved", mid, when))
            status = "resolved"
        elif action == "close":
            events.append(ev("ticket.closed", mid, when))
            status = "closed"
        elif action == "reopen":
            events.append(ev("ticket.reopened", mid, when))
            status = "reopened"
        elif action == "extend_ask":
            due = at_(t + draw(st.integers(1, 72)) * HOUR)
            events.append(ev("ticket.extension_requested", mid, when, requested_due_at=due,
                             reason="parts"))  # fmt: skip
        elif action == "extend_grant":
            due = at_(t + draw(st.integers(1, 72)) * HOUR)
            events.append(ev("ticket.extension_granted", mid, when, due_at=due))
        elif action == "extend_deny":
            events.append(ev("ticket.extension_denied", mid, when))
        elif action == "deadline" and unset:
            due = at_(t + draw(st.integers(-2, 72)) * HOUR)  # may lie in the past (not before t0)
            if due.timestamp() > t0:
                events.append(ev("ticket.deadline_set", mid, when, due_at=due))
    return events


@st.composite
def outage_story(draw: st.DrawFn, mid: str, t0: int) -> list[CloudEvent]:
    unit = draw(st.sampled_from(UNITS))
    if draw(st.integers(0, 3)) == 0:
        end = draw(st.one_of(st.none(), st.integers(1, 24).map(lambda h: at_(t0 + h * HOUR))))
        events = [ev("outage.emergency", mid, local(t0), area=AREA, cause="burst", unit=unit,
                     expected_end_at=end)]  # fmt: skip
        start = t0
        started = True
    else:
        kind = draw(st.sampled_from(["planned", "maintenance", "external", "user_caused"]))
        start = t0 + draw(st.integers(1, 120)) * HOUR
        end_t = start + draw(st.integers(1, 24)) * 30 * MIN
        events = [ev("outage.planned", mid, local(t0), kind=kind, area=AREA, starts_at=at_(start),
                     expected_end_at=at_(end_t), unit=unit,
                     cause="valve" if kind == "maintenance" else None)]  # fmt: skip
        if draw(st.booleans()):
            t = t0 + draw(st.integers(1, max(1, (start - t0) // HOUR))) * HOUR - 30 * MIN
            if draw(st.booleans()):
                start += 2 * HOUR
                events.append(ev("outage.updated", mid, local(t), starts_at=at_(start),
                                 expected_end_at=at_(start + 3 * HOUR), reason="crew"))  # fmt: skip
            else:
                events.append(ev("outage.updated", mid, local(t),
                                 expected_end_at=at_(start + 5 * HOUR), reason="longer"))  # fmt: skip
        started = draw(st.booleans())
        if not started and draw(st.booleans()):
            events.append(ev("outage.cancelled", mid, local(max(t0, start - 2 * HOUR)),
                             reason="no need"))  # fmt: skip
            return events
        if started:
            start += draw(GAPS) * MIN // 4
            events.append(ev("outage.started", mid, local(start)))
    t = start
    if draw(st.booleans()):
        t += draw(st.integers(1, 20)) * 30 * MIN
        events.append(ev("outage.delay_reported", mid, local(t),
                         expected_end_at=at_(t + draw(st.integers(1, 12)) * HOUR), reason="more"))
    if draw(st.booleans()):
        t += draw(GAPS) * MIN
        events.append(ev("outage.notice_approved", mid, local(t)))
    if started and draw(st.booleans()):
        t += draw(st.integers(1, 30)) * HOUR
        events.append(ev("outage.restored", mid, local(t)))
    return events


@st.composite
def leak_story(draw: st.DrawFn, mid: str, t0: int) -> list[CloudEvent]:
    diameter = draw(st.sampled_from([None, 100, 500, 501, 800]))
    in_well = draw(st.integers(0, 5)) == 0
    events = [ev("leak.reported", mid, local(t0), pipe_diameter_mm=diameter, in_meter_well=in_well)]
    t = t0
    for step in ("leak.crew_arrived", "leak.repair_started", "leak.repaired"):
        if draw(st.booleans()):
            t += draw(GAPS) * MIN
            extra = {"pipe_diameter_mm": draw(st.sampled_from([None, 300, 900]))} \
                if step == "leak.repair_started" else {}  # fmt: skip
            events.append(ev(step, mid, local(t), **extra))
    return events


@st.composite
def damage_story(draw: st.DrawFn, mid: str, t0: int) -> list[CloudEvent]:
    events = [ev("damage.reported", mid, local(t0), summary="digger")]
    if draw(st.booleans()):
        events.append(ev("damage.inspector_arrived", mid, local(t0 + draw(GAPS) * MIN)))
    return events


@st.composite
def meter_story(draw: st.DrawFn, mid: str, t0: int) -> list[CloudEvent]:
    events = [ev("meter.registered", mid, local(t0), **METER)]
    month = at_(t0).strftime("%Y-%m")
    if draw(st.booleans()):
        t = t0 + draw(st.integers(1, 20)) * HOUR
        estimated = draw(st.booleans())
        evidence = draw(st.sampled_from([None, "gate locked"])) if estimated else None
        events.append(ev("meter.read", mid, local(t), period=month, estimated=estimated,
                         evidence=evidence, explained_to_user=draw(st.booleans()), **METER))
    return events


STORIES = {"T": ticket_story, "O": outage_story, "L": leak_story, "D": damage_story, "M": meter_story}


@st.composite
def world(draw: st.DrawFn, max_matters: int = 5) -> list[list[CloudEvent]]:
    """Several stories of different matters; creation times on a 30-min grid (ties are common)."""
    kinds = draw(st.lists(st.sampled_from("TTTOLDM"), min_size=1, max_size=max_matters))
    stories = []
    for i, kind in enumerate(kinds):
        t0 = BASE + draw(st.integers(0, 18 * 48)) * 30 * MIN
        stories.append(draw(STORIES[kind](f"{kind}{i}", t0)))
    return stories


def horizon(events: Iterable[CloudEvent]) -> int:
    return min(LAST, max(int(e.time.timestamp()) for e in events) + 4 * DAY)


def dump(a: Alert) -> str:
    return json.dumps(a.to_event(TZ), sort_keys=True, ensure_ascii=False)


def per_matter(alerts: Iterable[Alert]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for a in alerts:
        out[a.matter_id].append(dump(a))
    return dict(out)


# ============================================================ a driver that records schedules


@dataclass
class Version:
    rule: str
    kind: str
    due: int | None
    stages: dict[str, int]
    seq: int = 0  # the engine call that created it
    stopped: int | None = None
    superseded: int | None = None
    superseded_seq: int | None = None


@dataclass
class Trace:
    alerts: list[Alert] = field(default_factory=list)
    states: dict[str, MatterState] = field(default_factory=dict)
    versions: dict[tuple[str, str, int], Version] = field(default_factory=dict)
    current: dict[tuple[str, str], int] = field(default_factory=dict)
    applied: list[tuple[int, CloudEvent]] = field(default_factory=list)  # (seq, event)
    event_seqs: set[int] = field(default_factory=set)  # engine calls that applied an event
    seq: int = 0

    def snap(self, mid: str, t: int) -> None:
        state = self.states.get(mid)
        if state is None:
            return
        for c in state.clocks.values():
            key = (mid, c.name, c.version)
            v = self.versions.get(key)
            if v is None:
                stages = {s.name: s.at for s in ENGINE.schedule(state, c)}
                v = self.versions[key] = Version(c.rule, c.kind, c.due, stages, self.seq)
            v.stopped = c.stopped
            prev = self.current.get((mid, c.name))
            if prev is not None and prev != c.version:
                old = self.versions[(mid, c.name, prev)]
                if old.superseded is None:
                    old.superseded, old.superseded_seq = t, self.seq
            self.current[(mid, c.name)] = c.version


def drive(events: list[CloudEvent], until: int) -> Trace:
    """A naive replay (no heap): fire the earliest due stage of any matter, then the next event."""
    tr = Trace()

    def fire(t: int, inclusive: bool) -> None:
        while True:
            due = [(ENGINE.next_due(s), mid) for mid, s in tr.states.items()]
            due = [(d, m) for d, m in due if d is not None and (d < t or (inclusive and d == t))]
            if not due:
                return
            d, mid = min(due)
            tr.snap(mid, d)
            tr.seq += 1
            step = ENGINE.advance(tr.states[mid], d)
            assert step.state is not None
            tr.states[mid] = step.state
            tr.alerts += step.alerts
            tr.snap(mid, d)

    for e in sorted(events, key=lambda e: e.time.timestamp()):
        t = int(e.time.timestamp())
        fire(t, False)
        tr.snap(e.subject, t)
        tr.seq += 1
        tr.event_seqs.add(tr.seq)
        step = ENGINE.apply(tr.states.get(e.subject), e, t)
        tr.alerts += step.alerts
        if step.state is not None and not step.duplicate:
            tr.states[e.subject] = step.state
        if step.rejection is None and not step.duplicate:
            tr.applied.append((tr.seq, e))
        tr.snap(e.subject, t)
    fire(until, True)
    return tr


# What stops each deadline clock (the theory-of-operation table of engine.py).
STOPS = {
    "accept": {"ticket.accepted", "ticket.returned", "ticket.resolved", "ticket.closed"},
    "respond": {"ticket.responded", "ticket.resolved", "ticket.closed"},
    "feedback": {"ticket.responded", "ticket.resolved", "ticket.closed"},
    "resolve": {"ticket.resolved", "ticket.closed"},
    "arrive": {"leak.crew_arrived", "leak.repair_started", "leak.repaired",
               "damage.inspector_arrived"},
    "repair": {"leak.repaired"},
    "restore": {"outage.restored", "outage.cancelled"},
}  # fmt: skip


def expected_stop(tr: Trace, mid: str, clock: str, v: Version) -> tuple[int, int] | None:
    """(seq, time) of the first applied event that stops this clock version, if any."""
    for seq, e in tr.applied:
        if e.subject != mid or seq < v.seq:
            continue
        if v.superseded_seq is not None and seq >= v.superseded_seq:
            return None
        if clock.startswith("read:"):
            hit = e.type == "meter.read" and e.data.period == clock.removeprefix("read:")
        else:
            hit = e.type in STOPS.get(clock, ())
        if hit:
            return seq, int(e.time.timestamp())
    return None


def version_of(a: Alert) -> tuple[str, str, int]:
    mid, _rule, clock, v, _stage = a.alert_id.split("/")
    return mid, clock, int(v.removeprefix("v"))


# ============================================================ properties


@PROPS
@given(world())
def test_a_same_events_give_the_same_alerts(stories: list[list[CloudEvent]]) -> None:
    events = [e for s in stories for e in s]
    until = local(horizon(events))[:19]
    first, rej1, _ = run(events, until)
    second, rej2, _ = run(events, until)
    assert [dump(a) for a in first] == [dump(a) for a in second]
    assert [(r.event_id, str(r.rejection)) for r in rej1] == [(r.event_id, str(r.rejection)) for r in rej2]


@PROPS
@given(world())
def test_b_no_alert_before_its_threshold(stories: list[list[CloudEvent]]) -> None:
    events = [e for s in stories for e in s]
    tr = drive(events, horizon(events))
    # the naive driver and the replayer agree, matter by matter
    replayed, _, _ = run(events, local(horizon(events))[:19])
    assert per_matter(tr.alerts) == per_matter(replayed)
    for a in tr.alerts:
        created = tr.states[a.matter_id].created
        assert a.fired_at >= created, f"{a.alert_id} fired before its matter existed"
        key = version_of(a)
        v = tr.versions.get(key)
        if v is not None and a.stage in v.stages:
            assert a.fired_at == v.stages[a.stage], (a.alert_id, local(a.fired_at))
        elif v is not None and a.level in ("warning", "overdue", "escalation", "reminder") \
                and a.rule == v.rule:  # fmt: skip
            raise AssertionError(f"{a.alert_id}: a stage alert that is not in its schedule")
        elif a.clock == "peak":  # a peak version armed and fired within one call
            assert a.fired_at == a.due_at


@PROPS
@given(world())
def test_c_exactly_one_overdue_per_missed_deadline_version(stories: list[list[CloudEvent]]) -> None:
    events = [e for s in stories for e in s]
    until = horizon(events)
    tr = drive(events, until)
    overdue: dict[tuple[str, str, int], int] = defaultdict(int)
    for a in tr.alerts:
        if a.stage == "overdue":
            overdue[version_of(a)] += 1
    for key, v in tr.versions.items():
        if v.kind not in ("deadline", "overdue_only") or v.due is None:
            continue
        mid, clock, _ = key
        stop = expected_stop(tr, mid, clock, v)
        if clock in STOPS or clock.startswith("read:"):
            assert v.stopped == (stop[1] if stop else None), (
                f"{key}: stopped at {v.stopped and local(v.stopped)}, but the events say "
                f"{stop and local(stop[1])}"
            )
        ends = [x for x in (v.stopped, v.superseded) if x is not None]
        # an event at exactly the deadline is on time; the horizon itself is included
        expected = int(v.due < min(ends)) if ends else int(v.due <= until)
        assert overdue.get(key, 0) == expected, (
            f"{key}: due {local(v.due)}, stopped {v.stopped and local(v.stopped)}, "
            f"moved {v.superseded and local(v.superseded)}: {overdue.get(key, 0)} overdue alerts"
        )
    assert set(overdue) <= set(tr.versions), "overdue alert for a clock version never seen"


@PROPS
@given(world(), st.randoms(use_true_random=False))
def test_d_interleaving_matters_does_not_change_a_matters_alerts(
    stories: list[list[CloudEvent]], rnd: Any
) -> None:
    events = [e for s in stories for e in s]
    until = local(horizon(events))[:19]
    # a random merge of the stories that keeps each story's own order
    queues = [list(s) for s in stories]
    merged: list[CloudEvent] = []
    while any(queues):
        q = rnd.choice([q for q in queues if q])
        merged.append(q.pop(0))
    together, _, _ = run(merged, until)
    reversed_, _, _ = run([e for s in reversed(stories) for e in s], until)
    got = per_matter(together)
    assert got == per_matter(reversed_)
    for story in stories:
        alone, _, _ = run(story, until)
        mid = story[0].subject
        assert got.get(mid, []) == [dump(a) for a in alone], mid


@PROPS
@given(world())
def test_e_every_alert_names_a_policy_rule_and_is_a_valid_event(
    stories: list[list[CloudEvent]],
) -> None:
    events = [e for s in stories for e in s]
    alerts, _, _ = run(events, local(horizon(events))[:19])
    for a in alerts:
        assert a.rule in POLICY.rules, f"{a.alert_id}: rule {a.rule!r} is not in the policy"
        out = parse_event(json.loads(dump(a)), allow_output=True)
        assert out.type == a.type and out.id == a.alert_id


@PROPS
@given(world())
def test_g_a_deadline_moves_only_on_an_event(stories: list[list[CloudEvent]]) -> None:
    events = [e for s in stories for e in s]
    tr = drive(events, horizon(events))
    for key, v in tr.versions.items():
        if v.kind in ("deadline", "overdue_only") and v.superseded_seq is not None:
            assert v.superseded_seq in tr.event_seqs, f"{key} was moved by the clock alone"


_EARLY_CODES = {"time_in_future", "unknown_matter", "duplicate_matter", "wrong_kind",
                "time_backwards"}  # fmt: skip


@settings(PROPS, max_examples=max(EXAMPLES, 100))
@given(world(max_matters=4), st.randoms(use_true_random=False),
       st.lists(st.sampled_from([-7200, -60, 0, 0, 0, 300, 3600, 86400]), min_size=1))  # fmt: skip
def test_f_apply_never_raises_for_any_order(
    stories: list[list[CloudEvent]], rnd: Any, skews: list[int]
) -> None:
    events = [e for s in stories for e in s]
    events += rnd.sample(events, k=min(3, len(events)))  # some duplicate ids
    rnd.shuffle(events)  # any order, across and within matters
    states: dict[str, MatterState] = {}
    for i, e in enumerate(events):
        t = int(e.time.timestamp())
        now = t + skews[i % len(skews)]
        before = states.get(e.subject)
        step = ENGINE.apply(before, e, now)  # must not raise
        if step.duplicate:
            assert before is not None and step.rejection is None and not step.alerts
            continue
        if step.rejection is not None:
            r = step.rejection
            assert isinstance(r.code, str) and r.code and str(r) and "\n" not in str(r)
            if before is None:
                assert step.state is None and not step.alerts
            elif r.code in _EARLY_CODES:
                assert step.state is not None and step.state.to_dict() == before.to_dict()
                assert not step.alerts
            else:  # only the stages due before the event have fired
                assert step.state is not None
                expected = ENGINE.advance(before, t - 1, now=now)
                assert step.state.to_dict() == expected.state.to_dict(), (e.type, r.code)
                assert [dump(a) for a in step.alerts] == [dump(a) for a in expected.alerts]
                states[e.subject] = step.state
            continue
        assert step.state is not None
        states[e.subject] = step.state


# ------------------------------------------------ the fast paths (docs/decisions/0008-core-throughput.md)


@PROPS
@given(world())
def test_h_fast_paths_build_the_same_objects(stories: list[list[CloudEvent]]) -> None:
    """Parsing text takes a one-pass validator, alerts and outcomes a fast constructor: same results."""
    events = [e for s in stories for e in s]
    for e in events:
        text = dump_event(e)
        fast = parse_event(text.encode())  # the fast path (bytes)
        full = parse_event(json.loads(text))  # a dict always takes the full path
        assert type(fast) is type(full) and fast == full and repr(fast) == repr(full)
        broken = json.loads(text)
        broken["data"] = {**broken["data"], "bogus": 1}
        with pytest.raises(EventError) as by_text:
            parse_event(json.dumps(broken))
        with pytest.raises(EventError) as by_dict:
            parse_event(broken)
        assert (by_text.value.error, by_text.value.reason) == (by_dict.value.error, by_dict.value.reason)
    alerts, _, r = run(events, local(horizon(events))[:19])
    for a in alerts:
        plain = Alert(*(getattr(a, f.name) for f in fields(Alert)))
        assert type(a) is Alert and a == plain and hash(a) == hash(plain) and dump(a) == dump(plain)
        with pytest.raises(FrozenInstanceError):
            a.stage = "x"  # type: ignore[misc]
    for state in r.states.values():
        for o in state.outcomes:
            plain_o = Outcome(*(getattr(o, f.name) for f in fields(Outcome)))
            assert type(o) is Outcome and o == plain_o and o.to_list() == plain_o.to_list()
            with pytest.raises(FrozenInstanceError):
                o.met = not o.met  # type: ignore[misc]


@settings(PROPS, max_examples=max(EXAMPLES, 300))
@given(st.integers(-2_000_000_000, 4_200_000_000), st.sampled_from(["Asia/Shanghai", "Europe/Berlin",
       "America/St_Johns", "Australia/Lord_Howe", "UTC"]))  # fmt: skip
def test_h_iso_times_as_datetime_writes_them(ts: int, zone: str) -> None:
    tz = ZoneInfo(zone)
    for t in (ts, ts - 1, ts + 1, ts // 3600 * 3600, ts // 3600 * 3600 - 1):
        assert _iso(t, tz) == datetime.fromtimestamp(t, tz).isoformat()
