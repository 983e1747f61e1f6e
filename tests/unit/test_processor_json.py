"""The worker's fast JSON (orjson, streams/processor.py) against the stdlib encoding it replaced.

States and alerts must come out byte for byte as ``json.dumps(o, ensure_ascii=False, separators=(",", ":"))``
wrote them (the alert bytes are the output contract; the stored states are compared in tests and benches),
and reading them back must give the same values, types included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.processor import _dumps, _json_bytes, _json_loads, decode_state, encode_alert, encode_state
from waterwatch.core.config import load_config
from waterwatch.core.replay import Replayer
from waterwatch.events import parse_event

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from synth import city_year


def stdlib(o: Any) -> bytes:
    return json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode()


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (1 != 1.0 != True here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_every_code_point_is_written_as_the_stdlib_writes_it() -> None:
    text = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert _json_bytes({"t": text, "l": [text]}) == stdlib({"t": text, "l": [text]})


@pytest.mark.parametrize("value", [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**40)])
def test_ints_at_and_beyond_64_bits_are_written_and_read_back_as_ints(value: int) -> None:
    o = {"n": value, "l": [value, 1]}
    raw = _json_bytes(o)
    assert raw == stdlib(o)
    assert same(_json_loads(raw), o)


def test_non_str_keys_go_the_stdlib_way() -> None:
    o = {1: "a", "b": {2: [True, None]}}
    assert _json_bytes(o) == stdlib(o)


def test_a_lone_surrogate_fails_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        _dumps({"t": "\ud800"}).encode()
    with pytest.raises((TypeError, UnicodeEncodeError)):
        _json_bytes({"t": "\ud800"})


@pytest.mark.parametrize("raw", [b"NaN", b'{"x":Infinity}', b"\xef\xbb\xbf{}", b'{"a":1}', b'"12345678901234567890"'])
def test_reading_agrees_with_the_stdlib_on_what_orjson_refuses_or_reads_differently(raw: bytes) -> None:
    try:
        expected: Any = json.loads(raw)
    except ValueError as e:
        with pytest.raises(type(e)):
            _json_loads(raw)
        return
    got = _json_loads(raw)
    assert same(got, expected) or (expected != expected and got != got)  # (NaN)


def test_reading_broken_json_fails_as_the_stdlib_does() -> None:
    for raw in (b"", b"{", b'{"a":}', b"\xff"):
        with pytest.raises(ValueError):
            _json_loads(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_tree_of_what_states_and_alerts_hold_is_written_and_read_as_the_stdlib_does(o: Any) -> None:
    raw = _json_bytes(o)
    assert raw == stdlib(o)
    assert same(_json_loads(raw), json.loads(raw))


def test_a_city_s_states_and_alerts_are_byte_identical_and_decode_to_the_same_state() -> None:
    """Every matter state and alert of a small synthetic city-year, through the worker's encoders."""
    engine = load_config().engine()
    r = Replayer(engine)
    events = sorted((parse_event(e) for e in city_year(300)), key=lambda e: e.time)
    alerts = []
    for e in events:
        a, _ = r.feed(e, t=int(e.time.timestamp()))
        alerts.extend(a)
    alerts.extend(r.run_until(int(events[-1].time.timestamp()) + 30 * 86400, inclusive=True))
    assert len(alerts) > 300 and len(r.states) == 300
    for alert in alerts:
        assert encode_alert(alert) == stdlib(alert.to_event())
    for state in r.states.values():
        body = encode_state(state)
        assert body == stdlib(state.to_dict())
        back = decode_state(encode_state(state, 1_800_000_000, "tag"))
        assert back is not None and back.to_dict() == state.to_dict()
