"""GET /metrics: Prometheus text, from the database at scrape time — incrementally.

Every web process answers the same figures, whichever one the scraper reaches,
because nothing is counted in process memory: requests, decisions and audit rows
are the counters (they are never deleted), the latest samples are the gauges, and
samples ingested are counted in the shared cache (Redis). A scrape never aggregates
the whole table: the counters up to a trailing watermark are folded once into a
checkpoint row (`counted_figures`), and each scrape adds only the rows since.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from monitoring.ingest import ingested
from monitoring.models import Alert, HostSample, LeakFinding, MetricsCheckpoint
from oversight.models import AuditEvent, OversightRequest, Status

BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
# A host that has not reported for this long is left out of the gauges (its worker is gone).
HOST_STALE = timedelta(minutes=5)


class DatabaseCollector:
    def collect(self):
        yield from request_metrics()
        yield from host_metrics(timezone.now())
        yield from alert_metrics()


def request_metrics():
    from oversight.actions import expire_overdue

    expire_overdue()  # an overdue request is counted as timed out, not pending
    pending = GaugeMetricFamily("oversight_pending_requests", "Requests waiting for a decision.")
    # Counted on the partial index of pending deadlines: as cheap as the queue is short.
    pending.add_metric([], OversightRequest.objects.filter(status=Status.PENDING).count())
    yield pending
    figures = counted_figures(timezone.now())
    decisions = CounterMetricFamily("oversight_decisions", "Final decisions.", labels=["source", "outcome"])
    timeouts = CounterMetricFamily("oversight_timeouts", "Requests decided by their timeout.")
    timed_out = 0
    for label, n in sorted(figures["decisions"].items()):
        source, outcome = label.split("/")
        decisions.add_metric([source, outcome], n)
        timed_out += n if source == "timeout" else 0
    timeouts.add_metric([], timed_out)
    yield decisions
    yield timeouts
    histogram = HistogramMetricFamily(
        "oversight_time_to_decision_seconds", "From submission to the final decision.", labels=["source"]
    )
    for source, row in sorted(figures["took"].items()):
        counts = [(str(float(b)), n) for b, n in zip(BUCKETS, row["buckets"], strict=True)] + [("+Inf", row["n"])]
        histogram.add_metric([source], counts, row["seconds"])
    yield histogram
    escalations = CounterMetricFamily("oversight_escalations", "Requests escalated to their contacts.")
    escalations.add_metric([], figures["escalations"])
    yield escalations
    failures = CounterMetricFamily("oversight_callback_failures", "Callback deliveries that failed.")
    failures.add_metric([], figures["callback_failures"])
    yield failures


# --- Counters folded incrementally --------------------------------------------------------

# Longer than any transaction that decides, escalates or audits: a row is never
# committed behind the watermark. Folding waits for at least STEP of new history.
FOLD_MARGIN = timedelta(minutes=5)
FOLD_STEP = timedelta(minutes=1)
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


def counted_figures(now: datetime) -> dict:
    """Every counter /metrics reports: the checkpoint's, plus what happened since its watermark."""
    checkpoint = _checkpoint()
    target = now - FOLD_MARGIN
    if target - checkpoint.watermark >= FOLD_STEP:
        folded = add_figures(checkpoint.figures, period_figures(checkpoint.watermark, target))
        claim = MetricsCheckpoint.objects.filter(id=checkpoint.id, watermark=checkpoint.watermark)
        if claim.update(watermark=target, figures=folded) == 1:
            checkpoint.watermark, checkpoint.figures = target, folded
        else:  # another scrape folded first: take its result
            checkpoint.refresh_from_db()
    return add_figures(checkpoint.figures, period_figures(checkpoint.watermark, None))


def _checkpoint() -> MetricsCheckpoint:
    checkpoint = MetricsCheckpoint.objects.order_by("id").first()
    if checkpoint is None:
        with transaction.atomic():
            checkpoint, _ = MetricsCheckpoint.objects.get_or_create(
                id=1, defaults={"watermark": BEGINNING, "figures": empty_figures()}
            )
    return checkpoint


def empty_figures() -> dict:
    return {"decisions": {}, "took": {}, "escalations": 0, "callback_failures": 0}


