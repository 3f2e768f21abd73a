"""Notifications to people: a policy's `notify` targets hear of its requests.

Targets are e-mail addresses (sent with Django's mail backend), generic http(s)
webhooks (a JSON POST signed `X-Oversight-Signature: sha256=<HMAC-SHA256 of the body
keyed with OVERSIGHT_WEBHOOK_SECRET>`, with `X-Oversight-Delivery`), and Apprise URLs
whose scheme is listed in OVERSIGHT_NOTIFY_SCHEMES. Events: a new critical request
(`created`), escalation (`escalated`, also to the policy's escalation contacts), a
reminder every `remind_every_seconds` while pending (`reminder`), and the decision
(`decided`). Each is a row of the delivery outbox (oversight/deliveries.py), keyed
`notify:<request>:<event>:<n>:<target>` so it is sent once even with two schedulers.

URL targets may carry credentials (tokens in the path, a password): they are stored
sealed (Fernet, keyed from SECRET_KEY) and shown masked (`mask`) everywhere.
Messages are plain text; the agent's words are escaped for the service they go to.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
import smtplib
from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.utils import timezone

from oversight import deliveries, netsafe
from oversight.models import Delivery, OversightRequest, Status
from oversight.serializers import iso, request_dict

log = logging.getLogger(__name__)

SEALED = "sealed:"
# Schemes that never leave the machine or read local files: never accepted.
LOCAL_SCHEMES = {"file", "windows", "macosx", "dbus", "kde", "qt", "glib", "gnome", "syslog", "rsyslog", "dapnet"}
# Apprise's generic posters: accepted only when OVERSIGHT_NOTIFY_SCHEMES lists them.
GENERIC_SCHEMES = {"json", "jsons", "xml", "xmls", "form", "forms"}
EVENTS = ("created", "escalated", "reminder", "decided")
MONITORING_EVENTS = ("alert", "leak")
MAX_TARGETS = 20


class InvalidTarget(ValueError):
    pass


# --- Sealing and masking ----------------------------------------------------------------


def _fernet():
    from cryptography.fernet import Fernet

    key = hashlib.sha256(b"oversight-notify-targets:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(target: str) -> str:
    if "@" in target and "://" not in target:
        return target  # an e-mail address carries no credentials
    return SEALED + _fernet().encrypt(target.encode()).decode()


def unseal(stored: str) -> str:
    if not stored.startswith(SEALED):
        return stored
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(stored[len(SEALED):].encode()).decode()
    except InvalidToken:
        raise InvalidTarget("the target cannot be unsealed (SECRET_KEY changed?)") from None


def mask(stored_or_plain: str) -> str:
    """What a page, the policy JSON or the audit shows: scheme and host, no credentials."""
    try:
        target = unseal(stored_or_plain)
    except InvalidTarget:
        return "(sealed)"
    if "://" not in target:
        return target
    try:
        parts = urlsplit(target)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid)"
    secret = parts.username or parts.password or parts.path.strip("/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}{port}{'/***' if secret else '/'}"


@functools.lru_cache(maxsize=4096)
def target_digest(stored: str) -> str:
    """A short stable name of a target for delivery keys (the same whatever its sealing)."""
    return hashlib.sha256(unseal(stored).encode()).hexdigest()[:16]


# --- Parsing (the /policies/ editor and `manage.py policy` use this) ---------------------


def parse_target(raw: str) -> str:
    """Validate one target; returns it plain (seal before storing). Raises InvalidTarget."""
    target = (raw or "").strip()
    if not target or len(target) > 2000:
        raise InvalidTarget("a target is 1–2000 characters")
    if "://" not in target:
        try:
            validate_email(target.removeprefix("mailto:"))
        except ValidationError:
            raise InvalidTarget(f"{target!r} is neither an e-mail address nor a URL") from None
        return target.removeprefix("mailto:")
    scheme = target.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        try:
            netsafe.check_url(target)
        except netsafe.Refused as exc:
            raise InvalidTarget(f"invalid webhook URL: {exc}") from None
        return target
    allowed = {s.strip().lower() for s in settings.OVERSIGHT_NOTIFY_SCHEMES}
    if scheme in LOCAL_SCHEMES or scheme not in allowed:
        raise InvalidTarget(f"the scheme {scheme!r} is not accepted (OVERSIGHT_NOTIFY_SCHEMES)")
    if scheme == "mailto":
        return target
    try:
        host = urlsplit(target).hostname
    except ValueError:
        host = None
    if not host:
        raise InvalidTarget("invalid notification URL")
    if scheme in GENERIC_SCHEMES:
        try:
            netsafe.ascii_host(host)
        except netsafe.Refused as exc:
            raise InvalidTarget(f"invalid notification URL: {exc}") from None
    return target


def parse_notify(value) -> list[str]:
    """A policy's `notify` value (a list, or a comma/newline separated string) as it is
    stored: validated, de-duplicated, URL targets sealed. Raises InvalidTarget.
    Already-sealed entries (an unchanged editor form) are kept as they are."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [v for v in re.split(r"[\n,]+", value) if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidTarget("notify is a list of targets")
    if len(value) > MAX_TARGETS:
        raise InvalidTarget(f"at most {MAX_TARGETS} targets")
    stored, seen = [], set()
    for raw in value:
        raw = raw.strip()
        plain = unseal(raw) if raw.startswith(SEALED) else parse_target(raw)
        if plain in seen:
            continue
        seen.add(plain)
        stored.append(raw if raw.startswith(SEALED) else seal(plain))
    return stored


