"""Leak detection over stored samples: the scan the periodic task and `leakscan` run.

The judgement itself (fixed windows over sample time, a slope's z from its residuals
inflated for autocorrelation, a streak of steep windows or a significant slope over the
span, floors, plateau, step, fall and new-high guards) is `monitoring.detector`; this module
feeds it every process that sent samples in the span, from two sources:

- agents' processes (`AgentSample`, pushed with the SDK's memory reporter), and
- host processes: the top processes by RSS that workers record in every `HostSample`
  (a process on a host that runs no SDK), unless an agent already reports that pid.

Samples are judged by their own `at`, never by when they arrived, so a scan "as of" a
past moment sees what it would have seen then, and agents may backfill.

A finding's life: `suspected` when the detector first says leaking (pushed live as
`leak.suspected`); refreshed while the leak goes on; `cleared` when the trend stops
(the span's slope lost its significance and the level made no new high, or the process
fell silent); `dismissed` when an operator marks it a false positive (write-once, with
who, when and why). A dismissed episode stays dismissed while it goes on; when it ends it gets its `cleared_at`
(keeping its status), and a new leak of the same process is a new finding.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitoring.detector import Params, Verdict, judge, span_end
from monitoring.models import AgentSample, HostSample, LeakFinding, LeakStatus, LeakWeek
from oversight.events import send_event_on_commit
from oversight.serializers import iso

Key = tuple[int | None, str, int]  # (agent id or None for a host process, host, pid)


def params() -> Params:
    return Params(
        step=max(60.0, round(settings.MONITORING_LEAK_SCAN_SECONDS / 60) * 60.0),
        window=settings.MONITORING_LEAK_WINDOW_MINUTES * 60.0,
        streak=settings.MONITORING_LEAK_STREAK,
        span_seconds=settings.MONITORING_LEAK_SPAN_MINUTES * 60.0,
        history=settings.MONITORING_LEAK_HISTORY_MINUTES * 60.0,
        floor_abs=settings.MONITORING_LEAK_MIN_SLOPE_BYTES_PER_HOUR,
        floor_rel=settings.MONITORING_LEAK_MIN_GROWTH_PERCENT_PER_HOUR / 100,
        z_slope=settings.MONITORING_LEAK_Z_SLOPE,
        z_streak=settings.MONITORING_LEAK_Z_STREAK,
    )


@dataclass
class Series:
    points: list[tuple[float, float]]
    process: str


def _epoch(at: datetime) -> float:
    return at.timestamp()


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def load_series(since: datetime, until: datetime) -> dict[Key, Series]:
    """Every process's samples with since <= at < until, from both sources."""
    out: dict[Key, Series] = {}
    rows = (
        AgentSample.objects.filter(at__gte=since, at__lt=until)
        .order_by("agent_id", "host", "pid", "at")
        .values_list("agent_id", "host", "pid", "at", "rss_bytes", "process")
    )
    for agent_id, host, pid, at, rss, process in rows.iterator(chunk_size=5000):
        series = out.get((agent_id, host, pid))
        if series is None:
            series = out[(agent_id, host, pid)] = Series([], process)
        series.points.append((_epoch(at), float(rss)))
        series.process = process or series.process
    if settings.MONITORING_LEAK_HOST_PROCESSES:
        reported = {(host, pid) for _, host, pid in out}
        host_rows = (
            HostSample.objects.filter(at__gte=since, at__lt=until)
            .order_by("host", "at")
            .values_list("host", "at", "top_processes")
        )
        for host, at, top in host_rows.iterator(chunk_size=2000):
            for proc in top or ():
                pid, rss = proc.get("pid"), proc.get("rss_bytes")
                if not isinstance(pid, int) or not isinstance(rss, int) or (host, pid) in reported:
                    continue
                series = out.get((None, host, pid))
                if series is None:
                    series = out[(None, host, pid)] = Series([], str(proc.get("name") or ""))
                series.points.append((_epoch(at), float(rss)))
    return out


SCAN_LOCK = "monitoring:leak-scan"


