"""A real Prometheus scrapes a real ``waterwatch worker`` and a real ``waterwatch notifier`` after a scenario.

Once per module (fixture ``observed``):

1. ``waterwatch worker`` runs as a subprocess (tests/integration/worker_harness.py)
   at time scale 3600 (one policy hour = one second), with its own topic
   prefix and app id, and ``WATERWATCH_METRICS_PORT`` set to a port that
   another socket holds: the worker must fall back to a free port, log it and
   report it in ``/healthz`` (two workers on one host).
2. ``waterwatch notifier`` runs as a subprocess on the same topic prefix, so the
   worker's alerts flow into it (tests/integration/notifier_harness.py): the
   real Twilio, SendGrid and WeCom clients talk to the fake providers of
   tests/fakes/providers.py, the routing is a copy of config/ without quiet
   hours and with 1-2 s retries, and ``/metrics`` is on a port of its own.
   Faults are queued before the first alert: the first SMS gets a 503 (retried),
   the next one error 21211 (a permanent failure), the first e-mail a 503
   (retried), the first WeCom message errcode 93000 (permanent, every alert it
   carries fails). One forged Twilio status webhook is posted (403). The
   resident directory (:data:`HOUSEHOLDS`) is on ``PREFIX.residents`` first.
3. Prometheus (Debian's 2.42, tests/integration/prometheus_harness.py) runs the
   deploy configuration with the project's recording and alert rules, a 1 s
   scrape and evaluation interval, and scrapes both. Both are scraped before
   the first event, so every counter starts at 0.
4. The scenario goes to ``PREFIX.events`` (:data:`SCENARIO` says what each
   matter does and :data:`DEADLINES` what that decides).

The tests then ask Prometheus's HTTP API, each waiting (bounded) for the data:
the targets are up; the events counter equals the records published; deadlines
met/breached per unit and rule are exact; the SLA recording rules per unit,
per rule and per (unit, rule) give the scenario's ratios; overdue alerts and
overdue open matters are visible; the alert rules the scenario triggers fire
(and one that it must not, doesn't); deliveries per channel and outcome equal
what the fake providers received and answered, the send-duration histogram
counts every provider call, the forged webhook is counted; the delivery
recording rules give the failure ratio and the failure-ratio alert is pending
for the channel whose failures pass 10 %, and only for it; the pre-outage
notice reaches every household of the area (the directory is on
``PREFIX.residents`` before the notifier starts) and its lead time, households
targeted and reached and coverage are recorded; every dashboard query and
recording rule returns data and every rule evaluates; every metric the
dashboards and rules read is on the page of the component that exposes it.
A late pre-notice fires WaterwatchPreNoticeLeadUnder48h (the notice series
exist from zero, so increase() counts the first notice).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka_helpers import delete_with_prefix, unique_name
from notifier_harness import routing_config
from prometheus_harness import (
    NOTIFIER_JOB,
    WORKER_JOB,
    MeteredNotifier,
    Prometheus,
    ProviderFakes,
    dashboard_queries,
    eventually,
    load_residents,
    referenced_metrics,
    rule_files,
    rules,
    running_prometheus,
    wait_for_data,
)
from worker_harness import Producer, WorkerPool, WorkerProcess, free_port, make_event, sleep_to_second_start

from waterwatch.events import Resident

pytestmark = pytest.mark.integration

SCALE = 3600  # R15.2's 12 h resolve limit is 12 s, R24.arrive's 1 h is 1 s
DATA_TIMEOUT_S = float(os.environ.get("WATERWATCH_TEST_PROMETHEUS_DATA_TIMEOUT", "60"))
WAIT_S = 30.0  # for each fact to show in Prometheus once the scenario is published
DELIVERY_WAIT_S = 60.0  # the worker's alerts (about 50, the last some 25 s after the first event) all delivered

RETRYABLE = {"sms": 1, "email": 1}
"""Refusals per channel the test queues that are retryable (a 503 each); every other refusal is permanent."""
DECIDED = ("sent", "retried", "failed", "dead_lettered")
"""Outcomes of a provider call (``skipped`` and ``in_doubt`` make none)."""

SCENARIO = """
runda    T1-T3  tickets (hydrant_fault: R15.2, resolve in 12 s): dispatched and accepted at once (R13.accept met),
                resolved at +3 s (R15.2 met)
