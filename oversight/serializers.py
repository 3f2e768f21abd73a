"""The one place a request becomes the JSON resource of the contract."""

from __future__ import annotations

from datetime import UTC, datetime

from oversight.models import OversightRequest, StandingGrant, Status

POLL_AFTER_MS = 1000


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 UTC with milliseconds: 2026-11-25T10:00:00.123Z."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decision_dict(req: OversightRequest) -> dict | None:
    if req.status == Status.PENDING:
        return None
    return {
        "outcome": req.status,
        "source": req.decision_source,
        "by": req.decided_by or None,
        "reason": req.decision_reason,
        "decided_at": iso(req.decided_at),
        "note": req.decision_note,
        "receipt": req.receipt or None,
    } | ({"payload": req.decision_payload} if req.decision_payload is not None else {})


def approvals_list(req: OversightRequest) -> list[dict]:
    """[{"by", "at"}] of the operators who approved; a request approved by one operator
    before approvals were recorded shows its decider."""
    if req.approvals:
        return [{"by": a["by"], "at": a["at"]} for a in req.approvals]
    if req.status == Status.APPROVED and req.decision_source == "operator" and req.decided_by:
        return [{"by": req.decided_by, "at": iso(req.decided_at)}]
    return []


def payload_changed_by(req: OversightRequest) -> str | None:
    """Who changed the payload that stands (the decision's payload), or None while it
    stands as submitted. Under a quorum the approvals still needed are for that payload,
    which only the request's page shows: the queue offers no Approve for it, and a bulk
    approval is refused."""
    if req.decision_payload is None:
        return None
    # An approval with changes discards the approvals given before it: it leads the list
    # (a request decided before approvals were recorded names its decider).
    return req.approvals[0]["by"] if req.approvals else req.decided_by


def request_dict(req: OversightRequest) -> dict:
    """The request resource. `req.agent` should be loaded (select_related)."""
    return {
        "id": str(req.id),
        "agent": req.agent.name,
        "operation": req.operation,
        "summary": req.summary,
        "payload": req.payload,
        "payload_sha256": req.payload_sha256 or None,
        "metrics": req.metrics,
        "status": req.status,
        "critical": req.critical,
        "trusted_bypass": req.trusted_bypass,
        "triggers": req.triggers,
        "policy": {"operation": req.policy_operation, "version": req.policy_version},
        "created_at": iso(req.created_at),
        "deadline": iso(req.deadline),
        "escalated_at": iso(req.escalated_at),
        "timeout_action": req.timeout_action,
        "required_approvals": req.required_approvals,
        "approver_groups": req.approver_groups,
        "approvals": approvals_list(req),
        "payload_changed_by": payload_changed_by(req),
        "decision": decision_dict(req),
        "poll_after_ms": POLL_AFTER_MS if req.status == Status.PENDING else None,
    }


def grant_dict(grant: StandingGrant) -> dict:
    return {
        "id": grant.pk,
        "agent": grant.agent.name,
        "operation": grant.operation,
        "policy": {"operation": grant.policy.operation, "version": grant.policy.version},
        "rules": grant.rules,
        "any_payload": not grant.payload_digest,
        "by": grant.created_by,
        "created_at": iso(grant.created_at),
        "expires_at": iso(grant.expires_at),
        "uses_left": grant.uses_left,
        "max_uses": grant.max_uses,
        "request": str(grant.request_id),
        "revoked_at": iso(grant.revoked_at),
        "revoked_by": grant.revoked_by or None,
    }
