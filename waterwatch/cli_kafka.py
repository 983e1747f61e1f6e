"""``waterwatch kafka ...``: manage the local single-node Kafka broker.

The commands are thin wrappers around :mod:`waterwatch.kafka_local`; this
module only formats output. Mount :data:`kafka_app` in the main CLI with
``app.add_typer(kafka_app, name="kafka")``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from waterwatch import kafka_local
from waterwatch.kafka_local import BrokerStatus, KafkaLocalError

kafka_app = typer.Typer(
    help=(
        "Run a local single-node Apache Kafka "
        f"{kafka_local.KAFKA_VERSION} (KRaft) on 127.0.0.1 for development and tests. "
        "Set WATERWATCH_KAFKA to use an existing cluster instead."
    ),
    no_args_is_help=True,
)

_out = Console()
_err = Console(stderr=True)


class _StepHandler(logging.Handler):
    """Shows kafka_local's progress messages as dim lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        _err.print(Text(f"  {record.getMessage()}", style=style), soft_wrap=True)


@contextlib.contextmanager
def _progress() -> Iterator[None]:
    """Show kafka_local's progress while a command runs, then restore logging."""
    steps = logging.getLogger(kafka_local.__name__)
    # kafka-python logs connection errors while the broker is still starting;
    # those are expected here and would only bury the real messages.
    client = logging.getLogger("kafka")
    saved = (steps.level, steps.propagate, client.level)
    handler = _StepHandler()
    steps.addHandler(handler)
    steps.setLevel(logging.INFO)
    steps.propagate = False
    client.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        steps.removeHandler(handler)
        steps.setLevel(saved[0])
        steps.propagate = saved[1]
        client.setLevel(saved[2])


def _fail(error: KafkaLocalError) -> NoReturn:
    _err.print(Text(str(error), style="bold red"), soft_wrap=True)
    if error.log_tail:
        _err.print(Text("last lines of the Kafka log:", style="dim"))
        _err.print(Text(error.log_tail, style="dim"))
    raise typer.Exit(1)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1024 * 1024):.0f} MiB"


@kafka_app.command()
def up(
    fresh: bool = typer.Option(
        False, "--fresh", help="Stop the broker and delete its data first (new cluster id)."
    ),
    timeout: float = typer.Option(
        90.0, "--timeout", min=1.0, help="Seconds to wait for the broker to answer."
    ),
) -> None:
    """Start the local broker (downloads the jars with Maven the first time)."""
    started = time.monotonic()
    try:
        with _progress():
            state = kafka_local.up(fresh=fresh, timeout=timeout)
    except KafkaLocalError as error:
        _fail(error)
    took = time.monotonic() - started
    if state.external:
        if state.reachable:
            _out.print(Text(f"WATERWATCH_KAFKA is set: using {state.bootstrap}; nothing started."))
            return
        _fail(
            KafkaLocalError(
                f"WATERWATCH_KAFKA is set to {state.bootstrap} but no broker answered a "
                "metadata request there: start that cluster or unset WATERWATCH_KAFKA"
            )
        )
    _out.print(
        Text.assemble(
            ("Kafka ", "green"),
            (state.version, "green"),
            (" is up on ", "green"),
            (state.bootstrap, "bold green"),
            (f" (pid {state.pid}, {_mib(state.rss_bytes)} RSS) in {took:.1f}s", "green"),
        )
    )


@kafka_app.command()
def down(
    timeout: float = typer.Option(
        30.0, "--timeout", min=0.0, help="Seconds to wait after SIGTERM before SIGKILL."
    ),
) -> None:
    """Stop the local broker (its data is kept)."""
    try:
        with _progress():
            stopped = kafka_local.down(timeout=timeout)
    except KafkaLocalError as error:
        _fail(error)
    external = kafka_local.external_cluster()
    if external is not None:
        _out.print(Text(f"WATERWATCH_KAFKA is set ({external}): nothing to stop."))
    elif stopped:
        _out.print(Text(f"Kafka stopped; data kept in {kafka_local.kafka_paths().data_dir}."))
    else:
        _out.print(Text("No local Kafka broker was running."))


def _status_table(state: BrokerStatus) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if state.external:
        running = Text("external cluster (WATERWATCH_KAFKA)", style="cyan")
    elif state.running:
        running = Text("running", style="green")
    else:
        running = Text("stopped", style="yellow")
    table.add_row("state", running)
    table.add_row("reachable", Text("yes" if state.reachable else "no"))
    table.add_row("bootstrap", Text(state.bootstrap))
    if not state.external:
        table.add_row("version", Text(state.version))
        table.add_row("pid", Text(str(state.pid) if state.pid else "-"))
        table.add_row("rss", Text(_mib(state.rss_bytes)))
        table.add_row("data", Text(str(state.data_dir)))
        table.add_row("log", Text(str(state.log_file)))
    return table


@kafka_app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Show whether the local broker runs and answers metadata requests."""
    try:
        with _progress():
            state = kafka_local.status()
    except KafkaLocalError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps(state.as_dict(), indent=2))
        return
    _out.print(_status_table(state))
