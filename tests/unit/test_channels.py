"""Channel senders with the real Twilio and SendGrid SDKs (and requests for WeCom) against local fake providers.

Each fake speaks its provider's wire format and injects faults (HTTP 429 with
Retry-After, 5xx, a request held past the client's timeout, a dropped
connection, provider error codes); the tests check the request on the wire, the
outcome, the error kind and that no error text holds a clear phone number,
e-mail address or robot key.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.providers import FakeSendGrid, FakeTwilio, FakeWeCom

from notifiers.channels import Senders, build_senders, mask_recipient, parse_retry_after
from notifiers.channels.base import Message, SendError
from notifiers.channels.console import ConsoleSender
from notifiers.channels.filesink import JsonlFileSender
from notifiers.channels.sendgrid_email import MAX_PERSONALIZATIONS, SendGridEmail
from notifiers.channels.twilio_sms import TwilioSms
from notifiers.channels.wecom import MARKDOWN_LIMIT, WeComOutcome, WeComRobot, truncate_utf8
from notifiers.signatures import verify_twilio
from notifiers.templating import Rendered

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-test-auth-token"
FROM = "+15005550006"
PHONE = "+8613912345678"
SG_KEY = "SG.test-key.secret-part"
EMAIL = "zhang.san@example.com"
ROBOT_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
ROBOT_VAR = "WATERWATCH_WECOM_RUNDA_KEY"
TIMEOUT = 5.0
"""Client timeout of the tests that expect an answer."""
SHORT_TIMEOUT = 0.3
"""Client timeout of the tests whose fake holds the request for ``HELD`` seconds."""
HELD = 3.0


@pytest.fixture(autouse=True)
def _no_proxy_no_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fakes are on 127.0.0.1: no proxy, and no Twilio edge/region rewriting from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(SID, TOKEN) as fake:
        yield fake


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(SG_KEY) as fake:
        yield fake


@pytest.fixture
def wecom() -> Iterator[FakeWeCom]:
    with FakeWeCom({ROBOT_KEY}) as fake:
        yield fake


def sms(to: str = PHONE, text: str = "【水务】润达检修超时,请处理。", status_callback: str | None = None) -> Message:
    rendered = Rendered(kind="alert.overdue", channel="sms", language="zh", text=text)
    return Message(
        "del-sms-1", "sms", to, "zh", rendered, recipient_key="unit:runda:duty", status_callback=status_callback
    )


def email(to: str = EMAIL, n: int = 1, subject: str = "停水通知") -> Message:
    rendered = Rendered(
        kind="notice.pre_outage",
        channel="email",
        language="zh",
        subject=subject,
        text="明日 09:00 起停水。",
        html="<p>明日 09:00 起停水。</p>\n",
    )
    args = {"delivery_id": f"del-mail-{n}", "recipient_key": f"resident:{n}"}
    return Message(f"del-mail-{n}", "email", to, "zh", rendered, custom_args=args)


def robot(markdown: str = "**告警** 润达 检修超时", to: str = ROBOT_VAR, mentions: tuple[str, ...] = ()) -> Message:
    rendered = Rendered(kind="alert.warning", channel="wecom", language="zh", markdown=markdown)
    return Message("del-wecom-1", "wecom", to, "zh", rendered, mentions=mentions)


def twilio_sender(fake: FakeTwilio, timeout: float = TIMEOUT, **kw: str) -> TwilioSms:
    return TwilioSms(SID, TOKEN, kw.get("from_number", FROM), kw.get("service"), fake.base_url, timeout)


def send_error(sender: TwilioSms | SendGridEmail | WeComRobot, message: Message) -> SendError:
    with pytest.raises(SendError) as info:
        sender.send(message)
    err = info.value
    # the SDK's exception (clear data) is neither the cause nor a shown context
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return err


def assert_no_clear_data(err: SendError, *secrets: str) -> None:
    for text in (str(err), err.detail, err.code, repr(err)):
        for secret in secrets:
            assert secret not in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ===================================================================== Twilio


def test_twilio_sends_the_real_form_with_basic_auth(twilio: FakeTwilio) -> None:
    callback = "https://notifier.example/receipts/twilio?d=del-sms-1&r=unit%3Arunda%3Aduty"
    outcome = twilio_sender(twilio).send(sms(status_callback=callback))
    [req] = twilio.messages
    assert req.method == "POST" and req.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert req.header("Authorization") == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert req.header("Content-Type") == "application/x-www-form-urlencoded"
    assert req.form == {"To": PHONE, "From": FROM, "Body": "【水务】润达检修超时,请处理。", "StatusCallback": callback}
    assert outcome.provider == "twilio"
    assert outcome.provider_id is not None and outcome.provider_id.startswith("SM") and len(outcome.provider_id) == 34


def test_twilio_find_settles_a_doubt_from_the_providers_list_of_messages(twilio: FakeTwilio) -> None:
    """The SDK's list call (GET …/Messages.json?To=) finds a message by number, body and time; errors are not "no"."""
    sender = twilio_sender(twilio)
    since = time.time()
    outcome = sender.send(sms())
    body = "【水务】润达检修超时,请处理。"
    found = sender.find(PHONE, body, since)
    assert found is not None and found[0] == outcome.provider_id and found[1] == "queued"
    get = [r for r in twilio.requests if r.method == "GET"][-1]
    assert get.path == f"/2010-04-01/Accounts/{SID}/Messages.json" and get.query.get("To") == PHONE
    assert sender.find(PHONE, body + "x", since) is None  # another text
    assert sender.find("+8613900000000", body, since) is None  # another number
    assert sender.find(PHONE, body, since + 3600) is None  # created before the intent
    twilio.fail_next(503, 20500)
    with pytest.raises(SendError) as info:
        sender.find(PHONE, body, since)
    assert info.value.kind == "transient"


