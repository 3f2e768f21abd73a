"""Storing what agents push to POST /api/v1/metrics."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from monitoring.models import AgentSample


def store_agent_samples(agent, host: str, samples: list[dict]) -> int:
    """Store validated samples in one batch; remember the agent's host. Returns the count."""
    now = timezone.now()
    rows = [
        AgentSample(
            agent=agent,
            host=host,
            pid=s["pid"],
            process=s.get("process") or "",
            at=s.get("at") or now,
            rss_bytes=s["rss_bytes"],
            vms_bytes=s.get("vms_bytes"),
            gc_collected=(s.get("gc") or {}).get("collected"),
            gc_uncollectable=(s.get("gc") or {}).get("uncollectable"),
            gc_counts=s.get("gc_counts"),
            cycles_found=s.get("cycles_found"),
            tracemalloc_top=s.get("tracemalloc_top"),
        )
        for s in samples
    ]
    with transaction.atomic():
        AgentSample.objects.bulk_create(rows, batch_size=500)
        if agent.last_host != host:
            type(agent).objects.filter(pk=agent.pk).update(last_host=host)
            agent.last_host = host
    return len(rows)
