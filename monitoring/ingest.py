"""Storing what agents push to POST /api/v1/metrics."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from monitoring import alerts
from monitoring.models import AgentSample, HostSample

HOST_TOTAL_TTL = 60


def store_agent_samples(agent, host: str, samples: list[dict]) -> int:
    """Store validated samples in one batch; remember the agent's host; feed the
    per-process pressure alerts with the timely ones. Returns the count."""
    now = timezone.now()
    rows = [_row(agent, host, s, now) for s in samples]
    with transaction.atomic():
        AgentSample.objects.bulk_create(rows, batch_size=500)
        if agent.last_host != host:
            type(agent).objects.filter(pk=agent.pk).update(last_host=host)
            agent.last_host = host
    count_ingested("agent", len(rows))
    # A backfilled sample is history: kept and scanned for leaks, never an alert now.
    late = timedelta(seconds=settings.MONITORING_LATE_SAMPLE_SECONDS)
    observe_processes(agent, host, [row for row in rows if now - row.at <= late])
    return len(rows)


def _row(agent, host: str, s: dict, now) -> AgentSample:
    gc = s.get("gc") or {}
    return AgentSample(
        agent=agent,
        host=host,
        pid=s["pid"],
        process=s.get("process") or "",
        at=s.get("at") or now,
        rss_bytes=s["rss_bytes"],
        vms_bytes=s.get("vms_bytes"),
        gc_collected=gc.get("collected"),
        gc_uncollectable=gc.get("uncollectable"),
        gc_counts=s.get("gc_counts"),
        cycles_found=s.get("cycles_found"),
        tracemalloc_top=s.get("tracemalloc_top"),
    )


def process_label(agent_name: str, process: str, pid: int) -> str:
    """How an agent process is named on alerts: unique per host while the pid lives."""
    return f"{agent_name}/{process or 'process'} (pid {pid})"


def observe_processes(agent, host: str, rows: list[AgentSample]) -> None:
    """A process's pressure is its RSS over the host's memory, known from the host's
    own samples; on a host no worker samples, processes raise no pressure alerts."""
    total = host_total_bytes(host)
    if not total:
        return
    series = defaultdict(list)
    for row in rows:
        series[(row.pid, row.process)].append((row.at, round(100.0 * row.rss_bytes / total, 2)))
    for (pid, process), points in series.items():
        alerts.observe_series(host, process_label(agent.name, process, pid), points, agent=agent)


def host_total_bytes(host: str) -> int | None:
    """The host's memory size from its latest sample (cached: it hardly ever changes)."""
    key = f"monitoring:total:{host}"
    total = cache.get(key)
    if total is None:
        total = HostSample.objects.filter(host=host).order_by("-at").values_list("total_bytes", flat=True).first()
        cache.set(key, total or 0, HOST_TOTAL_TTL)
    return total or None


def count_ingested(kind: str, n: int) -> None:
    """Samples stored since the cache was last emptied, for /metrics (shared by all processes)."""
    key = f"monitoring:ingested:{kind}"
    if not cache.add(key, n, None):
        try:
            cache.incr(key, n)
        except ValueError:  # evicted between add and incr
            cache.add(key, n, None)


def ingested(kind: str) -> int:
    return int(cache.get(f"monitoring:ingested:{kind}") or 0)
