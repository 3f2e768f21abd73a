"""The review's request figures on PostgreSQL: the figures of `reports.request_figures`,
in four passes over the period instead of a dozen.

The portable queries make one pass per table of the review (headline, per operation,
per agent, per rule, per operator, percentiles three times over, histogram, days), each
reading the wide request rows with their JSON: 3.3 s for a month of 330,000 requests
(1.1 s here; docs/performance.md).
Here:

  1. the outcome counts of the period, per operation, per agent and per rule
     combination, in one pass (GROUPING SETS);
  2. the operator decisions: exact percentiles (`percentile_cont`) of the period, per
     operation, per agent and per operator, the operators' counts and the histogram,
     in one pass;
  3. the requests per day (a day at a time: no sort);
  4. the reject reasons (the portable query: the reasons are in no index).

Passes 1–3 and `period_headline` read only columns of the `req_month_review` index,
so PostgreSQL answers them from that narrow index (index-only scans). Every figure,
and the order of every list and key, is the portable path's: the shaping is shared
(`reports.grouped_rows` and friends) and tests/oversight/reviews/test_reports_pg.py checks the
two paths agree on the same data.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.db import connection

from oversight.models import OversightRequest, Source, Status
from oversight.reviews import reports

# Enum values travel as parameters, with the period.
VALUES = {
    "policy": Source.POLICY, "operator": Source.OPERATOR, "timeout": Source.TIMEOUT, "agent": Source.AGENT,
    "standing": Source.STANDING,
    "approved": Status.APPROVED, "rejected": Status.REJECTED, "cancelled": Status.CANCELLED,
    "pending": Status.PENDING,
}

# `reports.outcome_counts`, with the same names in the same order. COUNT(*) rather than
# COUNT(id): the id is not in the index, and it is never NULL.
OUTCOME_COUNTS = """
  COUNT(*) AS requests,
  COUNT(*) FILTER (WHERE critical) AS critical,
  COUNT(*) FILTER (WHERE trusted_bypass) AS trusted_bypasses,
  COUNT(*) FILTER (WHERE decision_source = %(policy)s) AS policy_approved,
  COUNT(*) FILTER (WHERE decision_source = %(standing)s) AS standing_approved,
  COUNT(*) FILTER (WHERE decision_source = %(operator)s AND status = %(approved)s) AS operator_approved,
  COUNT(*) FILTER (WHERE decision_source = %(operator)s AND status = %(rejected)s) AS operator_rejected,
  COUNT(*) FILTER (WHERE decision_source = %(timeout)s AND status = %(approved)s) AS timeout_approved,
  COUNT(*) FILTER (WHERE decision_source = %(timeout)s AND status = %(rejected)s) AS timeout_rejected,
  COUNT(*) FILTER (WHERE status = %(cancelled)s) AS cancelled,
  COUNT(*) FILTER (WHERE status = %(pending)s) AS pending,
  COUNT(*) FILTER (WHERE escalated_at IS NOT NULL) AS escalated,
  COUNT(*) FILTER (WHERE decision_source = %(operator)s AND escalated_at IS NULL) AS decided_before_escalation