def parse_remind_every(value) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise InvalidTarget("remind_every_seconds is a whole number of seconds") from None
    if isinstance(value, bool) or not 60 <= seconds <= 86400 * 7:
        raise InvalidTarget("remind_every_seconds is between 60 and 604800 (or empty: off)")
    return seconds


# --- Scheduling (inside the causing transaction) ------------------------------------------


def schedule_for_request(req: OversightRequest, event: str, *, n: int = 0, extra: list[str] = (),
                         now: datetime | None = None) -> int:
    """Outbox rows for `event` of `req` to its policy's targets (plus `extra` plain
    addresses); returns how many this call wrote."""
    keyed: dict[str, str] = {}
    for stored in list(req.policy.notify or []) + [seal(t) for t in extra]:
        try:
            digest = target_digest(stored)
        except InvalidTarget:
            digest = hashlib.sha256(stored.encode()).hexdigest()[:16]
        keyed.setdefault(f"notify:{req.id}:{event}:{n}:{digest}", stored)
    if not keyed:  # no targets: nothing to look up (every decision of a silent policy comes here)
        return 0
    # Skip the keys already written (the sweep asks every interval); the unique key
    # still settles a race between two schedulers.
    for key in Delivery.objects.filter(key__in=list(keyed)).values_list("key", flat=True):
        keyed.pop(key, None)
    return sum(
        deliveries.schedule(key, Delivery.Kind.NOTIFICATION, stored, request=req, event=event,
                            payload={"n": n}, now=now)
        for key, stored in keyed.items()
    )


