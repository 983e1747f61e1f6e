"""``waterwatch``: the one command-line interface (typer + rich)."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from notifiers.cli_templates import templates_app
from waterwatch import __version__
from waterwatch.cli_deadletter import deadletter_app
from waterwatch.cli_kafka import kafka_app
from waterwatch.cli_publish import publish as publish_command
from waterwatch.cli_residents import residents_app
from waterwatch.core.errors import ConfigError

app = typer.Typer(
    name="waterwatch",
    help="Service time limits of a city water utility: SLA engine, alerts and notices on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(kafka_app, name="kafka", help="Run a local single-node Apache Kafka (KRaft) for development.")
app.command("publish")(publish_command)
app.add_typer(templates_app, name="templates", help="Message templates: check them all before they are needed.")
app.add_typer(deadletter_app, name="deadletter", help="Rejected input: list it (masked) and re-drive it after a fix.")
app.add_typer(residents_app, name="residents", help="The resident directory: import households from CSV.")
policy_app = typer.Typer(help="The policy: every rule as data (config/policy.yaml).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
schemas_app = typer.Typer(help="JSON Schemas and the AsyncAPI document in schemas/.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Configuration directory (policy.yaml, units.yaml, calendar.yaml)."),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _load(config: Path | None, time_scale: float = 1.0) -> Any:
    from waterwatch.core.config import load_config

    try:
        return load_config(config, time_scale=time_scale)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _parse_time(value: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{name}: {value!r} is not an RFC 3339 time like 2026-12-01T00:00:00+08:00") from None
    if t.tzinfo is None:
        raise _fail(f"{name}: give the offset, e.g. {value}+08:00")
    return t


def _events(path: Path, *, quiet: bool = False) -> Iterator[tuple[int, Any]]:
    """Valid events of a JSON-lines file with their line numbers; bad lines reported on stderr."""
    from waterwatch.publish import read_lines, validate_lines

    if not path.exists():
        raise _fail(f"{path}: no such file")
    with path.open("rb") as fh:
        for checked in validate_lines(read_lines(fh)):
            if checked.event is None:
                if not quiet:
                    err.print(f"line {checked.line_no}: {checked.reason}", style="yellow", highlight=False)
                continue
            yield checked.line_no, checked.event


# ---------------------------------------------------------------- policy


@policy_app.command("show")
def policy_show(
    config: ConfigOpt = None,
    format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Print every rule: ID, article, what, limit, what starts the clock, how time counts."""
    cfg = _load(config)
    rules = cfg.policy.rules.values()
    if format == "json":
        data = [
            {
                "id": r.id, "article": r.article, "what": r.what, "kind": r.kind, "matter": r.matter,
                "clock": r.clock, "limit": r.describe_limit(), "limit_seconds": r.limit,
                "counts": r.describe_counts(), "starts": list(r.starts), "stops": list(r.stops),
                "categories": list(r.categories), "tiers": list(r.tiers),
                "warn": {"fractions": list(r.warn.fractions), "leads_s": list(r.warn.leads),
                         "after_s": list(r.warn.after)},
                "escalate": [{"after": s.after, "notify": list(s.notify), "cites": s.cites}
                             for s in r.escalate],
                "reminder": None if r.reminder is None else
                {"every_s": r.reminder.every, "max": r.reminder.max},
            }
            for r in rules
        ]  # fmt: skip
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return
    if format != "table":
        raise _fail("--format must be table or json")
    table = Table(title=f"waterwatch policy ({cfg.directory / 'policy.yaml'})", show_lines=False)
    for col in ("ID", "Article", "What", "Limit", "Starts", "Counts"):
        table.add_column(col, overflow="fold", no_wrap=col in ("ID", "Article", "Counts"),
                         ratio=4 if col == "What" else None)  # fmt: skip
    for r in rules:
        table.add_row(r.id, r.article, r.what, r.describe_limit(), ", ".join(r.starts) or "-",
                      r.describe_counts())  # fmt: skip
    out.print(table)


# ---------------------------------------------------------------- schemas


