"""A minimal Faust worker for the round-trip test, run as its own process.

It reads CloudEvents as raw bytes from ``WW_SOURCE``, parses each with
:func:`waterwatch.events.parse_event` and sends the event ``id`` to
``WW_SINK`` under the same key.  A line that does not parse is forwarded as
``rejected:<error code>`` so the test sees it rather than waiting.

Run: ``python -m faust_forwarder`` (cwd = this folder, or with this folder on
``PYTHONPATH``) with ``WW_BROKER``, ``WW_APP_ID``, ``WW_SOURCE``, ``WW_SINK``,
``WW_PARTITIONS``, ``WW_DATADIR`` and ``WW_MAX_SECONDS`` set.  The process
stops by itself after ``WW_MAX_SECONDS`` (SIGTERM to itself, a hard exit 20 s
later if the graceful stop hangs); the test normally stops it sooner.
"""

from __future__ import annotations

import os
import signal
import threading

import faust

from waterwatch.events import EventError, parse_event

BROKER = os.environ["WW_BROKER"]
APP_ID = os.environ["WW_APP_ID"]
SOURCE = os.environ["WW_SOURCE"]
SINK = os.environ["WW_SINK"]
PARTITIONS = int(os.environ.get("WW_PARTITIONS", "1"))
DATADIR = os.environ.get("WW_DATADIR", ".")
MAX_SECONDS = float(os.environ.get("WW_MAX_SECONDS", "120"))

app = faust.App(
    APP_ID,
    broker=f"kafka://{BROKER}",
    store="memory://",
    web_enabled=False,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    datadir=DATADIR,
    consumer_auto_offset_reset="earliest",
)

source = app.topic(SOURCE, key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)
sink = app.topic(SINK, key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)


@app.agent(source, concurrency=1)
async def forward(stream: faust.StreamT) -> None:
    async for key, value in stream.items():
        try:
            event = parse_event(value)
        except EventError as exc:
            await sink.send(key=key, value=f"rejected:{exc.error}".encode())
            continue
        await sink.send(key=key, value=event.id.encode("utf-8"))


def _watchdog() -> None:
    pid = os.getpid()
    soft = threading.Timer(MAX_SECONDS, os.kill, (pid, signal.SIGTERM))
    hard = threading.Timer(MAX_SECONDS + 20, os._exit, (3,))
    soft.daemon = hard.daemon = True
    soft.start()
    hard.start()


if __name__ == "__main__":
    _watchdog()
    faust.Worker(app, loglevel="INFO").execute_from_commandline()