def schedule_reminders(*, now: datetime | None = None, batch: int = 500) -> int:
    """The beat's part: one reminder per `remind_every_seconds` a request is pending.
    The delivery key holds the reminder's number, so two schedulers write it once."""
    now = now or timezone.now()
    pending = (
        OversightRequest.objects.filter(status=Status.PENDING, policy__remind_every_seconds__isnull=False)
        .exclude(policy__notify=[])
        .select_related("policy", "agent")
        .order_by("created_at")[:batch]
    )
    written = 0
    for req in pending:
        n = int((now - req.created_at).total_seconds() // req.policy.remind_every_seconds)
        if n >= 1:
            written += schedule_for_request(req, "reminder", n=n, now=now)
    return written


def schedule_monitoring(event: str, ref: str, subject: str, text: str, *, now: datetime | None = None) -> int:
    """With OVERSIGHT_NOTIFY_MONITORING on: a critical memory alert (`alert`) or a leak
    suspect (`leak`) to the default policy's targets, once per `ref`."""
    if not settings.OVERSIGHT_NOTIFY_MONITORING:
        return 0
    from oversight.models import Policy

    policy = Policy.objects.filter(operation=Policy.DEFAULT_OPERATION, is_current=True).first()
    written = 0
    for stored in (policy.notify if policy else None) or []:
        try:
            digest = target_digest(stored)
        except InvalidTarget:
            continue
        written += deliveries.schedule(
            f"notify:{event}:{ref}:0:{digest}", Delivery.Kind.NOTIFICATION, stored, event=event,
            payload={"subject": subject, "text": text}, now=now,
        )
    return written


# --- Messages -----------------------------------------------------------------------------

TITLES = {
    "created": "Waiting for a decision",
    "escalated": "Escalated: still waiting for a decision",
    "reminder": "Reminder: still waiting for a decision",
    "decided": "Decided",
}


def escape(text: str, scheme: str) -> str:
    """The agent's words as inert plain text for the service they go to."""
    text = " ".join(str(text).split()) if scheme != "mailto" else str(text)
    if scheme in ("slack", "mattermost"):
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if scheme in ("slack", "discord", "msteams", "mattermost", "ntfy", "json", "jsons"):
        # Mentions (@everyone, @here, @channel) lose their power with a zero-width joiner.
        text = re.sub(r"@(?=\w)", "@\u2060", text)
    if scheme in ("discord", "msteams", "slack", "mattermost"):
        text = re.sub(r"([\\`*_~|\[\]()>#])", r"\\\1", text)
    return text


def message(req: OversightRequest, event: str, scheme: str = "mailto") -> tuple[str, str]:
    """(subject, plain-text body)."""
    e = lambda value: escape(value, scheme)  # noqa: E731
    fired = ", ".join(
        f"{t['rule']} {t['value']} > {t['threshold']}" if t["rule"] != "always" else "always"
        for t in (req.triggers or []) if t.get("fired")
    )
    subject = f"[Oversight] {TITLES.get(event, event)}: {e(req.operation)} by {e(req.agent.name)}"
    lines = [
        f"Agent:     {e(req.agent.name)}",
        f"Operation: {e(req.operation)}",
        f"Summary:   {e(req.summary)}",
        f"Rules:     {e(fired) or '-'}",
        f"Deadline:  {iso(req.deadline) or '-'} (then: {req.timeout_action})",
    ]
    if req.status != Status.PENDING:
        lines.append(f"Decision:  {req.status} ({req.decision_source}{', ' + e(req.decided_by) if req.decided_by else ''})")
    lines.append("")
    lines.append(f"Request: {settings.SITE_URL}/requests/{req.id}/")
    return " ".join(subject.split())[:200], "\n".join(lines) + "\n"


# --- Sending (the outbox's sender for kind `notification`) ------------------------------


def send(delivery: Delivery) -> int | None:
    req = delivery.request
    if delivery.event in MONITORING_EVENTS:
        return _send_monitoring(delivery)
    if req is None:
        raise netsafe.Refused("the request no longer exists")
    if delivery.event in ("created", "escalated", "reminder") and req.status != Status.PENDING:
        raise netsafe.Skipped("the request is decided")
    try:
        target = unseal(delivery.target)
    except InvalidTarget:
        raise netsafe.Refused("the target cannot be unsealed") from None
    if "://" not in target:
        return _send_mail(target, req, delivery.event)
    scheme = target.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        return _send_webhook(target, req, delivery)
    return _send_apprise(target, scheme, req, delivery.event)


def _send_monitoring(delivery: Delivery) -> int | None:
    """A monitoring notice: its text was written when it was scheduled (host and process
    names come from agents' samples, so they are escaped per service here)."""
    target = unseal(delivery.target)
    subject = delivery.payload.get("subject", "")
    text = delivery.payload.get("text", "") + f"\nMonitoring: {settings.SITE_URL}/monitoring/\n"
    if "://" not in target:
        return _mail(target, subject, text)
    scheme = target.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        body = json.dumps({"event": delivery.event, "subject": subject, "text": text,
                           "url": f"{settings.SITE_URL}/monitoring/"}, separators=(",", ":")).encode()
        return deliveries.post_json(
            target, body, delivery, signature=deliveries.sign(body, settings.OVERSIGHT_WEBHOOK_SECRET or ""),
            user_agent="Oversight-Notify/1",
        )
    return _apprise(target, scheme, escape(subject, scheme), "\n".join(escape(line, scheme) for line in text.splitlines()))


def _send_mail(address: str, req: OversightRequest, event: str) -> None:
    subject, body = message(req, event, "mailto")
    if event in ("created", "escalated", "reminder"):
        body += decision_links_text(req, address)
    return _mail(address, subject, body)


def decision_links_text(req: OversightRequest, address: str) -> str:
    """One-tap links for the person behind `address`, where links are on and they may
    decide (spec §9.7): only people get them, and each person their own pair."""
    from oversight.links import links_for, people_for_addresses

    lines = []
    for person in people_for_addresses([address]):
        urls = links_for(req, person)
        if urls:
            lines += ["", f"For {person.get_username()} only — nothing is decided until you press the button on the page:",
                      f"Approve: {urls['approve']}", f"Reject:  {urls['reject']}"]
    return "\n".join(lines) + ("\n" if lines else "")


def _mail(address: str, subject: str, body: str) -> None:
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address])
    except (smtplib.SMTPException, OSError):
        raise netsafe.AttemptFailed("mail server unavailable") from None