@schemas_app.command("write")
def schemas_write(
    directory: Annotated[Path, typer.Option(help="Where to write")] = Path("schemas"),
) -> None:
    """Regenerate the JSON Schemas and asyncapi.yaml from the models."""
    from waterwatch.schema_gen import write

    changed = write(directory)
    out.print(f"{len(changed)} file(s) changed in {directory}")


@schemas_app.command("check")
def schemas_check(
    directory: Annotated[Path, typer.Option(help="Where the committed files are")] = Path("schemas"),
) -> None:
    """Fail when the committed schema files differ from what the models generate."""
    from waterwatch.schema_gen import diff

    bad = diff(directory)
    if bad:
        raise _fail(f"out of date: {', '.join(bad)}; run `waterwatch schemas write`")
    out.print("schemas are up to date")


# ---------------------------------------------------------------- replay


def _default_until(last: datetime | None) -> int | None:
    return None if last is None else int((last + timedelta(days=30)).timestamp())


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="JSON-lines file of input events")],
    until: Annotated[
        str | None,
        typer.Option(help="Run the virtual clock to this time (default: 30 days after the last event)"),
    ] = None,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="Divide every policy duration by N (as the worker's option)")
    ] = 1.0,
    config: ConfigOpt = None,
) -> None:
    """Run the core on FILE with a virtual clock; print every alert as a CloudEvent JSON line.

    Output is in time order and byte-for-byte deterministic. Rejected events go
    to stderr with their line number and reason; a summary ends stderr.
    """
    from waterwatch.core.replay import Rejected, Replayer, gc_paused

    if time_scale <= 0:
        raise _fail("--time-scale must be > 0")
    cfg = _load(config, time_scale=time_scale)
    engine = cfg.engine()
    events = sorted(_events(file), key=lambda p: p[1].time.timestamp())
    until_ts = (int(_parse_time(until, "--until").timestamp()) if until
                else _default_until(events[-1][1].time if events else None))  # fmt: skip
    r = Replayer(engine)
    write = sys.stdout.write
    dumps = json.dumps
    with gc_paused():
        for line_no, event in events:
            if until_ts is not None and event.time.timestamp() > until_ts:
                break
            alerts, rejected = r.feed(event, line_no)
            for a in alerts:
                write(dumps(a.to_event(engine.tz), ensure_ascii=False, separators=(",", ":")) + "\n")
            if isinstance(rejected, Rejected):
                err.print(f"line {line_no}: {rejected.rejection.code}: {rejected.rejection.reason}",
                          style="yellow", highlight=False)  # fmt: skip
        if until_ts is not None:
            for a in r.run_until(until_ts, inclusive=True):
                write(dumps(a.to_event(engine.tz), ensure_ascii=False, separators=(",", ":")) + "\n")
    s = r.stats
    err.print(
        f"replayed {s.events} events of {s.matters} matters: {s.applied} applied, {s.rejected} rejected, "
        f"{s.duplicates} duplicates; {s.alerts} alerts", highlight=False,
    )  # fmt: skip


# ---------------------------------------------------------------- explain


