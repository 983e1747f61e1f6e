"""``waterwatch publish FILE``: send a JSON-lines file of events to Kafka.

The lead registers :func:`publish` on the main typer app
(``app.command("publish")(publish)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from waterwatch.admin import BrokerUnavailable, TopicMismatch
from waterwatch.publish import DEFAULT_TOPIC, PublishSummary, default_bootstrap, publish_file

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REJECTED = 2


def publish(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSON-lines file: one CloudEvent per line (blank lines are skipped).",
        ),
    ],
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="Topic to publish to.")
    ] = DEFAULT_TOPIC,
) -> None:
    """Validate each line as a CloudEvent and publish the valid ones, keyed by subject.

    Each line is checked against the event contract; a line that is not a
    valid event is reported as `line N: reason` and skipped, the rest of the
    file is still published (the original bytes of each line, key = the
    event's subject).  Events count as produced once the broker acknowledged
    them.  The broker is WATERWATCH_KAFKA, else the local one
    (`waterwatch kafka up`).

    Exit codes: 0 every line was produced; 2 some lines were rejected (the
    valid ones were produced); 1 the file cannot be read, the broker is
    unreachable, a topic is mis-partitioned, or some valid events were not
    delivered.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    if not file.is_file():
        _say(err, f"error: {file} is not a readable file", "red")
        raise typer.Exit(EXIT_ERROR)
    bootstrap = default_bootstrap()
    try:
        summary = publish_file(file, bootstrap, topic=topic, progress=True)
    except (BrokerUnavailable, TopicMismatch) as exc:
        _say(err, f"error: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as exc:
        _say(err, f"error: cannot read {file}: {exc.strerror or exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None
    raise typer.Exit(report(summary, out, err, bootstrap))


def _say(console: Console, text: str, style: str | None = None) -> None:
    """Print one line as it is: no markup (reasons contain ``[0]``), no wrapping."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def report(summary: PublishSummary, out: Console, err: Console, bootstrap: str) -> int:
    """Print rejects, failures and the summary line; return the exit code."""
    for line_no, reason in summary.rejects:
        _say(err, f"line {line_no}: {reason}", "yellow")
    if summary.rejected > len(summary.rejects):
        _say(
            err, f"... and {summary.rejected - len(summary.rejects)} more rejected lines", "yellow"
        )
    for line_no, reason in summary.failures:
        _say(err, f"line {line_no}: {reason}", "red")
    if summary.failed > len(summary.failures):
        _say(err, f"... and {summary.failed - len(summary.failures)} more undelivered lines", "red")
    line = f"produced {summary.produced}, rejected {summary.rejected}"
    if summary.failed:
        line += f", not delivered {summary.failed}"
    _say(out, line)
    if summary.stopped_at is not None:
        _say(
            err,
            f"error: stopped at line {summary.stopped_at}: the Kafka broker at {bootstrap} "
            "stopped answering: check `waterwatch kafka status`, then publish the rest again",
            "red",
        )
        return EXIT_ERROR
    if summary.failed:
        return EXIT_ERROR
    if summary.rejected:
        return EXIT_REJECTED
    return EXIT_OK