def _send_webhook(url: str, req: OversightRequest, delivery: Delivery) -> int:
    subject, text = message(req, delivery.event, "json")
    body = json.dumps(
        {"event": delivery.event, "n": delivery.payload.get("n", 0), "subject": subject, "text": text,
         "url": f"{settings.SITE_URL}/requests/{req.id}/", "request": request_dict(req)},
        separators=(",", ":"),
    ).encode()
    return deliveries.post_json(
        url, body, delivery, signature=deliveries.sign(body, settings.OVERSIGHT_WEBHOOK_SECRET or ""),
        user_agent="Oversight-Notify/1",
    )


def _send_apprise(url: str, scheme: str, req: OversightRequest, event: str) -> None:
    subject, body = message(req, event, scheme)
    return _apprise(url, scheme, subject, body)


def _apprise(url: str, scheme: str, subject: str, body: str) -> None:
    allowed = {s.strip().lower() for s in settings.OVERSIGHT_NOTIFY_SCHEMES}
    if scheme in LOCAL_SCHEMES or scheme not in allowed:
        raise netsafe.Refused(f"the scheme {scheme} is not accepted")
    try:
        import apprise
    except ImportError:
        raise netsafe.Refused("Apprise is not installed") from None
    # One service, sent from this thread (no thread pool), so that every connection Apprise
    # makes for it — its service's host, a redirect, an SMTP server — is checked against
    # the address rules where it is made. (The URL's host may be no host at all:
    # slack://A/B/C names tokens, and Apprise connects to Slack's.)
    notifier = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
    if not notifier.add(url):
        raise netsafe.Refused("invalid notification URL")
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    with netsafe.guarded_connections(host):
        sent = notifier.notify(title=subject, body=body, body_format=apprise.NotifyFormat.TEXT)
    if not sent:
        raise netsafe.AttemptFailed("the notification service did not accept it")
    return None
