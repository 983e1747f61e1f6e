"""The CLI as a user runs it: replay, explain, report, policy show, schemas, config errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from waterwatch.cli import app

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo-events.jsonl"
runner = CliRunner()


def test_replay_is_byte_for_byte_deterministic_and_in_time_order() -> None:
    args = ["replay", str(DEMO), "--until", "2026-12-03T00:00:00+08:00"]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    lines = [json.loads(x) for x in first.stdout.splitlines()]
    assert len(lines) > 30
    fired = [x["data"]["fired_at"] for x in lines]
    from datetime import datetime

    assert [datetime.fromisoformat(f) for f in fired] == sorted(datetime.fromisoformat(f) for f in fired)
    assert all(x["specversion"] == "1.0" and x["id"] == x["data"]["alert_id"] for x in lines)
    assert "replayed 28 events of 7 matters" in first.stderr


def test_replay_reports_bad_lines_and_rejections_with_line_numbers(tmp_path: Path) -> None:
    good = DEMO.read_text(encoding="utf-8").splitlines()[:2]
    accept_unknown = json.loads(good[0]) | {"id": "x9", "subject": "NOPE", "type": "ticket.accepted", "data": {}}
    f = tmp_path / "e.jsonl"
    f.write_text("\n".join([good[0], "{broken", good[1], json.dumps(accept_unknown)]) + "\n", encoding="utf-8")
    r = runner.invoke(app, ["replay", str(f)])
    assert r.exit_code == 0
    assert "line 2: invalid JSON" in r.stderr
    assert "line 4: unknown_matter" in r.stderr
    assert "1 rejected" in r.stderr


def test_explain_a_ticket_dispatched_on_the_eve_of_national_day() -> None:
    r = runner.invoke(app, ["explain", "T-2026-0930-001", "--events", str(DEMO)])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "R13.accept" in out and "working time" in out
    assert "National Day" in out  # the holiday the calendar skipped
    assert "2026-10-08T09:00:00+08:00" in out  # 30 min on 9-30 + 30 min on 10-08


def test_explain_at_a_time_shows_the_state_then_not_the_final_one() -> None:
    """``--at``: only the events up to that time, and the alerts due by it (the eve of National Day again)."""
    r = runner.invoke(app, ["explain", "T-2026-0930-001", "--events", str(DEMO), "--at", "2026-10-01T09:00:00+08:00"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "status dispatched" in out and "status resolved" not in out
    assert "met (stopped" not in out and "missed (stopped" not in out  # accepted and resolved only on 10-08
    assert "reminder_1" in out.split("alerts fired")[1]  # 2026-10-01T08:40, before --at
    assert "escalate_1" not in out.split("alerts fired")[1]  # 10:40, after it
    final = runner.invoke(app, ["explain", "T-2026-0930-001", "--events", str(DEMO)])
    assert "status resolved" in final.stdout


def test_explain_at_a_time_before_the_matter_existed_says_so() -> None:
    r = runner.invoke(app, ["explain", "T-2026-0930-001", "--events", str(DEMO), "--at", "2026-09-01T00:00:00+08:00"])
    assert r.exit_code != 0
    assert "no events for matter 'T-2026-0930-001' up to 2026-09-01T00:00:00+08:00" in r.output


def test_explain_json_lists_extensions_with_the_original_deadline_kept() -> None:
    r = runner.invoke(app, ["explain", "H-12345-0001", "--events", str(DEMO), "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    resolve = next(c for c in data["clocks"] if c["clock"] == "resolve")
    assert resolve["due"] == "2026-11-30T09:00:00+08:00"
    assert resolve["original_due"] == "2026-11-29T09:00:00+08:00"
    assert resolve["extensions"][0]["new_due"] == "2026-11-30T09:00:00+08:00"


def test_report_in_every_format(tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", str(DEMO), "--month", "2026-11", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    runda = [x for x in data["rows"] if x["unit"] == "runda"]
    assert runda and sum(x["deadlines"] for x in runda) == sum(x["met"] + x["missed"] + x["pending"] for x in runda)
    csv_out = runner.invoke(app, ["report", str(DEMO), "--month", "2026-11", "--format", "csv"])
    assert csv_out.stdout.splitlines()[0].startswith("unit,rule,deadlines,met,missed")
    html = tmp_path / "r.html"
    h = runner.invoke(app, ["report", str(DEMO), "--month", "2026-11", "--format", "html", "-o", str(html)])
    assert h.exit_code == 0
    text = html.read_text(encoding="utf-8")
    assert "<svg" in text and "润达水业有限公司" in text
    t = runner.invoke(app, ["report", str(DEMO), "--month", "2026-11"])
    assert "Service deadlines 2026-11" in t.stdout
    bad = runner.invoke(app, ["report", str(DEMO), "--month", "2026-13"])
    assert bad.exit_code == 1 and "not YYYY-MM" in bad.stderr


def test_policy_show_lists_every_rule(tmp_path: Path) -> None:
    r = runner.invoke(app, ["policy", "show", "--format", "json"])
    ids = {x["id"] for x in json.loads(r.stdout)}
    assert {"R13.accept", "R15.2", "R19.1", "R24.repair", "R35(3)"} <= ids
    table = runner.invoke(app, ["policy", "show"], env={"COLUMNS": "200"})
    assert "R24.repair" in table.stdout and "working" in table.stdout


def test_a_broken_policy_file_is_reported_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(ROOT / "config", cfg)
    text = (cfg / "policy.yaml").read_text(encoding="utf-8")
    (cfg / "policy.yaml").write_text(text.replace("    limit: 12h\n", "    limit: 12 hours\n", 1), encoding="utf-8")
    r = runner.invoke(app, ["policy", "show", "--config", str(cfg)])
    assert r.exit_code == 1
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if line == "    limit: 12h")
    assert f"policy.yaml:{line_no}: rules.R15.2.limit: '12 hours' is not a duration" in r.stderr


def test_schemas_check_passes_on_the_committed_files() -> None:
    r = runner.invoke(app, ["schemas", "check", "--directory", str(ROOT / "schemas")])
    assert r.exit_code == 0, r.output


def test_help_lists_the_commands() -> None:
    r = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    for cmd in ("kafka", "publish", "dev", "replay", "explain", "report", "policy", "schemas"):
        assert cmd in r.stdout
