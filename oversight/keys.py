"""Issuing and revoking agents' API keys, audited (who, when, from where)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from oversight import audit
from oversight.models import Agent, ApiKey


def issue(agent: Agent, *, by: str, label: str = "") -> tuple[ApiKey, str]:
    with transaction.atomic():
        key, raw = agent.issue_key(label=label)
        audit.key_created(key, by=by)
    return key, raw


def revoke(keys, *, by: str) -> int:
    """Revoke the still-active keys among `keys` (a queryset); one audit event per key revoked."""
    now = timezone.now()
    revoked = 0
    with transaction.atomic():
        for key in keys.filter(revoked_at__isnull=True).select_related("agent").order_by("id"):
            # Claim each key: two revokers at once audit each key once.
            if ApiKey.objects.filter(id=key.id, revoked_at__isnull=True).update(revoked_at=now):
                audit.keys_revoked(key.agent.name, [key.prefix], by=by)
                revoked += 1
    return revoked