def scan(now: datetime | None = None) -> int:
    """Judge every process with samples in the latest span as of `now`; record, refresh
    and clear findings. Returns how many new suspects were found.

    One scan at a time across every process (the periodic task, `leakscan`): two scans
    at once would each see no finding yet and record the same leak twice. A scan waits
    for the other, up to one scan interval, then gives up."""
    token = uuid.uuid4().hex
    hold = max(1, int(settings.MONITORING_LEAK_SCAN_SECONDS))
    deadline = time.monotonic() + hold
    while not cache.add(SCAN_LOCK, token, hold):
        if time.monotonic() > deadline:
            return 0
        time.sleep(0.05)
    try:
        return handle_one_scan(now or timezone.now())
    finally:
        if cache.get(SCAN_LOCK) == token:
            cache.delete(SCAN_LOCK)


def handle_one_scan(now: datetime) -> int:
    p = params()
    end = span_end(_epoch(now), p.step)
    series = load_series(_moment(end - p.span() - p.history), _moment(end))
    ongoing = Q(status=LeakStatus.SUSPECTED) | Q(status=LeakStatus.DISMISSED, cleared_at__isnull=True)
    active = {(f.agent_id, f.host, f.pid): f for f in LeakFinding.objects.filter(ongoing).order_by("detected_at")}
    new = 0
    for key, s in series.items():
        verdict = judge(s.points, end, p)
        if verdict is not None:
            new += handle_one_verdict(key, s.process, verdict, active.get(key), end, now)
    for key, finding in active.items():
        if key not in series:
            clear(finding, _moment(end))  # silent for the whole span: the process is gone
    return new


def handle_one_verdict(key: Key, process: str, verdict: Verdict, current: LeakFinding | None, end: float,
                       now: datetime) -> int:
    """Record a new suspect, refresh an ongoing one, or clear one whose trend stopped."""
    agent_id, host, pid = key
    seen = _moment(end)
    if verdict.leaking:
        exhaustion = exhaustion_at(host, verdict.level, verdict.slope_per_hour, seen)
        confidence = round(max(0.0, 1 - 1 / verdict.z), 4) if verdict.z > 0 else 0.0
        fields = {
            "slope_bytes_per_hour": verdict.slope_per_hour, "exhaustion_at": exhaustion, "confidence": confidence,
            "rss_bytes": int(verdict.level), "last_seen_at": seen,
        }
        if current is not None:
            LeakFinding.objects.filter(pk=current.pk, last_seen_at__lte=seen).update(**fields)
            return 0
        with transaction.atomic():
            finding = LeakFinding.objects.create(
                agent_id=agent_id, host=host, pid=pid, process=process, detected_at=now,
                windows=len(verdict.levels), **fields,
            )
            send_event_on_commit("leak.suspected", {"finding": finding_detail(finding)})
            from oversight.notifications import schedule_monitoring

            schedule_monitoring(
                "leak", str(finding.pk), f"[Oversight] Memory leak suspected: {process or pid} on {host}",
                f"Host:      {host}\nProcess:   {process or '-'} (pid {pid})\n"
                f"Growth:    {verdict.slope_per_hour / 2**20:.1f} MiB per hour\nExhaustion: {iso(exhaustion) or '-'}\n",
            )
        return 1
    if verdict.stopped and current is not None and seen > current.last_seen_at:
        clear(current, seen)
    return 0


def clear(finding: LeakFinding, at: datetime) -> bool:
    """The episode is over: suspected → cleared, once (a conditional UPDATE: a dismissal in
    between wins). A dismissed finding keeps its status and gets its `cleared_at`, so the
    next leak of that process is a new finding."""
    if LeakFinding.objects.filter(pk=finding.pk, status=LeakStatus.SUSPECTED).update(
        status=LeakStatus.CLEARED, cleared_at=at
    ):
        return True
    LeakFinding.objects.filter(pk=finding.pk, status=LeakStatus.DISMISSED, cleared_at__isnull=True).update(cleared_at=at)
    return False


def dismiss(finding_id: int, who: str, reason: str, now: datetime | None = None) -> bool:
    """An operator marks a suspected (or cleared) finding a false positive; the first mark stands."""
    return bool(
        LeakFinding.objects.filter(pk=finding_id, dismissed_at__isnull=True).update(
            status=LeakStatus.DISMISSED, dismissed_by=who, dismissed_at=now or timezone.now(), dismiss_reason=reason
        )
    )


