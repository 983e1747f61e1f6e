"""Run a real Prometheus on waterwatch's deploy configuration, and talk to it.

* :func:`running_prometheus` starts Debian's ``prometheus`` (2.42,
  scripts/install-prometheus) on 127.0.0.1 with a free port, temporary
  storage and the project's own configuration: ``deploy/prometheus/prometheus.yml``
  with its scrape jobs pointed at the given targets, a 1 s scrape and
  evaluation interval, and the rule files of ``deploy/prometheus/rules/``
  (every group evaluated each second, whatever its own ``interval``).
  It never sends to an Alertmanager: alert states are read from the API.
* :class:`Prometheus` asks its HTTP API (queries, targets, rules, alerts),
  never through a proxy; :func:`eventually` retries a check until it holds.
* :func:`dashboard_queries` and :func:`referenced_metrics` read what the
  Grafana dashboards and the rules ask for.
* :class:`MeteredNotifier` is ``waterwatch notifier`` as tests/integration/notifier_harness.py
  runs it (real SDKs, fake provider servers), with its ``/metrics`` on a port
  of its own; :class:`ProviderFakes` are those servers, and say what they
  received as Prometheus should count it (:meth:`ProviderFakes.expected`);
  :func:`load_residents` fills the resident directory its notices go to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from fakes.providers import FakeSendGrid, FakeTwilio, FakeWeCom, RecordedRequest, SendGridWebhookSigner
from notifier_harness import ACCOUNT_SID, AUTH_TOKEN, SENDGRID_KEY, NotifierProcess, provider_env
from worker_harness import Producer

from waterwatch.events import Resident

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
WORKER_JOB, NOTIFIER_JOB = "waterwatch-worker", "waterwatch-notifier"
JOBS = (WORKER_JOB, NOTIFIER_JOB)

# Grafana's variables, as tests/unit/test_dashboards.py replaces them for parsing
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "unit": ".*"}

READY_TIMEOUT_S = 60.0

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never send 127.0.0.1 to a proxy
T = TypeVar("T")


# ============================================================ small helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def eventually(check: Callable[[], T], timeout: float, interval: float = 0.5) -> T:
    """Call ``check`` until it returns without an AssertionError (its value), or re-raise the last one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, urllib.error.URLError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout:.0f} s: {exc}") from None
        time.sleep(interval)


# ============================================================ what the dashboards and rules ask for


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


def rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/rules/*.yml."""
    return [r for p in rule_files() for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]


def referenced_metrics(expr: str) -> set[str]:
    """``waterwatch_*``/``process_*`` names (not recorded ``a:b:c`` ones) a PromQL expression reads."""
    names = re.findall(r"\b(?:[a-z_]+:)?(?:waterwatch|process)_[a-z0-9_]+(?::[a-z0-9_]+)?\b", expr)
    return {n for n in names if ":" not in n}


# ============================================================ Prometheus


@dataclass
class Prometheus:
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with _NO_PROXY.open(f"{self.url}{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        return list(data["result"]) if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """An instant vector as {(values of ``labels``): sample value}."""
        out = {}
        for series in self.query(expr):
            key = tuple(series["metric"].get(label, "") for label in labels)
            assert key not in out, f"{expr}: two series for {dict(zip(labels, key, strict=True))}"
            out[key] = float(series["value"][1])
        return out

    def scalar(self, expr: str) -> float:
        """The value of an expression that returns exactly one series."""
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {len(result)} series, not one: {result[:5]}"
        return float(result[0]["value"][1])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now: ``labels``, ``state``, ``value``."""
        return list(self.get("/api/v1/alerts")["alerts"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/targets")["activeTargets"])


@contextlib.contextmanager
def running_prometheus(tmp: Path, targets: Mapping[str, list[str]]) -> Iterator[Prometheus]:
    """Debian's prometheus on 127.0.0.1 with the deploy config, scraping ``targets`` (job -> [host:port])."""
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
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
            with contextlib.suppress(OSError), _NO_PROXY.open(f"{prom.url}/-/ready", timeout=2) as resp:
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


# ============================================================ the real notifier


@dataclass
class MeteredNotifier(NotifierProcess):
    """``waterwatch notifier`` with ``/metrics`` on :attr:`metrics_port` (NotifierProcess turns metrics off)."""

    metrics_port: int = field(default_factory=free_port)

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--metrics-port") + 1] = str(self.metrics_port)
        return cmd

    @property
    def metrics_target(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST to the notifier's web port (``/receipts/...``); the HTTP status."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", data=body, headers=dict(headers),
                                     method="POST")  # fmt: skip
        try:
            with _NO_PROXY.open(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


_MERGED = re.compile(r"^\*\*(?:共(\d+)条预警|(\d+) alerts?)")


def wecom_parts(request: RecordedRequest) -> int:
    """Alerts one WeCom markdown message carries: ``N`` of its merge header, else 1."""
    m = _MERGED.match(str(((request.json or {}).get("markdown") or {}).get("content", "")))
    return int(m.group(1) or m.group(2)) if m else 1


@dataclass
class ProviderFakes:
    """Twilio, SendGrid and WeCom robot fakes (tests/fakes/providers.py) on free local ports."""

    twilio: FakeTwilio = field(default_factory=lambda: FakeTwilio(ACCOUNT_SID, AUTH_TOKEN))
    sendgrid: FakeSendGrid = field(default_factory=lambda: FakeSendGrid(SENDGRID_KEY))
    wecom: FakeWeCom = field(default_factory=FakeWeCom)
    signer: SendGridWebhookSigner = field(default_factory=SendGridWebhookSigner)

    def start(self) -> ProviderFakes:
        for fake in (self.twilio, self.sendgrid, self.wecom):
            fake.start()
        return self

    def stop(self) -> None:
        for fake in (self.twilio, self.sendgrid, self.wecom):
            fake.stop()

    def env(self, web_port: int) -> dict[str, str]:
        """The notifier's environment: the real SDKs pointed at these fakes, every WeCom robot key set."""
        env = provider_env(self.twilio, self.sendgrid, self.wecom, web_port, self.signer.public_key)
        units = yaml.safe_load((REPO / "config" / "units.yaml").read_text(encoding="utf-8"))
        for entry in (*units["units"].values(), *units.get("roles", {}).values()):
            if entry.get("wecom_robot_env"):
                env.setdefault(entry["wecom_robot_env"], f"robot-key-{entry['wecom_robot_env'].lower()}")
        return env

    def markdown(self) -> list[RecordedRequest]:
        """WeCom markdown requests: one per provider call (a mention follow-up is a second, ``text`` request)."""
        return [r for r in self.wecom.requests if (r.json or {}).get("msgtype") == "markdown"]

    def provider_calls(self) -> dict[str, int]:
        """Provider calls per channel, as the send-duration histogram counts them."""
        return {"sms": len(self.twilio.requests), "email": len(self.sendgrid.requests), "wecom": len(self.markdown())}

    def expected(self, retried: Mapping[str, int]) -> dict[tuple[str, str], int]:
        """(channel, outcome) -> deliveries, from what the fakes received and answered.

        Every accepted SMS and e-mail is one delivery sent; every refused one is one
        delivery ``retried`` or ``failed``: ``retried`` says how many refusals per channel
        were retryable (the faults the test injected), the rest were permanent. A WeCom
        message carries one or more merged alerts, each one delivery, sent or failed with it.
        """
        accepted = {id(r) for r in self.wecom.messages}
        wecom_ok = sum(wecom_parts(r) for r in self.markdown() if id(r) in accepted)
        wecom_refused = sum(wecom_parts(r) for r in self.markdown() if id(r) not in accepted)
        out: dict[tuple[str, str], int] = {}
        for channel, fake in (("sms", self.twilio), ("email", self.sendgrid)):
            refused = len(fake.requests) - len(fake.messages)
            out[(channel, "sent")] = len(fake.messages)
            out[(channel, "retried")] = retried.get(channel, 0)
            out[(channel, "failed")] = refused - retried.get(channel, 0)
        out[("wecom", "sent")] = wecom_ok
        out[("wecom", "retried")] = retried.get("wecom", 0)
        out[("wecom", "failed")] = wecom_refused - retried.get("wecom", 0)
        return {k: v for k, v in out.items() if v}


def load_residents(bootstrap: str, prefix: str, residents: Iterable[Resident]) -> None:
    """Households on ``PREFIX.residents`` (compacted, key = account), before the notifier reads the directory."""
    from waterwatch.admin import ensure_topics
    from waterwatch.topics import RESIDENTS

    topic = f"{prefix}.residents"
    ensure_topics(bootstrap, [dataclasses.replace(RESIDENTS, name=topic)])
    producer = Producer(bootstrap)
    try:
        producer.send(topic, [(r.account.encode(), r.model_dump_json(exclude_none=True).encode()) for r in residents])
    finally:
        producer.close()
