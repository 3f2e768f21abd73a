"""The managers' effectiveness review: figures for a month (or any period), in SQL.

Every figure is a database aggregate — counts, sums and percentiles — so a month of
a million requests is reviewed without loading its rows. A request belongs to the
period it was *submitted* in (UTC); its outcome counts there even when it was
decided in the next period, so a month's numbers add up.

`review(month)` returns plain JSON-able data: what the page, the CSV, the command
and the stored monthly snapshot all show.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from django.apps import apps
from django.db import connection
from django.db.models import Count, F, FloatField, Func, Max, Q, Sum, Value
from django.db.models.functions import Coalesce, Greatest, Least, Lower, Trim, TruncDate
from django.utils import timezone

from oversight.models import REJECT_PRESETS, MonthlyReview, OversightRequest, Source, Status

MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
PERCENTILES = (0.5, 0.9, 0.99)
RULE_NAMES = ("memory_pressure", "delegation_depth", "circular_refs", "always")
# Upper bounds (seconds) of the time-to-decision histogram; the last bucket is open.
TTD_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600)
TOP_REASONS = 10


class BadMonth(ValueError):
    pass


# --- Periods ------------------------------------------------------------------------


def parse_month(text: str) -> date:
    """'2026-11' → date(2026, 11, 1); anything else raises BadMonth with a plain message."""
    match = MONTH_RE.match(text or "")
    year, month = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not 1 <= month <= 12 or year < 1970:
        raise BadMonth(f"Not a month: {text!r}. Use YYYY-MM, e.g. 2026-11.")
    return date(year, month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end_month = next_month(month)
    return start, datetime(end_month.year, end_month.month, 1, tzinfo=UTC)


def label(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"


# --- SQL building blocks ----------------------------------------------------------------


class Seconds(Func):
    """`end - start` in seconds, as a float, on PostgreSQL and SQLite alike."""

    output_field = FloatField()
    arity = 2

    def __init__(self, end, start, **extra):
        super().__init__(end, start, **extra)

    def as_postgresql(self, compiler, conn, **extra):
        return self.as_sql(compiler, conn, template="EXTRACT(EPOCH FROM (%(expressions)s))", arg_joiner=" - ", **extra)

    def as_sqlite(self, compiler, conn, **extra):
        # Django's own SQLite function: exact microseconds between two stored datetimes.
        return self.as_sql(compiler, conn, template="(django_timestamp_diff(%(expressions)s) / 1000000.0)", **extra)


def _percentile_sql(inner_sql: str) -> str:
    """One row per group: (grp, n, p50, p90, p99, max) over the column `dur` of `inner_sql`."""
    if connection.vendor == "postgresql":
        cols = ", ".join(f"percentile_cont({p}) WITHIN GROUP (ORDER BY dur)" for p in PERCENTILES)
        return f"SELECT grp, COUNT(*), {cols}, MAX(dur) FROM ({inner_sql}) d GROUP BY grp"  # noqa: S608
    # SQLite has no percentile_cont: the same linear interpolation from row numbers.
    # With the rows of a group ranked 0..n-1, percentile p lies at rank p*(n-1): the
    # value at its floor plus the fraction of the step to the next rank.
    cols = []
    for p in PERCENTILES:
        pos = f"({p} * (n - 1))"
        lo = f"MAX(CASE WHEN rn = CAST({pos} AS INTEGER) THEN dur END)"
        hi = f"MAX(CASE WHEN rn = CAST({pos} AS INTEGER) + 1 THEN dur END)"
        frac = f"MAX({pos} - CAST({pos} AS INTEGER))"
        cols.append(f"{lo} + (COALESCE({hi}, {lo}) - {lo}) * {frac}")
    # Only constants and Django's own compiled SQL are interpolated; values travel as params.
    ranked = (
        "SELECT grp, dur, ROW_NUMBER() OVER (PARTITION BY grp ORDER BY dur) - 1 AS rn, "  # noqa: S608
        f"COUNT(*) OVER (PARTITION BY grp) AS n FROM ({inner_sql}) i"
    )
    return f"SELECT grp, COUNT(*), {', '.join(cols)}, MAX(dur) FROM ({ranked}) d GROUP BY grp"  # noqa: S608


def duration_stats(queryset, group: str | None = None) -> dict:
    """{group value: {n, p50, p90, p99, max}} of decided_at − created_at over `queryset`, in SQL.

    Without `group`, the one key is None.
    """
    inner = queryset.annotate(
        grp=F(group) if group else Value(None, output_field=FloatField()),
        dur=Seconds("decided_at", "created_at"),
    ).values("grp", "dur")
    sql, params = inner.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(_percentile_sql(sql), params)
        rows = cursor.fetchall()
    return {row[0]: stats_row(*row[1:]) for row in rows}


def stats_row(n: int, p50, p90, p99, max_) -> dict:
    return {"n": n, "p50": _f(p50), "p90": _f(p90), "p99": _f(p99), "max": _f(max_)}


def _f(value) -> float | None:
    return None if value is None else round(float(value), 3)


def _share(part, whole) -> float | None:
    return round(part / whole, 4) if whole else None


# --- Request figures --------------------------------------------------------------------


def outcome_counts() -> dict:
    """The counts every grouping shows, as conditional aggregates of one query."""
    operator, timeout = Q(decision_source=Source.OPERATOR), Q(decision_source=Source.TIMEOUT)
    return {
        "requests": Count("pk"),
        "critical": Count("pk", filter=Q(critical=True)),
        "trusted_bypasses": Count("pk", filter=Q(trusted_bypass=True)),
        "policy_approved": Count("pk", filter=Q(decision_source=Source.POLICY)),
        "standing_approved": Count("pk", filter=Q(decision_source=Source.STANDING)),
        "operator_approved": Count("pk", filter=operator & Q(status=Status.APPROVED)),
        "operator_rejected": Count("pk", filter=operator & Q(status=Status.REJECTED)),
        "timeout_approved": Count("pk", filter=timeout & Q(status=Status.APPROVED)),
        "timeout_rejected": Count("pk", filter=timeout & Q(status=Status.REJECTED)),
        "cancelled": Count("pk", filter=Q(status=Status.CANCELLED)),
        "pending": Count("pk", filter=Q(status=Status.PENDING)),
        "escalated": Count("pk", filter=Q(escalated_at__isnull=False)),
        "decided_before_escalation": Count("pk", filter=operator & Q(escalated_at__isnull=True)),
    }


def _with_shares(row: dict) -> dict:
    row["critical_share"] = _share(row["critical"], row["requests"])
    row["operator_decisions"] = row["operator_approved"] + row["operator_rejected"]
    row["timeouts"] = row["timeout_approved"] + row["timeout_rejected"]
    # Of the requests that needed a human: decided by one before any escalation,
    # and left to the timeout (so never looked at by a person).
    row["decided_before_escalation_share"] = _share(row["decided_before_escalation"], row["critical"])
    row["timed_out_share"] = _share(row["timeouts"], row["critical"])
    return row


def _grouped(requests, field: str, ttd: dict) -> list[dict]:
    rows = requests.values(field).annotate(**outcome_counts()).order_by("-requests", field)
    return grouped_rows(rows, field, ttd)


def grouped_rows(rows, field: str, ttd: dict) -> list[dict]:
    """Count rows keyed by `field`, most requests first, as the review shows them."""
    out = []
    for row in rows:
        row = _with_shares(dict(row))
        row["name"] = row.pop(field)
        row["ttd_p50"] = (ttd.get(row["name"]) or {}).get("p50")
        out.append(row)
    return out


def _headline(requests, operator_decisions) -> dict:
    return headline_row(requests.aggregate(**outcome_counts()), duration_stats(operator_decisions).get(None))


def headline_row(counts: dict, stats: dict | None) -> dict:
    row = _with_shares(counts)
    stats = stats or {}
    for key in ("p50", "p90", "p99", "max"):
        row[f"ttd_{key}"] = stats.get(key)
    return row


def _rules(requests) -> dict:
    """Rules alone and in combination (`fired_rules` is the fixed-order join), and each
    rule's total whatever fired with it."""
    combos = (
        requests.exclude(fired_rules="")
        .values("fired_rules")
        .annotate(**outcome_counts())
        .order_by("-requests", "fired_rules")
    )
    # The rule names never contain one another, so a substring match is a token match.
    totals = requests.aggregate(
        **{rule: Count("pk", filter=Q(fired_rules__contains=rule)) for rule in RULE_NAMES},
        critical_total=Count("pk", filter=Q(critical=True)),
    )
    critical_total = totals.pop("critical_total")
    return rule_figures(combos, totals, critical_total)


