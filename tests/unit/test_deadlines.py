"""The worker's in-memory deadline index (``streams.deadlines.DeadlineIndex``)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.deadlines import DeadlineIndex

PROPS = settings(
    max_examples=int(os.environ.get("WATERWATCH_PROPERTY_EXAMPLES", "200")),
    derandomize="WATERWATCH_PROPERTY_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_pop_due_returns_what_is_due_earliest_first_and_removes_it() -> None:
    idx = DeadlineIndex()
    idx.set("b", 1, 20)
    idx.set("a", 0, 10)
    idx.set("c", 2, 30)
    assert len(idx) == 3
    assert idx.next_due() == 10
    assert idx.pop_due(9) == []
    assert idx.pop_due(20) == [("a", 0, 10), ("b", 1, 20)]  # due <= now, inclusive
    assert len(idx) == 1 and idx.next_due() == 30
    assert idx.pop_due(20) == []  # never twice
    assert idx.pop_due(1e12) == [("c", 2, 30)]
    assert len(idx) == 0 and idx.next_due() is None


def test_a_fractional_now_is_compared_with_integer_dues() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    assert idx.pop_due(9.999) == []
    assert idx.pop_due(10.0) == [("a", 0, 10)]


def test_set_supersedes_the_previous_due_of_a_matter() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    idx.set("a", 0, 50)  # moved later (e.g. an extension)
    assert idx.pop_due(10) == []
    assert idx.next_due() == 50
    idx.set("a", 0, 5)  # moved earlier
    assert idx.pop_due(5) == [("a", 0, 5)]
    assert idx.pop_due(100) == []  # the stale heap entries (10, 50) are skipped
    assert len(idx) == 0


def test_set_none_forgets_the_matter() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    idx.set("a", 0, None)
    idx.set("never", 0, None)
    assert len(idx) == 0
    assert idx.pop_due(100) == [] and idx.next_due() is None


def test_setting_the_same_due_twice_keeps_one_entry() -> None:
    idx = DeadlineIndex()
    for _ in range(5):
        idx.set("a", 0, 10)
    assert idx.pop_due(100) == [("a", 0, 10)]


def test_a_popped_matter_comes_back_when_set_again() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    assert idx.pop_due(10) == [("a", 0, 10)]
    idx.set("a", 0, 10)  # the check found the same stage still due (e.g. not yet processed)
    assert idx.pop_due(10) == [("a", 0, 10)]


def test_pop_due_respects_the_limit_and_keeps_the_rest() -> None:
    idx = DeadlineIndex()
    for i in range(10):
        idx.set(f"m{i}", i % 3, 100 + i)
    first = idx.pop_due(1000, limit=4)
    assert [m for m, _, _ in first] == ["m0", "m1", "m2", "m3"]
    rest = idx.pop_due(1000)
    assert [m for m, _, _ in rest] == [f"m{i}" for i in range(4, 10)]


def test_equal_dues_all_come_out() -> None:
    idx = DeadlineIndex()
    for m in ("c", "a", "b"):
        idx.set(m, 0, 7)
    assert sorted(m for m, _, _ in idx.pop_due(7)) == ["a", "b", "c"]


def test_drop_partitions_forgets_only_those_partitions() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    idx.set("b", 1, 20)
    idx.set("c", 2, 30)
    idx.set("d", 1, 5)
    assert idx.drop_partitions({1}) == 2
    assert len(idx) == 2
    assert idx.pop_due(100) == [("a", 0, 10), ("c", 2, 30)]
    assert idx.drop_partitions([]) == 0
    assert idx.drop_partitions({7}) == 0


def test_clear_empties_everything() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    idx.clear()
    assert len(idx) == 0 and idx.next_due() is None and idx.pop_due(100) == []


def test_the_heap_is_compacted_when_stale_entries_pile_up() -> None:
    idx = DeadlineIndex()
    for due in range(10_000):  # one matter moved many times
        idx.set("a", 0, due + 1)
    assert len(idx) == 1
    assert len(idx._parts[0].heap) <= 4 * len(idx) + 1024 + 1
    assert idx.pop_due(10**9) == [("a", 0, 10_000)]


def test_pop_due_in_pops_only_that_partition() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    idx.set("b", 1, 5)
    idx.set("c", 1, 7)
    idx.set("d", 1, 50)
    assert idx.pop_due_in(1, 8) == [("b", 5), ("c", 7)]
    assert idx.pop_due_in(1, 8) == []
    assert idx.pop_due_in(3, 100) == []  # a partition never seen
    assert len(idx) == 2 and idx.next_due() == 10


def test_pop_due_in_respects_the_limit() -> None:
    idx = DeadlineIndex()
    for i in range(5):
        idx.set(f"m{i}", 2, i)
    assert [m for m, _ in idx.pop_due_in(2, 100, limit=2)] == ["m0", "m1"]
    assert [m for m, _ in idx.pop_due_in(2, 100)] == ["m2", "m3", "m4"]


def test_due_partitions_names_the_earliest_due_matter_of_each() -> None:
    idx = DeadlineIndex()
    idx.set("a", 0, 10)
    idx.set("b", 0, 4)
    idx.set("c", 1, 20)
    idx.set("d", 2, 3)
    idx.set("d", 2, 30)  # moved later: its stale heap entry must not count
    assert sorted(idx.due_partitions(10)) == [(0, "b", 4)]
    assert sorted(idx.due_partitions(25)) == [(0, "b", 4), (1, "c", 20)]
    assert idx.due_partitions(2) == []


def test_load_adds_many_at_once_and_leaves_skipped_matters_alone() -> None:
    idx = DeadlineIndex()
    idx.set("x", 4, 99)  # set by the agent while the rebuild ran
    assert idx.load(4, [("a", 3), ("x", 1), ("b", 2)], skip={"x"}) == 2
    assert idx.pop_due_in(4, 1000) == [("b", 2), ("a", 3), ("x", 99)]
    assert idx.drop_partitions({4}) == 0 and len(idx) == 0


def test_a_burst_of_late_matters_yields_to_fresh_ones_and_still_drains() -> None:
    """A check fires at most ``limit`` matters: those coming due now go before a backlog of late ones, and at
    least a quarter of each check is backlog, so it drains; nothing fires twice or is lost (bench_worker_firelag:
    the deadlines due while a burst of 10,000 drains)."""
    idx = DeadlineIndex()
    for i in range(1000):
        idx.set(f"burst{i:04}", 0, 100)  # 1,000 due in the same second
    idx.set("other-partition", 1, 100)
    first = idx.pop_due_in(0, 100.0, limit=200, fresh=0.5)
    assert [m for m, _ in first] == [f"burst{i:04}" for i in range(200)]  # none late yet: earliest first
    fired = [m for m, _ in first]
    for step in range(1, 8):
        now = 100 + step
        idx.set(f"spread{step}", 0, now)  # coming due right now
        idx.set(f"future{step}", 0, 10_000)
        names = [m for m, _ in idx.pop_due_in(0, now, limit=200, fresh=0.5)]
        assert names[0] == f"spread{step}"  # before the whole late burst
        burst = [m for m in names if m.startswith("burst")]
        assert names[1:] == burst and burst == sorted(burst)  # then the backlog, earliest (then by id) first
        assert len(names) == min(200, 1 + 1000 - (len(fired) - (step - 1)))
        fired += names
    assert sorted(m for m in fired if m.startswith("burst")) == [f"burst{i:04}" for i in range(1000)]
    assert len(fired) == len(set(fired)) == 1000 + 7  # nothing twice, nothing lost
    assert idx.pop_due_in(1, 100) == [("other-partition", 100)]  # other partitions untouched


def test_fresh_matters_leave_a_quarter_of_a_check_to_the_backlog() -> None:
    idx = DeadlineIndex()
    for i in range(100):
        idx.set(f"late{i:03}", 0, 10)
        idx.set(f"fresh{i:03}", 0, 50)
    got = [m for m, _ in idx.pop_due_in(0, 50.0, limit=40, fresh=5)]
    assert got == [f"fresh{i:03}" for i in range(30)] + [f"late{i:03}" for i in range(10)]


def test_a_late_backlog_is_moved_aside_a_bounded_amount_per_check() -> None:
    idx = DeadlineIndex()
    for i in range(5000):
        idx.set(f"m{i}", 0, i)
    got = idx.pop_due_in(0, 10_000.0, limit=10, fresh=0.5)
    assert [m for m, _ in got] == [f"m{i}" for i in range(10)]  # all late: earliest first
    part = idx._parts[0]
    assert len(part.late) <= 16 * 10  # the rest stays in the heap until later checks
    assert len(idx) == 4990 and idx.next_due() == 10
    rest = idx.pop_due_in(0, 10_000.0, limit=10**6, fresh=0.5)
    assert [m for m, _ in rest] == [f"m{i}" for i in range(10, 5000)]


# ------------------------------------------------------------- model based

FRESH = 5  # seconds: pop_fresh's window

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from("abcdef"), st.none() | st.integers(0, 50)),
        st.tuples(st.just("pop"), st.integers(0, 60), st.integers(1, 4)),
        st.tuples(st.just("pop_in"), st.integers(0, 3), st.integers(0, 60), st.integers(1, 4)),
        st.tuples(st.just("pop_fresh"), st.integers(0, 3), st.integers(0, 8), st.integers(1, 6)),
        st.tuples(st.just("drop"), st.sets(st.integers(0, 7), max_size=3)),
        st.tuples(st.just("clear")),
    ),
    max_size=60,
)


@PROPS
@given(ops=OPS)
def test_the_index_behaves_like_a_dict_of_next_dues(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Against a plain dict model: what is popped, in which order, and what stays.

    A matter's partition is fixed (the hash of its key), as in the worker.
    """
    idx = DeadlineIndex()
    model: dict[str, tuple[int, int]] = {}  # matter -> (due, partition)
    clock = 0  # the worker's clock for pop_fresh: it only moves forward
    for op in ops:
        if op[0] == "set":
            _, m, due = op
            part = ord(m) % 4
            idx.set(m, part, due)
            if due is None:
                model.pop(m, None)
            elif model.get(m, (None,))[0] != due:
                model[m] = (due, part)
        elif op[0] == "pop":
            _, now, limit = op
            got = idx.pop_due(now, limit=limit)
            expected = sorted((due, m) for m, (due, _) in model.items() if due <= now)[:limit]
            assert [(d, m) for m, _, d in got] == expected
            for m, part, due in got:
                assert model.pop(m) == (due, part)
        elif op[0] == "pop_in":
            _, part, now, limit = op
            got_in = idx.pop_due_in(part, now, limit=limit)
            expected = sorted((due, m) for m, (due, p) in model.items() if due <= now and p == part)[:limit]
            assert [(d, m) for m, d in got_in] == expected
            for m, due in got_in:
                assert model.pop(m) == (due, part)
        elif op[0] == "pop_fresh":  # fresh matters first, then late ones, a quarter of the limit kept for late ones
            _, part, advance, limit = op
            clock += advance
            got_in = idx.pop_due_in(part, clock, limit=limit, fresh=FRESH)
            due_now = sorted((due, m) for m, (due, p) in model.items() if due <= clock and p == part)
            late = [e for e in due_now if e[0] <= clock - FRESH]
            fresh = [e for e in due_now if e[0] > clock - FRESH]
            reserved = min(len(late), max(1, limit // 4))
            taken = fresh[: limit - reserved]
            expected = taken + late[: limit - len(taken)]
            assert [(d, m) for m, d in got_in] == expected
            for m, due in got_in:
                assert model.pop(m) == (due, part)
        elif op[0] == "drop":
            gone = op[1]
            dropped = idx.drop_partitions(gone)
            before = len(model)
            model = {m: v for m, v in model.items() if v[1] not in gone}
            assert dropped == before - len(model)
        else:
            idx.clear()
            model.clear()
        assert len(idx) == len(model)
        assert idx.next_due() == (min(d for d, _ in model.values()) if model else None)
        heads = {p: min((d, m) for m, (d, q) in model.items() if q == p) for _, p in model.values()}
        assert sorted(idx.due_partitions(30)) == sorted((p, m, d) for p, (d, m) in heads.items() if d <= 30)
