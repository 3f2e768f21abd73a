"""Escalation contacts: when a pending request reaches its policy's escalation time,
the policy's escalation contacts get an e-mail with a link to the request (sent as
`escalated` notifications through the delivery outbox; see oversight/notifications.py).

A contact is an e-mail address, or the username of a person whose account has one.
Mail goes through Django's e-mail backend (console by default; see EMAIL_BACKEND).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model


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