"""

# `reports.Seconds` on PostgreSQL, as float8: percentile_cont casts its input to float8
# anyway, and the cast is monotonic, so MAX and the histogram's whole-second bounds
# see the same order as on the exact numeric.
DURATION = "EXTRACT(EPOCH FROM (decided_at - created_at))::float8"

IN_PERIOD = "created_at >= %(start)s AND created_at < %(end)s"

# Pass 1. GROUPING(operation, agent_id, fired_rules) says which set a row belongs to:
# a bit is set for each column the set does not group by.
COUNTS_BY_SET = {7: "headline", 3: "operation", 5: "agent__name", 6: "fired_rules"}
COUNTS_SQL = f"""
SELECT c.*, a.name AS agent__name FROM (
  SELECT GROUPING(operation, agent_id, fired_rules) AS grouping_set, operation, agent_id, fired_rules,
  {OUTCOME_COUNTS}
  FROM oversight_oversightrequest
  WHERE {IN_PERIOD}
  GROUP BY GROUPING SETS ((), (operation), (agent_id), (fired_rules))
) c LEFT JOIN oversight_agent a ON a.id = c.agent_id
ORDER BY c.grouping_set, c.requests DESC, c.operation, a.name, c.fired_rules
"""  # noqa: S608 (constants only; values travel as parameters)

# Pass 2, over operator decisions only; the histogram is read from the () set.
PERCENTILE_COLUMNS = ", ".join(
    f"percentile_cont({p}) WITHIN GROUP (ORDER BY dur) AS p{round(p * 100)}" for p in reports.PERCENTILES
)
_BOUNDS = (0, *reports.TTD_BUCKETS)
HISTOGRAM_COLUMNS = ", ".join(
    [
        f"COUNT(*) FILTER (WHERE dur > {lo} AND dur <= {hi}) AS b{i}" if i else f"COUNT(*) FILTER (WHERE dur <= {hi}) AS b0"
        for i, (lo, hi) in enumerate(zip(_BOUNDS, reports.TTD_BUCKETS, strict=False))
    ]
    + [f"COUNT(*) FILTER (WHERE dur > {reports.TTD_BUCKETS[-1]}) AS over"]
)
DECISIONS_BY_SET = {7: "headline", 3: "operation", 5: "agent_id", 6: "decided_by"}
DECISIONS_SQL = f"""
SELECT GROUPING(operation, agent_id, decided_by) AS grouping_set, operation, agent_id, decided_by,
  COUNT(*) AS n, {PERCENTILE_COLUMNS}, MAX(dur) AS max,
  COUNT(*) FILTER (WHERE status = %(approved)s) AS approved,
  COUNT(*) FILTER (WHERE status = %(rejected)s) AS rejected,
  {HISTOGRAM_COLUMNS}
FROM (
  SELECT operation, agent_id, decided_by, status, {DURATION} AS dur
  FROM oversight_oversightrequest
  WHERE {IN_PERIOD} AND decision_source = %(operator)s
) d
GROUP BY GROUPING SETS ((), (operation), (agent_id), (decided_by))
ORDER BY grouping_set, n DESC, decided_by
"""  # noqa: S608

# Pass 3: `reports._daily`. Grouped by the day expression, PostgreSQL would sort the
# period's rows (it cannot tell how few days there are); counted a day at a time, each
# day is a range of the index, read in order, and nothing is sorted. The days come as
# arrays (so the planner knows how many: a guessed thousand would make it compile the
# query with JIT, which costs more than the query). Days without requests are left
# out, as the grouped query leaves them out.
DAILY_SQL = """
SELECT d.day, c.policy, c.operator, c.timeout, c.agent, c.standing, c.pending
FROM unnest(%(days)s::date[], %(froms)s::timestamptz[], %(untils)s::timestamptz[]) AS d(day, lo, hi)
CROSS JOIN LATERAL (
  SELECT COUNT(*) AS n,
    COUNT(*) FILTER (WHERE decision_source = %(policy)s) AS policy,
    COUNT(*) FILTER (WHERE decision_source = %(operator)s) AS operator,
    COUNT(*) FILTER (WHERE decision_source = %(timeout)s) AS timeout,
    COUNT(*) FILTER (WHERE decision_source = %(agent)s) AS agent,
    COUNT(*) FILTER (WHERE decision_source = %(standing)s) AS standing,
    COUNT(*) FILTER (WHERE status = %(pending)s) AS pending
  FROM oversight_oversightrequest
  WHERE created_at >= d.lo AND created_at < d.hi
) c
WHERE c.n > 0
ORDER BY d.day
"""

# The month before's headline: counts and percentiles in one plain aggregate.
OPERATOR_PERCENTILE_COLUMNS = ", ".join(
    f"percentile_cont({p}) WITHIN GROUP (ORDER BY dur) FILTER (WHERE decision_source = %(operator)s)"
    f" AS p{round(p * 100)}"
    for p in reports.PERCENTILES
)
HEADLINE_SQL = f"""
SELECT {OUTCOME_COUNTS},
  COUNT(*) FILTER (WHERE decision_source = %(operator)s) AS n,
  {OPERATOR_PERCENTILE_COLUMNS},
  MAX(dur) FILTER (WHERE decision_source = %(operator)s) AS max
