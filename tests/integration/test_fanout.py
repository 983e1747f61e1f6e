"""Resident fan-out on the real broker: a ``notice.due`` for a 2,000-household area, then a crash mid-fan-out.

Households are produced as ``Resident`` JSON straight onto the compacted
``{prefix}.residents`` topic before the notifier starts (its directory must
catch up before /healthz says ready).  The routing has no quiet hours, so the
tests do not depend on the wall clock.  Fake Twilio and SendGrid record what
the real SDKs send them.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.providers import FakeSendGrid, FakeTwilio, FakeWeCom, SendGridWebhookSigner
from kafka_helpers import delete_with_prefix, unique_name
from notifier_harness import AUTH_TOKEN, SENDGRID_KEY, NotifierProcess, encode, provider_env, routing_config
from worker_harness import TZ, Producer, TopicReader, free_port

from notifiers.fanout import recipient_key
from waterwatch.admin import ensure_topics
from waterwatch.events import OUTPUT_MODELS, Resident
from waterwatch.topics import RESIDENTS

pytestmark = pytest.mark.integration

AREA = "yinhe-garden"
IN_AREA = 2000
OUTSIDE = 150


def households() -> list[Resident]:
    """2,000 in the area (every 20th opted out of sms, every 3rd without e-mail, every 50th opted out of
    e-mail), plus 150 outside it."""
    out = []
    for i in range(IN_AREA + OUTSIDE):
        inside = i < IN_AREA
        out.append(Resident(
            account=f"H{i:06d}", name=f"住户{i}", phone=f"+86139{i:08d}",
            email=None if i % 3 == 2 else f"h{i}@example.invalid",
            language="en" if i % 7 == 0 else "zh",
            compounds=[AREA] if inside else ["fenghuang-yuan"], districts=["dongchangfu"] if inside else ["gulou"],
            consent={"sms": i % 20 != 0, "email": i % 50 != 1},
        ))  # fmt: skip
    return out


def expected(rs: list[Resident], channel: str) -> set[str]:
    """Addresses that must get exactly one message on ``channel``."""
    area = [r for r in rs if AREA in r.compounds]
    if channel == "sms":
        return {r.phone for r in area if r.phone and r.consent["sms"]}  # type: ignore[misc]
    return {r.email for r in area if r.email and r.consent["email"]}  # type: ignore[misc]


def opted_out(rs: list[Resident], channel: str) -> set[str]:
    """Recipient keys of in-area households with an address on ``channel`` but no consent."""
    field = "phone" if channel == "sms" else "email"
    return {recipient_key(r.account) for r in rs
            if AREA in r.compounds and getattr(r, field) and not r.consent[channel]}  # fmt: skip


def pre_notice(matter: str, *, hours: float = 49, area: str = "") -> dict[str, Any]:
    """A ``notice.due`` pre_outage as the engine emits it (start 49 h away)."""
    now = datetime.now(TZ)
    start = now + timedelta(hours=hours)
    aid = f"{matter}/R19.1/pre_notice/v1/pre_notice"
    event = {
        "specversion": "1.0", "id": aid, "source": "waterwatch/engine", "type": "notice.due",
        "time": now.isoformat(), "subject": matter, "datacontenttype": "application/json",
        "data": {"alert_id": aid, "matter_id": matter, "matter_kind": "outage", "rule": "R19.1",
                 "clock": "pre_notice", "level": "notice", "stage": "pre_notice", "due_at": now.isoformat(),
                 "fired_at": now.isoformat(), "unit": "runda", "notify": ["residents"], "notice": "pre_outage",
                 "message": "R19.1: resident notice pre_outage due",
                 "context": {"area": {"compounds": [area or AREA], "description": "银河花园"},
                             "cause": "更换 DN300 阀门 valve replacement", "outage_kind": "planned",
                             "starts_at": start.isoformat(),
                             "expected_end_at": (start + timedelta(hours=7)).isoformat()}},
    }  # fmt: skip
    OUTPUT_MODELS["notice.due"].model_validate(event)
    return event


class Stack:
    def __init__(self, bootstrap: str, base: Path, name: str, twilio_latency: float = 0.0,
                 routing: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.prefix = unique_name(f"fanout-{name}")
        self.twilio = FakeTwilio("AC" + "0" * 30 + "12", AUTH_TOKEN, latency=twilio_latency).start()
        self.sendgrid = FakeSendGrid(SENDGRID_KEY).start()
        self.wecom = FakeWeCom().start()
        port = free_port()
        extra = env or {}
        signer = SendGridWebhookSigner()
        env = provider_env(self.twilio, self.sendgrid, self.wecom, port, signer.public_key)
        env.update(extra)
        self.sendgrid.post_events(f"http://127.0.0.1:{port}/receipts/sendgrid", signer)
        self.notifier = NotifierProcess(bootstrap=bootstrap, topic_prefix=self.prefix,
                                        app_id=f"{self.prefix}-notifier", data_dir=base / name / "data",
                                        log_path=base / name / "notifier.log", web_port=port, partitions=4,
                                        config_dir=routing_config(base / name, **(routing or {})),
                                        extra_env=env)  # fmt: skip
        self.notifier.data_dir.mkdir(parents=True, exist_ok=True)
        self.others: list[NotifierProcess] = []
        self.producer = Producer(bootstrap)
        self.deliveries: TopicReader | None = None

    def another(self, name: str) -> NotifierProcess:
        """A further instance of the same notifier (same app id and topics; own data dir and web port)."""
        n = self.notifier
        env = dict(n.extra_env)
        port = free_port()
        env["WATERWATCH_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        other = NotifierProcess(bootstrap=self.bootstrap, topic_prefix=self.prefix, app_id=n.app_id,
                                data_dir=n.data_dir.parent.parent / name / "data",
                                log_path=n.data_dir.parent.parent / name / "notifier.log", web_port=port,
                                partitions=n.partitions, config_dir=n.config_dir, extra_env=env)  # fmt: skip
        other.data_dir.mkdir(parents=True, exist_ok=True)
        self.others.append(other)
        return other

    def load_residents(self, rs: list[Resident]) -> None:
        topic = f"{self.prefix}.residents"
        ensure_topics(self.bootstrap, [dataclasses.replace(RESIDENTS, name=topic)])
        self.producer.send(topic, [(r.account.encode(), r.model_dump_json(exclude_none=True).encode()) for r in rs])

    def start(self) -> None:
        self.notifier.start().wait_ready()
        if self.deliveries is None:
            self.deliveries = TopicReader(self.bootstrap, f"{self.prefix}.deliveries")

    def publish(self, alert: dict[str, Any]) -> None:
        self.producer.send(f"{self.prefix}.alerts", [(alert["subject"].encode(), encode(alert))])

    def sms(self) -> Counter[str]:
        return Counter(r.form["To"] for r in self.twilio.requests if r.form and r.form.get("To"))

    def mails(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for r in self.sendgrid.requests:
            for p in (r.json or {}).get("personalizations", []):
                for t in p.get("to", []):
                    c[t["email"]] += 1
        return c

    def records(self, alert_id: str) -> list[dict[str, Any]]:
        assert self.deliveries is not None
        while self.deliveries.poll(0.3):
            pass
        return [r for r in self.deliveries.values() if r.get("alert_id") == alert_id]

    def close(self) -> None:
        self.notifier.kill()
        for other in self.others:
            other.kill()
        self.producer.close()
        if self.deliveries is not None:
            self.deliveries.close()
        for f in (self.twilio, self.sendgrid, self.wecom):
            f.stop()
        delete_with_prefix(self.bootstrap, self.prefix)


@pytest.fixture
def stacks(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Stack] = []

    def make(name: str, **kw: Any) -> Stack:
        st = Stack(kafka_bootstrap, tmp_path, name, **kw)
        made.append(st)
        return st

    yield make
    for st in made:
        st.close()


def wait_for(what: str, done: Any, st: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if not st.notifier.alive:
            break
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout:.0f} s\n{st.notifier.log_tail()}")


def final_status(recs: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(recipient, channel) → every status recorded."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in recs:
        out.setdefault((r["recipient"], r["channel"]), set()).add(r["status"])
    return out


def test_pre_notice_reaches_each_consenting_household_once(stacks: Any) -> None:
    rs = households()
    st = stacks("once")
    st.load_residents(rs)
    st.start()
    health = st.notifier.health()
    assert health is not None and health[1]["households"] == IN_AREA + OUTSIDE
    alert = pre_notice(unique_name("O"))
    st.publish(alert)
    st.publish(alert)  # at-least-once upstream: the same notice twice
    want_sms, want_mail = expected(rs, "sms"), expected(rs, "email")
    wait_for("every sms and e-mail", lambda: set(st.sms()) >= want_sms and set(st.mails()) >= want_mail, st, 240)
    aid = alert["data"]["alert_id"]
    skipped = opted_out(rs, "sms") | opted_out(rs, "email")
    wait_for("skipped records", lambda: {r["recipient"] for r in st.records(aid) if r["status"] == "skipped"}
             >= skipped, st, 60)  # fmt: skip
    time.sleep(2)
    sms, mails = st.sms(), st.mails()
    assert set(sms) == want_sms and max(sms.values()) == 1, "one sms per consenting household, none elsewhere"
    assert set(mails) == want_mail and max(mails.values()) == 1, "one e-mail per consenting household"
    # SendGrid batches: far fewer requests than e-mails, each within the 1,000-personalization limit
    sizes = [len((r.json or {}).get("personalizations", [])) for r in st.sendgrid.requests]
    assert max(sizes) <= 1000 and len(sizes) < len(want_mail) // 5, sizes
    assert len(want_sms) == IN_AREA - IN_AREA // 20
    by = final_status(st.records(aid))
    for key in opted_out(rs, "sms"):
        assert by[(key, "sms")] == {"skipped"}
    assert not [k for k, _ in by if int(k.removeprefix(recipient_key("H"))) >= IN_AREA], "nobody outside the area"
    log = st.notifier.log_text()
    assert f"notice {aid} (pre_outage)" in log and "complete" in log


def test_killed_mid_fan_out_leaves_no_duplicates_and_no_gaps(stacks: Any) -> None:
    """SIGKILL mid-fan-out, restart: every household gets its notice exactly once on each channel.

    Deliveries caught between intent and result are in doubt after the restart; each is settled with
    the provider's evidence (SendGrid's signed events, Twilio's list of messages) or, unknown to the
    provider, sent again — so neither a duplicate nor a gap."""
    rs = households()
    st = stacks("crash", twilio_latency=0.02, routing={"retry": {"in_doubt_check": "5s"}})
    st.load_residents(rs)
    st.start()
    alert = pre_notice(unique_name("O"))
    st.publish(alert)
    want_sms, want_mail = expected(rs, "sms"), expected(rs, "email")
    wait_for("some sms", lambda: len(st.sms()) >= 300, st, 120)
    st.notifier.kill()  # SIGKILL: nothing flushed, nothing committed
    at_kill = len(st.sms())
    assert at_kill < len(want_sms), "killed after all sends: make the fake slower"
    st.start()
    aid = alert["data"]["alert_id"]

    def settled() -> bool:
        last: dict[tuple[str, str], str] = {}
        for r in st.records(aid):  # one recipient's records are in order (one partition)
            last[(r["recipient"], r["channel"])] = r["status"]
        return (set(st.sms()) >= want_sms and set(st.mails()) >= want_mail
                and "in_doubt" not in last.values())  # fmt: skip

    wait_for("every household on every channel, no delivery left in doubt", settled, st, 300)
    time.sleep(3)
    sms, mails = st.sms(), st.mails()
    recs = st.records(aid)
    dupes = {a: n for a, n in sms.items() if n > 1} | {a: n for a, n in mails.items() if n > 1}
    assert not dupes, f"duplicates after the restart: {list(dupes.items())[:5]}"
    assert set(sms) == want_sms and set(mails) == want_mail
    doubted = {(r["recipient"], r["channel"]) for r in recs if r["status"] == "in_doubt"}
    _, h = st.notifier.health() or (0, {})
    resent, resolved = h.get("in_doubt_resent", 0), h.get("in_doubt_resolved", 0)
    assert h.get("in_doubt", 0) == len(doubted) == resent + resolved, h
    print(f"killed after {at_kill} sms; after restart: {len(sms)} sms, {len(mails)} e-mails, "
          f"{len(doubted)} in doubt: {resolved} confirmed (receipt, result or the provider's list), "
          f"{resent} sent again; counters {h}")  # fmt: skip


def test_two_notifier_instances_share_a_fan_out_each_household_once(stacks: Any) -> None:
    """Jobs are partitioned by recipient: two instances of one notifier split the households between them,
    and every household still gets exactly one notice per channel."""
    rs = households()
    st = stacks("pair")
    st.load_residents(rs)
    st.start()
    second = st.another("pair-2")
    second.start().wait_ready()
    # the first instance gave up partitions to the second and is ready again before the notice comes
    wait_for("the first instance rebalanced", lambda: st.notifier.log_text().count("notifier ready") >= 2
             and (st.notifier.health() or (0,))[0] == 200, st, 60)  # fmt: skip
    alert = pre_notice(unique_name("O"))
    st.publish(alert)
    want_sms, want_mail = expected(rs, "sms"), expected(rs, "email")
    wait_for("every sms and e-mail", lambda: set(st.sms()) >= want_sms and set(st.mails()) >= want_mail, st, 240)
    time.sleep(2)
    sms, mails = st.sms(), st.mails()
    assert set(sms) == want_sms and max(sms.values()) == 1
    assert set(mails) == want_mail and max(mails.values()) == 1
    sent = [(inst.health() or (0, {}))[1].get("sent", 0) for inst in (st.notifier, second)]
    assert all(n > 0 for n in sent), f"one instance sent nothing: {sent}"
    print(f"sent by instance: {sent}")


def correction(pre: dict[str, Any], new_area: str) -> dict[str, Any]:
    """The engine's ``notice.due`` correction after ``outage.updated`` moved the outage to ``new_area``."""
    now = datetime.now(TZ)
    d = pre["data"]
    matter = d["matter_id"]
    aid = f"{matter}/R19.1/notice/v2/correction_1"
    ctx = dict(d["context"], area={"compounds": [new_area]}, supersedes=d["alert_id"],
               previous={"area": d["context"]["area"], "starts_at": d["context"]["starts_at"]},
               reason="设计变更 moved")  # fmt: skip
    data = dict(d, alert_id=aid, clock="notice", stage="correction_1", notice="correction",
                notify=["residents_notified"], fired_at=now.isoformat(), due_at=None, context=ctx,
                message="R19.1: correction to residents who got the earlier notice")  # fmt: skip
    event = dict(pre, id=aid, time=now.isoformat(), data=data)
    OUTPUT_MODELS["notice.due"].model_validate(event)
    return event