def rule_figures(combos, totals: dict, critical_total: int) -> dict:
    """Combination rows (most requests first) and each rule's total, as the review shows them."""
    combinations = []
    for row in combos:
        row = _with_shares(dict(row))
        row["name"] = row.pop("fired_rules")
        combinations.append(row)
    singles = [
        {"name": rule, "requests": totals[rule], "share_of_critical": _share(totals[rule], critical_total)}
        for rule in RULE_NAMES
    ]
    return {"combinations": combinations, "rules": singles}


def _operators(operator_decisions) -> list[dict]:
    medians = duration_stats(operator_decisions, "decided_by")
    rows = (
        operator_decisions.values("decided_by")
        .annotate(
            decisions=Count("pk"),
            approved=Count("pk", filter=Q(status=Status.APPROVED)),
            rejected=Count("pk", filter=Q(status=Status.REJECTED)),
        )
        .order_by("-decisions", "decided_by")
    )
    return operator_rows(rows, medians)


def operator_rows(rows, medians: dict) -> list[dict]:
    return [
        {
            "name": row["decided_by"],
            "decisions": row["decisions"],
            "approved": row["approved"],
            "rejected": row["rejected"],
            "approve_share": _share(row["approved"], row["decisions"]),
            "ttd_p50": (medians.get(row["decided_by"]) or {}).get("p50"),
        }
        for row in rows
    ]


