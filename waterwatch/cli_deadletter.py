"""``waterwatch deadletter list|replay``: inspect and re-drive rejected input.

The lead mounts :data:`deadletter_app` on the main CLI
(``app.add_typer(deadletter_app, name="deadletter")``).  The logic lives in
:mod:`waterwatch.deadletter`; this module only parses options and prints.
Nothing printed here contains the original bytes of a rejected event: reasons
are masked, payloads are shown by size only.
"""

from __future__ import annotations

import json
from typing import Annotated

import kafka.errors as kerrors
import typer
from rich.console import Console
from rich.table import Table

from waterwatch import deadletter as dl
from waterwatch.admin import BrokerUnavailable

EXIT_OK = 0
EXIT_ERROR = 1

deadletter_app = typer.Typer(
    help="Rejected input on PREFIX.deadletter: list it (masked) and re-drive it after a fix.",
    no_args_is_help=True,
)

PrefixOpt = Annotated[str, typer.Option("--topic-prefix", help="Topics are PREFIX.deadletter and PREFIX.events.")]
ErrorOpt = Annotated[
    list[str] | None,
    typer.Option("--error", help="Only this error class (e.g. unknown_unit); repeatable."),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Give up reading after this many seconds.")]


def _say(console: Console, text: str, style: str | None = None) -> None:
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _read(prefix: str, timeout: float, err: Console) -> list[dl.DeadLetterEntry]:
    from waterwatch.kafka_local import bootstrap_servers

    bootstrap = bootstrap_servers()
    try:
        return dl.read_deadletters(bootstrap, prefix, timeout=timeout)
    except (BrokerUnavailable, dl.TopicMissing, TimeoutError) as exc:
        _say(err, f"error: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None


def _table(rows: list[dict[str, object]], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("Offset", "Rejected at", "Error", "Type", "Matter", "Size", "Reason"):
        table.add_column(col, overflow="fold", no_wrap=col in ("Offset", "Error", "Size"),
                         ratio=4 if col == "Reason" else None)  # fmt: skip
    for r in rows:
        table.add_row(str(r["offset"]), str(r["rejected_at"] or "-"), str(r["error"]), str(r["event_type"] or "-"),
                      str(r["matter_id"] or "-"), f"{r['size']} B", str(r["reason"]))  # fmt: skip
    return table


@deadletter_app.command("list")
def list_(
    topic_prefix: PrefixOpt = dl.DEFAULT_PREFIX,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Show at most N, the most recent.")] = None,
    error: ErrorOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line (masked fields only).")] = False,
    timeout: TimeoutOpt = dl.READ_TIMEOUT_S,
) -> None:
    """Show the dead letters: offset, when, error class, event type, matter, size and the masked reason.

    Reads PREFIX.deadletter from the beginning up to its end at the time the
    command started. The original payload is never shown, only its size.
    """
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    entries = _read(topic_prefix, timeout, err)
    shown = dl.filter_entries(entries, errors=error or (), limit=limit)
    rows = [dl.masked_row(e) for e in shown]
    if as_json:
        for r in rows:
            _say(out, json.dumps(r, ensure_ascii=False, separators=(",", ":")))
    elif rows:
        out.print(_table(rows, f"{dl.deadletter_topic(topic_prefix)}: {len(rows)} of {len(entries)}"))
    _say(err, f"{len(rows)} shown of {len(entries)} dead letters in {dl.deadletter_topic(topic_prefix)}")


@deadletter_app.command("replay")
def replay(
    offset: Annotated[
        list[int] | None, typer.Option("--offset", help="Dead-letter offset to re-drive; repeatable.")
    ] = None,
    error: ErrorOpt = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Select every dead letter (--offset and --error still narrow it).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be re-driven; produce nothing.")] = False,
    topic_prefix: PrefixOpt = dl.DEFAULT_PREFIX,
    timeout: TimeoutOpt = dl.READ_TIMEOUT_S,
) -> None:
    """Re-produce the ORIGINAL bytes of the selected dead letters to PREFIX.events, keyed by the original key.

    Use it after a fix (e.g. a unit added to units.yaml): the worker then
    processes them again; those still wrong are dead-lettered again.
    """
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        dl.select((), offsets=offset or (), errors=error or (), all_=all_)  # validate before reading
    except dl.SelectionError as exc:
        _say(err, f"error: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None
    entries = _read(topic_prefix, timeout, err)
    chosen = dl.select(entries, offsets=offset or (), errors=error or (), all_=all_)
    missing = sorted(set(offset or ()) - {e.offset for e in entries})
    if missing:
        _say(err, f"warning: no dead letter at offset(s) {', '.join(map(str, missing))}", "yellow")
    target = dl.events_topic(topic_prefix)
    if dry_run:
        for e in chosen:
            r = dl.masked_row(e)
            _say(out, f"would re-drive offset {r['offset']}: {r['error']} {r['event_type'] or '-'} "
                      f"{r['matter_id'] or '-'} ({r['size']} B)")  # fmt: skip
        _say(out, f"dry run: {sum(e.replayable for e in chosen)} dead letter(s) would be re-driven to {target}")
        return
    from waterwatch.kafka_local import bootstrap_servers

    try:
        result = dl.redrive(bootstrap_servers(), chosen, topic_prefix, timeout=timeout)
    except (BrokerUnavailable, kerrors.KafkaError) as exc:
        _say(
            err,
            f"error: {exc} (some records may have been produced: re-driving again is safe, the worker "
            "ignores an event id it already applied)",
            "red",
        )
        raise typer.Exit(EXIT_ERROR) from None
    for e in result.skipped:
        _say(err, f"offset {e.offset}: unreadable record, nothing to re-drive", "yellow")
    _say(out, f"re-drove {result.produced} dead letter(s) to {result.topic}")
