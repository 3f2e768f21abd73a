"""The reject cooldown and standing grants match on the RFC 8785 digest of the payload
(the receipt's `payload_sha256`) instead of a sorted-keys JSON digest: recompute the
stored digests that are still looked up, so rejects and grants made before the upgrade
keep holding."""

import hashlib
from datetime import timedelta

from django.db import migrations
from django.utils import timezone

from oversight.receipts import canonical_json


def _digest(payload) -> str | None:
    try:
        return hashlib.sha256(canonical_json(payload if payload is not None else {})).hexdigest()
    except (TypeError, ValueError):
        return None  # not canonicalisable (e.g. an integer beyond ±2^53): matches nothing


def recompute(apps, schema_editor):
    OversightRequest = apps.get_model("oversight", "OversightRequest")
    StandingGrant = apps.get_model("oversight", "StandingGrant")
    # Only rejects a cooldown can still reach (it is at most 7 days).
    since = timezone.now() - timedelta(days=7, hours=1)
    rejected = OversightRequest.objects.filter(status="rejected", decision_source="operator", decided_at__gt=since)
    for pk, payload in rejected.values_list("pk", "payload").iterator():
        digest = _digest(payload)
        if digest is not None:
            OversightRequest.objects.filter(pk=pk).update(payload_digest=digest)
    # A grant for one payload is for the payload its operator approved (the decision's,
    # after an approval with changes); one that cannot be canonicalised matches nothing.
    grants = StandingGrant.objects.exclude(payload_digest="").filter(revoked_at__isnull=True)
    for grant in grants.select_related("request").iterator():
        approved = grant.request.decision_payload
        digest = _digest(approved if approved is not None else grant.request.payload)
        StandingGrant.objects.filter(pk=grant.pk).update(payload_digest=digest or "!")


class Migration(migrations.Migration):
    dependencies = [("oversight", "0017_audit_kinds_all")]

    operations = [migrations.RunPython(recompute, migrations.RunPython.noop)]
