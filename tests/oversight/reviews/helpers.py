"""Hand-built requests for the report and advice tests: rows exactly as the actions layer
leaves them, written directly so a test can place them at any time and in any state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from oversight.models import Agent, OversightRequest, Policy, Source, Status
from oversight.policy import RULES, ensure_default_policy

DEFAULT_THRESHOLDS = {"memory_pressure": 80.0, "delegation_depth": 4, "circular_refs": 3}


def at(text: str) -> datetime:
    """'2026-11-01 10:00' (or with seconds) as a UTC datetime."""
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def triggers_for(metrics: dict, thresholds: dict | None = None, always: bool = False) -> list[dict]:
    thresholds = DEFAULT_THRESHOLDS | (thresholds or {})
    out = []
    for rule in RULES:
        value = metrics.get(rule)
        out.append({"rule": rule, "threshold": thresholds[rule], "value": value,
                    "fired": value is not None and value > thresholds[rule], "source": "agent" if value is not None else None})
    if always:
        out.append({"rule": "always", "threshold": None, "value": None, "fired": True, "source": "policy"})
    return out


def make_request(
    agent: Agent,
    created_at: datetime,
    *,
    operation: str = "web_scrape",
    metrics: dict | None = None,
    outcome: str | None = None,
    source: str | None = None,
    after: float = 60.0,
    by: str = "",
    reason: str = "",
    trusted: bool = False,
    escalated_after: float | None = None,
    thresholds: dict | None = None,
    always: bool = False,
) -> OversightRequest:
    """A request evaluated on `metrics`; not critical → approved by the policy at once.

    A critical one is left pending unless `outcome` and `source` say how it ended,
    `after` seconds after submission.
    """
    policy = Policy.objects.filter(operation=operation, is_current=True).first() or ensure_default_policy()
    triggers = triggers_for(metrics or {}, thresholds, always)
    fired = "+".join(t["rule"] for t in triggers if t["fired"])
    critical = bool(fired) and not trusted
    req = OversightRequest(
        agent=agent, operation=operation, summary="s", metrics=metrics or {}, triggers=triggers,
        fired_rules=fired, critical=critical, trusted_bypass=bool(fired) and trusted,
        policy=policy, policy_operation=policy.operation, policy_version=policy.version,
        created_at=created_at, timeout_action="approve",
    )
    if not critical:
        req.status, req.decision_source, req.decided_at = Status.APPROVED, Source.POLICY, created_at
    else:
        req.deadline = created_at + timedelta(seconds=300)
        if outcome:
            req.status, req.decision_source = outcome, source
            req.decided_at = created_at + timedelta(seconds=after)
            req.decided_by, req.decision_reason = by, reason
        if escalated_after is not None:
            req.escalated_at = created_at + timedelta(seconds=escalated_after)
    req.save(force_insert=True)
    return req