FROM (
  SELECT critical, trusted_bypass, decision_source, status, escalated_at, {DURATION} AS dur
  FROM oversight_oversightrequest
  WHERE {IN_PERIOD}
) r
"""  # noqa: S608

COUNT_NAMES = tuple(reports.outcome_counts())


def _fetch(sql: str, start: datetime, end: datetime, **params) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(sql, {**VALUES, "start": start, "end": end, **params})
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _stats(row: dict) -> dict:
    """What `reports.duration_stats` gives for one group."""
    return reports.stats_row(row["n"], row["p50"], row["p90"], row["p99"], row["max"])


def _counts(row: dict, field: str | None = None) -> dict:
    """A count row as the ORM's `.values(field).annotate(...)` gives it: the field, then the counts."""
    out = {field: row[field]} if field else {}
    return out | {name: row[name] for name in COUNT_NAMES}


def request_figures(start: datetime, end: datetime) -> dict:
    """`reports.request_figures` of [start, end), in four passes."""
    counts = {name: [] for name in COUNTS_BY_SET.values()}
    for row in _fetch(COUNTS_SQL, start, end):
        counts[COUNTS_BY_SET[row["grouping_set"]]].append(row)
    decisions = {name: [] for name in DECISIONS_BY_SET.values()}
    for row in _fetch(DECISIONS_SQL, start, end):
        decisions[DECISIONS_BY_SET[row["grouping_set"]]].append(row)
    agent_names = {row["agent_id"]: row["agent__name"] for row in counts["agent__name"]}
    ttd_by_operation = {row["operation"]: _stats(row) for row in decisions["operation"]}
    ttd_by_agent = {agent_names[row["agent_id"]]: _stats(row) for row in decisions["agent_id"]}
    headline = _counts(counts["headline"][0])
    overall = decisions["headline"][0]
    operator_decisions = OversightRequest.objects.filter(
        created_at__gte=start, created_at__lt=end, decision_source=Source.OPERATOR
    )
    return {
        "headline": reports.headline_row(headline, _stats(overall) if overall["n"] else None),
        "by_operation": reports.grouped_rows([_counts(r, "operation") for r in counts["operation"]], "operation",
                                             ttd_by_operation),
        "by_agent": reports.grouped_rows([_counts(r, "agent__name") for r in counts["agent__name"]], "agent__name",
                                         ttd_by_agent),
        "by_rule": _rules([_counts(r, "fired_rules") for r in counts["fired_rules"]], headline["critical"]),
        "operators": reports.operator_rows(
            [{"decided_by": r["decided_by"], "decisions": r["n"], "approved": r["approved"], "rejected": r["rejected"]}
             for r in decisions["decided_by"]],
            {r["decided_by"]: _stats(r) for r in decisions["decided_by"]},
        ),
        "reject_reasons": reports.reject_reasons(operator_decisions),
        "ttd_histogram": reports.histogram_rows(overall),
        "daily": reports.daily_rows(_fetch(DAILY_SQL, start, end, **_utc_days(start, end))),
    }


def _utc_days(start: datetime, end: datetime) -> dict[str, list]:
    """The UTC days [start, end) touches, each with its part of the period."""
    days, froms, untils = [], [], []
    day = start.astimezone(UTC).date()
    while (midnight := datetime.combine(day, time(), tzinfo=UTC)) < end:
        days.append(day)
        froms.append(max(start, midnight))
        untils.append(min(end, midnight + timedelta(days=1)))
        day += timedelta(days=1)
    return {"days": days, "froms": froms, "untils": untils}


def _rules(combinations: list[dict], critical_total: int) -> dict:
    """`reports._rules` from the combination rows: a rule's total is the sum of the
    combinations naming it (the portable path's substring match, on the same rows)."""
    combinations = [row for row in combinations if row["fired_rules"] != ""]
    totals = {rule: sum(row["requests"] for row in combinations if rule in row["fired_rules"])
              for rule in reports.RULE_NAMES}
    return reports.rule_figures(combinations, totals, critical_total)


def period_headline(start: datetime, end: datetime) -> dict:
    """`reports.period_headline` of [start, end), in one pass."""
    row = _fetch(HEADLINE_SQL, start, end)[0]
    return reports.headline_row(_counts(row), _stats(row) if row["n"] else None)