@app.command()
def explain(
    matter: Annotated[str, typer.Argument(help="The matter id (the events' subject)")],
    events: Annotated[Path, typer.Option("--events", help="JSON-lines file of input events")],
    at: Annotated[str | None, typer.Option(help="Explain the state at this time (default: last event)")] = None,
    format: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    config: ConfigOpt = None,
) -> None:
    """Each deadline of MATTER and how it was computed: rule, start, limit, calendar skips, extensions."""
    from waterwatch.core.explain import explain as explain_state
    from waterwatch.core.replay import Replayer

    cfg = _load(config)
    engine = cfg.engine()
    mine = sorted(((n, e) for n, e in _events(events, quiet=True) if e.subject == matter),
                  key=lambda p: p[1].time.timestamp())  # fmt: skip
    if not mine:
        raise _fail(f"no events for matter {matter!r} in {events}")
    until = None if at is None else int(_parse_time(at, "--at").timestamp())
    if until is not None:  # the state at that time: only the events up to it
        mine = [(n, e) for n, e in mine if e.time.timestamp() <= until]
        if not mine:
            raise _fail(f"no events for matter {matter!r} up to {at}")
    r = Replayer(engine)
    fired = []
    for n, e in mine:
        alerts, rejected = r.feed(e, n)
        fired += alerts
        if rejected is not None:
            err.print(f"line {n}: {rejected.rejection.reason}", style="yellow", highlight=False)
    if until is not None:
        fired += list(r.run_until(until, inclusive=True))
    state = r.states.get(matter)
    if state is None:
        raise _fail(f"matter {matter!r} was never created (its creating event was rejected)")
    data = explain_state(engine, state, fired)
    if format == "json":
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return
    out.print(f"[bold]{data['matter_id']}[/bold]  {data['kind']}  status {data['status']}  "
              f"unit {data['unit'] or '-'}")  # fmt: skip
    for c in data["clocks"]:
        out.print(f"\n[bold]{c['clock']}[/bold]  {c['rule']} (Article {c['article']}) v{c['version']}: {c['what']}")
        out.print(f"  start      {c['start']}")
        out.print(f"  limit      {c['limit'] or '-'} ({c['counts']})")
        out.print(f"  due        {c['due'] or '-'}")
        if c["original_due"]:
            out.print(f"  originally {c['original_due']}")
        for ext in c["extensions"]:
            out.print(f"  extension  granted {ext['granted_at']} → due {ext['new_due']}")
        out.print(f"  status     {c['status']}")
        if c["skipped"]:
            out.print("  the calendar skipped:")
            for s in c["skipped"]:
                out.print(f"    - {s}")
        if c["note"]:
            out.print(f"  note       {c['note']}")
        if c["stages"]:
            out.print("  stages:   " + "; ".join(f"{s['stage']} {s['at']}" for s in c["stages"]))
    if data["alerts"]:
        out.print("\n[bold]alerts fired[/bold]")
        for a in data["alerts"]:
            out.print(f"  {a['fired_at']}  {a['type']:<17} {a['alert_id']}")


# ---------------------------------------------------------------- report


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    html = "html"


@app.command()
def report(
    file: Annotated[Path, typer.Argument(help="JSON-lines file of input events")],
    month: Annotated[str, typer.Option("--month", help="YYYY-MM")],
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
    config: ConfigOpt = None,
) -> None:
    """Per unit and rule: deadlines in the month, met, missed, on-time %, times to accept/resolve (Art. 34)."""
    from waterwatch.core.engine import month_bounds
    from waterwatch.core.replay import Replayer
    from waterwatch.core.report import monthly, per_unit
    from waterwatch.reporting import render_csv, render_html, render_table

    try:
        y, m = (int(x) for x in month.split("-"))
        if not (1 <= m <= 12 and 2000 <= y <= 2100):
            raise ValueError
    except ValueError:
        raise _fail(f"--month: {month!r} is not YYYY-MM") from None
    cfg = _load(config)
    engine = cfg.engine()
    start, end = month_bounds(f"{y:04d}-{m:02d}", engine.tz)
    r = Replayer(engine)
    for n, e in sorted(_events(file, quiet=True), key=lambda p: p[1].time.timestamp()):
        if e.time.timestamp() >= end:
            break
        for _ in r.feed(e, n)[0]:
            pass
    for _ in r.run_until(end - 1, inclusive=True):
        pass
    rows = monthly(r.states.values(), start, end, as_of=end)
    units = per_unit(rows)
    if format is ReportFormat.json:
        text = json.dumps({"month": month, "rows": [x.as_dict() for x in rows], "units": units},
                          ensure_ascii=False, indent=2) + "\n"  # fmt: skip
    elif format is ReportFormat.csv:
        text = render_csv(rows)
    elif format is ReportFormat.html:
        text = render_html(month, rows, units, {u: cfg.units[u].name for u in cfg.units})
    else:
        if output is None:
            render_table(out, month, rows)
            return
        buf = io.StringIO()
        render_table(Console(file=buf, width=160), month, rows)
        text = buf.getvalue()
    if output is not None:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command()
