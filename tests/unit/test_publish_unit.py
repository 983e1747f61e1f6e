"""Line reading and validation of ``waterwatch publish`` (no broker)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from waterwatch.cli_publish import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, report
from waterwatch.events import MAX_EVENT_BYTES
from waterwatch.publish import (
    PublishSummary,
    check_line,
    one_line,
    read_lines,
    spec_for,
    validate_lines,
)
from waterwatch.topics import ALL_TOPICS, EVENTS


def ticket(matter: str = "T-1", **data: object) -> dict[str, object]:
    body: dict[str, object] = {"channel": "phone", "category": "leak_report"}
    body.update(data)
    return {
        "specversion": "1.0",
        "id": f"evt-{matter}",
        "source": "test",
        "type": "ticket.created",
        "time": "2025-03-03T09:00:00+08:00",
        "subject": matter,
        "data": body,
    }


def meter(matter: str = "M-1") -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": f"evt-{matter}",
        "source": "test",
        "type": "meter.read",
        "time": "2025-03-03T09:00:00+08:00",
        "subject": matter,
        "data": {"meter_id": "m1", "account": "a1", "period": "2025-03"},
    }


def line(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


@pytest.fixture(scope="module")
def valid_category() -> str:
    """A category the contract accepts (the first one that validates)."""
    from waterwatch.codes import Category

    for cat in Category:
        if check_line(1, line(ticket(category=cat.value))).event is not None:
            return cat.value
    pytest.skip("no category validates a plain ticket.created")


def test_valid_event_keeps_original_bytes(valid_category: str) -> None:
    raw = b'{"specversion":"1.0",  "id":"e1","source":"s","type":"meter.read",' + (
        b'"time":"2025-03-03T09:00:00+08:00","subject":"M-9",'
        b'"data":{"meter_id":"m","account":"a","period":"2025-03"}}'
    )
    [item] = list(validate_lines([raw + b"\n"]))
    assert item.event is not None
    assert item.reason is None
    assert item.raw == raw  # not re-serialized, line ending removed
    assert item.event.subject == "M-9"
    assert item.line_no == 1


def test_reject_reasons_and_line_numbers(valid_category: str) -> None:
    lines = [
        line(ticket("T-1", category=valid_category)),  # 1 ok
        b"",  # 2 blank: skipped, still counted
        b"{not json",  # 3
        b'{"id": "caf\xe9"}',  # 4 latin-1, not UTF-8
        line({**meter("M-1"), "type": "ticket.teleported"}),  # 5 unknown type
        line({k: v for k, v in meter("M-2").items() if k != "subject"}),  # 6 missing field
        b"   \t",  # 7 whitespace only: skipped
        b"[1, 2]",  # 8 JSON but not an object
        line(meter("M-3")),  # 9 ok
    ]
    items = list(validate_lines(lines))
    assert [i.line_no for i in items] == [1, 3, 4, 5, 6, 8, 9]
    by_no = {i.line_no: i for i in items}
    assert by_no[1].event is not None and by_no[9].event is not None
    assert by_no[3].error == "invalid_json" and by_no[3].reason.startswith("invalid JSON")
    assert by_no[4].error == "not_utf8" and "UTF-8" in by_no[4].reason
    assert by_no[5].error == "unknown_type" and "ticket.teleported" in by_no[5].reason
    assert by_no[6].error == "schema" and "subject" in by_no[6].reason
    assert by_no[8].error == "schema"


def test_reasons_do_not_leak_personal_data(valid_category: str) -> None:
    secret_phone = "13800138000"
    bad = ticket(
        "T-2",
        category=valid_category,
        reporter={"name": "张三", "phone": secret_phone},
        unit="NOT A UNIT",
    )
    item = check_line(1, line(bad))
    assert item.event is None and item.reason is not None
    assert "data.unit" in item.reason
    assert secret_phone not in item.reason and "张三" not in item.reason
    assert "\n" not in item.reason


def test_crlf_and_bom_are_handled() -> None:
    raw = line(meter("M-1"))
    items = list(validate_lines([b"\xef\xbb\xbf" + raw + b"\r\n", raw + b"\r\n"]))
    assert [i.event is not None for i in items] == [True, True]
    assert items[0].raw == raw and items[1].raw == raw


def test_read_lines_streams_and_cuts_overlong_lines() -> None:
    big = b"x" * (MAX_EVENT_BYTES + 10)
    data = line(meter("M-1")) + b"\n" + big + b"\n" + line(meter("M-2")) + b"\r\nlast"
    got = list(read_lines(io.BytesIO(data)))
    assert len(got) == 4
    assert got[0] == line(meter("M-1"))
    assert len(got[1]) == MAX_EVENT_BYTES + 1
    assert got[2] == line(meter("M-2"))
    assert got[3] == b"last"
    items = list(validate_lines(got))
    assert items[1].error == "too_large"
    assert [i.event is not None for i in items] == [True, False, True, False]


def test_read_lines_exact_limit_is_not_overlong() -> None:
    exact = b"y" * MAX_EVENT_BYTES
    got = list(read_lines(io.BytesIO(exact + b"\r\n" + exact + b"\n")))
    assert got == [exact, exact]
    assert all(check_line(1, g).error != "too_large" for g in got)


@given(st.lists(st.binary(max_size=60).filter(lambda b: b"\n" not in b), max_size=20))
def test_read_lines_round_trips(chunks: list[bytes]) -> None:
    data = b"\n".join(chunks)
    parts = data.split(b"\n")
    terminated = [True] * (len(parts) - 1) + [False]
    if parts[-1] == b"":  # nothing after the last newline: no line there
        parts, terminated = parts[:-1], terminated[:-1]
    expected = [
        p[:-1] if t and p.endswith(b"\r") else p for p, t in zip(parts, terminated, strict=True)
    ]
    assert list(read_lines(io.BytesIO(data))) == expected


@given(st.binary(max_size=300))
def test_any_bytes_give_a_one_line_reason_or_an_event(raw: bytes) -> None:
    item = check_line(7, raw)
    assert item.line_no == 7
    assert (item.event is None) == (item.reason is not None)
    if item.reason is not None:
        assert "\n" not in item.reason and len(item.reason) <= 300


def test_one_line() -> None:
    assert one_line("a\nb\t c") == "a b c"
    assert len(one_line("x" * 1000, limit=50)) == 50


def test_spec_for() -> None:
    specs, check = spec_for(EVENTS.name)
    assert check and tuple(specs) == ALL_TOPICS
    specs, check = spec_for("other.topic")
    assert not check and [s.name for s in specs] == ["other.topic"]
    assert specs[0].configs == EVENTS.configs


def _consoles() -> tuple[Console, Console, io.StringIO, io.StringIO]:
    out_buf, err_buf = io.StringIO(), io.StringIO()
    out = Console(file=out_buf, width=40, highlight=False, color_system=None)
    err = Console(file=err_buf, width=40, highlight=False, color_system=None)
    return out, err, out_buf, err_buf


def test_report_exit_codes_and_lines() -> None:
    out, err, out_buf, err_buf = _consoles()
    assert report(PublishSummary(produced=3), out, err, "b:9092") == EXIT_OK
    assert out_buf.getvalue() == "produced 3, rejected 0\n"

    out, err, out_buf, err_buf = _consoles()
    reason = "data.area.districts[0]: [bold]not markup[/bold] and a long reason " * 2
    summary = PublishSummary(produced=1, rejected=1, rejects=[(4, reason.strip())])
    assert report(summary, out, err, "b:9092") == EXIT_REJECTED
    assert err_buf.getvalue() == f"line 4: {reason.strip()}\n"  # one line, markup not applied
    assert out_buf.getvalue() == "produced 1, rejected 1\n"

    out, err, _, err_buf = _consoles()
    summary = PublishSummary(produced=1, failed=1, failures=[(2, "not delivered: X")])
    assert report(summary, out, err, "b:9092") == EXIT_ERROR
    out, err, _, err_buf = _consoles()
    assert report(PublishSummary(stopped_at=5), out, err, "b:9092") == EXIT_ERROR
    assert "stopped at line 5" in err_buf.getvalue()


def test_publish_file_unreachable_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from waterwatch import admin
    from waterwatch.publish import publish_file

    monkeypatch.setattr(admin, "CONNECT_TIMEOUT_S", 1.0)
    f = tmp_path / "e.jsonl"
    f.write_bytes(line(meter()) + b"\n")
    with pytest.raises(admin.BrokerUnavailable) as info:
        publish_file(f, "127.0.0.1:9", topic="x", progress=False)
    assert "waterwatch kafka up" in str(info.value)
    assert "\n" not in str(info.value)


def _cli() -> typer.Typer:
    from waterwatch.cli_publish import publish

    app = typer.Typer()
    app.command()(publish)
    app.command("noop")(lambda: None)  # keep `publish` a named subcommand
    return app


def test_publish_command_unreachable_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    monkeypatch.setenv("WATERWATCH_KAFKA", "127.0.0.1:9")
    f = tmp_path / "e.jsonl"
    f.write_bytes(line(meter()) + b"\n")
    result = CliRunner().invoke(_cli(), ["publish", str(f)])
    assert result.exit_code == EXIT_ERROR
    [message] = result.stderr.strip().splitlines()
    assert message.startswith("error: cannot reach the Kafka broker at 127.0.0.1:9")
    assert "waterwatch kafka up" in message and "WATERWATCH_KAFKA" in message
    assert result.stdout == ""


def test_publish_command_missing_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli(), ["publish", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == EXIT_ERROR
    assert "is not a readable file" in result.stderr
