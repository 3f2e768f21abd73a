"""Policy lookup and evaluation: is a request critical, and why.

A request is critical when ANY rule of its policy fires; comparisons are strict
(`value > threshold`). The result is a snapshot that the request keeps for good:
later policy edits never change what a request recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection

from oversight.models import MissingMetrics, Policy

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


# Every column of the current policies, read raw: no query compilation, no models.
CURRENT_ROWS_SQL = "SELECT {} FROM {} WHERE is_current = %s ORDER BY id".format(  # noqa: S608 - model metadata only
    ", ".join(connection.ops.quote_name(f.column) for f in Policy._meta.concrete_fields), Policy._meta.db_table
)

# (database, the current policies' raw rows, {operation: Policy}): the process's copy.
_current_copy: tuple[str, list, dict[str, Policy]] | None = None


def current_policy(operation: str, policies: dict[str, Policy] | None = None) -> Policy:
    """The current version for `operation`, falling back to the default policy `*`.

    `policies`: the current policies as `current_policies()` (or `policies_from_rows`)
    gave them; read now when not given."""
    if policies is None:
        policies = current_policies()
    policy = policies.get(operation) or policies.get(Policy.DEFAULT_OPERATION)
    if policy is None:
        # The default policy is seeded by a migration; a database without it is
        # repaired here rather than failing every submission.
        policy = ensure_default_policy()
    return policy


def current_policies() -> dict[str, Policy]:
    """The current policies by operation, from the process's copy while it is fresh.

    Every call reads the current policies' rows raw (one small query; there is one row
    per configured operation) and compares them, every column, with the rows the copy
    was built from: any edit anywhere (a new version, a setting changed in place, a
    deletion) is seen by the next call, and only then are model objects built again.
    The copy's objects are shared: callers must not change them."""
    with connection.cursor() as cursor:
        cursor.execute(CURRENT_ROWS_SQL, [True])
        return policies_from_rows(cursor.fetchall())


def policies_from_rows(fetched) -> dict[str, Policy]:
    """The current policies for the rows of CURRENT_ROWS_SQL just read (by the caller, in
    a statement of its own): the process's copy while the rows are equal to the ones it
    was built from, else objects built anew."""
    global _current_copy
    rows = [tuple(row) for row in fetched]
    database = f"{connection.alias}:{connection.settings_dict['NAME']}"
    copy = _current_copy
    if copy is not None and copy[0] == database and copy[1] == rows:
        return copy[2]
    # Objects at least as new as `rows`; a later edit differs from `rows` next call.
    policies = {p.operation: p for p in Policy.objects.filter(is_current=True)}
    _current_copy = (database, rows, policies)
    return policies


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

    `host_pressure` is the agent's host's recent pressure from monitoring: the rule
    judges the larger of it and the agent's own value, so an agent cannot understate
    its risk. With `missing_metrics: critical` a rule with no value fires.
    """
    triggers: list[dict] = []
    missing_fires = policy.missing_metrics == MissingMetrics.CRITICAL
    for rule in RULES:
        threshold = getattr(policy, rule)
        if threshold is None:
            continue
        value = metrics.get(rule)
        source = "agent" if value is not None else None
        trigger = {"rule": rule, "threshold": threshold}
        if rule == "memory_pressure":
            monitored = round(host_pressure, 2) if host_pressure is not None else None
            trigger |= {"agent_value": value, "monitored_value": monitored}
            if monitored is not None and (value is None or monitored > value):
                value, source = monitored, "monitoring"
        fired = value > threshold if value is not None else missing_fires
        triggers.append(trigger | {"value": value, "fired": fired, "source": source})
    if policy.always:
        triggers.append({"rule": "always", "threshold": None, "value": None, "fired": True, "source": "policy"})

    fired = any(t["fired"] for t in triggers)
    # A trusted agent skips the thresholds, never `always` nor a quorum of two or more.
    trusted = agent_name in (policy.trusted_agents or []) and not policy.always and policy.required_approvals < 2
    return Evaluation(critical=fired and not trusted, trusted_bypass=fired and trusted, triggers=triggers)


def timeline(policy: Policy, now: datetime, timeout_seconds: int | None):
    """(deadline, escalate_at) for a request submitted at `now`."""
    seconds = min(timeout_seconds or policy.timeout_seconds, policy.timeout_seconds)
    # Submissions below the minimum are refused (actions.do_submit); this keeps the
    # minimum even for a caller that skipped that check.
    seconds = max(seconds, min(policy.min_timeout_seconds, policy.timeout_seconds))
    deadline = now + timedelta(seconds=seconds)
    escalate_at = None
    if policy.escalate_after is not None and 0 < policy.escalate_after < 1:
        escalate_at = now + timedelta(seconds=seconds * policy.escalate_after)
    return deadline, escalate_at