def reject_reasons(operator_decisions) -> list[dict]:
    presets = {p.strip().lower() for p in REJECT_PRESETS}
    rows = (
        operator_decisions.filter(status=Status.REJECTED)
        .annotate(reason=Lower(Trim("decision_reason")))
        .values("reason")
        .annotate(n=Count("pk"))
        .order_by("-n", "reason")[:TOP_REASONS]
    )
    return [{"reason": row["reason"][:300], "count": row["n"], "preset": row["reason"].strip().lower() in presets} for row in rows]


def _ttd_histogram(operator_decisions) -> list[dict]:
    bounds = (0, *TTD_BUCKETS)
    buckets = {
        f"b{i}": Count("pk", filter=Q(dur__gt=lo, dur__lte=hi) if i else Q(dur__lte=hi))
        for i, (lo, hi) in enumerate(zip(bounds, TTD_BUCKETS, strict=False))
    }
    buckets["over"] = Count("pk", filter=Q(dur__gt=TTD_BUCKETS[-1]))
    counts = operator_decisions.annotate(dur=Seconds("decided_at", "created_at")).aggregate(**buckets)
    return histogram_rows(counts)


def histogram_rows(counts: dict) -> list[dict]:
    """Counts named b0… (one per bound of TTD_BUCKETS) and `over`, as the review's histogram."""
    rows = [{"le": hi, "count": counts[f"b{i}"]} for i, hi in enumerate(TTD_BUCKETS)]
    rows.append({"le": None, "count": counts["over"]})
    return rows


