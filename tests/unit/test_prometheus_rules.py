"""deploy/prometheus and deploy/alertmanager: promtool checks, the rule unit tests, and their conventions.

promtool (Debian's ``prometheus`` package, 2.42) is required: a missing one
FAILS these tests with the command that installs it (CI installs it through
scripts/setup); nothing here is skipped silently.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

LEVEL_LABELS = {"unit", "rule", "channel", "provider", "job", "record", "instance", "topic", "error"}


def promtool_path() -> str:
    """The promtool binary, or a test failure that says how to install it."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: run scripts/install-prometheus (Debian's prometheus package, 2.42)",
            pytrace=False,
        )
    return found


def promtool(*args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_path(), *map(str, args)],
        capture_output=True,
        text=input is None,
        input=input,
        timeout=120,
        check=False,
    )


def load_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/rules/*.yml, with its group name under ``_group``."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append({**rule, "_group": group["name"], "_file": path.name})
    return out


def alerts() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def records() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "record" in r]


def exposed_series() -> tuple[set[str], dict[str, set[str]]]:
    """Sample names the two workers can expose, and the ``le`` texts of each ``*_bucket``.

    Built from real registries (every histogram observed once, so each has its buckets on the page).
    """
    from waterwatch.core.config import load_config
    from waterwatch.metrics import NotifierMetrics, WorkerMetrics

    cfg = load_config()
    w, n = WorkerMetrics.from_config(cfg), NotifierMetrics.from_config(cfg)
    w.fire_lag(1)
    n.delivery("sms", "twilio", "sent", 0.1)
    n.notice_lead("runda", 3600)
    names: set[str] = set()
    buckets: dict[str, set[str]] = {}
    for m in (w, n):
        for family in m.registry.collect():
            if family.type == "histogram":
                names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
            elif family.type == "counter":
                names.add(f"{family.name}_total")
            else:
                names.add(family.name)
            for s in family.samples:
                names.add(s.name)
                if s.name.endswith("_bucket"):
                    buckets.setdefault(s.name, set()).add(s.labels["le"])
    return names, buckets


def referenced_metrics(expr: str) -> Iterator[str]:
    """``waterwatch_*``, ``process_*`` and recorded (``a:b:c``) names used in a PromQL expression."""
    yield from re.findall(r"\b(?:[a-z_]+:)?(?:waterwatch|process)_[a-z0-9_]+(?::[a-z0-9_]+)?\b", expr)


def referenced_buckets(expr: str) -> Iterator[tuple[str, str]]:
    for name, selector in re.findall(r"\b([a-z_][a-z0-9_]*_bucket)\{([^}]*)\}", expr):
        m = re.search(r'\ble="([^"]+)"', selector)
        if m:
            yield name, m.group(1)


# ============================================================ promtool


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_check_config_with_its_rules() -> None:
    done = promtool("check", "config", PROM / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    for path in RULE_FILES:
        assert path.name in done.stdout, f"prometheus.yml does not load {path.name}"


def test_promtool_test_rules() -> None:
    done = promtool("test", "rules", *TEST_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(TEST_FILES)


# ============================================================ coverage of the tests


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    fired: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                bucket = fired if case.get("exp_alerts") else quiet
                bucket[case["alertname"]] = bucket.get(case["alertname"], 0) + 1
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    untested = sorted(n for n in names if n not in fired)
    assert not untested, f"alerts without a promtool test in which they fire: {untested}"
    unknown = sorted(n for n in set(fired) | set(quiet) if n not in names)
    assert not unknown, f"tests of alerts that do not exist: {unknown}"
    never_quiet = sorted(n for n in names if n not in quiet)
    assert not never_quiet, f"alerts with no test of when they do not fire: {never_quiet}"


def test_the_issue_s_alerts_are_all_there() -> None:
    names = {a["alert"] for a in alerts()}
    wanted = {
        "WaterwatchBreachSurge",  # breach surge per unit
        "WaterwatchDeadLetters",  # dead letters appearing
        "WaterwatchNotificationFailureRatioHigh",
        "WaterwatchDeliveriesInDoubt",
        "WaterwatchNoEventsReceived",
        "WaterwatchTimerFireLagHigh",
        "WaterwatchConsumerLagHigh",
        "WaterwatchHolidayDataRunningOut",
        "WaterwatchPreNoticeLeadUnder48h",
    }
    assert wanted <= names, sorted(wanted - names)


def test_test_files_use_the_promtool_2_42_format() -> None:
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        assert set(doc) <= {"rule_files", "evaluation_interval", "group_eval_order", "tests"}, path.name
        keys = set(doc)
        for test in doc["tests"]:
            keys |= set(test)
            for case in test.get("promql_expr_test", []) + test.get("alert_rule_test", []):
                keys |= set(case)
        assert not keys & {"fuzzy_compare", "start_timestamp"}, f"{path.name}: not in promtool 2.42"
        for rf in doc["rule_files"]:
            assert (path.parent / rf).resolve().exists(), f"{path.name}: {rf} not found"


# ============================================================ conventions


def test_every_alert_has_a_severity_summary_and_description() -> None:
    for a in alerts():
        assert re.fullmatch(r"Waterwatch[A-Z][A-Za-z0-9]+", a["alert"]), a["alert"]
        assert a.get("labels", {}).get("severity") in ("critical", "warning"), a["alert"]
        ann = a.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), a["alert"]


def test_recording_rules_are_named_level_metric_operations() -> None:
    names = [r["record"] for r in records()]
    assert len(names) == len(set(names)), "duplicate recording rule names"
    for name in names:
        m = re.fullmatch(r"([a-z_]+):(waterwatch_[a-z0-9_]+):([a-z0-9_]+)", name)
        assert m, f"{name}: not level:metric:operations"
        level, _metric, ops = m.groups()
        assert set(level.split("_")) <= LEVEL_LABELS, f"{name}: level {level!r} is not a list of labels"
        assert not ops.startswith("_") and not ops.endswith("_"), name


def test_a_recorded_ratio_divides_sums_recorded_separately() -> None:
    by_name = {r["record"]: r for r in records()}
    ratios = [r for r in records() if r["record"].split(":")[2].startswith("ratio")]
    assert ratios
    for r in ratios:
        operands = [n for n in referenced_metrics(r["expr"]) if n != r["record"]]
        assert len(operands) == 2, f"{r['record']}: a ratio of two recorded sums, got {operands}"
        for name in operands:
            assert name in by_name, f"{r['record']}: {name} is not a recording rule"
            level = r["record"].split(":")[0]
            assert name.split(":")[0] == level, f"{r['record']}: {name} is aggregated differently"
        assert "avg" not in r["expr"], r["record"]


def test_rules_only_use_metrics_the_workers_expose() -> None:
    names, buckets = exposed_series()
    recorded = {r["record"] for r in records()}
    for rule in load_rules():
        for name in referenced_metrics(rule["expr"]):
            assert name in names or name in recorded, f"{rule.get('alert') or rule.get('record')}: unknown {name}"
        for name, le in referenced_buckets(rule["expr"]):
            assert le in buckets.get(name, set()), f"{name} has no bucket le={le!r} (has {sorted(buckets[name])})"


# ============================================================ alertmanager


def test_alertmanager_config_routes_to_receivers_that_exist_and_inhibits_real_alerts() -> None:
    doc = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in doc["receivers"]}

    def walk(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield route
        for child in route.get("routes", []):
            yield from walk(child)

    for route in walk(doc["route"]):
        if "receiver" in route:
            assert route["receiver"] in receivers, route["receiver"]
    names = {a["alert"] for a in alerts()}
    for rule in doc.get("inhibit_rules", []):
        for matcher in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            m = re.match(r'alertname(=~|=)"([^"]+)"', matcher)
            if m:
                pattern = m.group(2) if m.group(1) == "=~" else re.escape(m.group(2))
                assert any(re.fullmatch(pattern, n) for n in names), f"inhibit matcher {matcher} matches no alert"


def test_amtool_check_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not installed (Debian's prometheus-alertmanager package); the YAML checks above still ran")
    done = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
