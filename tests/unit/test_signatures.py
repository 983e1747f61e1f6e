"""Webhook signatures: Twilio (HMAC-SHA1 over URL and sorted form) and SendGrid (ECDSA P-256 over timestamp + body).

Valid signatures pass; a forged, modified or stale one fails; garbage input
returns False and never raises.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fakes.providers import FakeTwilio, SendGridWebhookSigner
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from notifiers.signatures import sign_twilio, verify_sendgrid, verify_twilio

TOKEN = "12345678901234567890123456789012"
URL = "https://notifier.example/receipts/twilio?d=del-1&r=unit%3Arunda%3Aduty"
PARAMS = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "To": "+8613912345678", "ErrorCode": ""}
NOW = 1_764_300_000


# ===================================================================== Twilio


def test_twilio_signature_of_the_sdk_verifies() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    assert sign_twilio(TOKEN, URL, PARAMS) == signature
    assert verify_twilio(TOKEN, URL, PARAMS, signature)


def test_twilio_status_callback_of_the_fake_verifies() -> None:
    fake = FakeTwilio("AC" + "0" * 32, TOKEN)
    params, signature = fake.status_callback(URL, "SM" + "b" * 32, "failed", error_code=30008)
    assert verify_twilio(TOKEN, URL, params, signature)
    assert not verify_twilio(TOKEN, URL, {**params, "MessageStatus": "delivered"}, signature)


def test_twilio_signature_holds_with_or_without_the_default_port() -> None:
    signature = sign_twilio(TOKEN, URL, PARAMS)
    assert verify_twilio(TOKEN, URL.replace(".example/", ".example:443/"), PARAMS, signature)


@pytest.mark.parametrize(
    ("token", "url", "params"),
    [
        ("another-token-another-token-1234", URL, PARAMS),
        (TOKEN, URL.replace("del-1", "del-2"), PARAMS),  # the delivery id in the callback URL
        (TOKEN, URL, {**PARAMS, "MessageStatus": "undelivered"}),
        (TOKEN, URL, {**PARAMS, "Extra": "1"}),
        (TOKEN, URL, {k: v for k, v in PARAMS.items() if k != "To"}),
    ],
)
def test_twilio_forged_or_modified_fails(token: str, url: str, params: dict[str, str]) -> None:
    assert not verify_twilio(token, url, params, sign_twilio(TOKEN, URL, PARAMS))


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        (TOKEN, URL, PARAMS, ""),
        (TOKEN, URL, PARAMS, None),
        (TOKEN, URL, PARAMS, "!!not base64!!"),
        (TOKEN, URL, PARAMS, b"bytes"),
        ("", URL, PARAMS, "x"),
        (None, URL, PARAMS, "x"),
        (TOKEN, "", PARAMS, "x"),
        (TOKEN, None, PARAMS, "x"),
        (TOKEN, URL, None, "x"),
        (TOKEN, URL, {"To": 5}, "x"),
        (TOKEN, URL, ["To"], "x"),
    ],
)
def test_twilio_garbage_is_false(token: Any, url: Any, params: Any, signature: Any) -> None:
    assert verify_twilio(token, url, params, signature) is False


# =================================================================== SendGrid

BODY = json.dumps(
    [{"email": "zhang.san@example.com", "event": "delivered", "delivery_id": "del-1", "sg_message_id": "x.filter"}]
).encode()


@pytest.fixture(scope="module")
def signer() -> SendGridWebhookSigner:
    return SendGridWebhookSigner()


def test_sendgrid_valid_signature_passes(signer: SendGridWebhookSigner) -> None:
    signature = signer.sign(BODY, NOW)
    assert verify_sendgrid(signer.public_key, BODY, signature, str(NOW), now=NOW)
    assert verify_sendgrid(signer.public_key, BODY, signature, NOW, now=NOW + 299)
    assert verify_sendgrid(signer.public_key_pem, BODY, signature, str(NOW), now=NOW)
    assert verify_sendgrid(f"  {signer.public_key}\n", BODY, signature, str(NOW), now=NOW)
    headers = signer.headers(BODY, NOW)
    ts, sig = headers["X-Twilio-Email-Event-Webhook-Timestamp"], headers["X-Twilio-Email-Event-Webhook-Signature"]
    assert verify_sendgrid(signer.public_key, BODY, sig, ts, now=NOW)


def test_sendgrid_public_key_looks_like_the_console(signer: SendGridWebhookSigner) -> None:
    assert signer.public_key.startswith("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")  # P-256 SubjectPublicKeyInfo


def test_sendgrid_modified_body_or_timestamp_fails(signer: SendGridWebhookSigner) -> None:
    signature = signer.sign(BODY, NOW)
    assert not verify_sendgrid(signer.public_key, BODY.replace(b"delivered", b"bounce"), signature, NOW, now=NOW)
    assert not verify_sendgrid(signer.public_key, BODY + b" ", signature, NOW, now=NOW)
    assert not verify_sendgrid(signer.public_key, BODY, signature, NOW + 1, now=NOW)


def test_sendgrid_other_key_fails(signer: SendGridWebhookSigner) -> None:
    forger = SendGridWebhookSigner()
    assert not verify_sendgrid(signer.public_key, BODY, forger.sign(BODY, NOW), NOW, now=NOW)


def test_sendgrid_stale_or_future_timestamp_fails(signer: SendGridWebhookSigner) -> None:
    signature = signer.sign(BODY, NOW)
    assert not verify_sendgrid(signer.public_key, BODY, signature, NOW, now=NOW + 301)
    assert not verify_sendgrid(signer.public_key, BODY, signature, NOW, now=NOW - 301)
    assert verify_sendgrid(signer.public_key, BODY, signature, NOW, now=NOW + 3000, max_age=3600)


def test_sendgrid_key_of_another_curve_fails() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    der = p384.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert not verify_sendgrid(base64.b64encode(der).decode(), BODY, "MEUCIQ==", NOW, now=NOW)


@pytest.mark.parametrize(
    ("key", "payload", "signature", "timestamp"),
    [
        ("not a key", BODY, "sig", NOW),
        ("", BODY, "sig", NOW),
        (None, BODY, "sig", NOW),
        ("KEY", BODY, "", NOW),
        ("KEY", BODY, None, NOW),
        ("KEY", BODY, "%%%not-base64%%%", NOW),
        ("KEY", BODY, "SIG", "yesterday"),
        ("KEY", BODY, "SIG", None),
        ("KEY", BODY, "SIG", "-5"),
        ("KEY", BODY, "SIG", True),
        ("KEY", BODY, "SIG", "１７６４３０００００"),  # full-width digits
        ("KEY", BODY.decode(), "SIG", NOW),  # a str body
        ("KEY", b"\xff\xfe" + BODY, "SIG", NOW),  # not UTF-8
    ],
)
def test_sendgrid_garbage_is_false(
    signer: SendGridWebhookSigner, key: Any, payload: Any, signature: Any, timestamp: Any
) -> None:
    key = signer.public_key if key == "KEY" else key
    signature = signer.sign(BODY, NOW) if signature == "SIG" else signature
    assert verify_sendgrid(key, payload, signature, timestamp, now=NOW) is False


@settings(max_examples=60, deadline=None)
@given(key=st.text(max_size=120), payload=st.binary(max_size=64), signature=st.text(max_size=100), ts=st.text())
def test_sendgrid_never_raises(key: str, payload: bytes, signature: str, ts: str) -> None:
    assert verify_sendgrid(key, payload, signature, ts, now=NOW) is False


@settings(max_examples=60, deadline=None)
@given(url=st.text(max_size=80), params=st.dictionaries(st.text(max_size=8), st.text(max_size=8)), sig=st.text())
def test_twilio_never_raises(url: str, params: dict[str, str], sig: str) -> None:
    assert isinstance(verify_twilio(TOKEN, url, params, sig), bool)
