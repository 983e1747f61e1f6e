"""``waterwatch residents import FILE``: load the resident directory from a CSV file.

The lead mounts :data:`residents_app` on the main CLI
(``app.add_typer(residents_app, name="residents")``).  The logic lives in
:mod:`waterwatch.residents`; this module parses options and prints.  Nothing
printed here contains a name, and phone numbers and e-mail addresses only
masked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from waterwatch.core.errors import ConfigError
from waterwatch.residents import (
    REASONS,
    CsvHeaderError,
    ImportSummary,
    NotCompacted,
    import_csv,
    load_registry,
)
from waterwatch.topics import RESIDENTS

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REJECTED = 2

residents_app = typer.Typer(
    help="The resident directory (compacted topic waterwatch.residents): import households from CSV.",
    no_args_is_help=True,
)

IMPORT_HELP = """Validate a residents CSV and produce the good rows to waterwatch.residents, keyed by account.

CSV format: UTF-8 (a byte-order mark is fine), first row = header, columns in any order,
names case-insensitive; account, phone or email, and one area column are required.

* account: household account number (户号), unique in the file; letters, digits and . _ : -
* name: optional, at most 100 characters
* phone: mainland mobile (13800138000, +86 138 0013 8000) or E.164 (+44...); stored as +86...
* email: an e-mail address
* language: zh or en; empty = zh
* districts, compounds, zones: area codes of areas.yaml, separated by ;
* sms_consent, email_consent: yes/no/1/0/true/false; empty = yes

A household needs a phone or an e-mail and at least one known area code. A compound brings
its district and supply zone along (areas.yaml), so an outage named by district or zone reaches it.

Every bad row is reported as line N: reason (names never shown, phones and e-mails masked);
a repeated account is refused naming the line of the first. The good rows are still produced,
and count once the broker acknowledged them. The broker is WATERWATCH_KAFKA, else the local one.

Exit codes: 0 every row was produced; 2 some rows were rejected (the good ones were
produced); 1 the file, its header or areas.yaml is unusable, the broker is unreachable, the
topic is mis-partitioned or not compacted, or some rows were not delivered.
"""


def _say(console: Console, text: str, style: str | None = None) -> None:
    """Print one line as it is: no markup (reasons contain brackets), no wrapping."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


@residents_app.command("import", help=IMPORT_HELP)
def import_(
    file: Annotated[Path, typer.Argument(help="CSV file of households (see the format above).")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Configuration directory (areas.yaml: the known area codes).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only validate and print the summary; do not contact Kafka.")
    ] = False,
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="Topic to produce to (created compacted if missing).")
    ] = RESIDENTS.name,
) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    if not file.is_file():
        _say(err, f"error: {file} is not a readable file", "red")
        raise typer.Exit(EXIT_ERROR)
    try:
        registry = load_registry(config)
    except ConfigError as exc:
        _say(err, f"error: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None

    from waterwatch.admin import BrokerUnavailable, TopicMismatch
    from waterwatch.publish import default_bootstrap

    bootstrap = None if dry_run else default_bootstrap()
    try:
        summary = import_csv(file, registry, bootstrap=bootstrap, topic=topic, dry_run=dry_run, progress=True)
    except CsvHeaderError as exc:
        _say(err, f"error: {file}: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None
    except (BrokerUnavailable, TopicMismatch, NotCompacted) as exc:
        _say(err, f"error: {exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as exc:
        _say(err, f"error: cannot read {file}: {exc.strerror or exc}", "red")
        raise typer.Exit(EXIT_ERROR) from None
    raise typer.Exit(report(summary, out, err, bootstrap or ""))


def summary_line(summary: ImportSummary) -> str:
    """``read 23, valid 20, rejected 3 (bad phone 1, ...), produced 20, elapsed 0.4 s``."""
    line = f"read {summary.read}, valid {summary.valid}, rejected {summary.rejected}"
    if summary.reasons:
        parts = [f"{REASONS.get(code, code)} {n}" for code, n in sorted(summary.reasons.items(), key=_by_count)]
        line += f" ({', '.join(parts)})"
    if summary.dry_run:
        line += ", produced 0 (dry run)"
    else:
        line += f", produced {summary.produced}"
        if summary.failed:
            line += f", not delivered {summary.failed}"
    return line + f", elapsed {summary.elapsed:.1f} s"


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def report(summary: ImportSummary, out: Console, err: Console, bootstrap: str) -> int:
    """Print rejects, failures and the summary line; return the exit code."""
    for line_no, reason in summary.rejects:
        _say(err, f"line {line_no}: {reason}", "yellow")
    if summary.rejected > len(summary.rejects):
        _say(err, f"... and {summary.rejected - len(summary.rejects)} more rejected rows", "yellow")
    for line_no, reason in summary.failures:
        _say(err, f"line {line_no}: {reason}", "red")
    if summary.failed > len(summary.failures):
        _say(err, f"... and {summary.failed - len(summary.failures)} more undelivered rows", "red")
    _say(out, summary_line(summary))
    if summary.stopped_at is not None:
        _say(
            err,
            f"error: stopped at line {summary.stopped_at}: the Kafka broker at {bootstrap} stopped answering: "
            "check `waterwatch kafka status`, then import the file again (records are keyed by account)",
            "red",
        )
        return EXIT_ERROR
    if summary.failed:
        return EXIT_ERROR
    if summary.rejected:
        return EXIT_REJECTED
    return EXIT_OK