runda    T4-T5  the same, never resolved: overdue at +12 s, stay open and overdue
runda    T6     the same, resolved at +14 s, after its overdue (R15.2 breached)
chengnan L1-L2  leaks (R24.arrive, 1 s): crew arrives at once (met)
chengnan L3-L7  leaks: overdue at +1 s, crew arrives at +3 s (breached: 5 in an hour, WaterwatchBreachSurge)
chengnan O1     outage planned in district dongchangfu, to start in 40 s (< 48 policy hours): R19.1 violation,
                WaterwatchOutageAnnouncedLate; its pre-outage notice goes to the HOUSEHOLDS there at once (lead < 47 h)
         +      one event that is not JSON (dead letter invalid_json, WaterwatchDeadLetters) and one L1 twice
"""
DEADLINES = {
    ("runda", "R13.accept", "met"): 6,
    ("runda", "R15.2", "met"): 3,
    ("runda", "R15.2", "breached"): 1,
    ("chengnan", "R24.arrive", "met"): 2,
    ("chengnan", "R24.arrive", "breached"): 5,
}
"""Deadlines the scenario decides: (unit, rule, outcome) -> count; every other series stays at 0."""


HOUSEHOLDS = [
    Resident(account=f"P{i}", phone=f"+8613900{i:06d}", email=f"p{i}@example.invalid", districts=["dongchangfu"],
             consent={"sms": True, "email": True})
    for i in range(1, 4)
] + [Resident(account="P9", phone="+8613900000009", email="p9@example.invalid", districts=["chiping"])]  # fmt: skip
"""The resident directory: three households in O1's district (each reached on two channels), one elsewhere."""
IN_AREA = HOUSEHOLDS[:3]


def ratio(unit: str | None = None, rule: str | None = None) -> float:
    """Met / decided of :data:`DEADLINES`, over one unit and/or rule."""
    picked = {k: n for k, n in DEADLINES.items() if unit in (None, k[0]) and rule in (None, k[1])}
    return sum(n for k, n in picked.items() if k[2] == "met") / sum(picked.values())


def approx(value: float, expected: float) -> bool:
    """An ``increase()``: extrapolated to the end of the window, so a little above the true count."""
    return expected <= value + 1e-9 <= expected * 1.15 + 1e-9


# ============================================================ the run


@dataclass
class Observed:
    prom: Prometheus
    worker: WorkerProcess
    notifier: MeteredNotifier
    fakes: ProviderFakes
    published: int
    held_port: int
    metrics_port: int
    forged_status: int
    seconds: dict[str, float] = field(default_factory=dict)


def publish_scenario(producer: Producer, topic: str) -> int:
    """Send :data:`SCENARIO` (bounded: about 14 s); returns the number of records sent."""
    ticket = {"channel": "phone", "category": "hydrant_fault", "unit": "runda", "summary": "消防栓漏水"}
    runda, chengnan = {"unit": "runda"}, {"unit": "chengnan"}
    sleep_to_second_start()
    t0 = time.time()
    at = time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(t0 + 8 * 3600 + 40))
    # restoration expected 160 policy hours later: its delay report (R23) is due long after the test
    end = time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(t0 + 8 * 3600 + 200))
    leaks = [make_event("leak.reported", f"L{i}", {"pipe_diameter_mm": 300, **chengnan}) for i in range(1, 8)]
    first = [
        *(make_event("ticket.created", f"T{i}", ticket) for i in range(1, 7)),
        *(e for i in range(1, 7) for e in (make_event("ticket.dispatched", f"T{i}", runda),
                                           make_event("ticket.accepted", f"T{i}", runda))),
        *leaks,
        leaks[0],  # the same event again: a duplicate
        *(make_event("leak.crew_arrived", f"L{i}", chengnan) for i in (1, 2)),
        make_event("outage.planned", "O1", {"kind": "planned", "area": {"districts": ["dongchangfu"],
                                            "description": "东昌府区"}, "starts_at": at, "expected_end_at": end,
                                            **chengnan}),
    ]  # fmt: skip
    producer.send_events(topic, first)
    producer.send(topic, [(b"BAD-json", b'{"specversion": "1.0", "id": ')])
    time.sleep(max(0.0, t0 + 3.3 - time.time()))
    second = [
        *(make_event("ticket.resolved", f"T{i}", runda) for i in (1, 2, 3)),
        *(make_event("leak.crew_arrived", f"L{i}", chengnan) for i in range(3, 8)),
    ]
    producer.send_events(topic, second)
    time.sleep(max(0.0, t0 + 13.5 - time.time()))
    producer.send_events(topic, [make_event("ticket.resolved", "T6", runda)])
    return len(first) + 1 + len(second) + 1