def test_twilio_messaging_service_instead_of_from(twilio: FakeTwilio) -> None:
    sender = TwilioSms(SID, TOKEN, messaging_service_sid="MG" + "1" * 32, base_url=twilio.base_url, timeout=TIMEOUT)
    sender.send(sms())
    form = twilio.messages[0].form or {}
    assert form["MessagingServiceSid"] == "MG" + "1" * 32 and "From" not in form and "StatusCallback" not in form


def test_twilio_needs_a_sender_id() -> None:
    with pytest.raises(ValueError, match="from_number or messaging_service_sid"):
        TwilioSms(SID, TOKEN)


def test_twilio_base_url_wins_over_edge_and_region(twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    twilio_sender(twilio).send(sms())
    assert len(twilio.messages) == 1


def test_twilio_status_callback_of_the_fake_is_signed(twilio: FakeTwilio) -> None:
    url = "https://notifier.example/receipts/twilio?d=del-sms-1"
    sid = twilio_sender(twilio).send(sms(status_callback=url)).provider_id
    assert sid is not None
    params, signature = twilio.status_callback(url, sid, "undelivered", error_code=30003)
    assert params["To"] == PHONE and params["MessageStatus"] == "undelivered" and params["ErrorCode"] == "30003"
    assert verify_twilio(TOKEN, url, params, signature)


def test_twilio_429_is_rate_limited_with_retry_after(twilio: FakeTwilio) -> None:
    twilio.fail_next(status=429, code=20429, retry_after=2)
    err = send_error(twilio_sender(twilio), sms())
    assert (err.kind, err.code, err.retry_after, err.provider) == ("rate_limited", "20429", 2.0, "twilio")


def test_twilio_429_without_retry_after(twilio: FakeTwilio) -> None:
    twilio.fail_next(code=20429)
    err = send_error(twilio_sender(twilio), sms())
    assert (err.kind, err.retry_after) == ("rate_limited", None)


def test_twilio_retry_after_is_per_thread(twilio: FakeTwilio) -> None:
    """The headers recorded for one thread's 429 are not those of another thread's success."""
    sender = twilio_sender(twilio)
    twilio.fail_next(status=429, code=20429, retry_after=7)
    err = send_error(sender, sms())
    results: list[str | None] = []
    worker = threading.Thread(target=lambda: results.append(sender.send(sms()).provider_id))
    worker.start()
    worker.join()
    assert err.retry_after == 7.0 and results[0] is not None


@pytest.mark.parametrize(("status", "code"), [(503, "20503"), (500, "20500"), (502, "20500")])
def test_twilio_5xx_is_transient(twilio: FakeTwilio, status: int, code: str) -> None:
    twilio.fail_next(status=status)
    err = send_error(twilio_sender(twilio), sms())
    assert (err.kind, err.code) == ("transient", code)


def test_twilio_timeout_is_transient(twilio: FakeTwilio) -> None:
    twilio.fail_next(timeout=HELD)
    err = send_error(twilio_sender(twilio, timeout=SHORT_TIMEOUT), sms())
    assert (err.kind, err.code) == ("transient", "timeout")
    assert twilio.messages == [] and len(twilio.requests) == 1


def test_twilio_dropped_or_refused_connection_is_transient(twilio: FakeTwilio) -> None:
    twilio.fail_next(disconnect=True)
    assert send_error(twilio_sender(twilio), sms()).kind == "transient"
    refused = TwilioSms(SID, TOKEN, FROM, base_url=f"http://127.0.0.1:{free_port()}", timeout=TIMEOUT)
    assert send_error(refused, sms()).kind == "transient"


@pytest.mark.parametrize("code", [21610, 21211, 21614, 21408])
def test_twilio_recipient_errors_are_permanent_and_masked(twilio: FakeTwilio, code: int) -> None:
    twilio.fail_next(code=code)
    err = send_error(twilio_sender(twilio), sms())
    assert (err.kind, err.code) == ("permanent", str(code))
    assert_no_clear_data(err, PHONE, PHONE[1:])


def test_twilio_invalid_number_from_validation_is_permanent_and_masked(twilio: FakeTwilio) -> None:
    err = send_error(twilio_sender(twilio), sms(to="13912345678"))  # not E.164: Twilio echoes it in the message
    assert (err.kind, err.code) == ("permanent", "21211")
    assert "139****5678" in err.detail
    assert_no_clear_data(err, "13912345678")


def test_twilio_stop_and_bad_credentials_are_permanent(twilio: FakeTwilio) -> None:
    twilio.stopped.add(PHONE)
    assert send_error(twilio_sender(twilio), sms()).code == "21610"
    wrong = TwilioSms(SID, "not-the-token", FROM, base_url=twilio.base_url, timeout=TIMEOUT)
    err = send_error(wrong, sms(to="+8613900000000"))
    assert (err.kind, err.code) == ("permanent", "20003")
    assert "not-the-token" not in str(err)


def test_twilio_empty_text_is_permanent_without_a_request(twilio: FakeTwilio) -> None:
    err = send_error(twilio_sender(twilio), sms(text=""))
    assert (err.kind, err.code) == ("permanent", "empty_body") and twilio.requests == []


def test_twilio_concurrent_sends(twilio: FakeTwilio) -> None:
    sender = twilio_sender(twilio)
    sids: list[str | None] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            sid = sender.send(sms()).provider_id
            with lock:
                sids.append(sid)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(sids)) == 30 and len(twilio.messages) == 30
    sender.close()