def _daily(requests) -> list[dict]:
    """Requests per day of submission, by who decided them."""
    rows = (
        requests.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            policy=Count("pk", filter=Q(decision_source=Source.POLICY)),
            operator=Count("pk", filter=Q(decision_source=Source.OPERATOR)),
            timeout=Count("pk", filter=Q(decision_source=Source.TIMEOUT)),
            agent=Count("pk", filter=Q(decision_source=Source.AGENT)),
            standing=Count("pk", filter=Q(decision_source=Source.STANDING)),
            pending=Count("pk", filter=Q(status=Status.PENDING)),
        )
        .order_by("day")
    )
    return daily_rows(rows)


def daily_rows(rows) -> list[dict]:
    return [{**row, "day": row["day"].isoformat()} for row in rows]


# --- Memory figures -----------------------------------------------------------------------


def _model(label_: str, name: str):
    """A model of another app if it exists in this tree (the monitoring app grows its own)."""
    try:
        return apps.get_model(label_, name)
    except LookupError:
        return None


def memory_figures(start: datetime, end: datetime, now: datetime) -> dict:
    """Alerts and leak suspects, or `measured: False` where monitoring does not record them:
    a missing measurement is shown as such, never as zero."""
    alert = _model("monitoring", "Alert")
    leak = _model("monitoring", "LeakFinding")
    out: dict = {"alerts_measured": alert is not None, "leaks_measured": leak is not None}
    if alert is not None:
        out.update(_alert_figures(alert, start, end, now))
    if leak is not None:
        out.update(_leak_figures(leak, start, end))
    rate = _false_positive_rate(alert, leak, start, end)
    if rate is not None:
        out["false_positives"] = rate
    return out


FALSE_POSITIVE_TARGET = 0.05  # the original design: false positives under 5 %


def _has_field(model, name: str) -> bool:
    return any(f.name == name for f in model._meta.get_fields())


def _false_positive_rate(alert, leak, start: datetime, end: datetime) -> dict | None:
    """Alerts raised and leak findings first detected in the period, and how many of them
    operators marked false positives: marked ÷ raised, against the 5 % target."""
    parts = {}
    if alert is not None and _has_field(alert, "false_positive_at"):
        raised = alert.objects.filter(started_at__gte=start, started_at__lt=end)
        parts["alerts"] = {"raised": raised.count(), "marked": raised.filter(false_positive_at__isnull=False).count()}
    if leak is not None and _has_field(leak, "dismissed_at"):
        raised = leak.objects.filter(detected_at__gte=start, detected_at__lt=end)
        parts["findings"] = {"raised": raised.count(), "marked": raised.filter(dismissed_at__isnull=False).count()}
    if not parts:
        return None
    raised = sum(p["raised"] for p in parts.values())
    marked = sum(p["marked"] for p in parts.values())
    for part in parts.values():
        part["rate"] = part["marked"] / part["raised"] if part["raised"] else None
    return parts | {"raised": raised, "marked": marked, "rate": marked / raised if raised else None,
                    "target": FALSE_POSITIVE_TARGET}


def _alert_figures(alert, start: datetime, end: datetime, now: datetime) -> dict:
    raised = alert.objects.filter(started_at__gte=start, started_at__lt=end)
    by_severity = dict(raised.values_list("severity").annotate(n=Count("pk")).order_by())
    per_day = (
        raised.annotate(day=TruncDate("started_at", tzinfo=UTC))
        .values("day")
        .annotate(
            warning=Count("pk", filter=Q(severity="warning")),
            critical=Count("pk", filter=Q(severity="critical")),
        )
        .order_by("day")
    )
    # Time in each state: every alert overlapping the period, clipped to it; one
    # still firing counts up to now (or the period's end, if that came first).
    until = min(end, now)
    overlapping = alert.objects.filter(started_at__lt=until).filter(Q(resolved_at__isnull=True) | Q(resolved_at__gt=start))
    clipped = Seconds(
        Least(Coalesce("resolved_at", Value(until)), Value(until)),
        Greatest("started_at", Value(start)),
    )
    per_host = (
        overlapping.filter(process="")
        .values("host")
        .annotate(
            warning_seconds=Sum(clipped, filter=Q(severity="warning")),
            critical_seconds=Sum(clipped, filter=Q(severity="critical")),
        )
        .order_by("host")
    )
    return {
        "alerts": {"warning": by_severity.get("warning", 0), "critical": by_severity.get("critical", 0)},
        "alerts_per_day": [{**row, "day": row["day"].isoformat()} for row in per_day],
        "hosts": [
            {
                "host": row["host"],
                "warning_seconds": round(max(row["warning_seconds"] or 0.0, 0.0), 1),
                "critical_seconds": round(max(row["critical_seconds"] or 0.0, 0.0), 1),
            }
            for row in per_host
        ],
    }


