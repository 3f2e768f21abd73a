"""Policy lookup and evaluation: is a request critical, and why.

A request is critical when ANY rule of its policy fires; comparisons are strict
(`value > threshold`). The result is a snapshot that the request keeps for good:
later policy edits never change what a request recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from oversight.models import Policy

# The order rules are evaluated and listed in; `fired_rules` joins fired ones in it.
RULES = ("memory_pressure", "delegation_depth", "circular_refs")


@dataclass(frozen=True)
class Evaluation:
    critical: bool
    trusted_bypass: bool
    triggers: list[dict]

    @property
    def fired_rules(self) -> str:
        return "+".join(t["rule"] for t in self.triggers if t["fired"])


def current_policy(operation: str) -> Policy:
    """The current version for `operation`, falling back to the default policy `*`."""
    candidates = {p.operation: p for p in Policy.objects.filter(operation__in=[operation, Policy.DEFAULT_OPERATION], is_current=True)}
    policy = candidates.get(operation) or candidates.get(Policy.DEFAULT_OPERATION)
    if policy is None:
        # The default policy is seeded by a migration; a database without it is
        # repaired here rather than failing every submission.
        policy = ensure_default_policy()
    return policy


def ensure_default_policy() -> Policy:
    policy, _ = Policy.objects.get_or_create(
        operation=Policy.DEFAULT_OPERATION, is_current=True, defaults={"version": 1, "created_by": "system"}
    )
    return policy


def evaluate(
    policy: Policy,
    *,
    agent_name: str,
    metrics: dict,
    host_pressure: float | None = None,
) -> Evaluation:
    """Evaluate `metrics` against `policy`.

    `host_pressure` is the agent's host's recent pressure from monitoring, used only
    when the request itself carries no `memory_pressure`.
    """
    triggers: list[dict] = []
    for rule in RULES:
        threshold = getattr(policy, rule)
        if threshold is None:
            continue
        value = metrics.get(rule)
        source = "agent"
        if value is None and rule == "memory_pressure" and host_pressure is not None:
            value, source = round(host_pressure, 2), "monitoring"
        triggers.append(
            {
                "rule": rule,
                "threshold": threshold,
                "value": value,
                "fired": value is not None and value > threshold,
                "source": source if value is not None else None,
            }
        )
    if policy.always:
        triggers.append({"rule": "always", "threshold": None, "value": None, "fired": True, "source": "policy"})

    fired = any(t["fired"] for t in triggers)
    trusted = agent_name in (policy.trusted_agents or [])
    return Evaluation(critical=fired and not trusted, trusted_bypass=fired and trusted, triggers=triggers)


def timeline(policy: Policy, now: datetime, timeout_seconds: int | None):
    """(deadline, escalate_at) for a request submitted at `now`."""
    seconds = min(timeout_seconds or policy.timeout_seconds, policy.timeout_seconds)
    deadline = now + timedelta(seconds=seconds)
    escalate_at = None
    if policy.escalate_after is not None and 0 < policy.escalate_after < 1:
        escalate_at = now + timedelta(seconds=seconds * policy.escalate_after)
    return deadline, escalate_at
