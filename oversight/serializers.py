"""The one place a request becomes the JSON resource of the contract."""

from __future__ import annotations

from datetime import UTC, datetime

from oversight.models import OversightRequest, Status

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
        "receipt": req.receipt or None,
    }


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
        "decision": decision_dict(req),
        "poll_after_ms": POLL_AFTER_MS if req.status == Status.PENDING else None,
    }
