"""Escalation notices: when a pending request reaches its policy's escalation time,
the policy's escalation contacts get an e-mail with a link to the request.

A contact is an e-mail address, or the username of a person whose account has one.
Mail goes through Django's e-mail backend (console by default; see EMAIL_BACKEND).
"""

from __future__ import annotations

import logging
import smtplib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from oversight.models import AuditEvent, OversightRequest, Status
from oversight.serializers import iso

log = logging.getLogger(__name__)


class MailUnavailable(Exception):
    """The mail server could not be reached; worth trying again."""


def recipients(contacts: list[str]) -> tuple[list[str], list[str]]:
    """(addresses, contacts that name no address)."""
    addresses, unknown = [], []
    names = [c for c in contacts if "@" not in c]
    emails = dict(
        get_user_model().objects.filter(username__in=names, is_active=True).exclude(email="").values_list("username", "email")
    )
    for contact in contacts:
        if "@" in contact:
            addresses.append(contact)
        elif contact in emails:
            addresses.append(emails[contact])
        else:
            unknown.append(contact)
    return sorted(set(addresses)), unknown


def handle_one_escalation_notice(request_id: str) -> int:
    """Send the notice for one escalated request; returns how many addresses it went to.
    Nothing is sent for a request decided in the meantime."""
    req = OversightRequest.objects.select_related("agent", "policy").filter(id=request_id).first()
    if req is None or req.status != Status.PENDING or req.escalated_at is None:
        return 0
    addresses, unknown = recipients(req.policy.escalation_contacts or [])
    if addresses:
        try:
            send_mail(_subject(req), _body(req), settings.DEFAULT_FROM_EMAIL, addresses)
        except (smtplib.SMTPException, OSError) as exc:
            log.warning("Escalation notice for %s not sent: %s", req.id, exc)
            raise MailUnavailable(str(exc)) from exc
    AuditEvent.objects.create(
        request=req, kind=AuditEvent.Kind.ESCALATION_NOTIFIED, actor="escalation",
        data={"recipients": addresses, "unknown_contacts": unknown},
    )
    return len(addresses)


def _subject(req: OversightRequest) -> str:
    # Header injection is impossible (Django refuses newlines), but keep it one tidy line.
    summary = " ".join(req.summary.split())[:80]
    return f"[Oversight] Waiting for a decision: {req.operation} by {req.agent.name} — {summary}"


def _body(req: OversightRequest) -> str:
    fired = ", ".join(
        f"{t['rule']} {t['value']} > {t['threshold']}" if t["rule"] != "always" else "always"
        for t in req.triggers if t.get("fired")
    )
    return (
        f"A request has waited half of its time without a decision.\n\n"
        f"Agent:     {req.agent.name}\n"
        f"Operation: {req.operation}\n"
        f"Summary:   {req.summary}\n"
        f"Rules:     {fired or '-'}\n"
        f"Deadline:  {iso(req.deadline)} (then: {req.timeout_action})\n\n"
        f"Decide here: {settings.SITE_URL}/requests/{req.id}/\n"
    )