# =================================================================== SendGrid


def sendgrid_sender(fake: FakeSendGrid, timeout: float = TIMEOUT) -> SendGridEmail:
    return SendGridEmail(SG_KEY, "alerts@water.example", "聊城水务", host=fake.base_url, timeout=timeout)


def test_sendgrid_sends_subject_text_html_and_custom_args(sendgrid: FakeSendGrid) -> None:
    outcome = sendgrid_sender(sendgrid).send(email())
    [req] = sendgrid.messages
    assert req.path == "/v3/mail/send" and req.header("Authorization") == f"Bearer {SG_KEY}"
    mail = req.json
    assert mail["from"] == {"email": "alerts@water.example", "name": "聊城水务"}
    assert mail["subject"] == "停水通知"
    assert mail["content"] == [
        {"type": "text/plain", "value": "明日 09:00 起停水。"},
        {"type": "text/html", "value": "<p>明日 09:00 起停水。</p>\n"},
    ]
    assert mail["personalizations"] == [
        {"to": [{"email": EMAIL}], "custom_args": {"delivery_id": "del-mail-1", "recipient_key": "resident:1"}}
    ]
    assert outcome.provider == "sendgrid" and outcome.provider_id and len(outcome.provider_id) == 22


def test_sendgrid_429_retry_after(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(429, retry_after=2)
    err = send_error(sendgrid_sender(sendgrid), email())
    assert (err.kind, err.code, err.retry_after) == ("rate_limited", "http_429", 2.0)


def test_sendgrid_429_falls_back_to_rate_limit_reset(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(429, reset_in=30)
    err = send_error(sendgrid_sender(sendgrid), email())
    assert err.kind == "rate_limited" and err.retry_after is not None and 25 <= err.retry_after <= 31


@pytest.mark.parametrize("status", [500, 502, 503])
def test_sendgrid_5xx_is_transient(sendgrid: FakeSendGrid, status: int) -> None:
    sendgrid.fail_next(status)
    err = send_error(sendgrid_sender(sendgrid), email())
    assert (err.kind, err.code) == ("transient", f"http_{status}")


def test_sendgrid_timeout_and_network_errors_are_transient(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(timeout=HELD)
    assert send_error(sendgrid_sender(sendgrid, SHORT_TIMEOUT), email()).code == "timeout"
    sendgrid.fail_next(disconnect=True)
    assert send_error(sendgrid_sender(sendgrid), email()).kind == "transient"
    refused = SendGridEmail(SG_KEY, "alerts@water.example", host=f"http://127.0.0.1:{free_port()}", timeout=TIMEOUT)
    assert send_error(refused, email()).kind == "transient"
    assert sendgrid.messages == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "Bad Request"), (403, "verified Sender Identity"), (413, "too large"), (401, "authorization grant")],
)
def test_sendgrid_client_errors_are_permanent_with_the_first_message(
    sendgrid: FakeSendGrid, status: int, expected: str
) -> None:
    sendgrid.fail_next(status)
    err = send_error(sendgrid_sender(sendgrid), email())
    assert (err.kind, err.code) == ("permanent", f"http_{status}") and expected in err.detail