def dev(
    events: Annotated[
        Path | None, typer.Option(help="One-shot: publish this file, run the core on it through Kafka, exit")
    ] = None,
    time_scale: Annotated[float, typer.Option("--time-scale", help="Live demo: policy durations / N")] = 720.0,
    seconds: Annotated[float | None, typer.Option("--for", help="Live demo: stop after this many seconds")] = None,
    web_port: Annotated[int, typer.Option(help="Port of the worker's /healthz (127.0.0.1)")] = 6067,
    notify: Annotated[
        bool, typer.Option("--notify/--no-notify", help="Live demo: also run the notifier (console delivery)")
    ] = True,
    config: ConfigOpt = None,
) -> None:
    """The embedded default: local Kafka, the stream processor and console delivery, with a live demo.

    Starts the local broker (or uses WATERWATCH_KAFKA), runs the worker in this
    process, publishes a demo scenario at time scale 720 (a policy hour is 5 s)
    and prints every alert as it fires. Ctrl-C stops it (or --for SECONDS).
    The broker keeps running afterwards: stop it with `waterwatch kafka down`.
    """
    from waterwatch import kafka_local
    from waterwatch.admin import BrokerUnavailable, TopicMismatch

    if time_scale <= 0:
        raise _fail("--time-scale must be > 0")
    cfg = _load(config, time_scale=1.0 if events else time_scale)
    try:
        st = kafka_local.up()
    except kafka_local.KafkaLocalError as exc:
        raise _fail(str(exc)) from None
    where = "external cluster" if st.external else f"local Kafka {kafka_local.KAFKA_VERSION}"
    out.print(f"[green]✓[/green] {where} at {st.bootstrap}")
    try:
        if events is not None:
            from waterwatch.dev import run_dev

            summary = run_dev(cfg, st.bootstrap, events, echo=lambda line: out.print(line, highlight=False))
            out.print(
                f"[green]✓[/green] {summary.consumed} events read back from Kafka, {summary.alerts} alerts "
                f"published to waterwatch.alerts ({summary.rejected_events} rejected) in {summary.seconds:.1f} s"
            )
        else:
            from streams.dev import run_live, start_notifier

            if notify:
                _demo_residents(st.bootstrap, config)
            notifier_proc = start_notifier(st.bootstrap, config) if notify else None
            out.print("stream processor starting; alerts print below as they fire (Ctrl-C stops)")
            if notifier_proc is not None:
                out.print("notifier starting: the messages it delivers print below (console delivery)")
            try:
                run_live(cfg, st.bootstrap, time_scale=time_scale, seconds=seconds,
                         data_dir=Path(".waterwatch") / "dev", web_port=web_port,
                         echo=lambda line: out.print(line, highlight=False))  # fmt: skip
            finally:
                if notifier_proc is not None:
                    notifier_proc.terminate()
                    try:
                        notifier_proc.wait(timeout=30)
                    except Exception:
                        notifier_proc.kill()
    except (BrokerUnavailable, TopicMismatch) as exc:
        raise _fail(str(exc)) from None
    if not st.external:
        out.print("The broker keeps running for you; stop it with: waterwatch kafka down")