def period_figures(start: datetime, end: datetime | None) -> dict:
    """The counters over rows stamped in [start, end) (end None: up to now and beyond):
    each query is a range on an index of its time column."""

    def within(field: str) -> dict:
        return {f"{field}__gte": start} | ({f"{field}__lt": end} if end is not None else {})

    decided = OversightRequest.objects.exclude(status=Status.PENDING).filter(**within("decided_at"))
    figures = empty_figures()
    for row in decided.values("decision_source", "status").annotate(n=Count("id")).order_by():
        figures["decisions"][f"{row['decision_source']}/{row['status']}"] = row["n"]
    took = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())
    buckets = {f"le_{b}": Count("id", filter=Q(took__lte=timedelta(seconds=b))) for b in BUCKETS}
    rows = decided.annotate(took=took).values("decision_source").annotate(n=Count("id"), total=Sum("took"), **buckets)
    for row in rows.order_by():
        total = row["total"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else (total or 0) / 1e6
        figures["took"][row["decision_source"]] = {
            "n": row["n"], "seconds": seconds, "buckets": [row[f"le_{b}"] for b in BUCKETS]
        }
    figures["escalations"] = OversightRequest.objects.filter(**within("escalated_at")).count()
    failed = AuditEvent.objects.filter(kind=AuditEvent.Kind.CALLBACK_FAILED, **within("at"))
    figures["callback_failures"] = failed.count()
    return figures


def add_figures(a: dict, b: dict) -> dict:
    took = {}
    for source in a["took"].keys() | b["took"].keys():
        x = a["took"].get(source, {"n": 0, "seconds": 0.0, "buckets": [0] * len(BUCKETS)})
        y = b["took"].get(source, {"n": 0, "seconds": 0.0, "buckets": [0] * len(BUCKETS)})
        took[source] = {
            "n": x["n"] + y["n"],
            "seconds": x["seconds"] + y["seconds"],
            "buckets": [p + q for p, q in zip(x["buckets"], y["buckets"], strict=True)],
        }
    decisions = {k: a["decisions"].get(k, 0) + b["decisions"].get(k, 0) for k in a["decisions"].keys() | b["decisions"].keys()}
    return {
        "decisions": decisions,
        "took": took,
        "escalations": a["escalations"] + b["escalations"],
        "callback_failures": a["callback_failures"] + b["callback_failures"],
    }


def latest_host_samples(now) -> list[HostSample]:
    hosts = HostSample.objects.filter(at__gt=now - HOST_STALE).values_list("host", flat=True).distinct()
    latest = [HostSample.objects.filter(host=h).order_by("-at").first() for h in sorted(set(hosts))]
    return [s for s in latest if s is not None]


def host_metrics(now):
    pressure = GaugeMetricFamily("oversight_host_memory_pressure_percent", "Host memory pressure (spec §6).", labels=["host"])
    available = GaugeMetricFamily("oversight_host_memory_available_bytes", "Host memory available.", labels=["host"])
    psi = GaugeMetricFamily("oversight_host_memory_psi_avg10", "Linux PSI memory, percent over 10 s.", labels=["host", "kind"])
    for sample in latest_host_samples(now):
        pressure.add_metric([sample.host], sample.pressure)
        available.add_metric([sample.host], sample.available_bytes)
        for kind, value in (("some", sample.psi_some_avg10), ("full", sample.psi_full_avg10)):
            if value is not None:
                psi.add_metric([sample.host, kind], value)
    ingested_total = CounterMetricFamily("oversight_samples_ingested", "Memory samples stored.", labels=["kind"])
    for kind in ("host", "agent"):
        ingested_total.add_metric([kind], ingested(kind))
    yield from (pressure, available, psi, ingested_total)


def alert_metrics():
    firing = GaugeMetricFamily("oversight_alerts_firing", "Memory pressure alerts firing.", labels=["severity"])
    counts = dict(
        Alert.objects.filter(resolved_at__isnull=True).values_list("severity").annotate(n=Count("id")).order_by()
    )
    for severity in ("warning", "critical"):
        firing.add_metric([severity], counts.get(severity, 0))
    yield firing
    leaks = GaugeMetricFamily("oversight_leak_suspects", "Leak findings of the last 7 days.")
    leaks.add_metric([], LeakFinding.objects.filter(detected_at__gt=timezone.now() - timedelta(days=7)).count())
    yield leaks


def _authorised(request: HttpRequest) -> bool:
    token = settings.OVERSIGHT_METRICS_TOKEN
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