def queue_faults(fakes: ProviderFakes) -> None:
    """What the providers answer first: see :data:`RETRYABLE` and the module text."""
    fakes.twilio.fail_next(503)  # transient: the delivery is retried
    fakes.twilio.fail_next(400, 21211)  # "not a valid phone number": permanent, not retried
    fakes.sendgrid.fail_next(503)
    fakes.wecom.fail_next(93000)  # "invalid webhook url": permanent


def post_forged_webhook(notifier: MeteredNotifier) -> int:
    """A Twilio status callback with a signature nobody made; the notifier's HTTP status (403 wanted)."""
    path = "/receipts/twilio/status?" + urllib.parse.urlencode({"d": "0" * 32, "r": "sms:forged"})
    form = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered", "AccountSid": "AC" + "0" * 32}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "Zm9yZ2Vk"}
    return notifier.post(path, urllib.parse.urlencode(form).encode(), headers)


@pytest.fixture(scope="module")
def observed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    prefix = unique_name("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    pool = WorkerPool(kafka_bootstrap, prefix, tmp)
    fakes = ProviderFakes().start()
    producer: Producer | None = None
    notifier: MeteredNotifier | None = None
    seconds: dict[str, float] = {}
    started = time.monotonic()
    # another process holds the worker's metrics port (as a first worker on this host would)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        held = holder.getsockname()[1]
        worker = pool.new(time_scale=SCALE)
        worker.extra_env["WATERWATCH_METRICS_PORT"] = str(held)
        web_port = free_port()
        notifier = MeteredNotifier(bootstrap=kafka_bootstrap, topic_prefix=prefix, app_id=f"{prefix}-notifier",
                                   data_dir=tmp / "notifier" / "data", log_path=tmp / "notifier.log",
                                   web_port=web_port, partitions=worker.partitions, config_dir=routing_config(tmp),
                                   extra_env=fakes.env(web_port))  # fmt: skip
        notifier.data_dir.mkdir(parents=True, exist_ok=True)
        load_residents(kafka_bootstrap, prefix, HOUSEHOLDS)
        with contextlib.ExitStack() as stack:
            worker.start()
            notifier.start()
            health = worker.wait_ready()
            notifier.wait_ready()
            seconds["worker_and_notifier_ready"] = round(time.monotonic() - started, 1)
            port = health.get("metrics_port")
            assert isinstance(port, int) and port > 0, f"/healthz has no metrics_port: {health}\n{worker.log_tail()}"
            targets = {WORKER_JOB: [f"127.0.0.1:{port}"], NOTIFIER_JOB: [notifier.metrics_target]}
            prom = stack.enter_context(running_prometheus(tmp, targets))

            def scraped_twice() -> None:  # a zero sample of every counter before the first event
                for job in (WORKER_JOB, NOTIFIER_JOB):
                    assert prom.query(f'count_over_time(up{{job="{job}"}}[1m]) >= 2'), f"{job} not scraped"

            eventually(scraped_twice, 30)
            seconds["prometheus_scraping"] = round(time.monotonic() - started, 1)
            queue_faults(fakes)
            forged = post_forged_webhook(notifier)
            producer = Producer(kafka_bootstrap)
            published = publish_scenario(producer, f"{prefix}.events")
            seconds["published"] = round(time.monotonic() - started, 1)
            yield Observed(prom, worker, notifier, fakes, published, held, port, forged, seconds)
    finally:
        holder.close()
        if producer is not None:
            producer.close()
        if notifier is not None and notifier.proc is not None and notifier.alive:
            notifier.proc.send_signal(signal.SIGTERM)  # it leaves its group while the worker stops too
        pool.close()
        if notifier is not None and notifier.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                notifier.proc.wait(timeout=15)
            notifier.kill()
        fakes.stop()
        delete_with_prefix(kafka_bootstrap, prefix)


# ============================================================ the tests


def test_the_worker_falls_back_to_a_free_metrics_port_and_says_which(observed: Observed) -> None:
    assert observed.metrics_port != observed.held_port
    log = observed.worker.log_text()
    assert f"metrics port 127.0.0.1:{observed.held_port}: Address already in use" in log, observed.worker.log_tail()
    assert f"/metrics is on http://127.0.0.1:{observed.metrics_port}/metrics instead" in log
    assert f"metrics on http://127.0.0.1:{observed.metrics_port}/metrics" in log  # the start-up line


def test_prometheus_scrapes_the_running_worker(observed: Observed) -> None:
    prom = observed.prom
    targets = {t["labels"]["job"]: t for t in prom.targets()}
    worker = targets[WORKER_JOB]
    assert worker["health"] == "up", worker
    assert worker["scrapeUrl"] == f"http://127.0.0.1:{observed.metrics_port}/metrics"
    assert prom.scalar(f'up{{job="{WORKER_JOB}"}}') == 1
    assert prom.scalar(f'waterwatch_build_info{{job="{WORKER_JOB}", component="worker"}}') == 1
    assert targets[NOTIFIER_JOB]["health"] == "up", targets[NOTIFIER_JOB]


def test_every_event_published_is_counted_once(observed: Observed) -> None:
    prom = observed.prom
    job = f'job="{WORKER_JOB}"'

    def counted() -> None:
        got = prom.scalar(f'waterwatch_records_processed_total{{{job}, record="event"}}')
        assert got == observed.published, f"events processed {got}, published {observed.published}"

    eventually(counted, WAIT_S)
    rejected = prom.values(f"waterwatch_events_rejected_total{{{job}}} > 0", "error")
    assert rejected == {("invalid_json",): 1}
    assert prom.scalar(f"waterwatch_events_duplicate_total{{{job}}}") == 1
    assert prom.scalar(f'waterwatch_records_processed_total{{{job}, record="check"}}') > 0  # the timer's checks


def test_deadlines_met_and_breached_are_counted_once_per_deadline(observed: Observed) -> None:
    prom = observed.prom

    def decided() -> None:
        got = prom.values("sum by (unit, rule, outcome) (waterwatch_deadlines_total) > 0", "unit", "rule", "outcome")
        assert got == DEADLINES

    eventually(decided, WAIT_S)
    assert prom.scalar('waterwatch_time_to_accept_seconds_count{unit="runda"}') == 6
    assert prom.scalar('waterwatch_time_to_resolve_seconds_count{rule="R15.2"}') == 4


def test_sla_recording_rules_give_the_scenario_s_on_time_ratios(observed: Observed) -> None:
    prom = observed.prom
    pairs = {(unit, rule) for unit, rule, _ in DEADLINES}
    units = {unit for unit, _ in pairs}
    rule_ids = {rule for _, rule in pairs}

    def ratios() -> None:
        for window in ("1h", "1d"):
            per_pair = prom.values(f"unit_rule:waterwatch_deadlines_met_per_deadlines:ratio_increase{window}",
                                   "unit", "rule")  # fmt: skip
            assert set(per_pair) == pairs, f"{window}: {per_pair}"
            for (unit, rule), value in per_pair.items():
                assert abs(value - ratio(unit, rule)) < 1e-6, f"{window} {unit} {rule}: {value}"
            per_unit = prom.values(f"unit:waterwatch_deadlines_met_per_deadlines:ratio_increase{window}", "unit")
            assert {u for (u,) in per_unit} == units, per_unit
            for (unit,), value in per_unit.items():
                assert abs(value - ratio(unit=unit)) < 1e-6, f"{window} {unit}: {value}"
            decided = prom.values(f"unit:waterwatch_deadlines:increase{window} > 0", "unit")
            for (unit,), value in decided.items():
                want = sum(n for k, n in DEADLINES.items() if k[0] == unit)
                assert approx(value, want), f"{window} decided by {unit}: {value}, want {want}"
        per_rule = prom.values("rule:waterwatch_deadlines_met_per_deadlines:ratio_increase1d", "rule")
        assert {r for (r,) in per_rule} == rule_ids, per_rule
        for (rule,), value in per_rule.items():
            assert abs(value - ratio(rule=rule)) < 1e-6, f"{rule}: {value}"
        breached = prom.values("unit:waterwatch_deadlines_breached:increase1h > 0", "unit")
        assert set(breached) == {("runda",), ("chengnan",)} and approx(breached[("chengnan",)], 5), breached

    eventually(ratios, WAIT_S)
    table = prom.values("unit_rule:waterwatch_deadlines_met_per_deadlines:ratio_increase1h", "unit", "rule")
    shown = {"/".join(k): round(v, 3) for k, v in sorted(table.items())}
    print(f"prometheus: on time per unit/rule, last hour: {shown}")
    # the dashboard's headline: all units, last 24 h
    overall = prom.scalar("sum(unit:waterwatch_deadlines_met:increase1d) / sum(unit:waterwatch_deadlines:increase1d)")
    assert abs(overall - ratio()) < 1e-6, overall


def test_overdue_alerts_and_overdue_open_matters_are_visible(observed: Observed) -> None:
    prom = observed.prom

    def overdue() -> None:
        alerts = prom.values('sum by (rule) (waterwatch_alerts_total{level="overdue"}) > 0', "rule")
        assert alerts == {("R15.2",): 3, ("R24.arrive",): 5}
        open_overdue = prom.values('waterwatch_open_matters{overdue="true"} > 0', "unit", "kind", "category")
        assert open_overdue == {("runda", "ticket", "hydrant_fault"): 2}  # T4, T5

    eventually(overdue, WAIT_S)
    open_matters = prom.values("sum by (unit, kind) (waterwatch_open_matters) > 0", "unit", "kind")
    assert open_matters == {("runda", "ticket"): 2, ("chengnan", "leak"): 7, ("chengnan", "outage"): 1}
    assert prom.scalar('waterwatch_alerts_total{rule="R19.1", level="violation"}') == 1
    assert prom.scalar("waterwatch_timer_fire_lag_seconds_count") > 0  # overdue stages fire from the timer


def test_the_alert_rules_the_scenario_triggers_fire(observed: Observed) -> None:
    prom = observed.prom
    wanted = {
        ("WaterwatchBreachSurge", "unit", "chengnan"),
        ("WaterwatchOutageAnnouncedLate", "rule", "R19.1"),
        ("WaterwatchDeadLetters", "error", "invalid_json"),
    }

    def firing() -> set[tuple[str, str, str]]:
        now = {
            (a["labels"]["alertname"], label, a["labels"].get(label, ""))
            for a in prom.alerts()
            if a["state"] == "firing"
            for label in ("unit", "rule", "error")
        }
        assert wanted <= now, f"firing: {sorted(now)}"
        return now

    now = eventually(firing, WAIT_S)
    shown = sorted(f"{a['labels']['alertname']}{{{label_text(a['labels'])}}} {a['state']}" for a in prom.alerts())
    print(f"prometheus: alerts {shown}")
    assert ("WaterwatchBreachSurge", "unit", "runda") not in now  # one breach is no surge
    states = {(a["labels"]["alertname"], a["labels"].get("job")) for a in prom.alerts()}
    assert ("WaterwatchTargetDown", WORKER_JOB) not in states
    assert ("WaterwatchTargetDown", NOTIFIER_JOB) not in states


def test_prometheus_scrapes_the_running_notifier(observed: Observed) -> None:
    prom = observed.prom
    notifier = {t["labels"]["job"]: t for t in prom.targets()}[NOTIFIER_JOB]
    assert notifier["health"] == "up", notifier
    assert notifier["scrapeUrl"] == f"http://{observed.notifier.metrics_target}/metrics"
    assert prom.scalar(f'up{{job="{NOTIFIER_JOB}"}}') == 1
    assert prom.scalar(f'waterwatch_build_info{{job="{NOTIFIER_JOB}", component="notifier"}}') == 1


def test_deliveries_by_channel_and_outcome_are_what_the_providers_received(observed: Observed) -> None:
    prom, fakes = observed.prom, observed.fakes
    outcomes = "|".join(DECIDED)
    expr = f'sum by (channel, outcome) (waterwatch_deliveries_total{{job="{NOTIFIER_JOB}", outcome=~"{outcomes}"}}) > 0'

    def counted() -> dict[tuple[str, ...], float]:
        want = fakes.expected(RETRYABLE)
        # every queued fault was met: the 503s were retried, 21211 and 93000 failed for good
        assert (want.get(("sms", "retried")), want.get(("sms", "failed"))) == (1, 1), want
        assert want.get(("email", "retried")) == 1 and ("email", "failed") not in want, want
        assert want.get(("wecom", "failed"), 0) >= 1, want
        got = prom.values(expr, "channel", "outcome")
        assert got == {k: float(v) for k, v in want.items()}, f"Prometheus {got}\nthe fakes {want}"
        return got

    got = eventually(counted, DELIVERY_WAIT_S)
    health = observed.notifier.health()
    assert health is not None and health[1].get("pending") == 0, health  # nothing waits for a retry any more
    assert got == {k: float(v) for k, v in fakes.expected(RETRYABLE).items()}  # and nothing came since
    assert all(got[(ch, "sent")] > 0 for ch in ("sms", "email", "wecom")), got
    providers = prom.values(f'sum by (channel, provider) (waterwatch_deliveries_total{{job="{NOTIFIER_JOB}"}}) > 0',
                            "channel", "provider")  # fmt: skip
    assert set(providers) == {("sms", "twilio"), ("email", "sendgrid"), ("wecom", "wecom_robot")}, providers
    shown = {"/".join(k): int(v) for k, v in sorted(got.items())}
    print(f"prometheus: deliveries by channel/outcome {shown} (Twilio {len(fakes.twilio.requests)} requests, "
          f"SendGrid {len(fakes.sendgrid.requests)}, WeCom {len(fakes.markdown())} markdown)")  # fmt: skip


def test_the_send_duration_histogram_observes_every_provider_call(observed: Observed) -> None:
    prom, fakes = observed.prom, observed.fakes
    job = f'job="{NOTIFIER_JOB}"'

    def observed_calls() -> None:
        calls = prom.values(f"sum by (channel) (waterwatch_delivery_send_duration_seconds_count{{{job}}})", "channel")
        assert calls == {(ch,): float(n) for ch, n in fakes.provider_calls().items()}, (calls, fakes.provider_calls())
        inf = prom.values(f'sum by (channel) (waterwatch_delivery_send_duration_seconds_bucket{{{job}, le="+Inf"}})',
                          "channel")  # fmt: skip
        assert inf == calls

    eventually(observed_calls, DELIVERY_WAIT_S)
    took = prom.values(f"sum by (channel) (waterwatch_delivery_send_duration_seconds_sum{{{job}}}) > 0", "channel")
    assert set(took) == {("sms",), ("email",), ("wecom",)}, took
    buckets = f"increase(waterwatch_delivery_send_duration_seconds_bucket{{{job}}}[5m])"
    p95 = prom.values(f"histogram_quantile(0.95, sum by (channel, le) ({buckets}))", "channel")
    assert set(p95) == {("sms",), ("email",), ("wecom",)} and all(0 < v <= 10 for v in p95.values()), p95


def test_a_forged_webhook_gets_403_and_is_counted(observed: Observed) -> None:
    assert observed.forged_status == 403
    got = observed.prom.values(f'waterwatch_webhook_requests_total{{job="{NOTIFIER_JOB}"}}', "provider", "outcome")
    assert got == {(p, o): (1.0 if (p, o) == ("twilio", "forged") else 0.0)
                   for p in ("twilio", "sendgrid") for o in ("accepted", "forged", "bad")}  # fmt: skip


def test_delivery_failure_ratio_is_recorded_and_its_alert_pends_for_the_failing_channel(observed: Observed) -> None:
    prom, fakes = observed.prom, observed.fakes
    alert = "WaterwatchNotificationFailureRatioHigh"

    def recorded() -> dict[tuple[str, ...], float]:
        want = fakes.expected(RETRYABLE)
        ratios = prom.values("channel_provider:waterwatch_deliveries_failed_per_decided:ratio_rate5m",
                             "channel", "provider")  # fmt: skip
        assert set(ratios) == {("sms", "twilio"), ("email", "sendgrid"), ("wecom", "wecom_robot")}, ratios
        for (channel, _), value in ratios.items():
            failed, sent = want.get((channel, "failed"), 0), want.get((channel, "sent"), 0)
            assert abs(value - failed / (failed + sent)) < 1e-9, f"{channel}: {value}, want {failed}/{failed + sent}"
        assert ratios[("wecom", "wecom_robot")] > 0.1 > ratios[("sms", "twilio")], ratios  # the scenario's premise
        decided = prom.values("channel_provider:waterwatch_deliveries_decided:rate5m > 1 / 300", "channel")
        assert {c for (c,) in decided} == {"sms", "email", "wecom"}, decided
        active = {(a["labels"]["channel"], a["labels"]["provider"]): a for a in prom.alerts()
                  if a["labels"]["alertname"] == alert}  # fmt: skip
        # over 10 % failed and enough traffic: pending (for: 10m, longer than this test); the others not at all
        assert set(active) == {("wecom", "wecom_robot")}, active
        a = active[("wecom", "wecom_robot")]
        assert a["state"] == "pending" and abs(float(a["value"]) - ratios[("wecom", "wecom_robot")]) < 1e-9, a
        return ratios

    ratios = eventually(recorded, DELIVERY_WAIT_S)
    in_doubt = prom.values("sum by (channel, provider) (waterwatch_deliveries_in_doubt)", "channel", "provider")
    assert {("sms", "twilio"), ("email", "sendgrid"), ("wecom", "wecom_robot")} <= set(in_doubt), in_doubt
    assert set(in_doubt.values()) == {0.0}, in_doubt
    assert "WaterwatchDeliveriesInDoubt" not in {a["labels"]["alertname"] for a in prom.alerts()}
    print(f"prometheus: failed/decided {({'/'.join(k): round(v, 3) for k, v in sorted(ratios.items())})}, "
          f"{alert} pending for wecom/wecom_robot only")  # fmt: skip


def test_the_pre_outage_notice_s_lead_time_and_coverage_are_recorded(observed: Observed) -> None:
    prom, fakes = observed.prom, observed.fakes
    notice = 'unit="chengnan", notice="pre_outage"'

    def reached_by_the_fakes() -> set[str]:
        phones = {r.form.get("To") for r in fakes.twilio.messages if r.form}
        mails = {t.get("email") for r in fakes.sendgrid.messages for p in (r.json or {}).get("personalizations", [])
                 for t in p.get("to", [])}  # fmt: skip
        return {h.account for h in IN_AREA if h.phone in phones or h.email in mails}

    def recorded() -> None:
        assert reached_by_the_fakes() == {h.account for h in IN_AREA}
        assert prom.scalar(f"waterwatch_notice_households_targeted_total{{{notice}}}") == len(IN_AREA)
        assert prom.scalar(f"waterwatch_notice_households_reached_total{{{notice}}}") == len(IN_AREA)
        assert prom.scalar(f"waterwatch_notice_coverage_ratio{{{notice}}}") == 1.0
        assert prom.scalar('waterwatch_notice_lead_time_seconds_count{unit="chengnan"}') == 1

    eventually(recorded, DELIVERY_WAIT_S)
    outside = HOUSEHOLDS[-1]
    assert outside.phone not in {r.form.get("To") for r in fakes.twilio.messages if r.form}
    # told some 30 s before the start (the outage was announced 40 s ahead): under 47 h, not after the start
    lead = prom.scalar('waterwatch_notice_lead_time_seconds_sum{unit="chengnan"}')
    assert 0 < lead <= 40, lead
    assert prom.scalar('waterwatch_notice_lead_time_seconds_bucket{unit="chengnan", le="169200.0"}') == 1
    assert prom.scalar('waterwatch_notice_lead_time_seconds_bucket{unit="chengnan", le="0.0"}') == 0


def test_a_late_pre_notice_fires_its_alert_and_the_time_range_panels_count_it(observed: Observed) -> None:
    prom = observed.prom
    under_47h = 'increase(waterwatch_notice_lead_time_seconds_bucket{unit="chengnan", le="169200.0"}[1h])'
    reached = 'increase(waterwatch_notice_households_reached_total{unit="chengnan", notice="pre_outage"}[1h])'
    eventually(lambda: prom.scalar('waterwatch_notice_coverage_ratio{unit="chengnan", notice="pre_outage"}'), WAIT_S)

    def counted() -> None:
        late = {a["labels"].get("unit"): a["state"] for a in prom.alerts()
                if a["labels"]["alertname"] == "WaterwatchPreNoticeLeadUnder48h"}  # fmt: skip
        evidence = f"{under_47h} = {prom.scalar(under_47h)}, {reached} = {prom.scalar(reached)}"
        assert late == {"chengnan": "firing"}, f"WaterwatchPreNoticeLeadUnder48h: {late}; {evidence}"
        assert prom.scalar(under_47h) >= 1 and prom.scalar(reached) >= len(IN_AREA), evidence

    eventually(counted, 10)  # the rules are evaluated every second


def test_every_dashboard_query_and_recording_rule_returns_data(observed: Observed) -> None:
    prom = observed.prom
    queries = dashboard_queries()
    assert len(queries) >= 40
    recorded = [(f"record {r['record']}", r["record"]) for r in rules() if "record" in r]
    missing = wait_for_data(prom, queries + recorded, DATA_TIMEOUT_S)
    assert not missing, "queries without data:\n" + "\n".join(f"  {w}: {p}" for w, p in missing.items())
    groups = prom.get("/api/v1/rules")["groups"]
    unhealthy = [f"{g['name']}/{r['name']}: {r.get('lastError')}" for g in groups for r in g["rules"]
                 if r["health"] != "ok"]  # fmt: skip
    assert not unhealthy, f"rules failing to evaluate: {unhealthy}"
    assert sum(len(g["rules"]) for g in groups) == len(rules()), f"not every rule of {rule_files()} loaded"
    print(f"prometheus: {len(queries)} dashboard queries and {len(recorded)} recording rules returned data; "
          f"timings {observed.seconds}")  # fmt: skip


def test_every_metric_the_dashboards_and_rules_read_is_on_its_component_s_page(observed: Observed) -> None:
    from waterwatch.core.config import load_config
    from waterwatch.metrics import NotifierMetrics, WorkerMetrics

    cfg = load_config()
    worker_names = sample_names(WorkerMetrics.from_config(cfg))
    notifier_names = sample_names(NotifierMetrics.from_config(cfg))
    read = {name for _, expr in dashboard_queries() for name in referenced_metrics(expr)}
    read |= {name for r in rules() for name in referenced_metrics(r["expr"])}
    unknown = sorted(read - worker_names - notifier_names)
    assert not unknown, f"metrics no component exposes: {unknown}"
    for job, names in ((WORKER_JOB, read & worker_names), (NOTIFIER_JOB, read - worker_names)):
        pattern = "|".join(sorted(names))
        found = {s["metric"]["__name__"] for s in observed.prom.query(f'{{__name__=~"{pattern}", job="{job}"}}')}
        assert names <= found, f"{job} does not expose {sorted(names - found)}"


def label_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity", "service"))


def sample_names(metrics: Any) -> set[str]:
    """Every sample name a registry can put on its page (histograms and counters with their suffixes)."""
    out: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "histogram":
            out |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        elif family.type == "counter":
            out.add(f"{family.name}_total")
        else:
            out.add(family.name)
    return out


# ============================================================ the port fallback, without a broker


def test_serve_metrics_falls_back_only_when_the_port_is_in_use() -> None:
    from waterwatch.metrics import WorkerMetrics, serve_metrics

    m = WorkerMetrics(["runda"], ["R15.2"], process_metrics=False)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        server, reason = serve_metrics(m, taken)
        try:
            assert server.server_port not in (taken, 0)
            assert reason == f"127.0.0.1:{taken}: Address already in use"
        finally:
            server.shutdown()
            server.server_close()
    server, reason = serve_metrics(m, 0)
    try:
        assert reason is None and server.server_port > 0
        free = server.server_port
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(OSError) as exc:
        serve_metrics(m, free, "192.0.2.1")  # an address this host does not have: no fallback
    assert exc.value.errno == errno.EADDRNOTAVAIL