@app.command()
def worker(
    partitions: Annotated[int, typer.Option(help="Partitions of the matter-keyed topics")] = 8,
    time_scale: Annotated[float, typer.Option("--time-scale", help="Divide every policy duration by N")] = 1.0,
    web_port: Annotated[int, typer.Option(help="Port of /healthz (127.0.0.1)")] = 6066,
    data_dir: Annotated[Path, typer.Option(help="Local RocksDB state")] = Path(".waterwatch/worker"),
    app_id: Annotated[str, typer.Option(help="Consumer group and changelog prefix")] = "waterwatch-worker",
    topic_prefix: Annotated[str, typer.Option(help="Topics are PREFIX.events, .clock, .alerts, .deadletter")] = (
        "waterwatch"
    ),
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Prometheus /metrics port (env WATERWATCH_METRICS_PORT, default 9464; 0: off). If another "
            "process holds it (a second worker on this host), the worker serves /metrics on a free port "
            "instead, logs a warning with that port and reports it as metrics_port in /healthz"
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the stream processor: events in, alerts out, deadlines fired on time (Ctrl-C stops it)."""
    from streams.worker import WorkerSettings, run_worker
    from waterwatch import kafka_local
    from waterwatch.admin import BrokerUnavailable, TopicMismatch

    if time_scale <= 0:
        raise _fail("--time-scale must be > 0")
    cfg = _load(config, time_scale=time_scale)
    settings = WorkerSettings(bootstrap=kafka_local.bootstrap_servers(), partitions=partitions,
                              app_id=app_id, data_dir=data_dir, web_port=web_port,
                              topic_prefix=topic_prefix)  # fmt: skip
    if metrics_port is not None:
        settings.metrics_port = metrics_port
    try:
        run_worker(settings, cfg)
    except (BrokerUnavailable, TopicMismatch) as exc:
        raise _fail(str(exc)) from None


def _demo_residents(bootstrap: str, config: Path | None) -> None:
    """Load examples/residents.csv (fake households of the demo's outage areas) so resident notices print."""
    from waterwatch.residents import import_csv, load_registry

    demo = Path(__file__).resolve().parents[1] / "examples" / "residents.csv"
    if not demo.exists():
        return
    try:
        summary = import_csv(demo, load_registry(config), bootstrap=bootstrap, progress=False)
    except Exception as exc:  # the demo runs without residents rather than not at all
        out.print(f"demo residents not loaded: {exc}")
        return
    out.print(f"[green]✓[/green] {summary.produced} demo households in waterwatch.residents (examples/residents.csv)")


@app.command()
def notifier(
    partitions: Annotated[int, typer.Option(help="Partitions of the notifier's job topic")] = 8,
    web_port: Annotated[int, typer.Option(help="Port of /healthz and the provider webhooks /receipts/*")] = 6068,
    data_dir: Annotated[Path, typer.Option(help="Local RocksDB state (the deliveries table)")] = Path(
        ".waterwatch/notifier"
    ),
    app_id: Annotated[str, typer.Option(help="Consumer group and changelog prefix")] = "waterwatch-notifier",
    topic_prefix: Annotated[str, typer.Option(help="Topics are PREFIX.alerts, .deliveries, .notifier.jobs ...")] = (
        "waterwatch"
    ),
    sink_file: Annotated[
        Path | None, typer.Option(help="Without provider credentials, append messages to this JSON-lines file")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Prometheus /metrics port (env WATERWATCH_NOTIFIER_METRICS_PORT, default 9465; 0: off)"),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Log level: debug, info, warning, error")] = "info",
    config: ConfigOpt = None,
) -> None:
    """Deliver alerts: SMS (Twilio), e-mail (SendGrid), the warning group (WeCom robot), or the console.

    Providers are used when their credentials are in the environment (TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER; SENDGRID_API_KEY, SENDGRID_FROM_EMAIL; WeCom robot keys
    named in config/units.yaml); otherwise messages go to the console (or --sink-file).
    Receipts: point Twilio's and SendGrid's webhooks at WATERWATCH_PUBLIC_URL/receipts/...
    """
    from notifiers.app import NotifierSettings, run_notifier
    from notifiers.routing import load_routing
    from waterwatch import kafka_local
    from waterwatch.admin import BrokerUnavailable, TopicMismatch

    cfg = _load(config)
    try:
        routing = load_routing(cfg.directory / "routing.yaml", cfg.units)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    settings = NotifierSettings(bootstrap=kafka_local.bootstrap_servers(), partitions=partitions, app_id=app_id,
                                data_dir=data_dir, web_port=web_port, topic_prefix=topic_prefix,
                                sink_file=sink_file)  # fmt: skip
    if metrics_port is not None:
        settings.metrics_port = metrics_port
    try:
        run_notifier(settings, cfg, routing, loglevel=loglevel.upper())
    except (BrokerUnavailable, TopicMismatch) as exc:
        raise _fail(str(exc)) from None


@app.command()
def version() -> None:
    """Print the version."""
    out.print(f"waterwatch {__version__}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
