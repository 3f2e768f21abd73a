"""Threshold advice: what other thresholds would have done, and plain suggestions.

For each operation and rule, the requests of a period are counted by the value that
rule was evaluated on (the `triggers` snapshot, rounded up to a whole number: for
whole-number thresholds `value > T` and `ceil(value) > T` are the same test). From
that distribution alone — a few dozen aggregate rows, never the requests — we know
for any threshold T how many requests would have needed a human:

    those where another rule fired (they need one whatever T is)
  + those where only this rule could fire and its value is above T.

Requests that a trusted agent's bypass let through are left out: the bypass would
have let them through at any threshold. Nothing here changes a policy; a manager
applies a suggestion on /policies/, which writes a new, audited version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import Count, FloatField, Func, Q

from oversight.models import OversightRequest, Policy, Source, Status
from oversight.policy import RULES, current_policy

# A suggestion needs this many human decisions behind it, and this approval share.
MIN_DECISIONS = 20
MIN_APPROVE_SHARE = 0.95
# Timeouts above this share of a (busy enough) operation's critical requests get a note.
TIMEOUT_NOTE_SHARE = 0.2
RULE_LABELS = {"memory_pressure": "memory pressure", "delegation_depth": "delegation depth",
               "circular_refs": "circular references"}


def trigger_value_pg(triggers: str, rule: str) -> str:
    """SQL for the value `rule` was evaluated on, from the `triggers` column, on PostgreSQL:
    the first trigger of the rule, its value as text (JSON null → NULL), rounded up.

    The rule's name is written into the jsonpath: a constant path costs a third less per
    row than one with a variable. Only the known rule names (plain words) get there.
    """
    if rule not in RULES:
        raise ValueError(f"Not a rule with a threshold: {rule!r}")
    return f"""CEIL((jsonb_path_query_first({triggers}, '$[*] ? (@.rule == "{rule}").value') #>> '{{}}')::double precision)"""


class TriggerValue(Func):
    """The value `rule` was evaluated on, from the request's `triggers` list, rounded up
    (NULL when the rule was off or had no value)."""

    output_field = FloatField()

    def __init__(self, rule: str, **extra):
        if rule not in RULES:
            raise ValueError(f"Not a rule with a threshold: {rule!r}")
        self.rule = rule
        super().__init__("triggers", **extra)

    def as_postgresql(self, compiler, conn, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return trigger_value_pg(sql, self.rule), params

    def as_sqlite(self, compiler, conn, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return (
            "CEILING((SELECT json_extract(t.value, '$.value') FROM json_each("  # noqa: S608 (a column)
            f"{sql}) t WHERE json_extract(t.value, '$.rule') = %s LIMIT 1))",
            (*params, self.rule),
        )


@dataclass
class Bucket:
    """Requests of one operation whose only possible firing rule had this (rounded) value."""

    value: float
    requests: int = 0
    critical: int = 0
    approved: int = 0
    rejected: int = 0
    timeouts: int = 0


@dataclass
class Distribution:
    operation: str
    rule: str
    others: int = 0  # requests needing a human because another rule fired
    critical: int = 0  # requests that needed a human, whatever fired
    buckets: list[Bucket] = field(default_factory=list)

    def needing_human(self, threshold: float) -> int:
        return self.others + sum(b.requests for b in self.buckets if b.value > threshold)


def distributions(start: datetime, end: datetime) -> list[Distribution]:
    """One Distribution per (operation, rule) seen in [start, end), from aggregate queries."""
    if connection.vendor == "postgresql":
        return distributions_pg(start, end)
    return portable_distributions(start, end)


def portable_distributions(start: datetime, end: datetime) -> list[Distribution]:
    """`distributions` with portable queries, two per rule (the SQLite path)."""
    requests = OversightRequest.objects.filter(created_at__gte=start, created_at__lt=end, trusted_bypass=False)
    critical = dict(requests.filter(critical=True).values_list("operation").annotate(n=Count("pk")).order_by())
    out: dict[tuple[str, str], Distribution] = {}
    for rule in RULES:
        others = requests.exclude(fired_rules="").exclude(fired_rules=rule)
        for operation, n in others.values_list("operation").annotate(n=Count("pk")).order_by():
            _dist(out, operation, rule, critical).others = n
        for row in _value_counts(requests, rule):
            _dist(out, row["operation"], rule, critical).buckets.append(
                Bucket(row["v"], row["n"], row["crit"], row["approved"], row["rejected"], row["timeouts"])
            )
    return sorted(out.values(), key=lambda d: (d.operation, RULES.index(d.rule)))


def _dist(out: dict, operation: str, rule: str, critical: dict) -> Distribution:
    key = (operation, rule)
    if key not in out:
        out[key] = Distribution(operation, rule, critical=critical.get(operation, 0))
    return out[key]


def _value_counts(requests, rule: str):
    operator = Q(decision_source=Source.OPERATOR)
    return (
        requests.filter(Q(fired_rules="") | Q(fired_rules=rule))
        .annotate(v=TriggerValue(rule))
        .exclude(v__isnull=True)
        .values("operation", "v")
        .annotate(
            n=Count("pk"),
            crit=Count("pk", filter=Q(critical=True)),
            approved=Count("pk", filter=operator & Q(status=Status.APPROVED)),
            rejected=Count("pk", filter=operator & Q(status=Status.REJECTED)),
            timeouts=Count("pk", filter=Q(decision_source=Source.TIMEOUT)),
        )
        .order_by("operation", "v")
    )


# --- PostgreSQL: the same distributions in two passes ---------------------------------------
#
# The portable queries above make two passes per rule, and the three that read the
# trigger values read the wide rows each time. Here one pass over the `req_month_review`
# index counts every rule's `others` (and the critical requests) per operation, and one
# pass over the rows reads each request's trigger values once for all rules.

RULE_PARAMS = {f"rule{i}": rule for i, rule in enumerate(RULES)}
PG_VALUES = {"operator": Source.OPERATOR, "timeout": Source.TIMEOUT, "approved": Status.APPROVED,
             "rejected": Status.REJECTED, **RULE_PARAMS}
PG_PERIOD = "created_at >= %(start)s AND created_at < %(end)s AND NOT trusted_bypass"

PG_OTHERS_SQL = f"""
SELECT operation, COUNT(*) FILTER (WHERE critical) AS critical,
  {", ".join(f"COUNT(*) FILTER (WHERE fired_rules NOT IN ('', %({key})s)) AS {key}" for key in RULE_PARAMS)}
FROM oversight_oversightrequest
WHERE {PG_PERIOD}
GROUP BY operation
"""  # noqa: S608 (constants only; values travel as parameters)

# A request counts towards a rule's values when nothing or only that rule fired
# (`_value_counts`); the trigger value is read only then.
PG_VALUES_SQL = f"""
SELECT x.rule, r.operation, x.v, COUNT(*) AS n,
  COUNT(*) FILTER (WHERE r.critical) AS crit,
  COUNT(*) FILTER (WHERE r.decision_source = %(operator)s AND r.status = %(approved)s) AS approved,
  COUNT(*) FILTER (WHERE r.decision_source = %(operator)s AND r.status = %(rejected)s) AS rejected,
  COUNT(*) FILTER (WHERE r.decision_source = %(timeout)s) AS timeouts
FROM (
  SELECT operation, critical, decision_source, status, fired_rules, triggers FROM oversight_oversightrequest
  WHERE {PG_PERIOD} AND fired_rules IN ('', {", ".join(f"%({key})s" for key in RULE_PARAMS)})
) r
CROSS JOIN LATERAL (VALUES {", ".join(
    f"(%({key})s, CASE WHEN r.fired_rules IN ('', %({key})s) THEN {trigger_value_pg('r.triggers', rule)} END)"
    for key, rule in RULE_PARAMS.items())}
) AS x(rule, v)
WHERE x.v IS NOT NULL
GROUP BY x.rule, r.operation, x.v
ORDER BY x.rule, r.operation, x.v
"""  # noqa: S608


def _fetch_pg(sql: str, start: datetime, end: datetime) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(sql, {**PG_VALUES, "start": start, "end": end})
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def distributions_pg(start: datetime, end: datetime) -> list[Distribution]:
    """`distributions` on PostgreSQL, in two passes."""
    counts = _fetch_pg(PG_OTHERS_SQL, start, end)
    critical = {row["operation"]: row["critical"] for row in counts}
    out: dict[tuple[str, str], Distribution] = {}
    for row in counts:
        for key, rule in RULE_PARAMS.items():
            if row[key]:  # the portable query has no row for an operation without any
                _dist(out, row["operation"], rule, critical).others = row[key]
    for row in _fetch_pg(PG_VALUES_SQL, start, end):
        _dist(out, row["operation"], row["rule"], critical).buckets.append(
            Bucket(row["v"], row["n"], row["crit"], row["approved"], row["rejected"], row["timeouts"])
        )
    return sorted(out.values(), key=lambda d: (d.operation, RULES.index(d.rule)))


def candidate_thresholds(rule: str, current: float) -> list[float]:
    if rule == "memory_pressure":
        steps = (-20, -10, -5, 0, 5, 10, 15)
        return sorted({min(100.0, max(0.0, current + s)) for s in steps})
    return [t for t in range(int(current) - 3, int(current) + 5) if t >= 0]


def what_ifs(dist: Distribution, current: float) -> list[dict]:
    """At each candidate threshold: how many would have needed a human, against today's."""
    now = dist.needing_human(current)
    return [
        {"threshold": t, "needing_human": dist.needing_human(t), "change": dist.needing_human(t) - now,
         "current": t == current}
        for t in candidate_thresholds(dist.rule, current)
    ]


def suggestion(dist: Distribution, current: float) -> dict | None:
    """Raise the threshold to the highest value whose extra reviews operators almost always
    approved, when enough of them decided; with the numbers behind it."""
    best = None
    approved = rejected = timeouts = 0
    for bucket in sorted((b for b in dist.buckets if b.value > current), key=lambda b: b.value):
        approved, rejected, timeouts = approved + bucket.approved, rejected + bucket.rejected, timeouts + bucket.timeouts
        decided = approved + rejected
        if decided >= MIN_DECISIONS and approved / decided >= MIN_APPROVE_SHARE:
            best = (bucket.value, approved, rejected, timeouts)
    if best is None:
        return None
    threshold, approved, rejected, timeouts = best
    saved = dist.needing_human(current) - dist.needing_human(threshold)
    share = approved / (approved + rejected)
    name = RULE_LABELS[dist.rule]
    shown = _number(threshold)
    text = (
        f"Operators approved {share:.0%} of {dist.operation} requests that needed a human only for "
        f"{name} up to {shown} ({approved} of {approved + rejected} decided). Raising {name} to {shown} "
        f"would have saved {saved} reviews"
    )
    if rejected:
        text += f"; {rejected} rejected {'one' if rejected == 1 else 'ones'} would have been approved automatically."
    else:
        text += "."
    return {
        "operation": dist.operation, "rule": dist.rule, "current": _number(current), "threshold": _number(threshold),
        "approved": approved, "rejected": rejected, "timeouts": timeouts, "approve_share": round(share, 4),
        "saved": saved, "text": text,
    }


def _number(value: float):
    return int(value) if float(value).is_integer() else value


def effective_threshold(operation: str, rule: str, cache: dict) -> float | None:
    if operation not in cache:
        cache[operation] = current_policy(operation)
    value = getattr(cache[operation], rule)
    return None if value is None else float(value)


def advice(start: datetime, end: datetime) -> dict:
    """What-ifs per operation and rule against the current thresholds, and suggestions."""
    policies: dict[str, Policy] = {}
    rows, suggestions = [], []
    for dist in distributions(start, end):
        current = effective_threshold(dist.operation, dist.rule, policies)
        if current is None or not dist.buckets:
            continue  # the rule is off now, or it never had a value to judge
        rows.append({"operation": dist.operation, "rule": dist.rule, "current": current,
                     "policy": str(policies[dist.operation]), "what_ifs": what_ifs(dist, current)})
        found = suggestion(dist, current)
        if found:
            suggestions.append(found)
    suggestions.sort(key=lambda s: -s["saved"])
    return {"what_ifs": rows, "suggestions": suggestions, "notes": timeout_notes(start, end)}


def timeout_notes(start: datetime, end: datetime) -> list[dict]:
    """Operations where many requests that needed a human got none (the timeout decided)."""
    # Counting created_at (never NULL, like the id) keeps every column read in the
    # req_month_review index: PostgreSQL answers from it without reading the rows.
    rows = (
        OversightRequest.objects.filter(created_at__gte=start, created_at__lt=end, critical=True)
        .values("operation")
        .annotate(critical_n=Count("created_at"),
                  timeouts=Count("created_at", filter=Q(decision_source=Source.TIMEOUT)))
        .order_by("operation")
    )
    notes = []
    for row in rows:
        if row["critical_n"] >= MIN_DECISIONS and row["timeouts"] / row["critical_n"] >= TIMEOUT_NOTE_SHARE:
            notes.append({
                "operation": row["operation"], "timeouts": row["timeouts"], "critical": row["critical_n"],
                "text": (
                    f"{row['timeouts']} of {row['critical_n']} {row['operation']} requests that needed a human "
                    "timed out with no one looking: consider a longer timeout or more operators on duty."
                ),
            })
    return notes
