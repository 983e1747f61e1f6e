"""``waterwatch notifier`` on the real broker, with the real SDKs talking to fake provider servers.

One notifier serves the tests that can share it (each uses its own unit, so
its own phone numbers and mailboxes); the crash and restart tests start their
own. Faults are injected by the fakes (tests/fakes/providers.py): 429 with
Retry-After, 5xx, permanent errors; webhooks are signed like Twilio and
SendGrid sign them, or forged.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes.providers import FakeSendGrid, FakeTwilio, FakeWeCom, SendGridWebhookSigner
from kafka_helpers import delete_with_prefix, unique_name
from notifier_harness import (
    AUTH_TOKEN,
    SENDGRID_KEY,
    NotifierProcess,
    encode,
    make_alert,
    provider_env,
    routing_config,
)
from worker_harness import Producer, TopicReader, free_port

from waterwatch.core.units import load_units
from waterwatch.topics import ALERTS

pytestmark = pytest.mark.integration

UNITS = load_units(Path(__file__).resolve().parents[2] / "config" / "units.yaml")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def duty_phone(unit: str) -> str:
    return str(UNITS.units[unit].duty.phone)


def duty_email(unit: str) -> str:
    return str(UNITS.units[unit].duty.email)


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    twilio: FakeTwilio
    sendgrid: FakeSendGrid
    wecom: FakeWeCom
    signer: SendGridWebhookSigner
    notifier: NotifierProcess
    producer: Producer
    deliveries: TopicReader

    @property
    def alerts_topic(self) -> str:
        return f"{self.prefix}.alerts"

    def publish(self, *alerts: dict[str, Any]) -> None:
        self.producer.send(self.alerts_topic, [(a["subject"].encode(), encode(a)) for a in alerts])

    def sms_to(self, phone: str) -> list[Any]:
        return [r for r in self.twilio.requests if r.form and r.form.get("To") == phone]

    def mails_to(self, email: str) -> list[Any]:
        out = []
        for r in self.sendgrid.requests:
            for p in (r.json or {}).get("personalizations", []):
                if any(t.get("email") == email for t in p.get("to", [])):
                    out.append(r)
        return out

    def records(self, alert_id: str) -> list[dict[str, Any]]:
        self.deliveries.poll(0.2)
        return [r for r in self.deliveries.values() if r.get("alert_id") == alert_id]

    def wait_records(self, alert_id: str, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.records(alert_id)
            if done(recs):
                return recs
            time.sleep(0.2)
        raise AssertionError(f"records for {alert_id} never complete: {recs}\n{self.notifier.log_tail()}")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        url = f"http://127.0.0.1:{self.notifier.web_port}{path}"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with _NO_PROXY.open(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


def _sent(recs: list[dict[str, Any]], n: int) -> bool:
    return len({r["delivery_id"] for r in recs if r["status"] == "sent"}) >= n


@pytest.fixture
def stack_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Stack] = []
    fakes: list[Any] = []

    def make(*, name: str = "n", extra_env: dict[str, str] | None = None, **routing: Any) -> Stack:
        prefix = unique_name(f"notifier-{name}")
        twilio = FakeTwilio("AC" + "0" * 30 + "12", AUTH_TOKEN).start()
        sendgrid = FakeSendGrid(SENDGRID_KEY).start()
        wecom = FakeWeCom().start()
        fakes.extend([twilio, sendgrid, wecom])
        signer = SendGridWebhookSigner()
        port = free_port()
        env = provider_env(twilio, sendgrid, wecom, port, signer.public_key)
        env.update(extra_env or {})
        proc = NotifierProcess(bootstrap=kafka_bootstrap, topic_prefix=prefix, app_id=f"{prefix}-notifier",
                               data_dir=tmp_path / name / "data", log_path=tmp_path / name / "notifier.log",
                               web_port=port, partitions=4, config_dir=routing_config(tmp_path, **routing),
                               extra_env=env)  # fmt: skip
        proc.data_dir.mkdir(parents=True, exist_ok=True)
        proc.start().wait_ready()
        st = Stack(kafka_bootstrap, prefix, twilio, sendgrid, wecom, signer, proc, Producer(kafka_bootstrap),
                   TopicReader(kafka_bootstrap, f"{prefix}.deliveries"))  # fmt: skip
        made.append(st)
        return st

    yield make
    for st in made:
        st.notifier.kill()
        st.producer.close()
        st.deliveries.close()
        delete_with_prefix(kafka_bootstrap, st.prefix)
    for f in fakes:
        f.stop()


@pytest.fixture(scope="module")
def shared(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("notifier-shared")
    prefix = unique_name("notifier-shared")
    twilio = FakeTwilio("AC" + "0" * 30 + "12", AUTH_TOKEN).start()
    sendgrid = FakeSendGrid(SENDGRID_KEY).start()
    wecom = FakeWeCom(rate_limit=20).start()
    signer = SendGridWebhookSigner()
    port = free_port()
    proc = NotifierProcess(bootstrap=kafka_bootstrap, topic_prefix=prefix, app_id=f"{prefix}-notifier",
                           data_dir=base / "data", log_path=base / "notifier.log", web_port=port, partitions=4,
                           config_dir=routing_config(base),
                           extra_env=provider_env(twilio, sendgrid, wecom, port, signer.public_key))  # fmt: skip
    proc.data_dir.mkdir(parents=True, exist_ok=True)
    proc.start().wait_ready()
    st = Stack(kafka_bootstrap, prefix, twilio, sendgrid, wecom, signer, proc, Producer(kafka_bootstrap),
               TopicReader(kafka_bootstrap, f"{prefix}.deliveries"))  # fmt: skip
    try:
        yield st
    finally:
        proc.kill()
        st.producer.close()
        st.deliveries.close()
        for f in (twilio, sendgrid, wecom):
            f.stop()
        delete_with_prefix(kafka_bootstrap, prefix)


# ------------------------------------------------------------------ tests


def test_each_alert_delivered_once_per_recipient_and_channel(shared: Stack) -> None:
    alert = make_alert(level="overdue", unit="runda", notify=["unit", "ops", "warning_group"])
    aid = alert["data"]["alert_id"]
    shared.publish(alert, alert)  # the same alert twice (at-least-once upstream)
    # unit duty sms + email, ops duty sms + email, the warning group's robot
    recs = shared.wait_records(aid, lambda r: _sent(r, 5))
    time.sleep(2)  # anything extra would show up now
    assert len(shared.sms_to(duty_phone("runda"))) == 1
    assert len(shared.sms_to(duty_phone("ops"))) == 1
    assert len(shared.mails_to(duty_email("runda"))) == 1
    assert len(shared.mails_to(duty_email("ops"))) == 1
    markdown = [r for r in shared.wecom.messages if (r.json or {}).get("msgtype") == "markdown"]
    assert len([m for m in markdown if alert["subject"] in m.json["markdown"]["content"]]) == 1
    sent = [r for r in shared.records(aid) if r["status"] == "sent"]
    assert len(sent) == len({r["delivery_id"] for r in sent}) == 5
    assert all("+86" not in r["recipient"] and "@" not in r["recipient"] for r in recs)  # no personal data


def test_429_with_retry_after_then_success(shared: Stack) -> None:
    alert = make_alert(level="warning", unit="shuixing", stage="warn_50", due_in=3600, notify=["unit"])
    shared.twilio.fail_next(429, 20429, retry_after=1)
    t0 = time.monotonic()
    shared.publish(alert)
    shared.wait_records(alert["data"]["alert_id"], lambda r: _sent(r, 2))
    tries = shared.sms_to(duty_phone("shuixing"))
    assert len(tries) == 2  # the 429, then the success after Retry-After
    assert tries[1].at - tries[0].at >= 0.9
    assert time.monotonic() - t0 < 20


def test_three_5xx_then_success(shared: Stack) -> None:
    alert = make_alert(level="warning", unit="quality_lab", stage="warn_50", due_in=3600, notify=["unit"])
    shared.sendgrid.fail_next(503, times=3)
    shared.publish(alert)
    recs = shared.wait_records(alert["data"]["alert_id"], lambda r: _sent(r, 2), timeout=40)
    assert len(shared.mails_to(duty_email("quality_lab"))) == 4
    email = [r for r in recs if r["channel"] == "email"]
    assert [r["status"] for r in email].count("failed") == 3
    assert email[-1]["status"] == "sent" and email[-1]["attempt"] == 4


def test_permanent_error_is_not_retried(shared: Stack) -> None:
    alert = make_alert(level="warning", unit="chengnan", stage="warn_50", due_in=3600, notify=["unit"])
    shared.twilio.fail_next(400, 21211)  # invalid number
    shared.publish(alert)
    recs = shared.wait_records(alert["data"]["alert_id"],
                               lambda r: any(x["channel"] == "sms" and x["status"] in ("permanent_failure", "failed")
                                             for x in r) and _sent(r, 1))  # fmt: skip
    time.sleep(3)  # a retry would come within the 1-2 s back-off of the test routing
    assert len(shared.sms_to(duty_phone("chengnan"))) == 1
    sms = [r for r in recs if r["channel"] == "sms"]
    assert "21211" in (sms[-1]["error"] or "")


def test_forged_webhooks_get_403_and_signed_receipts_are_recorded(shared: Stack) -> None:
    alert = make_alert(level="warning", unit="boyang_design", stage="warn_50", due_in=3600, notify=["unit"])
    aid = alert["data"]["alert_id"]
    shared.publish(alert)
    recs = shared.wait_records(aid, lambda r: _sent(r, 2))
    sms = next(r for r in recs if r["channel"] == "sms" and r["status"] == "sent")
    query = urllib.parse.urlencode({"d": sms["delivery_id"], "r": sms["recipient"]})
    path = f"/receipts/twilio/status?{query}"
    url = f"http://127.0.0.1:{shared.notifier.web_port}{path}"
    params, sig = shared.twilio.status_callback(url, sms["provider_id"], "delivered")
    body = urllib.parse.urlencode(params).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert shared.post(path, body, {**form, "X-Twilio-Signature": "Zm9yZ2Vk"}) == 403
    assert shared.post(path, body, form) == 403  # unsigned
    tampered = urllib.parse.urlencode({**params, "MessageStatus": "failed"}).encode()
    assert shared.post(path, tampered, {**form, "X-Twilio-Signature": sig}) == 403
    assert shared.post(path, body, {**form, "X-Twilio-Signature": sig}) == 200
    shared.wait_records(aid, lambda r: any(x["delivery_id"] == sms["delivery_id"] and x["status"] == "delivered"
                                           for x in r))  # fmt: skip

    mail = next(r for r in recs if r["channel"] == "email" and r["status"] == "sent")
    events = [{"email": duty_email("boyang_design"), "event": "delivered", "timestamp": int(time.time()),
               "sg_message_id": mail["provider_id"], "delivery_id": mail["delivery_id"],
               "recipient_key": mail["recipient"]}]  # fmt: skip
    payload = json.dumps(events).encode()
    ts = str(int(time.time()))
    good = shared.signer.headers(payload, ts)
    forged = SendGridWebhookSigner().headers(payload, ts)  # someone else's key
    assert shared.post("/receipts/sendgrid", payload, {"Content-Type": "application/json", **forged}) == 403
    assert shared.post("/receipts/sendgrid", payload + b" ", {"Content-Type": "application/json", **good}) == 403
    assert shared.post("/receipts/sendgrid", payload, {"Content-Type": "application/json", **good}) == 200
    shared.wait_records(aid, lambda r: any(x["delivery_id"] == mail["delivery_id"] and x["status"] == "delivered"
                                           for x in r))  # fmt: skip


def test_opted_out_number_gets_nothing(shared: Stack) -> None:
    phone = duty_phone("boyang_supply")
    path = "/receipts/twilio/inbound"
    url = f"http://127.0.0.1:{shared.notifier.web_port}{path}"
    params = {"From": phone, "To": "+15005550006", "Body": " stop ", "MessageSid": "SM" + "1" * 32,
              "AccountSid": "AC" + "0" * 30 + "12"}  # fmt: skip
    from notifiers.signatures import sign_twilio

    body = urllib.parse.urlencode(params).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert shared.post(path, body, {**form, "X-Twilio-Signature": "bad"}) == 403
    assert shared.post(path, body, {**form, "X-Twilio-Signature": sign_twilio(AUTH_TOKEN, url, params)}) == 200
    alert = make_alert(level="warning", unit="boyang_supply", stage="warn_50", due_in=3600, notify=["unit"])
    shared.publish(alert)
    recs = shared.wait_records(alert["data"]["alert_id"],
                               lambda r: _sent(r, 1) and any(x["status"] == "skipped" for x in r))  # fmt: skip
    time.sleep(1)
    assert shared.sms_to(phone) == []
    assert len(shared.mails_to(duty_email("boyang_supply"))) == 1  # e-mail consent is separate
    assert next(r for r in recs if r["channel"] == "sms")["status"] == "skipped"


def test_wecom_alerts_for_one_group_are_merged(shared: Stack) -> None:
    before = len([r for r in shared.wecom.messages if (r.json or {}).get("msgtype") == "markdown"])
    alerts = [make_alert(level="overdue", unit="office", notify=["warning_group"]) for _ in range(4)]
    shared.publish(*alerts)
    for a in alerts:
        shared.wait_records(a["data"]["alert_id"], lambda r: _sent(r, 1))
    markdown = [r for r in shared.wecom.messages if (r.json or {}).get("msgtype") == "markdown"][before:]
    assert 1 <= len(markdown) < 4
    text = "\n".join(m.json["markdown"]["content"] for m in markdown)
    assert all(a["subject"] in text for a in alerts)


def test_crash_between_send_and_record_leaves_in_doubt_not_a_duplicate(stack_factory: Any) -> None:
    st = stack_factory(name="crash", extra_env={"WATERWATCH_TEST_CRASH_AFTER_SEND": "1"})
    alert = make_alert(level="warning", unit="runda", stage="warn_50", due_in=3600, notify=["unit"])
    st.publish(alert)
    assert st.notifier.proc is not None
    st.notifier.proc.wait(timeout=60)  # a provider answers, and the process dies before recording it
    calls_at_crash = len(st.sms_to(duty_phone("runda"))) + len(st.mails_to(duty_email("runda")))
    assert calls_at_crash >= 1
    st.notifier.extra_env.pop("WATERWATCH_TEST_CRASH_AFTER_SEND")
    st.notifier.start().wait_ready()
    def settled(r: list[dict[str, Any]]) -> bool:
        return len({x["delivery_id"] for x in r if x["status"] in ("sent", "in_doubt")}) == 2

    recs = st.wait_records(alert["data"]["alert_id"], settled)
    time.sleep(2)
    # nothing is sent twice: a delivery whose call was made before the crash is in doubt, not repeated
    assert len(st.sms_to(duty_phone("runda"))) <= 1
    assert len(st.mails_to(duty_email("runda"))) <= 1
    in_doubt = {r["delivery_id"] for r in recs if r["status"] == "in_doubt"}
    sent = {r["delivery_id"] for r in recs if r["status"] == "sent"}
    assert len(in_doubt) >= 1 and not (in_doubt & sent)
    assert len(in_doubt) + len(sent) == 2


def test_restart_resends_nothing(stack_factory: Any) -> None:
    st = stack_factory(name="restart")
    alerts = [make_alert(level="overdue", unit=u, notify=["unit", "warning_group"]) for u in ("runda", "shuixing")]
    st.publish(*alerts)
    for a in alerts:
        st.wait_records(a["data"]["alert_id"], lambda r: _sent(r, 3))
    time.sleep(1.5)
    counts = (len(st.twilio.requests), len(st.sendgrid.requests), len(st.wecom.requests))
    st.notifier.stop()
    st.notifier.start().wait_ready()
    st.publish(*alerts)  # the alerts come again, as after a worker's crash
    marker = make_alert(level="warning", unit="ops", stage="warn_50", due_in=3600, notify=["unit"])
    st.publish(marker)
    st.wait_records(marker["data"]["alert_id"], lambda r: _sent(r, 2))
    time.sleep(1.5)
    assert (len(st.twilio.requests) - 1, len(st.sendgrid.requests) - 1, len(st.wecom.requests)) == counts
    _ = ALERTS
