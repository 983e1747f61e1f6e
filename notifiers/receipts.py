"""Provider webhooks on the notifier's web port: delivery receipts and inbound SMS.

    POST /receipts/twilio/status    Twilio status callback (form), X-Twilio-Signature
    POST /receipts/twilio/inbound   Twilio inbound SMS (form): STOP / START → consent
    POST /receipts/sendgrid         SendGrid event webhook (JSON array), ECDSA signature + timestamp

Every request is verified before anything is read from it: Twilio's HMAC over
the public URL and the form fields (``TWILIO_AUTH_TOKEN``), SendGrid's ECDSA
signature over timestamp + raw body (``SENDGRID_WEBHOOK_PUBLIC_KEY``), with a
maximum age against replays. A request that is unsigned, forged, or arrives
while the secret is not configured gets 403 and is counted
(``waterwatch_webhook_requests_total{outcome="forged"}``). A verified receipt
becomes a ``receipt`` job on the recipient's partition, so only the agent that
owns the delivery record changes it (DESIGN.md principle 2). STOP / START
become records on the compacted consent topic, which every instance reads.

The URL Twilio signed is the public one (``WATERWATCH_PUBLIC_URL`` + path and
query), not what a proxy in front of us forwards.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from faust.web import View

from notifiers.consent import ConsentRecord, consent_key
from notifiers.signatures import verify_sendgrid, verify_twilio

if TYPE_CHECKING:
    from notifiers.app import Notifier

log = logging.getLogger("waterwatch.receipts")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
CONSENT_STOP_EVENTS = frozenset({"unsubscribe", "group_unsubscribe", "spamreport"})


def _public_url(n: Notifier, request: Any) -> str:
    base = n.settings.public_url.rstrip("/")
    if not base:
        return str(request.url)
    return base + request.path_qs


def install(app: Any, n: Notifier) -> None:
    """Add the webhook views to the notifier's Faust web server."""
    env = n.settings.env

    async def forged(web: View, provider: str, why: str) -> Any:
        n.metrics.webhook(provider, "forged")
        n.counters[f"webhook_forged_{provider}"] += 1
        log.warning("%s webhook refused (403): %s", provider, why)
        return web.text("forbidden\n", status=403)

    async def twilio_form(web: View, request: Any) -> tuple[dict[str, str], Any | None]:
        token = env.get("TWILIO_AUTH_TOKEN", "")
        sig = request.headers.get("X-Twilio-Signature", "")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not token:
            return form, await forged(web, "twilio", "TWILIO_AUTH_TOKEN is not set: cannot verify")
        if not sig or not verify_twilio(token, _public_url(n, request), form, sig):
            return form, await forged(web, "twilio", "missing or wrong X-Twilio-Signature")
        return form, None

    @app.page("/receipts/twilio/status")
    class TwilioStatus(View):
        async def post(self, request: Any) -> Any:
            form, refused = await twilio_form(self, request)
            if refused is not None:
                return refused
            did, recipient = request.query.get("d"), request.query.get("r")
            status = form.get("MessageStatus") or form.get("SmsStatus") or ""
            if not did or not recipient or not status:
                n.metrics.webhook("twilio", "bad")
                return self.text("missing delivery id, recipient or status\n", status=400)
            await n.jobs_t.send(key=recipient.encode(), value=_receipt(did, status, form.get("ErrorCode")))
            n.metrics.webhook("twilio", "accepted")
            return self.text("ok\n")

    @app.page("/receipts/twilio/inbound")
    class TwilioInbound(View):
        async def post(self, request: Any) -> Any:
            form, refused = await twilio_form(self, request)
            if refused is not None:
                return refused
            sender, body = form.get("From", ""), form.get("Body", "")
            try:
                record = n.consent.book.record_inbound("sms", sender, body, time.time(), "sms_keyword")
            except ValueError:
                n.metrics.webhook("twilio", "bad")
                return self.text("From is not a phone number\n", status=400)
            if record is not None:
                await publish_consent(n, record)
            n.metrics.webhook("twilio", "accepted")
            return self.text(EMPTY_TWIML, content_type="application/xml")

    @app.page("/receipts/sendgrid")
    class SendGridEvents(View):
        async def post(self, request: Any) -> Any:
            key = env.get("SENDGRID_WEBHOOK_PUBLIC_KEY", "")
            body = await request.read()
            sig = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
            ts = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
            if not key:
                return await forged(self, "sendgrid", "SENDGRID_WEBHOOK_PUBLIC_KEY is not set: cannot verify")
            if not sig or not ts or not verify_sendgrid(key, body, sig, ts):
                return await forged(self, "sendgrid", "missing, wrong or stale signature")
            try:
                events = json.loads(body)
                if not isinstance(events, list):
                    raise ValueError("not a list")
            except ValueError:
                n.metrics.webhook("sendgrid", "bad")
                return self.text("body is not a JSON array of events\n", status=400)
            for ev in events:
                if not isinstance(ev, dict):
                    continue
                kind = str(ev.get("event", ""))
                did, recipient = ev.get("delivery_id"), ev.get("recipient_key")
                if did and recipient:
                    await n.jobs_t.send(key=str(recipient).encode(), value=_receipt(str(did), kind, ev.get("reason")))
                if kind in CONSENT_STOP_EVENTS and ev.get("email"):
                    try:
                        key = consent_key("email", str(ev["email"]))
                    except ValueError:
                        continue
                    record = ConsentRecord(key, "email", False, time.time(), f"sendgrid_{kind}")
                    n.consent.book.apply(record)
                    await publish_consent(n, record)
            n.metrics.webhook("sendgrid", "accepted")
            return self.text("ok\n")


def _receipt(did: str, status: str, error: Any) -> bytes:
    return json.dumps({"op": "receipt", "id": did, "status": status,
                       "error": None if error in (None, "") else str(error)[:100]}).encode()  # fmt: skip


async def publish_consent(n: Notifier, record: ConsentRecord) -> None:
    """One consent record on the compacted consent topic (key = hash of the address: no personal data)."""
    await n.consent_t.send(key=record.record_key.encode(), value=record.to_json().encode())
    log.info("consent %s on %s for %s… (%s)", "given" if record.allowed else "withdrawn", record.channel,
             record.key[:8], record.source)  # fmt: skip