def exhaustion_at(host: str, level: float, slope_per_hour: float, at: datetime) -> datetime | None:
    """When the growth uses up the host's available memory, or what is left under the
    cgroup's memory.max when that is smaller (the host's latest sample at or before `at`)."""
    if slope_per_hour <= 0:
        return None
    sample = (
        HostSample.objects.filter(host=host, at__lte=at).order_by("-at")
        .values("available_bytes", "cgroup_limit_bytes").first()
    )
    if not sample or not sample["available_bytes"]:
        return None
    room = sample["available_bytes"]
    if sample["cgroup_limit_bytes"]:
        room = min(room, max(0, sample["cgroup_limit_bytes"] - int(level)))
    return at + timedelta(hours=room / slope_per_hour)


def finding_dict(finding: LeakFinding) -> dict:
    """A finding as §9.6 lists it (`leakscan --json`, /monitoring/leaks.json, the feed)."""
    return {
        "id": finding.id,
        "agent": finding.agent.name if finding.agent_id else None,
        "host": finding.host,
        "pid": finding.pid,
        "process": finding.process,
        "status": finding.status,
        "slope_bytes_per_hour": round(finding.slope_bytes_per_hour),
        "first_detected_at": iso(finding.detected_at),
        "exhaustion_at": iso(finding.exhaustion_at),
    }


def finding_detail(finding: LeakFinding) -> dict:
    """Everything the page shows about one finding: §9.6's fields, the fit, the dismissal."""
    return finding_dict(finding) | {
        "rss_bytes": finding.rss_bytes,
        "confidence": finding.confidence,
        "last_seen_at": iso(finding.last_seen_at),
        "cleared_at": iso(finding.cleared_at),
        "dismissed_by": finding.dismissed_by or None,
        "dismissed_at": iso(finding.dismissed_at),
        "dismiss_reason": finding.dismiss_reason or None,
    }


def active_at(at: datetime):
    """Findings active at `at`: detected by then and not yet cleared or dismissed by then."""
    return (
        LeakFinding.objects.select_related("agent")
        .filter(detected_at__lte=at)
        .filter(Q(cleared_at__isnull=True) | Q(cleared_at__gt=at))
        .filter(Q(dismissed_at__isnull=True) | Q(dismissed_at__gt=at))
        .order_by("detected_at", "id")
    )


def evidence(finding: LeakFinding, limit: int = 5) -> dict:
    """What the agent's own samples say over the finding's span: uncollectable objects,
    objects found in reference cycles, and tracemalloc's top growth sites."""
    if finding.agent_id is None:
        return {"gc_uncollectable": None, "cycles_found": None, "top_growth": []}
    since = finding.detected_at - timedelta(seconds=params().span())
    rows = AgentSample.objects.filter(
        agent_id=finding.agent_id, host=finding.host, pid=finding.pid, at__gte=since, at__lte=finding.last_seen_at
    ).values_list("gc_uncollectable", "cycles_found", "tracemalloc_top")
    uncollectable = cycles = 0
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for gc_uncollectable, cycles_found, top in rows.iterator(chunk_size=2000):
        uncollectable += gc_uncollectable or 0
        cycles += cycles_found or 0
        for site in top or ():
            if isinstance(site, dict) and isinstance(site.get("where"), str):
                sizes[site["where"]] += int(site.get("size_bytes") or 0)
                counts[site["where"]] += int(site.get("count") or 0)
    return {
        "gc_uncollectable": uncollectable,
        "cycles_found": cycles,
        "top_growth": [{"where": w, "size_bytes": s, "count": counts[w]} for w, s in sizes.most_common(limit)],
    }


def week_start(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def weekly_summary(now: datetime | None = None) -> dict:
    """The figures of the last complete week (Monday to Monday, UTC)."""
    now = now or timezone.now()
    end = week_start(now)
    start = end - timedelta(days=7)
    week = LeakFinding.objects.filter(detected_at__gte=start, detected_at__lt=end)
    return {
        "week": start.date(),
        "findings": week.count(),
        "processes": week.values("agent_id", "host", "pid").distinct().count(),
        "fastest_bytes_per_hour": max(week.values_list("slope_bytes_per_hour", flat=True), default=0.0),
        "cleared": week.filter(status=LeakStatus.CLEARED).count(),
        "dismissed": week.filter(status=LeakStatus.DISMISSED).count(),
    }


def handle_one_week(now: datetime | None = None) -> tuple[LeakWeek, bool]:
    """Store the last complete week's figures once; returns (row, created)."""
    figures = weekly_summary(now)
    week = figures.pop("week")
    return LeakWeek.objects.get_or_create(week=week, defaults=figures)
