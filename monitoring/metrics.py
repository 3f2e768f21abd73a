"""GET /metrics: Prometheus text, computed from the database at scrape time.

Every web process answers the same figures, whichever one the scraper reaches,
because nothing is counted in process memory: requests, decisions and audit rows
are the counters (they are never deleted), the latest samples are the gauges, and
samples ingested are counted in the shared cache (Redis).
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from monitoring.ingest import ingested
from monitoring.models import Alert, HostSample, LeakFinding
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
    pending.add_metric([], OversightRequest.objects.filter(status=Status.PENDING).count())
    yield pending
    decided = OversightRequest.objects.exclude(status=Status.PENDING)
    decisions = CounterMetricFamily("oversight_decisions", "Final decisions.", labels=["source", "outcome"])
    timeouts = CounterMetricFamily("oversight_timeouts", "Requests decided by their timeout.")
    timed_out = 0
    for row in decided.values("decision_source", "status").annotate(n=Count("id")).order_by():
        decisions.add_metric([row["decision_source"], row["status"]], row["n"])
        timed_out += row["n"] if row["decision_source"] == "timeout" else 0
    timeouts.add_metric([], timed_out)
    yield decisions
    yield timeouts
    yield time_to_decision(decided)
    escalations = CounterMetricFamily("oversight_escalations", "Requests escalated to their contacts.")
    escalations.add_metric([], OversightRequest.objects.filter(escalated_at__isnull=False).count())
    yield escalations
    failures = CounterMetricFamily("oversight_callback_failures", "Callback deliveries that failed.")
    failures.add_metric([], AuditEvent.objects.filter(kind=AuditEvent.Kind.CALLBACK_FAILED).count())
    yield failures


def time_to_decision(decided):
    histogram = HistogramMetricFamily(
        "oversight_time_to_decision_seconds", "From submission to the final decision.", labels=["source"]
    )
    took = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())
    buckets = {f"le_{b}": Count("id", filter=Q(took__lte=timedelta(seconds=b))) for b in BUCKETS}
    rows = (
        decided.filter(decided_at__isnull=False)
        .annotate(took=took)
        .values("decision_source")
        .annotate(n=Count("id"), total=Sum("took"), **buckets)
        .order_by()
    )
    for row in rows:
        counts = [(str(float(b)), row[f"le_{b}"]) for b in BUCKETS] + [("+Inf", row["n"])]
        total = row["total"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else (total or 0) / 1e6
        histogram.add_metric([row["decision_source"]], counts, seconds)
    return histogram


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