def _leak_figures(leak, start: datetime, end: datetime) -> dict:
    found = leak.objects.filter(detected_at__lt=end)
    # A finding is kept up to date while its trend lasts: a leak suspected last month
    # and still seen this month is a suspect of this month too.
    if any(f.name == "last_seen_at" for f in leak._meta.get_fields()):
        found = found.filter(last_seen_at__gte=start)
    else:
        found = found.filter(detected_at__gte=start)
    processes = found.values("host", "pid", "process").annotate(
        slope=Max("slope_bytes_per_hour"), findings=Count("pk")
    )
    top = processes.order_by("-slope", "host", "pid")[:10]
    return {
        "leak_suspects": processes.count(),
        "leaks": [
            {"host": r["host"], "pid": r["pid"], "process": r["process"],
             "slope_bytes_per_hour": r["slope"], "findings": r["findings"]}
            for r in top
        ],
    }


# --- The review ---------------------------------------------------------------------------

HEADLINE_KEYS = (
    "requests", "critical", "critical_share", "trusted_bypasses", "policy_approved", "standing_approved",
    "operator_approved",
    "operator_rejected", "timeout_approved", "timeout_rejected", "cancelled", "pending", "escalated",
    "decided_before_escalation_share", "timed_out_share", "ttd_p50", "ttd_p90", "ttd_p99", "ttd_max",
)


def _on_postgresql() -> bool:
    return connection.vendor == "postgresql"


def figures(start: datetime, end: datetime, *, now: datetime | None = None) -> dict:
    """Everything about requests submitted in [start, end)."""
    now = now or timezone.now()
    if _on_postgresql():
        # Imported here: it builds on this module's shaping helpers.
        from oversight.reviews import reports_pg

        found = reports_pg.request_figures(start, end)
    else:
        found = request_figures(start, end)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "computed_at": now.isoformat(),
        **found,
        "memory": memory_figures(start, end, now),
    }


def request_figures(start: datetime, end: datetime) -> dict:
    """The request figures of [start, end) with portable queries, one per table (the
    SQLite path; `oversight.reviews.reports_pg` computes the same on PostgreSQL in fewer passes)."""
    requests = OversightRequest.objects.filter(created_at__gte=start, created_at__lt=end)
    operator_decisions = requests.filter(decision_source=Source.OPERATOR)
    ttd_by_operation = duration_stats(operator_decisions, "operation")
    ttd_by_agent = duration_stats(operator_decisions, "agent__name")
    return {
        "headline": _headline(requests, operator_decisions),
        "by_operation": _grouped(requests, "operation", ttd_by_operation),
        "by_agent": _grouped(requests, "agent__name", ttd_by_agent),
        "by_rule": _rules(requests),
        "operators": _operators(operator_decisions),
        "reject_reasons": reject_reasons(operator_decisions),
        "ttd_histogram": _ttd_histogram(operator_decisions),
        "daily": _daily(requests),
    }


def month_figures(month: date, *, now: datetime | None = None) -> dict:
    start, end = month_bounds(month)
    data = figures(start, end, now=now)
    data["month"] = label(month)
    return data


