"""The delivery state machine (notifiers/delivery.py): gates, attempts, outcomes, in-doubt, receipts."""

from __future__ import annotations

import pytest

from notifiers import delivery as dv

NOW = 1_800_000_000.0
ALERT = {"type": "alert.warning", "id": "a1", "data": {"alert_id": "a1", "level": "warning"}}


def make(**kw: object) -> dv.Delivery:
    args: dict[str, object] = dict(delivery_id="d1", alert=ALERT, recipient_key="unit:runda:duty", channel="sms",
                                   address="+8613800000010", language="zh", role="unit", urgent=False,
                                   useful_until=NOW + 3600, now=NOW)  # fmt: skip
    args.update(kw)
    return dv.new(**args)  # type: ignore[arg-type]


def test_a_new_delivery_passes_open_gates_and_records_the_alert_id() -> None:
    d = dv.gate(make(), NOW, dv.Gates())
    assert d.status == "ready" and d.alert_id == "a1" and d.kind == "alert.warning"


def test_an_expired_delivery_is_not_sent() -> None:
    assert dv.gate(make(useful_until=NOW - 1), NOW, dv.Gates()).status == "expired"


def test_an_opted_out_recipient_is_skipped_even_when_urgent() -> None:
    d = dv.gate(make(urgent=True), NOW, dv.Gates(consent=False))
    assert d.status == "skipped" and "opted out" in (d.reason or "")


def test_quiet_hours_hold_non_urgent_and_pass_urgent() -> None:
    held = dv.gate(make(), NOW, dv.Gates(quiet_until=NOW + 600, quiet_reason="quiet hours 22:00-07:00"))
    assert held.status == "waiting" and held.next_at == NOW + 600 and held.reason == "quiet hours 22:00-07:00"
    assert dv.gate(make(urgent=True), NOW, dv.Gates(quiet_until=NOW + 600)).status == "ready"


def test_begin_counts_the_attempt_and_success_records_the_provider_id() -> None:
    d = dv.begin(dv.gate(make(), NOW, dv.Gates()), NOW)
    assert d.status == "intent" and d.attempt == 1
    s = dv.succeeded(d, NOW + 1, "twilio", "SM123")
    assert s.status == "sent" and s.provider_id == "SM123" and s.terminal


@pytest.mark.parametrize(
    ("action", "status"),
    [("retry", "waiting"), ("fallback", "fallen_back"), ("permanent", "failed"), ("give_up", "dead")],
)
def test_failures_follow_the_retry_decision(action: str, status: str) -> None:
    d = dv.begin(make(fallback="email"), NOW)
    f = dv.failed(d, NOW, provider="twilio", action=action, at=NOW + 5 if action == "retry" else None, error="x")
    assert f.status == status and f.failures == 1
    assert (f.next_at == NOW + 5) if action == "retry" else f.terminal


def test_a_rate_limited_failure_does_not_count_as_a_failure() -> None:
    f = dv.failed(dv.begin(make(), NOW), NOW, provider="twilio", action="retry", at=NOW + 1, error="429", counts=False)
    assert f.failures == 0 and f.status == "waiting"


def test_an_intent_found_again_is_in_doubt_and_a_receipt_settles_it() -> None:
    d = dv.recover(dv.begin(make(), NOW), NOW + 30)
    assert d.status == "in_doubt" and d.terminal
    r = dv.receipt(d, NOW + 40, "delivered")
    assert r is not None and r.status == "delivered"


def test_a_doubt_with_a_check_time_is_settled_by_evidence_or_sent_again() -> None:
    intent = dv.begin(make(), NOW)
    doubt = dv.recover(intent, NOW + 30, check_at=NOW + 150)
    assert doubt.status == "in_doubt" and doubt.next_at == NOW + 150 and "asking the provider" in (doubt.reason or "")
    assert dv.recover(intent, NOW + 30).next_at is None  # no evidence possible: reported only
    # any provider event proves the request arrived: sent (or final), never sent again
    for status, final in (("processed", "sent"), ("queued", "sent"), ("delivered", "delivered"),
                          ("undelivered", "undelivered")):  # fmt: skip
        r = dv.receipt(doubt, NOW + 40, status)
        assert r is not None and r.status == final and r.next_at is None, status
    assert dv.receipt(doubt, NOW + 40, "nonsense") is None
    # a receipt can arrive before the restart found the intent (its result job was lost)
    early = dv.receipt(intent, NOW + 5, "sent")
    assert early is not None and early.status == "sent"
    ok = dv.confirmed(doubt, NOW + 150, "twilio", "SM9")
    assert ok.status == "sent" and ok.provider_id == "SM9" and ok.next_at is None
    again = dv.resend(doubt, NOW + 150)
    assert again.status == "waiting" and again.next_at == NOW + 150 and again.attempt == intent.attempt
    assert dv.begin(again, NOW + 151).attempt == intent.attempt + 1


def test_receipts_only_change_sent_records() -> None:
    waiting = dv.wait(make(), NOW, NOW + 5, "merge window")
    assert dv.receipt(waiting, NOW, "delivered") is None
    sent = dv.succeeded(dv.begin(make(), NOW), NOW, "twilio", "SM1")
    assert dv.receipt(sent, NOW, "queued") is None  # not final
    bad = dv.receipt(sent, NOW, "undelivered", "30003")
    assert bad is not None and bad.status == "undelivered" and bad.error == "30003"


def test_the_record_round_trips_through_json() -> None:
    d = dv.failed(dv.begin(make(mentions=["13800000011"]), NOW), NOW, provider="twilio", action="retry",
                  at=NOW + 9, error="503")  # fmt: skip
    assert dv.Delivery.from_json(d.to_json()) == d
    assert dv.Delivery.from_json(d.to_json().replace(b'"status"', b'"unknown_field":1,"status"')) == d


def test_the_stored_bytes_are_one_json_dump_of_all_fields_through_every_step() -> None:
    """The alert is encoded once per delivery and the other fields around it: the bytes must be
    exactly those of dumping every field at once, after every transition and a changed alert."""
    import json
    from dataclasses import fields, replace

    def plain(d: dv.Delivery) -> bytes:
        return json.dumps({f.name: getattr(d, f.name) for f in fields(d)}, ensure_ascii=False,
                          separators=(",", ":")).encode()  # fmt: skip

    alert = {"type": "alert.overdue", "id": "a2", "data": {"alert_id": "a2", "context": {"cause": '阀门"检修"'}}}
    d = make(alert=alert, mentions=["13800000011"])
    steps = [lambda x: dv.gate(x, NOW + 1, dv.Gates()), lambda x: dv.begin(x, NOW + 2),
             lambda x: dv.succeeded(x, NOW + 3, "twilio", "SM1"), lambda x: replace(x, alert=ALERT),
             lambda x: dv.receipt(x, NOW + 4, "delivered")]  # fmt: skip
    for step in steps:
        d = step(d)
        assert d is not None and d.to_json() == plain(d)
    assert json.loads(d.to_json())["alert"] == ALERT
    with pytest.raises(TypeError, match="no field"):  # as dataclasses.replace refuses a name Delivery lacks
        dv._at(d, NOW, no_such_field=1)
