"""``waterwatch dev``: the embedded default, live.

One process runs the stream processor on the local broker, a console printer
of every alert (console delivery: no provider credentials needed), and a demo
scenario that publishes events at their (time-scaled) moments: a hydrant
ticket that goes overdue, a leak whose crew arrives late, a planned outage
with its 48-hour pre-notice, an emergency outage.  With ``--time-scale 720``
twelve policy hours pass in a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import faust

from streams.worker import Worker, WorkerSettings
from waterwatch.core.config import Config
from waterwatch.masking import mask_text

TZ = timezone(timedelta(hours=8))


def demo_scenario(start: datetime, scale: float) -> list[tuple[float, dict[str, Any]]]:
    """(seconds after start, event) pairs; policy hours are divided by ``scale``."""
    run = uuid.uuid4().hex[:6]

    def h(hours: float) -> float:
        return hours * 3600 / scale

    def event(offset: float, typ: str, subject: str, **data: Any) -> tuple[float, dict[str, Any]]:
        t = start + timedelta(seconds=offset)
        return offset, {
            "specversion": "1.0", "id": f"dev-{run}-{typ}-{subject}-{offset:.0f}", "source": "/dev",
            "type": typ, "time": t.isoformat(timespec="seconds"), "subject": f"{subject}-{run}", "data": data,
        }  # fmt: skip

    outage_start = start + timedelta(seconds=h(50))
    return sorted(
        [
            event(0, "ticket.created", "T-HYD", channel="phone", category="hydrant_fault",
                  summary="消火栓漏水 hydrant leaking", unit="runda"),
            event(1, "ticket.dispatched", "T-HYD", unit="runda"),
            event(2, "ticket.accepted", "T-HYD", unit="runda"),
            event(0, "leak.reported", "L-DN600", pipe_diameter_mm=600, unit="runda", location="花园路"),
            event(h(1.5), "leak.crew_arrived", "L-DN600", unit="runda"),
            event(0, "outage.planned", "O-PLAN", kind="planned", unit="runda",
                  area={"compounds": ["yinhe-garden"], "description": "银河花园"},
                  starts_at=outage_start.isoformat(timespec="seconds"),
                  expected_end_at=(outage_start + timedelta(seconds=h(6))).isoformat(timespec="seconds"),
                  cause="更换阀门 valve replacement"),
            event(h(3), "outage.emergency", "O-EM", unit="runda", cause="DN600 主管爆裂 main burst",
                  area={"zones": ["zone-3"]},
                  expected_end_at=(start + timedelta(seconds=h(9))).isoformat(timespec="seconds")),
            event(h(8), "outage.restored", "O-EM"),
        ],
        key=lambda p: p[0],
    )  # fmt: skip


def print_alert(body: dict[str, Any], echo: Callable[[str], None]) -> None:
    d = body["data"]
    when = datetime.fromisoformat(d["fired_at"]).strftime("%H:%M:%S")
    late = f" (late by {d['late_by']}s)" if d.get("late_by") else ""
    echo(f"{when}  {body['type']:<17} {d['rule']:<11} {d['matter_id']:<18} → {','.join(d['notify'])}: "
         f"{mask_text(d['message'])}{late}")  # fmt: skip


def run_live(
    config: Config, bootstrap: str, *, time_scale: float, seconds: float | None, data_dir: Path,
    web_port: int, echo: Callable[[str], None] = print, demo: bool = True,
) -> None:  # fmt: skip
    from waterwatch.admin import ensure_topics

    settings = WorkerSettings(bootstrap=bootstrap, app_id="waterwatch-dev", data_dir=data_dir, web_port=web_port)
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(bootstrap, settings.topic_specs())
    worker = Worker(settings, config)
    app = worker.app
    alerts = app.topic(settings.alerts_topic, key_serializer="raw", value_serializer="raw")
    events = app.topic(settings.events_topic, key_serializer="raw", value_serializer="raw")
    started_at = time.time()

    @app.agent(alerts, concurrency=1)
    async def console(stream: faust.StreamT[Any]) -> None:
        async for value in stream:
            try:
                body = json.loads(value)
                fired = datetime.fromisoformat(body["data"]["fired_at"]).timestamp()
                if started_at - 5 <= fired <= time.time() + 5:
                    print_alert(body, echo)  # only what this run fires, not older records
            except (ValueError, KeyError, TypeError):
                continue

    @app.task
    async def scenario() -> None:
        while worker.state != "ready":
            await asyncio.sleep(0.2)
        if not demo:
            return
        start = datetime.now(TZ).replace(microsecond=0)
        echo(f"demo scenario at time scale {time_scale:g}: one policy hour = {3600 / time_scale:g} s")
        t0 = time.time()
        for offset, ev in demo_scenario(start, time_scale):
            delay = t0 + offset - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await events.send(key=ev["subject"].encode(), value=json.dumps(ev, ensure_ascii=False).encode())
            echo(f"{datetime.now(TZ):%H:%M:%S}  published {ev['type']} {ev['subject']}")

    if seconds is not None:
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
    faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


def start_notifier(bootstrap: str, config_dir: Path | None) -> subprocess.Popen[bytes]:
    """``waterwatch notifier`` beside the live demo, sharing this terminal.

    Without provider credentials in the environment it delivers to the console:
    the SMS, e-mail and WeCom texts residents and units would get print here.
    """
    cmd = [sys.executable, "-m", "waterwatch.cli", "notifier", "--app-id", "waterwatch-dev-notifier",
           "--data-dir", str(Path(".waterwatch") / "dev-notifier"), "--web-port", "6068",
           "--metrics-port", "0", "--loglevel", "warning"]  # fmt: skip
    if config_dir is not None:
        cmd += ["--config", str(config_dir)]
    env = {**os.environ, "WATERWATCH_KAFKA": bootstrap, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