def changes(current: dict, previous: dict | None) -> dict:
    """Month-over-month: for each headline figure, last month's value and the difference."""
    out = {}
    for key in HEADLINE_KEYS:
        now_value, before = current.get(key), (previous or {}).get(key)
        delta = None if now_value is None or before is None else round(now_value - before, 4)
        out[key] = {"previous": before, "delta": delta}
    return out


def review(month: date, *, now: datetime | None = None, live: bool = False) -> dict:
    """The review of `month`: the stored snapshot when there is one (unless `live`), else
    computed now; with the month-over-month change against the month before."""
    now = now or timezone.now()
    from oversight.actions import expire_overdue

    expire_overdue()  # an overdue request counts as decided by the timeout
    stored = None if live else MonthlyReview.objects.filter(month=label(month)).first()
    if stored is not None:
        data = dict(stored.figures)
        data["snapshot_at"] = stored.created_at.isoformat()
    else:
        data = month_figures(month, now=now)
        data["snapshot_at"] = None
    data["previous"] = _previous_headline(previous_month(month), now)
    data["changes"] = changes(data["headline"], data["previous"])
    return data


def _previous_headline(month: date, now: datetime) -> dict | None:
    stored = MonthlyReview.objects.filter(month=label(month)).values_list("figures", flat=True).first()
    if stored is not None:
        return stored.get("headline")
    start, end = month_bounds(month)
    if start >= now:
        return None
    if _on_postgresql():
        from oversight.reviews import reports_pg

        return reports_pg.period_headline(start, end)
    return period_headline(start, end)


def period_headline(start: datetime, end: datetime) -> dict:
    """The headline figures alone of [start, end), with portable queries."""
    requests = OversightRequest.objects.filter(created_at__gte=start, created_at__lt=end)
    return _headline(requests, requests.filter(decision_source=Source.OPERATOR))


def months_with_data(now: datetime | None = None) -> list[dict]:
    """Every month that has requests or a stored review, newest first."""
    now = now or timezone.now()
    seen = {
        label(d) for d in OversightRequest.objects.datetimes("created_at", "month", tzinfo=UTC)
    }
    stored = dict(MonthlyReview.objects.values_list("month", "created_at"))
    seen |= set(stored)
    seen.add(label(now.date().replace(day=1)))
    return [{"month": m, "snapshot_at": stored.get(m)} for m in sorted(seen, reverse=True)]


def store_snapshot(month: date, *, now: datetime | None = None) -> tuple[MonthlyReview, bool]:
    """Store `month`'s figures once; an existing snapshot is kept as it is (returns created)."""
    existing = MonthlyReview.objects.filter(month=label(month)).first()
    if existing is not None:
        return existing, False
    data = month_figures(month, now=now)
    review_row, created = MonthlyReview.objects.get_or_create(
        month=label(month), defaults={"figures": data, "created_at": now or timezone.now()}
    )
    return review_row, created



