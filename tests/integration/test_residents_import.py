"""``waterwatch residents import`` against the real broker: produced, keyed, compacted, readable back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from kafka_helpers import consume_all
from typer.testing import CliRunner

from waterwatch.admin import ensure_topics
from waterwatch.cli_residents import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, residents_app
from waterwatch.events import Resident
from waterwatch.residents import ResidentDirectory, cleanup_policy, import_csv, load_registry
from waterwatch.topics import EVENTS, TopicSpec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "residents.csv"
HEADER = "account,name,phone,email,language,districts,compounds,zones,sms_consent,email_consent"


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(residents_app, name="residents")
    return app


def _example_accounts() -> list[str]:
    with EXAMPLE.open(encoding="utf-8-sig", newline="") as fh:
        return [row["account"] for row in csv.DictReader(fh)]


def test_import_example_file_produces_every_household_keyed_by_account_to_a_compacted_topic(
    kafka_bootstrap: str, unique_topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATERWATCH_KAFKA", kafka_bootstrap)
    topic = f"{unique_topic_prefix}.residents"

    result = CliRunner().invoke(_cli(), ["residents", "import", str(EXAMPLE), "--topic", topic])

    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout.startswith("read 20, valid 20, rejected 0, produced 20, elapsed ")
    assert result.stderr == ""
    assert cleanup_policy(kafka_bootstrap, topic) == "compact"

    records = consume_all(kafka_bootstrap, topic, 20, timeout=30, settle=1.0)
    assert sorted(r.key.decode() for r in records) == sorted(_example_accounts())
    for rec in records:
        resident = Resident.model_validate_json(rec.value)
        assert rec.key.decode() == resident.account
        assert resident.phone is None or resident.phone.startswith("+86")
        assert set(resident.consent) == {"sms", "email"}

    # the directory the notifier keeps, built from what was read back
    directory = ResidentDirectory()
    for rec in records:
        directory.apply(rec.key, rec.value)
    gulou = [h.account for h in directory.resolve({"districts": ["gulou"]}, "sms")]
    assert gulou == ["1000001", "1000002", "1000003"]  # 1000004 and 1000017 opted out of SMS
    dongchangfu = [h.account for h in directory.resolve({"districts": ["dongchangfu"]}, "email")]
    assert dongchangfu == ["1000001", "1000004", "1000006", "1000007", "1000008", "1000017"]


def test_import_with_bad_rows_exits_2_and_still_produces_the_good_ones(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATERWATCH_KAFKA", kafka_bootstrap)
    topic = f"{unique_topic_prefix}.residents"
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        "\ufeff".encode()
        + "\r\n".join(
            [
                HEADER,
                "2000001,张三,13800020001,zhang.san@example.invalid,zh,,yinhe-garden,,yes,yes",  # 2 good
                "2000002,李四,+86 139 1234 567,,zh,,yinhe-garden,,yes,yes",  # 3 bad phone
                "2000003,王五,13800020003,wang.wu@@example.invalid,zh,,yinhe-garden,,yes,yes",  # 4 bad email
                "2000004,赵六,13800020004,,zh,,nowhere-garden,,yes,yes",  # 5 unknown area
                "",  # 6 blank
                "2000001,张三,13800020009,,zh,,yinhe-garden,,yes,yes",  # 7 duplicate of line 2
                ",钱七,13800020007,,zh,gulou,,,yes,yes",  # 8 missing account
                "2000008,孙八,,,zh,gulou,,,yes,yes",  # 9 no contact
                "2000009,周九,13800020009,,fr,gulou,,,yes,yes",  # 10 unknown language
                "2000010,Wu Shi,+447911123456,wu.shi@example.invalid,en,,,zone-7,no,yes",  # 11 good
                "2000011,郑十,13800020011,,,chiping,,,,",  # 12 good
            ]
        ).encode()
        + b"\r\n"
    )

    result = CliRunner().invoke(_cli(), ["residents", "import", str(path), "--topic", topic])

    assert result.exit_code == EXIT_REJECTED, result.output
    assert [ln.split(":", 1)[0] for ln in result.stderr.splitlines()] == [f"line {n}" for n in (3, 4, 5, 7, 8, 9, 10)]
    assert "line 7: account 2000001: duplicate of line 2" in result.stderr
    assert "phone +8613****4567" in result.stderr and "w***@@example.invalid" in result.stderr
    for secret in ("张三", "李四", "王五", "钱七", "1391234567", "13800020009", "wang.wu"):
        assert secret not in result.output
    assert result.stdout.startswith("read 10, valid 3, rejected 7 (")
    assert ", produced 3, elapsed " in result.stdout

    records = consume_all(kafka_bootstrap, topic, 3, timeout=30, settle=1.0)
    by_key = {r.key.decode(): json.loads(r.value) for r in records}
    assert sorted(by_key) == ["2000001", "2000010", "2000011"]
    assert by_key["2000001"]["phone"] == "+8613800020001"  # the first occurrence, not the duplicate
    assert by_key["2000010"]["consent"] == {"sms": False, "email": True}
    assert by_key["2000011"]["districts"] == ["chiping"]
    assert cleanup_policy(kafka_bootstrap, topic) == "compact"


def test_reimport_replaces_by_key(kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path) -> None:
    topic = f"{unique_topic_prefix}.residents"
    registry = load_registry(REPO / "config")
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "\n3000001,,13800030001,,,gulou,,,,\n", encoding="utf-8")
    assert import_csv(path, registry, bootstrap=kafka_bootstrap, topic=topic, progress=False).produced == 1
    path.write_text(HEADER + "\n3000001,,13800030001,,,chiping,,,no,\n", encoding="utf-8")
    assert import_csv(path, registry, bootstrap=kafka_bootstrap, topic=topic, progress=False).produced == 1

    directory = ResidentDirectory()
    for rec in consume_all(kafka_bootstrap, topic, 2, timeout=30, settle=1.0):
        directory.apply(rec.key, rec.value)
    assert len(directory) == 1
    assert directory.count({"districts": ["gulou"]}, "email") == 0
    assert directory.count({"districts": ["chiping"]}, "sms") == 0  # opted out in the second import


def test_an_existing_topic_that_is_not_compacted_is_refused(
    kafka_bootstrap: str, unique_topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATERWATCH_KAFKA", kafka_bootstrap)
    topic = f"{unique_topic_prefix}.residents"
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, "k", "d", ("x",), 1, dict(EVENTS.configs))])

    result = CliRunner().invoke(_cli(), ["residents", "import", str(EXAMPLE), "--topic", topic])

    assert result.exit_code == EXIT_ERROR, result.output
    assert f"topic {topic} has cleanup.policy=delete" in result.stderr
    assert consume_all(kafka_bootstrap, topic, 1, timeout=3) == []
