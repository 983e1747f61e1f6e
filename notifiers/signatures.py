"""Signatures of provider webhooks: Twilio status callbacks and SendGrid event webhooks.

* **Twilio** signs ``url + every POST parameter name and value, sorted by name`` with
  HMAC-SHA1 keyed by the account's auth token, base64, in ``X-Twilio-Signature``
  (checked with the SDK's :class:`~twilio.request_validator.RequestValidator`, which
  also accepts the URL with or without the default port).
* **SendGrid** signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256; the
  signature (base64 DER) is in ``X-Twilio-Email-Event-Webhook-Signature``, the
  timestamp (Unix seconds) in ``X-Twilio-Email-Event-Webhook-Timestamp``, and the
  public key is shown in the SendGrid console as base64 DER.  Verified with the SDK's
  :class:`~sendgrid.helpers.eventwebhook.EventWebhook` (``cryptography`` underneath);
  a timestamp more than ``max_age`` seconds away from now is refused (replay).

The ``verify_*`` functions return ``False`` for any malformed input and never raise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
DEFAULT_MAX_AGE = 300.0
"""Seconds a SendGrid event batch may be old (or ahead of our clock) and still be accepted."""


def sign_twilio(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for a form POST of ``params`` to ``url`` (tests, fakes)."""
    signature: str = RequestValidator(auth_token).compute_signature(url, dict(params))
    return signature


def verify_twilio(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None, *, algorithm: str | None = None
) -> bool:
    """Whether ``signature`` is Twilio's for this URL (as Twilio requested it, query included) and form."""
    try:
        if not (auth_token and url and signature) or not isinstance(signature, str):
            return False
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            return False
        return bool(RequestValidator(auth_token).validate(url, dict(params), signature, algorithm))
    except Exception:
        return False


def verify_sendgrid(
    public_key_b64_or_pem: str,
    payload: bytes,
    signature: str | None,
    timestamp: str | int | None,
    *,
    now: float | None = None,
    max_age: float = DEFAULT_MAX_AGE,
) -> bool:
    """Whether ``signature`` signs ``timestamp + payload`` under the key, and the timestamp is fresh."""
    try:
        if not (signature and isinstance(signature, str) and isinstance(payload, bytes)):
            return False
        stamp = str(timestamp) if isinstance(timestamp, int | str) and not isinstance(timestamp, bool) else ""
        if not stamp.isascii() or not stamp.isdigit():
            return False
        current = time.time() if now is None else now
        if abs(current - int(stamp)) > max_age:
            return False
        key = _public_key(public_key_b64_or_pem.strip())
        body = payload.decode("utf-8")  # SendGrid posts JSON: a body that is not UTF-8 is not theirs
        return bool(EventWebhook().verify_signature(body, signature, stamp, public_key=key))
    except Exception:
        return False


@lru_cache(maxsize=8)
def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from SendGrid's base64 DER (as the console shows it) or from PEM."""
    pem = text.startswith("-----BEGIN")
    key = load_pem_public_key(text.encode("ascii")) if pem else EventWebhook(text).public_key
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not a P-256 public key")
    return key