# --- Presentation: the same figures for the page, the terminal and CSV ----------------------


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def duration(seconds: float | None) -> str:
    """Seconds as a short human duration: 45.2s, 3m 05s, 2h 10m."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours_, minutes = divmod(minutes, 60)
    return f"{hours_}h {minutes:02d}m"


def _change(value, kind: str) -> str:
    if value is None:
        return ""
    sign = "+" if value > 0 else ""
    if kind == "share":
        return f"{sign}{value * 100:.1f} pts"
    if kind == "seconds":
        return f"{sign}{value:.1f}s"
    return f"{sign}{value:g}"


# (key, label, kind): the headline cards, in order.
CARDS = (
    ("requests", "Requests", "count"),
    ("critical_share", "Needed a human (critical share)", "share"),
    ("trusted_bypasses", "Trusted-agent bypasses", "count"),
    ("policy_approved", "Approved by policy", "count"),
    ("standing_approved", "Approved by standing grants", "count"),
    ("operator_approved", "Approved by operators", "count"),
    ("operator_rejected", "Rejected by operators", "count"),
    ("timeout_approved", "Timed out → approved", "count"),
    ("timeout_rejected", "Timed out → rejected", "count"),
    ("cancelled", "Cancelled by agents", "count"),
    ("escalated", "Escalated", "count"),
    ("ttd_p50", "Time to decision p50", "seconds"),
    ("ttd_p90", "Time to decision p90", "seconds"),
    ("ttd_p99", "Time to decision p99", "seconds"),
    ("ttd_max", "Slowest decision", "seconds"),
    ("decided_before_escalation_share", "Decided before escalation", "share"),
    ("timed_out_share", "Timed out (no human look)", "share"),
)


def _show(value, kind: str) -> str:
    if kind == "share":
        return pct(value)
    if kind == "seconds":
        return duration(value)
    return "—" if value is None else f"{value:,}"


def cards(data: dict) -> list[dict]:
    headline, changes_ = data["headline"], data.get("changes") or {}
    out = []
    for key, title, kind in CARDS:
        change = changes_.get(key) or {}
        out.append({"key": key, "label": title, "value": _show(headline.get(key), kind),
                    "change": _change(change.get("delta"), kind),
                    "previous": _show(change.get("previous"), kind) if change.get("previous") is not None else ""})
    return out


GROUP_COLUMNS = ("Requests", "Critical", "Critical share", "Bypasses", "Policy", "Op. approved", "Op. rejected",
                 "Timeouts", "Cancelled", "Escalated", "TTD p50")


def _group_row(row: dict) -> list[str]:
    return [row["name"], f"{row['requests']:,}", f"{row['critical']:,}", pct(row["critical_share"]),
            f"{row['trusted_bypasses']:,}", f"{row['policy_approved']:,}", f"{row['operator_approved']:,}",
            f"{row['operator_rejected']:,}", f"{row['timeouts']:,}", f"{row['cancelled']:,}",
            f"{row['escalated']:,}", duration(row.get("ttd_p50"))]


def tables(data: dict) -> list[dict]:
    """The review's tables as display strings: {title, columns, rows}."""
    rules = data["by_rule"]
    out = [
        {"title": "Per operation", "columns": ("Operation", *GROUP_COLUMNS),
         "rows": [_group_row(r) for r in data["by_operation"]]},
        {"title": "Per agent", "columns": ("Agent", *GROUP_COLUMNS), "rows": [_group_row(r) for r in data["by_agent"]]},
        {"title": "Rules alone and in combination", "columns": ("Rules fired", *GROUP_COLUMNS),
         "rows": [_group_row({**r, "ttd_p50": None}) for r in rules["combinations"]]},
        {"title": "Each rule, whatever fired with it", "columns": ("Rule", "Requests", "Share of critical"),
         "rows": [[r["name"], f"{r['requests']:,}", pct(r["share_of_critical"])] for r in rules["rules"]]},
        {"title": "Operators", "columns": ("Operator", "Decisions", "Approved", "Rejected", "Approve share", "Median time"),
         "rows": [[r["name"], f"{r['decisions']:,}", f"{r['approved']:,}", f"{r['rejected']:,}",
                   pct(r["approve_share"]), duration(r["ttd_p50"])] for r in data["operators"]]},
        {"title": "Reject reasons", "columns": ("Reason", "Times", "Preset"),
         "rows": [[r["reason"], f"{r['count']:,}", "yes" if r["preset"] else ""] for r in data["reject_reasons"]]},
    ]
    out.append(_memory_table(data["memory"]))
    return out


NOT_MEASURED = "not measured"