def small_area(n: int = 40) -> list[Resident]:
    """``n`` households in AREA and ``n`` in fenghuang-yuan, all consenting, all with a phone."""
    return [Resident(account=f"C{i:05d}", phone=f"+86137{i:08d}", compounds=[AREA if i < n else "fenghuang-yuan"],
                     consent={"sms": True, "email": True}) for i in range(2 * n)]  # fmt: skip


def test_a_correction_reaches_only_households_that_got_the_old_notice(stacks: Any) -> None:
    rs = small_area()
    st = stacks("correct")
    st.load_residents(rs)
    st.start()
    pre = pre_notice(unique_name("O"))
    st.publish(pre)
    old_area = {r.phone for r in rs if AREA in r.compounds}
    wait_for("the pre-notice", lambda: set(st.sms()) >= old_area, st, 120)
    fix = correction(pre, "fenghuang-yuan")  # the outage moved to another compound
    st.publish(fix)
    aid = fix["data"]["alert_id"]
    wait_for("the correction", lambda: len(st.records(aid)) >= len(rs), st, 120)
    time.sleep(2)
    sms = st.sms()
    assert {p: n for p, n in sms.items() if p in old_area} == dict.fromkeys(old_area, 2), "pre-notice + correction"
    assert not [p for p in sms if p not in old_area], "the new compound never got the old notice: no correction"
    by = final_status(st.records(aid))
    assert {k for k, v in by.items() if v == {"sent"}} == {(recipient_key(r.account), "sms") for r in rs[:40]}
    assert all(v == {"skipped"} for k, v in by.items() if k[0] in {recipient_key(r.account) for r in rs[40:]})


