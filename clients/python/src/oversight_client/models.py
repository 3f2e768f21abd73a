"""Typed views of the server's resources (spec §4, "The request resource")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FINAL_STATUSES = frozenset({"approved", "rejected", "cancelled"})


def parse_time(value: str | None) -> datetime | None:
    # The server sends ISO-8601 UTC with milliseconds and a trailing "Z", which
    # fromisoformat understands from Python 3.11 on.
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Decision:
    outcome: str  # approved | rejected | cancelled
    source: str  # policy | operator | timeout | agent
    by: str | None
    reason: str
    decided_at: datetime | None
    # The operator's note to the agent (approvals and rejects alike); "" when none.
    note: str = ""
    # Set only when an operator approved with changes: the payload to run instead.
    payload: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(
            outcome=data.get("outcome", ""),
            source=data.get("source", ""),
            by=data.get("by"),
            reason=data.get("reason") or "",
            decided_at=parse_time(data.get("decided_at")),
            note=data.get("note") or "",
            payload=data.get("payload"),
        )


@dataclass(frozen=True)
class Trigger:
    """One policy rule as evaluated when the request was submitted."""

    rule: str
    threshold: float | None
    value: float | None
    fired: bool
    source: str | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        return cls(
            rule=data.get("rule", ""),
            threshold=data.get("threshold"),
            value=data.get("value"),
            fired=bool(data.get("fired")),
            source=data.get("source"),
        )


@dataclass(frozen=True)
class OversightRequest:
    """One oversight request as the server last described it.

    ``payload`` is what the agent may run: the payload an operator approved with
    changes when there is one, else the payload as submitted (``submitted_payload``).
    Act on ``payload``, never on your own copy of the arguments.
    """

    id: str
    agent: str
    operation: str
    summary: str
    payload: dict[str, Any]
    metrics: dict[str, Any]
    status: str
    critical: bool
    triggers: tuple[Trigger, ...]
    policy: dict[str, Any]
    created_at: datetime | None
    deadline: datetime | None
    timeout_action: str
    decision: Decision | None
    poll_after_ms: int
    # The resource as received, for fields a newer server adds.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __hash__(self) -> int:
        # The generated hash would fail on the dict fields; a request is its id.
        return hash(self.id)

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def reason(self) -> str:
        return self.decision.reason if self.decision else ""

    @property
    def note(self) -> str:
        """The operator's note to the agent, with an approval or a reject ("" when none)."""
        return self.decision.note if self.decision else ""

    @property
    def submitted_payload(self) -> dict[str, Any]:
        return self.raw.get("payload") or {}

    @property
    def changed(self) -> bool:
        """Whether an operator approved with changes to the payload."""
        return self.decision is not None and self.decision.payload is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OversightRequest:
        decision = data.get("decision")
        approved_payload = decision.get("payload") if decision else None
        return cls(
            id=str(data["id"]),
            agent=data.get("agent", ""),
            operation=data.get("operation", ""),
            summary=data.get("summary", ""),
            payload=approved_payload if approved_payload is not None else data.get("payload") or {},
            metrics=data.get("metrics") or {},
            status=data.get("status", ""),
            critical=bool(data.get("critical")),
            triggers=tuple(Trigger.from_dict(t) for t in data.get("triggers") or ()),
            policy=data.get("policy") or {},
            created_at=parse_time(data.get("created_at")),
            deadline=parse_time(data.get("deadline")),
            timeout_action=data.get("timeout_action", ""),
            decision=Decision.from_dict(decision) if decision else None,
            poll_after_ms=int(data.get("poll_after_ms") or 1000),
            raw=data,
        )