def _memory_table(memory: dict) -> dict:
    rows = []
    if memory.get("alerts_measured"):
        alerts = memory["alerts"]
        rows += [["Warning alerts raised", f"{alerts['warning']:,}"], ["Critical alerts raised", f"{alerts['critical']:,}"]]
        for host in memory["hosts"]:
            rows.append([f"{host['host']}: time above warning", duration(host["warning_seconds"])])
            rows.append([f"{host['host']}: time above critical", duration(host["critical_seconds"])])
    else:
        rows.append(["Memory alerts", NOT_MEASURED])
    if memory.get("leaks_measured"):
        rows.append(["Leak suspects (processes)", f"{memory['leak_suspects']:,}"])
        for leak in memory["leaks"]:
            growth = f"{leak['slope_bytes_per_hour'] / 2**20:,.1f} MiB/h"
            rows.append([f"  {leak['host']} {leak['process']} (pid {leak['pid']})", growth])
    else:
        rows.append(["Leak suspects", NOT_MEASURED])
    fp = memory.get("false_positives")
    if fp:
        for key, name in (("alerts", "alerts"), ("findings", "leak findings")):
            if key in fp:
                rows.append([f"False positives: {name} (marked ÷ raised)",
                             f"{fp[key]['marked']:,} of {fp[key]['raised']:,} ({pct(fp[key]['rate'])})"])
        verdict = "" if fp["rate"] is None else (" — within target" if fp["rate"] <= fp["target"] else " — above target")
        rows.append([f"False-positive rate, alerts and findings (target ≤ {pct(fp['target'])})",
                     f"{pct(fp['rate'])}{verdict}"])
    return {"title": "Memory", "columns": ("Figure", "Value"), "rows": rows}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell):
    """Free text (reject reasons, names) that a spreadsheet would run as a formula is
    quoted. Every CSV of the review (the web download, `manage.py report --csv`) writes
    its cells through this one function."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_rows(data: dict):
    """Long format, one figure a line: section, name, metric, value (raw numbers; empty = none)."""
    yield ("section", "name", "metric", "value")
    yield ("period", data.get("month", ""), "start", data["start"])
    yield ("period", data.get("month", ""), "end", data["end"])
    yield ("period", data.get("month", ""), "snapshot_at", data.get("snapshot_at") or "")
    for key in HEADLINE_KEYS:
        yield ("headline", "", key, _raw(data["headline"].get(key)))
        change = (data.get("changes") or {}).get(key) or {}
        yield ("headline_change", "", key, _raw(change.get("delta")))
    for section, rows in (("operation", data["by_operation"]), ("agent", data["by_agent"]),
                          ("rule_combination", data["by_rule"]["combinations"]), ("rule", data["by_rule"]["rules"]),
                          ("operator", data["operators"])):
        for row in rows:
            for metric, value in row.items():
                if metric != "name":
                    yield (section, row["name"], metric, _raw(value))
    for row in data["reject_reasons"]:
        yield ("reject_reason", row["reason"], "count", row["count"])
    for row in data["ttd_histogram"]:
        yield ("ttd_histogram", "" if row["le"] is None else f"<= {row['le']}s", "count", row["count"])
    for row in data["daily"]:
        for metric, value in row.items():
            if metric != "day":
                yield ("daily", row["day"], metric, value)
    yield from _memory_csv(data["memory"])


def _memory_csv(memory: dict):
    if not memory.get("alerts_measured"):
        yield ("memory", "", "alerts", NOT_MEASURED)
    else:
        for severity, n in memory["alerts"].items():
            yield ("memory", "", f"{severity}_alerts", n)
        for host in memory["hosts"]:
            yield ("memory_host", host["host"], "warning_seconds", host["warning_seconds"])
            yield ("memory_host", host["host"], "critical_seconds", host["critical_seconds"])
    if not memory.get("leaks_measured"):
        yield ("memory", "", "leak_suspects", NOT_MEASURED)
    else:
        yield ("memory", "", "leak_suspects", memory["leak_suspects"])
    fp = memory.get("false_positives")
    if fp:
        for key in ("alerts", "findings"):
            if key in fp:
                yield ("false_positives", key, "raised", fp[key]["raised"])
                yield ("false_positives", key, "marked", fp[key]["marked"])
                yield ("false_positives", key, "rate", _raw(fp[key]["rate"]))
        yield ("false_positives", "all", "rate", _raw(fp["rate"]))
        yield ("false_positives", "all", "target", fp["target"])


def _raw(value):
    return "" if value is None else value
