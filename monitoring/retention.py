"""Storage that stays small: per-minute roll-ups of raw samples, and pruning by age.

Raw samples are kept MONITORING_RAW_RETENTION_DAYS (7), roll-ups
MONITORING_ROLLUP_RETENTION_DAYS (90). Rolling up is idempotent (an upsert per
minute), so the beat task can re-roll recent minutes to pick up samples that
arrived late, and a worker that was down catches up from the last rolled minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Avg, Count, Max, Min
from django.db.models.functions import TruncMinute
from django.utils import timezone

from monitoring.models import AgentRollup, AgentSample, HostRollup, HostSample

# Minutes re-rolled behind the last rolled one: agents' batches may arrive late.
LATE_MARGIN = timedelta(minutes=10)


def floor_minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def _start(rollup_model, sample_model, end: datetime) -> datetime | None:
    last = rollup_model.objects.order_by("-minute").values_list("minute", flat=True).first()
    if last is not None:
        return last - LATE_MARGIN
    first = sample_model.objects.filter(at__lt=end).order_by("at").values_list("at", flat=True).first()
    return floor_minute(first) if first else None


def roll_up_hosts(now: datetime) -> int:
    """Roll complete minutes of host samples; returns how many minute rows were written."""
    end = floor_minute(now)
    start = _start(HostRollup, HostSample, end)
    if start is None:
        return 0
    groups = (
        HostSample.objects.filter(at__gte=start, at__lt=end)
        .annotate(minute=TruncMinute("at"))
        .values("host", "minute")
        .annotate(
            n=Count("id"),
            p_min=Min("pressure"), p_avg=Avg("pressure"), p_max=Max("pressure"),
            a_min=Min("available_bytes"), a_avg=Avg("available_bytes"), a_max=Max("available_bytes"),
            some=Max("psi_some_avg10"), full=Max("psi_full_avg10"),
        )
    )
    rows = [
        HostRollup(
            host=g["host"], minute=g["minute"], samples=g["n"],
            pressure_min=g["p_min"], pressure_avg=g["p_avg"], pressure_max=g["p_max"],
            available_min=g["a_min"], available_avg=g["a_avg"], available_max=g["a_max"],
            psi_some_avg10_max=g["some"], psi_full_avg10_max=g["full"],
        )
        for g in groups
    ]
    HostRollup.objects.bulk_create(
        rows, batch_size=500, update_conflicts=True, unique_fields=["host", "minute"],
        update_fields=[
            "samples", "pressure_min", "pressure_avg", "pressure_max", "available_min", "available_avg",
            "available_max", "psi_some_avg10_max", "psi_full_avg10_max",
        ],
    )
    return len(rows)


def roll_up_agents(now: datetime) -> int:
    end = floor_minute(now)
    start = _start(AgentRollup, AgentSample, end)
    if start is None:
        return 0
    groups = (
        AgentSample.objects.filter(at__gte=start, at__lt=end)
        .annotate(minute=TruncMinute("at"))
        .values("agent_id", "host", "pid", "minute")
        .annotate(n=Count("id"), r_min=Min("rss_bytes"), r_avg=Avg("rss_bytes"), r_max=Max("rss_bytes"),
                  cycles=Max("cycles_found"), name=Max("process"))
    )
    rows = [
        AgentRollup(
            agent_id=g["agent_id"], host=g["host"], pid=g["pid"], process=g["name"] or "", minute=g["minute"],
            samples=g["n"], rss_min=g["r_min"], rss_avg=g["r_avg"], rss_max=g["r_max"], cycles_found_max=g["cycles"],
        )
        for g in groups
    ]
    AgentRollup.objects.bulk_create(
        rows, batch_size=500, update_conflicts=True, unique_fields=["agent", "host", "pid", "minute"],
        update_fields=["process", "samples", "rss_min", "rss_avg", "rss_max", "cycles_found_max"],
    )
    return len(rows)


def prune(now: datetime) -> dict[str, int]:
    """Delete raw samples and roll-ups past their retention. Returns counts deleted."""
    raw = now - timedelta(days=settings.MONITORING_RAW_RETENTION_DAYS)
    rolled = now - timedelta(days=settings.MONITORING_ROLLUP_RETENTION_DAYS)
    return {
        "host_samples": HostSample.objects.filter(at__lt=raw).delete()[0],
        "agent_samples": AgentSample.objects.filter(at__lt=raw).delete()[0],
        "host_rollups": HostRollup.objects.filter(minute__lt=rolled).delete()[0],
        "agent_rollups": AgentRollup.objects.filter(minute__lt=rolled).delete()[0],
    }


def roll_up_and_prune(now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    return {"host_minutes": roll_up_hosts(now), "agent_minutes": roll_up_agents(now), **prune(now)}
