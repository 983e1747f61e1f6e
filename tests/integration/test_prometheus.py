"""A real Prometheus scrapes waterwatch's metrics; every dashboard query must return data.

Prometheus is Debian's 2.42 binary (scripts/install-prometheus), bound to
127.0.0.1 on a free port, with temporary storage, a 1 s scrape and evaluation
interval, and the project's own configuration: ``deploy/prometheus/prometheus.yml``
with its scrape jobs pointed at the targets below, and the rule files of
``deploy/prometheus/rules/`` (every group evaluated each second).

**The scrape targets are a parameter** (:func:`scrape_targets`): by default a
small process -- this file run as a script, ``--serve`` -- feeds a scripted
scenario through ``waterwatch.metrics`` (the real engine makes the matter
states) and serves the worker's and the notifier's registries. To scrape a
real process instead, name it per job, e.g.
``WATERWATCH_PROMETHEUS_TARGETS="waterwatch-worker=127.0.0.1:9464"``; jobs not
named still scrape the scenario. A test of the real worker can also call
:func:`check_queries_against` with its own targets.

The test then asks Prometheus's HTTP API: every target up, every rule healthy
(an evaluation error fails), every dashboard query and every recording rule
returns data, every bucket an alert selects by ``le`` exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
JOBS = ("waterwatch-worker", "waterwatch-notifier")

# Grafana's variables, as tests/unit/test_dashboards.py replaces them for parsing
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "unit": ".*"}

READY_TIMEOUT_S = 60.0
DATA_TIMEOUT_S = float(os.environ.get("WATERWATCH_TEST_PROMETHEUS_DATA_TIMEOUT", "90"))
SCENARIO_SECONDS = 300  # the scenario feeds for at most this long, then only serves
SCENARIO_LIFETIME_S = 900  # and exits on its own after this, whatever happens to the test

pytestmark = pytest.mark.integration


# ============================================================ helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def substitute(expr: str) -> str:
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: GRAFANA_VARIABLES[m.group(1) or m.group(2)], expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(``dashboard: panel/refId``, concrete PromQL) of every dashboard target."""
    out = []
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        stack = list(doc["panels"])
        while stack:
            p = stack.pop(0)
            stack.extend(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((f"{path.stem}: {p['title']}/{t['refId']}", substitute(t["expr"])))
    return out


def rule_files() -> list[Path]:
    return sorted((PROM_DIR / "rules").glob("*.yml"))


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this module started: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Prometheus:
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return list(data["result"]) if data["resultType"] in ("vector", "matrix") else [data["result"]]


@contextlib.contextmanager
def running_prometheus(tmp: Path, targets: Mapping[str, list[str]]) -> Iterator[Prometheus]:
    """Debian's prometheus on 127.0.0.1 with the deploy config, scraping ``targets`` (job -> host:port)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/install-prometheus", pytrace=False)
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(JOBS) <= set(jobs), f"deploy/prometheus/prometheus.yml lacks a job of {JOBS}"
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    for path in rule_files():  # the deploy rules, every group evaluated at the global 1 s
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group.pop("interval", None)
        (rules_dir / path.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"})
    config.pop("alerting", None)
    config["rule_files"] = [str(rules_dir / "*.yml")]
    config["scrape_configs"] = [
        {**jobs[job], "static_configs": [{"targets": list(addrs)}]} for job, addrs in targets.items()
    ]
    cfg = tmp / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready in {READY_TIMEOUT_S:.0f} s:\n{tail(log)}", pytrace=False)
            time.sleep(0.2)
        yield prom
    finally:
        stop(proc)


def wait_for_data(prom: Prometheus, queries: list[tuple[str, str]], timeout: float) -> dict[str, str]:
    """Poll until every query returns at least one series; returns {where: problem} of those that never did."""
    pending = dict(queries)
    problems: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for where, expr in list(pending.items()):
            try:
                result = prom.query(expr)
            except (urllib.error.URLError, AssertionError) as exc:
                problems[where] = f"{expr}: {exc}"
                continue
            if result:
                del pending[where]
                problems.pop(where, None)
            else:
                problems[where] = f"{expr}: no data"
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return {w: problems[w] for w in pending}


def check_queries_against(tmp: Path, targets: Mapping[str, list[str]]) -> dict[str, Any]:
    """Run Prometheus on ``targets`` and check what the module docstring says; returns facts for the report."""
    with running_prometheus(tmp, targets) as prom:
        started = time.monotonic()
        up = wait_for_data(prom, [(f"up {job}", f'up{{job="{job}"}} == 1') for job in targets], 30)
        assert not up, f"targets not up: {up}\n{json.dumps(prom.get('/api/v1/targets'), indent=1)[:3000]}"
        queries = dashboard_queries()
        recorded = []
        bucket_selectors = []
        for path in rule_files():
            for group in yaml.safe_load(path.read_text())["groups"]:
                for rule in group["rules"]:
                    if "record" in rule:
                        recorded.append((f"record {rule['record']}", rule["record"]))
                    for sel in re.findall(r"\b[a-z_][a-z0-9_]*_bucket\{[^}]*\ble=[^}]*\}", rule["expr"]):
                        bucket_selectors.append((f"{rule.get('alert') or rule.get('record')}: {sel}", sel))
        missing = wait_for_data(prom, queries + recorded + bucket_selectors, DATA_TIMEOUT_S)
        assert not missing, "queries without data:\n" + "\n".join(f"  {w}: {p}" for w, p in missing.items())
        groups = prom.get("/api/v1/rules")["groups"]
        unhealthy = [
            f"{g['name']}/{r['name']}: {r.get('lastError')}" for g in groups for r in g["rules"] if r["health"] != "ok"
        ]
        assert not unhealthy, f"rules failing to evaluate: {unhealthy}"
        n_rules = sum(len(g["rules"]) for g in groups)
        assert n_rules == sum(len(g["rules"]) for p in rule_files() for g in yaml.safe_load(p.read_text())["groups"])
        return {"queries": len(queries), "recorded": len(recorded), "rules": n_rules,
                "seconds_to_data": round(time.monotonic() - started, 1)}  # fmt: skip


# ============================================================ the scrape targets


def parse_targets(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        job, _, addr = item.partition("=")
        assert job in JOBS and addr, f"WATERWATCH_PROMETHEUS_TARGETS: {item!r} is not JOB=HOST:PORT (jobs {JOBS})"
        out.setdefault(job, []).append(addr)
    return out


@pytest.fixture(scope="module")
def scrape_targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[str]]]:
    """job -> [host:port]: from ``$WATERWATCH_PROMETHEUS_TARGETS``, the scenario process for the rest."""
    targets = parse_targets(os.environ.get("WATERWATCH_PROMETHEUS_TARGETS", ""))
    missing = [job for job in JOBS if job not in targets]
    if not missing:
        yield targets
        return
    tmp = tmp_path_factory.mktemp("scenario")
    ready, log = tmp / "ports.json", tmp / "scenario.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--serve", "--ready-file", str(ready)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"the scenario exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"the scenario did not serve in {READY_TIMEOUT_S:.0f} s:\n{tail(log)}", pytrace=False)
            time.sleep(0.1)
        ports = json.loads(ready.read_text())
        for job in missing:
            targets[job] = [f"127.0.0.1:{ports[job]}"]
        yield targets
    finally:
        stop(proc)


# ============================================================ the test


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    tmp_path: Path, scrape_targets: dict[str, list[str]]
) -> None:
    facts = check_queries_against(tmp_path, scrape_targets)
    assert facts["queries"] >= 40
    print(f"prometheus: {facts}")


# ============================================================ the scenario (run as a script)


def serve_scenario(ready_file: Path, seconds: float = SCENARIO_SECONDS) -> None:
    """Serve the worker's and the notifier's metrics and feed them a scripted scenario.

    Matter states come from the real engine on the project's config; every
    call goes through the public API of waterwatch.metrics, as the workers' will.
    """
    from waterwatch import __version__
    from waterwatch.core.config import load_config
    from waterwatch.events import parse_event
    from waterwatch.metrics import NotifierMetrics, WorkerMetrics

    cfg = load_config()
    engine = cfg.engine()
    w, n = WorkerMetrics.from_config(cfg), NotifierMetrics.from_config(cfg)
    w.build_info(__version__)
    n.build_info(__version__)
    w.watch_calendar(cfg.calendar)
    servers = [w.serve(0), n.serve(0)]
    started = time.time()
    base = int(started) - 3 * 86400  # the scenario's matters start three days ago
    seq = iter(range(10**9))

    def iso(t: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(t + 8 * 3600))

    def apply(state: Any, type_: str, mid: str, t: int, **data: Any) -> Any:
        event = parse_event({"specversion": "1.0", "id": f"{mid}-{next(seq)}", "source": "scenario", "type": type_,
                             "time": iso(t), "subject": mid, "data": data})  # fmt: skip
        w.event("event")
        step = engine.apply(state, event, t, copy=True)
        if step.rejection is not None:
            w.rejected(step.rejection.code)
        w.alerts(step.alerts)
        if step.state is not None and step.state is not state:
            w.state_changed(state, step.state, time.time())
        return step.state

    units = ("runda", "chengnan", "shuixing")
    categories = ("hydrant_fault", "water_quality", "meter_calibration")
    outcomes = ("sent", "sent", "sent", "retried", "failed", "dead_lettered")
    i = 0
    while time.time() - started < seconds:
        unit, t0 = units[i % 3], base + i * 60
        # a ticket: created, dispatched, accepted in 30 min, resolved in 6 h (met) or 40 h (breached)
        mid = f"T-scenario-{i}"
        s = apply(None, "ticket.created", mid, t0, channel="phone", category=categories[i % 3], unit=unit)
        s = apply(s, "ticket.dispatched", mid, t0 + 600, unit=unit)
        s = apply(s, "ticket.accepted", mid, t0 + 2400, unit=unit)
        s = apply(s, "ticket.resolved", mid, t0 + (6 if i % 2 else 40) * 3600, unit=unit)
        # every 5th: a ticket nobody resolves, overdue by now (fired by a clock check)
        if i % 5 == 0:
            mid = f"T-scenario-open-{i}"
            s = apply(None, "ticket.created", mid, t0, channel="hotline_12345", category="hydrant_fault", unit=unit)
            step = engine.advance(s, int(time.time()), copy=True)
            w.event("check")
            w.alerts(step.alerts)
            for _ in step.alerts:
                w.fire_lag(0.05 + (i % 7) * 0.3)
            w.state_changed(s, step.state, time.time())
        # every 4th: an outage planned 72 h ahead, or 24 h ahead (an R19.1 violation); it stays open
        if i % 4 == 0:
            mid = f"O-scenario-{i}"
            t = int(time.time()) - 60
            lead = 72 if i % 8 == 0 else 24
            starts, ends = iso(t + lead * 3600), iso(t + (lead + 6) * 3600)
            s = apply(None, "outage.planned", mid, t, kind="planned", area={"districts": ["东昌府区"]},
                      starts_at=starts, expected_end_at=ends, unit=unit)  # fmt: skip
            # what is due at once (the notice of a late announcement) fires now, as the processor does
            step = engine.advance(s, int(time.time()), copy=True)
            w.alerts(step.alerts)
            w.state_changed(s, step.state, time.time())
            n.notice_lead(unit, (50 if lead == 72 else 30) * 3600)
            n.notice_coverage(unit, "pre_outage", 180 + i % 20, 200)
        if i % 6 == 0:
            apply(None, "leak.reported", f"L-scenario-{i}", int(time.time()) - 60, pipe_diameter_mm=300, unit="runda")
        # the rest of the worker's records
        if i % 3 == 0:
            w.rejected(("schema", "invalid_json", "unknown_matter")[i % 9 // 3])
        if i % 4 == 1:
            w.duplicate()
        w.consumer_lag_messages("waterwatch.events", i % 40)
        w.consumer_lag_messages("waterwatch.clock", i % 3)
        # the notifier's
        for channel, provider in (("sms", "twilio"), ("email", "sendgrid"), ("wecom", "wecom_robot")):
            n.delivery(channel, provider, outcomes[(i + len(channel)) % len(outcomes)], 0.05 + (i % 10) * 0.1)
        n.in_doubt("sms", "twilio", i % 3)
        if i == 0:
            ready_file.write_text(json.dumps({JOBS[0]: servers[0].server_port, JOBS[1]: servers[1].server_port}))
        i += 1
        time.sleep(0.25)
    while time.time() - started < SCENARIO_LIFETIME_S:  # keep serving; bounded in time
        time.sleep(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve waterwatch.metrics fed with a scripted scenario")
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=SCENARIO_SECONDS)
    args = parser.parse_args()
    serve_scenario(args.ready_file, args.seconds)
