"""deploy/grafana: dashboards and provisioning; and the compose stack that runs them.

Every dashboard query is checked by promtool 2.42 (which has no parse-only
command and no ``/api/v1/parse_query``): the queries, with Grafana's variables
replaced, become recording rules of a generated file, and ``promtool check
rules`` parses each one. promtool missing FAILS the test (scripts/install-prometheus).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_prometheus_rules import exposed_series, promtool, records, referenced_buckets, referenced_metrics

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COMPOSE = REPO / "docker-compose.yml"

# Grafana's variables, replaced for parsing (the integration test uses the same)
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "unit": ".*"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms", "__all"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep theirs inside
    return out


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(``panel title/refId``, expr) of every target of a dashboard."""
    return [(f"{p['title']}/{t['refId']}", t["expr"]) for p in panels(doc) for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    return str(ds["uid"])


# ============================================================ dashboards


def test_the_five_dashboards_of_the_issue() -> None:
    titles = {load(p)["title"] for p in DASHBOARDS}
    assert titles == {
        "waterwatch / SLA overview",
        "waterwatch / Ticket flow by rule",
        "waterwatch / Outages and resident notices",
        "waterwatch / Delivery health",
        "waterwatch / Pipeline health",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_json_is_well_formed(path: Path) -> None:
    doc = load(path)
    uid = datasource_uid()
    assert re.fullmatch(r"waterwatch-[a-z0-9-]{1,30}", doc["uid"]), doc["uid"]
    assert doc["title"] and doc["schemaVersion"] >= 36 and "waterwatch" in doc["tags"]
    assert doc.get("id") is None, "a provisioned dashboard carries no database id"
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    defined = {v["name"] for v in doc.get("templating", {}).get("list", [])}
    for v in doc.get("templating", {}).get("list", []):
        if v["type"] == "query":
            assert v["datasource"]["uid"] == uid
    for p in panels(doc):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description"), f"{p['title']}: say what the panel shows"
        assert p["datasource"]["uid"] == uid, p["title"]
        targets = p.get("targets", [])
        assert targets, f"{p['title']}: no query"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), p["title"]
        for t in targets:
            assert t["datasource"]["uid"] == uid, p["title"]
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert var in defined or var in BUILTIN_VARIABLES, f"{p['title']}: ${var} is not defined"
    # no two panels in the same place
    cells: set[tuple[int, int]] = set()
    for p in panels(doc):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_every_dashboard_query_parses_with_promtool(tmp_path: Path) -> None:
    rules = []
    for path in DASHBOARDS:
        doc = load(path)
        for i, (where, expr) in enumerate(queries(doc)):
            concrete = substitute(expr)
            assert "$" not in concrete, f"{path.name} {where}: unreplaced variable in {concrete}"
            name = f"dashboard:{doc['uid'].replace('-', '_')}:query_{i}"
            rules.append({"record": name, "expr": concrete, "labels": {"panel": f"{path.name} {where}"}})
    assert len(rules) >= 40
    generated = tmp_path / "dashboard-queries.yml"
    generated.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, allow_unicode=True))
    done = promtool("check", "rules", generated)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_dashboards_only_use_metrics_the_workers_expose_or_the_rules_record() -> None:
    names, buckets = exposed_series()
    recorded = {r["record"] for r in records()}
    for path in DASHBOARDS:
        for where, expr in queries(load(path)):
            for name in referenced_metrics(expr):
                assert name in names or name in recorded, f"{path.name} {where}: unknown metric {name}"
            for name, le in referenced_buckets(expr):
                assert le in buckets.get(name, set()), f"{path.name} {where}: {name} has no bucket le={le!r}"


def test_the_unit_variable_lists_every_unit() -> None:
    """The variable's query reads a series that exists at zero for every unit from the start."""
    sla = load(GRAFANA / "dashboards" / "sla-overview.json")
    (var,) = [v for v in sla["templating"]["list"] if v["name"] == "unit"]
    metric = re.search(r"label_values\((\w+),\s*unit\)", var["definition"])
    assert metric
    from waterwatch.core.config import load_config
    from waterwatch.metrics import WorkerMetrics

    cfg = load_config()
    m = WorkerMetrics.from_config(cfg)
    page = m.exposition().decode()
    for unit in cfg.units:
        assert f'{metric.group(1)}{{unit="{unit}"}}' in page


# ============================================================ provisioning


def test_provisioning_points_at_the_dashboards_the_stack_mounts() -> None:
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "waterwatch.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == path
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/") and (GRAFANA / "dashboards" / Path(home).name).exists()


# ============================================================ the compose stack


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_whole_stack_with_healthchecks() -> None:
    services = compose()["services"]
    assert {"kafka", "worker", "notifier", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc, f"{name}: no healthcheck"
        if not hc.get("disable"):
            assert hc["test"] and hc["interval"], name
    assert services["worker"]["command"][0] == "worker"
    assert services["notifier"]["command"] == ["notifier"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft


def test_compose_mounts_and_targets_match_the_deploy_files() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets["waterwatch-worker"] == [f"worker:{services['worker']['environment']['WATERWATCH_METRICS_PORT']}"]
    port = services["notifier"]["environment"]["WATERWATCH_METRICS_PORT"]
    assert targets["waterwatch-notifier"] == [f"notifier:{port}"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    for name in ("worker", "notifier"):
        assert services[name]["environment"]["WATERWATCH_METRICS_ADDR"] == "0.0.0.0"
    for name in ("prometheus", "alertmanager", "grafana"):
        for port_spec in services[name].get("ports", []):
            assert port_spec.startswith("127.0.0.1:"), f"{name}: publish on loopback only"


def test_env_example_names_every_variable_compose_reads() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    example = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, f"missing in .env.example: {sorted(used - example)}"
    units = yaml.safe_load((REPO / "config/units.yaml").read_text())
    robots = {
        u["wecom_robot_env"] for u in [*units["units"].values(), *units["roles"].values()] if "wecom_robot_env" in u
    }
    assert robots <= example, f"WeCom robot keys missing in .env.example: {sorted(robots - example)}"


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+", text, re.M)
    assert len(stages) >= 2
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^ENTRYPOINT \[\"waterwatch\"\]", text, re.M)
    for copied in re.findall(r"^COPY (?:--chown=\S+ )?(\S+) ", text, re.M):
        if not copied.startswith("--"):
            assert (REPO / copied).exists(), f"Dockerfile copies {copied}, which does not exist"


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    ok = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0
    return [docker, "compose"] if ok else None


def test_docker_compose_config() -> None:
    client = compose_client()
    if client is None:
        reason = (
            "the docker CLI is present but its compose plugin (Compose v2) is not"
            if shutil.which("docker")
            else "no docker CLI on this machine"
        )
        pytest.skip(f"docker compose config not run: {reason}; the YAML checks above still ran")
    for profiles in ([], ["--profile", "notifier", "--profile", "dev"]):
        done = subprocess.run(
            [*client, "--env-file", ".env.example", *profiles, "config", "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