def test_sendgrid_error_text_masks_addresses(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(400, message=f"Invalid address {EMAIL}", field="personalizations.0.to.0.email")
    err = send_error(sendgrid_sender(sendgrid), email())
    assert "z***@example.com" in err.detail and "personalizations.0.to.0.email" in err.detail
    assert_no_clear_data(err, EMAIL)


def test_sendgrid_wrong_key_and_validation_are_permanent(sendgrid: FakeSendGrid) -> None:
    wrong = SendGridEmail("SG.wrong", "alerts@water.example", host=sendgrid.base_url, timeout=TIMEOUT)
    assert send_error(wrong, email()).code == "http_401"
    err = send_error(sendgrid_sender(sendgrid), email(to="bad@nodot"))
    assert err.kind == "permanent" and "valid address" in err.detail
    assert_no_clear_data(err, "bad@nodot")


def test_sendgrid_local_checks_need_no_request(sendgrid: FakeSendGrid) -> None:
    assert send_error(sendgrid_sender(sendgrid), email(subject="")).code == "no_subject"
    assert send_error(sendgrid_sender(sendgrid), email(to="not-an-address")).code == "invalid_address"
    assert sendgrid.requests == []


def test_sendgrid_batch_of_2500_is_three_requests(sendgrid: FakeSendGrid) -> None:
    messages = [email(to=f"resident{n}@example.com", n=n) for n in range(2500)]
    results = sendgrid_sender(sendgrid).send_batch(messages)
    assert [len(r.delivery_ids) for r in results] == [1000, 1000, 500]
    assert all(r.ok and r.outcome and r.outcome.provider_id for r in results)
    bodies = [req.json for req in sendgrid.messages]
    assert len(bodies) == 3 and all(len(b["personalizations"]) <= MAX_PERSONALIZATIONS for b in bodies)
    sent = [p["to"][0]["email"] for b in bodies for p in b["personalizations"]]
    assert sent == [m.to for m in messages]
    args = [p["custom_args"]["delivery_id"] for b in bodies for p in b["personalizations"]]
    assert args == [m.delivery_id for m in messages]
    assert [i for r in results for i in r.delivery_ids] == args


def test_sendgrid_batch_groups_identical_content(sendgrid: FakeSendGrid) -> None:
    messages = [email(n=1), email(n=2, subject="恢复供水"), email(n=3)]
    results = sendgrid_sender(sendgrid).send_batch(messages)
    assert [r.delivery_ids for r in results] == [("del-mail-1", "del-mail-3"), ("del-mail-2",)]
    assert [b.json["subject"] for b in sendgrid.messages] == ["停水通知", "恢复供水"]


def test_sendgrid_batch_stops_after_rate_limit(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(429, retry_after=5)
    messages = [email(to=f"r{n}@example.com", n=n) for n in range(2100)] + [email(to="no-address", n=9999)]
    results = sendgrid_sender(sendgrid).send_batch(messages)
    assert [(r.error.kind, r.error.code) for r in results if r.error] == [
        ("permanent", "invalid_address"),
        ("rate_limited", "http_429"),
        ("rate_limited", "not_attempted"),
        ("rate_limited", "not_attempted"),
    ]
    assert all(r.error and r.error.retry_after == 5.0 for r in results[1:])
    assert len(sendgrid.requests) == 1 and sendgrid_sender(sendgrid).send_batch([]) == []


def test_sendgrid_never_logs_the_key_or_recipients(sendgrid: FakeSendGrid, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sendgrid_sender(sendgrid).send(email())
    assert SG_KEY not in caplog.text and EMAIL not in caplog.text


# ====================================================================== WeCom


def wecom_sender(fake: FakeWeCom, timeout: float = TIMEOUT, **env: str) -> WeComRobot:
    return WeComRobot(fake.base_url, env={ROBOT_VAR: ROBOT_KEY, **env}, timeout=timeout)


def test_wecom_posts_markdown_with_the_key_from_the_variable(wecom: FakeWeCom) -> None:
    outcome = wecom_sender(wecom).send(robot())
    [req] = wecom.messages
    assert req.path == "/cgi-bin/webhook/send" and req.query == {"key": ROBOT_KEY}
    assert req.json == {"msgtype": "markdown", "markdown": {"content": "**告警** 润达 检修超时"}}
    assert outcome == WeComOutcome(provider="wecom_robot")
    assert ROBOT_KEY not in repr(wecom_sender(wecom))


def test_wecom_mentions_follow_as_a_text_message(wecom: FakeWeCom) -> None:
    outcome = wecom_sender(wecom).send(robot(mentions=(PHONE, "@all")))
    assert [r.json["msgtype"] for r in wecom.messages] == ["markdown", "text"]
    text = wecom.messages[1].json["text"]
    assert text["mentioned_mobile_list"] == [PHONE, "@all"] and text["content"]
    assert outcome.mention_error is None


def test_wecom_failed_mention_does_not_fail_the_delivered_markdown(wecom: FakeWeCom) -> None:
    wecom.fail_next(0)  # the markdown: ok
    wecom.fail_next(45009)  # the mention follow-up
    outcome = wecom_sender(wecom).send(robot(mentions=(PHONE,)))
    assert outcome.mention_error is not None and outcome.mention_error.kind == "rate_limited"


def test_wecom_45009_is_rate_limited(wecom: FakeWeCom) -> None:
    wecom.fail_next(45009)
    err = send_error(wecom_sender(wecom), robot())
    assert (err.kind, err.code, err.retry_after) == ("rate_limited", "45009", 60.0)


def test_wecom_robot_limit_of_20_per_minute() -> None:
    now = [1000.0]
    with FakeWeCom({ROBOT_KEY}, rate_limit=20, clock=lambda: now[0]) as fake:
        sender = wecom_sender(fake)
        for _ in range(20):
            sender.send(robot())
        assert send_error(sender, robot()).kind == "rate_limited"
        now[0] += 60.0
        sender.send(robot())
        assert len(fake.messages) == 21


def test_wecom_missing_variable_is_permanent_without_a_request(wecom: FakeWeCom) -> None:
    err = send_error(wecom_sender(wecom), robot(to="WATERWATCH_WECOM_NOBODY_KEY"))
    assert (err.kind, err.code) == ("permanent", "no_robot_key")
    assert err.detail == "robot key variable WATERWATCH_WECOM_NOBODY_KEY not set"
    assert wecom.requests == []


def test_wecom_invalid_key_is_permanent_and_never_shown(wecom: FakeWeCom, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "0000-wrong-robot-key"
    err = send_error(wecom_sender(wecom, OTHER_KEY=wrong), robot(to="OTHER_KEY"))
    assert (err.kind, err.code) == ("permanent", "93000")
    assert_no_clear_data(err, wrong)
    wecom_sender(wecom).send(robot())
    assert wrong not in caplog.text and ROBOT_KEY not in caplog.text


@pytest.mark.parametrize(("errcode", "kind"), [(93000, "permanent"), (40014, "permanent"), (-1, "transient")])
def test_wecom_errcodes(wecom: FakeWeCom, errcode: int, kind: str) -> None:
    wecom.fail_next(errcode, errmsg=f"see {ROBOT_KEY} or call {PHONE}")
    err = send_error(wecom_sender(wecom), robot())
    assert (err.kind, err.code) == (kind, str(errcode))
    assert_no_clear_data(err, ROBOT_KEY, PHONE)


def test_wecom_5xx_timeout_and_drop_are_transient(wecom: FakeWeCom) -> None:
    wecom.fail_next(status=502)
    assert send_error(wecom_sender(wecom), robot()).code == "http_502"
    wecom.fail_next(timeout=HELD)
    err = send_error(wecom_sender(wecom, SHORT_TIMEOUT), robot())
    assert (err.kind, err.code) == ("transient", "timeout")
    wecom.fail_next(disconnect=True)
    err = send_error(wecom_sender(wecom), robot())
    assert (err.kind, err.code) == ("transient", "connection")
    assert_no_clear_data(err, ROBOT_KEY)
    assert wecom.messages == []


def test_wecom_long_markdown_is_cut_at_a_character(wecom: FakeWeCom) -> None:
    wecom_sender(wecom).send(robot(markdown="水" * 2000))  # 6000 bytes
    content = wecom.messages[0].json["markdown"]["content"]
    assert content.endswith("…") and len(content.encode("utf-8")) <= MARKDOWN_LIMIT
    assert content == "水" * 1364 + "…"  # 1364 × 3 + 3 = 4095 bytes


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abc", 3, "abc"),
        ("abcd", 3, "…"),
        ("abcd", 2, ""),
        ("abcdef", 5, "ab…"),
        ("水水", 6, "水水"),
        ("水水水", 8, "水…"),
        ("😀😀", 7, "😀…"),
        ("😀😀", 6, "…"),
    ],
)
def test_truncate_utf8(text: str, limit: int, expected: str) -> None:
    assert truncate_utf8(text, limit) == expected
    assert len(truncate_utf8(text, limit).encode("utf-8")) <= limit


# ============================================================ console and file


def test_console_prints_a_masked_block() -> None:
    out = io.StringIO()
    sender = ConsoleSender(out, channel="sms")
    outcome = sender.send(sms())
    text = out.getvalue()
    assert outcome.provider == "console" and sender.channel == "sms"
    assert "+86139****5678" in text and PHONE not in text and "润达检修超时" in text
    ConsoleSender(out).send(email())
    assert "Subject: 停水通知" in out.getvalue() and "z***@example.com" in out.getvalue()


def test_jsonl_file_sink_writes_one_masked_line_per_message(tmp_path: Path) -> None:
    path = tmp_path / "out" / "sink.jsonl"
    at = datetime(2025, 11, 28, 1, 0, tzinfo=UTC)
    senders = [JsonlFileSender(path, channel="sms", clock=lambda: at), JsonlFileSender(path, channel="email")]

    def work(i: int) -> None:
        for _ in range(50):
            senders[i % 2].send(sms() if i % 2 == 0 else email())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 400
    first = next(r for r in lines if r["channel"] == "sms")
    assert first == {
        "delivery_id": "del-sms-1",
        "channel": "sms",
        "to": "+86139****5678",
        "language": "zh",
        "kind": "alert.overdue",
        "subject": None,
        "text": "【水务】润达检修超时,请处理。",
        "html": None,
        "markdown": None,
        "at": "2025-11-28T01:00:00+00:00",
    }
    assert PHONE not in path.read_text(encoding="utf-8") and EMAIL not in path.read_text(encoding="utf-8")


def test_mask_recipient() -> None:
    assert mask_recipient("sms", PHONE) == "+86139****5678"
    assert mask_recipient("email", EMAIL) == "z***@example.com"
    assert mask_recipient("wecom", ROBOT_VAR) == ROBOT_VAR
    assert mask_recipient("console", f"call {PHONE}") == "call +86139****5678"


# ============================================================== build_senders


def test_build_senders_without_credentials_uses_the_console() -> None:
    out = io.StringIO()
    senders = build_senders({}, stream=out)
    assert isinstance(senders, Senders) and sorted(senders) == ["email", "sms", "wecom"]
    assert {ch: (s.provider, s.channel) for ch, s in senders.items()} == {
        "sms": ("console", "sms"),
        "email": ("console", "email"),
        "wecom": ("console", "wecom"),
    }
    lines = senders.describe()
    assert len(lines) == 3 and lines[0].startswith("sms: console (Twilio not configured: TWILIO_ACCOUNT_SID")
    senders["sms"].send(sms())
    assert "+86139****5678" in out.getvalue()
    senders.close()


def test_build_senders_with_a_sink_file(tmp_path: Path) -> None:
    senders = build_senders({"TWILIO_ACCOUNT_SID": SID}, sink_file=tmp_path / "sink.jsonl")
    assert {s.provider for s in senders.values()} == {"file"}
    assert "TWILIO_AUTH_TOKEN" in senders.describe()[0] and "sink.jsonl" in senders.describe()[0]
    senders["email"].send(email())
    assert json.loads((tmp_path / "sink.jsonl").read_text(encoding="utf-8"))["to"] == "z***@example.com"


def test_build_senders_with_credentials_uses_the_providers(
    twilio: FakeTwilio, sendgrid: FakeSendGrid, wecom: FakeWeCom
) -> None:
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM_NUMBER": FROM,
        "WATERWATCH_TWILIO_BASE_URL": twilio.base_url,
        "SENDGRID_API_KEY": SG_KEY,
        "SENDGRID_FROM_EMAIL": "alerts@water.example",
        "WATERWATCH_SENDGRID_HOST": sendgrid.base_url,
        "WATERWATCH_WECOM_BASE_URL": wecom.base_url,
        ROBOT_VAR: ROBOT_KEY,
    }
    senders = build_senders(env)
    assert isinstance(senders["sms"], TwilioSms) and isinstance(senders["email"], SendGridEmail)
    assert isinstance(senders["wecom"], WeComRobot)
    assert [line.split(" ")[1] for line in senders.describe()] == ["twilio", "sendgrid", "wecom_robot"]
    described = "\n".join(senders.describe())
    for secret in (TOKEN, SG_KEY, ROBOT_KEY, FROM, "alerts@water.example"):
        assert secret not in described
    senders["sms"].send(sms())
    senders["email"].send(email())
    senders["wecom"].send(robot())
    assert (len(twilio.messages), len(sendgrid.messages), len(wecom.messages)) == (1, 1, 1)
    senders.close()


def test_build_senders_alternatives() -> None:
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_MESSAGING_SERVICE_SID": "MG" + "1" * 32,
        "SENDGRID_API_KEY": SG_KEY,
        "SENDGRID_FROM": "alerts@water.example",
        "WATERWATCH_WECOM": "on",
    }
    senders = build_senders(env)
    assert [s.provider for s in senders.values()] == ["twilio", "sendgrid", "wecom_robot"]
    assert "qyapi.weixin.qq.com" in senders.describe()[2]
    senders.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), (" 1.5 ", 1.5), ("-3", 0.0), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("soon", None), ("", None)],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=now) == expected