def test_a_notice_held_by_quiet_hours_is_superseded_never_sent(stacks: Any) -> None:
    now = datetime.now(TZ)
    window = [f"{(now - timedelta(hours=1)):%H:%M}", f"{(now + timedelta(hours=2)):%H:%M}"]
    rs = small_area(20)
    st = stacks("stale", routing={"quiet_hours": {"units": [], "residents": [window]}})
    st.load_residents(rs)
    st.start()
    pre = pre_notice(unique_name("O"), hours=240)  # held until the quiet hours end, long before start - 48 h
    st.publish(pre)

    def held() -> bool:
        h = st.notifier.health()
        return h is not None and h[1].get("pending", 0) >= 20

    wait_for("the held notices", held, st, 60)
    assert st.sms() == {}
    fix = correction(pre, "fenghuang-yuan")
    st.publish(fix)
    wait_for("superseded", lambda: len([r for r in st.records(pre["data"]["alert_id"])
                                        if "superseded" in (r.get("reason") or "")]) >= 20, st, 60)  # fmt: skip
    time.sleep(2)
    assert st.sms() == {}, "neither the stale notice nor a correction of a notice nobody got"
    assert {r["status"] for r in st.records(fix["data"]["alert_id"])} == {"skipped"}


def test_ops_is_alerted_when_the_fan_out_would_miss_start_minus_48h(stacks: Any) -> None:
    rs = small_area(150)
    # one provider call at a time and a slow SMS provider: far too slow for a deadline 30 s away
    st = stacks("eta", twilio_latency=0.3, env={"WATERWATCH_NOTIFIER_OUTSTANDING": "1"})
    st.load_residents(rs)
    st.start()
    pre = pre_notice(unique_name("O"), hours=48 + 30 / 3600)
    st.publish(pre)
    reader = TopicReader(st.bootstrap, f"{st.prefix}.alerts")
    try:
        assert reader.wait_until(lambda _: any(v["data"]["stage"] == "fanout_eta" for v in reader.values()), 90), (
            st.notifier.log_tail()
        )
        found = reader.values()
    finally:
        reader.close()
    eta = next(v for v in found if v["data"]["stage"] == "fanout_eta")
    assert eta["type"] == "alert.warning" and eta["data"]["rule"] == "R19.1" and eta["data"]["notify"] == ["ops"]
    assert eta["data"]["matter_id"] == pre["subject"] and eta["data"]["context"]["pending"] > 0
    OUTPUT_MODELS["alert.warning"].model_validate(eta)
