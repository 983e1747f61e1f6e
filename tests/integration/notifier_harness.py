"""Run ``waterwatch notifier`` as a real subprocess against the real broker and fake providers.

:class:`NotifierProcess` is the worker harness's process with the notifier's
command line; :func:`provider_env` points the real SDKs at the local fake
servers (tests/fakes/providers.py); :func:`routing_config` copies ``config/``
with a routing file tuned for tests (short back-off, short merge window, no
quiet hours) unless a test asks for something else; :func:`make_alert` builds
an alert CloudEvent the way the worker publishes them.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from worker_harness import REPO, TZ, WorkerProcess

from waterwatch.events import OUTPUT_MODELS

ACCOUNT_SID = "AC" + "0" * 30 + "12"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
SENDGRID_KEY = "SG.test-key"
WECOM_KEY = "robot-key-warning-group"


@dataclass
class NotifierProcess(WorkerProcess):
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "waterwatch.cli", "notifier", "--app-id", self.app_id,
               "--topic-prefix", self.topic_prefix, "--data-dir", str(self.data_dir),
               "--web-port", str(self.web_port), "--partitions", str(self.partitions),
               "--metrics-port", "0"]  # fmt: skip
        if self.config_dir is not None:
            cmd += ["--config", str(self.config_dir)]
        return cmd


def provider_env(twilio: Any, sendgrid: Any, wecom: Any, web_port: int, sendgrid_public_key: str) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "WATERWATCH_TWILIO_BASE_URL": twilio.base_url,
        "SENDGRID_API_KEY": SENDGRID_KEY,
        "SENDGRID_FROM_EMAIL": "alerts@waterwatch.example.invalid",
        "WATERWATCH_SENDGRID_HOST": sendgrid.base_url,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_public_key,
        "WATERWATCH_WECOM_BASE_URL": wecom.base_url,
        "WATERWATCH_WECOM_WARNING_GROUP_KEY": WECOM_KEY,
        "WATERWATCH_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "TWILIO_EDGE": "",
        "TWILIO_REGION": "",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def routing_config(base: Path, **routing_changes: Any) -> Path:
    """A copy of ``config/`` whose routing.yaml retries fast, merges briefly and has no quiet hours."""
    d = base / f"config-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "config", d)
    routing = yaml.safe_load((d / "routing.yaml").read_text(encoding="utf-8"))
    routing["retry"].update({"base_delay": "1s", "min_delay": "1s", "max_delay": "2s", "rate_limit_wait": "2s"})
    routing["retry"]["channels"] = {"wecom": {"base_delay": "1s", "max_delay": "2s"}}
    routing["quiet_hours"] = {"units": [], "residents": []}
    routing["wecom"]["merge_window"] = "1s"
    for key, value in routing_changes.items():
        if isinstance(value, dict) and isinstance(routing.get(key), dict):
            routing[key].update(value)  # a section: only the keys given change
        else:
            routing[key] = value
    (d / "routing.yaml").write_text(yaml.safe_dump(routing, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return d


def make_alert(
    *,
    level: str = "overdue",
    rule: str = "R13.accept",
    unit: str = "runda",
    matter: str | None = None,
    stage: str = "overdue",
    notify: list[str] | None = None,
    due_in: float = -60,
) -> dict[str, Any]:
    """An alert CloudEvent as the worker publishes it (validated against the output model)."""
    matter = matter or f"T-{uuid.uuid4().hex[:8]}"
    now = datetime.now(TZ)
    etype = {"warning": "alert.warning", "overdue": "alert.overdue", "escalation": "alert.escalation",
             "reminder": "alert.reminder", "violation": "alert.violation"}[level]  # fmt: skip
    alert_id = f"{matter}:{rule}:accept:{stage}:1"
    event = {
        "specversion": "1.0",
        "id": alert_id,
        "source": "waterwatch/worker",
        "type": etype,
        "time": now.isoformat(),
        "subject": matter,
        "datacontenttype": "application/json",
        "data": {
            "alert_id": alert_id,
            "matter_id": matter,
            "matter_kind": "ticket",
            "rule": rule,
            "clock": "accept",
            "level": level,
            "stage": stage,
            "due_at": (now + timedelta(seconds=due_in)).isoformat(),
            "fired_at": now.isoformat(),
            "unit": unit,
            "notify": notify if notify is not None else [],
            "message": f"{rule} {stage}",
            "context": {"summary": "水表井漏水", "limit": "2h", "started_at": (now - timedelta(hours=2)).isoformat()},
        },
    }
    OUTPUT_MODELS[etype].model_validate(event)
    return event


def encode(alert: dict[str, Any]) -> bytes:
    return json.dumps(alert, ensure_ascii=False).encode()
