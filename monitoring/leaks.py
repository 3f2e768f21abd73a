"""Leak detection on agents' process samples: a robust, confirmed upward trend.

For each process that pushed samples lately, the last two windows (each
MONITORING_LEAK_WINDOW_MINUTES long) are tested separately:

- a running median (5 points) first removes isolated spikes;
- Mann–Kendall's S (normal approximation) must show a significant rise, and
- the Theil–Sen slope (median of pairwise slopes) must exceed a floor.

Both windows must agree. A single jump leaves the later window flat, and a
plateau is flat, so neither is a suspect; Theil–Sen ignores the pairs within a
level, so one step does not read as a slope. The forecast divides the host's
available memory by the growth rate.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitoring.models import AgentSample, HostSample, LeakFinding
from oversight.events import send_event_on_commit
from oversight.serializers import iso

MIN_POINTS = 8
MAX_POINTS = 120  # Theil–Sen is O(n²): thin longer windows evenly
P_VALUE = 0.01


@dataclass(frozen=True)
class Trend:
    slope_per_hour: float
    p_value: float
    median_level: float


def median_filter(values: list[float], width: int = 5) -> list[float]:
    half = width // 2
    return [statistics.median(values[max(0, i - half): i + half + 1]) for i in range(len(values))]


def theil_sen(xs: list[float], ys: list[float]) -> float:
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    return statistics.median(slopes) if slopes else 0.0


def mann_kendall_p(ys: list[float]) -> float:
    """One-sided p-value that the series rises (normal approximation, ties corrected)."""
    n = len(ys)
    s = sum((ys[j] > ys[i]) - (ys[j] < ys[i]) for i in range(n) for j in range(i + 1, n))
    ties = [c for c in _counts(ys) if c > 1]
    var = (n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in ties)) / 18
    if var <= 0 or s <= 0:
        return 1.0
    z = (s - 1) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _counts(values: list[float]) -> list[int]:
    seen: dict[float, int] = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return list(seen.values())


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS)]


def trend(points: list[tuple[datetime, int]]) -> Trend | None:
    """The trend of one window of (time, rss) points, or None with too few points."""
    if len(points) < MIN_POINTS:
        return None
    t0 = points[0][0]
    pairs = _thin([((at - t0).total_seconds() / 3600, float(rss)) for at, rss in points])
    xs = [x for x, _ in pairs]
    ys = median_filter([y for _, y in pairs])
    return Trend(theil_sen(xs, ys), mann_kendall_p(ys), statistics.median(ys))


def is_leaking(windows: list[Trend | None], min_slope: float) -> bool:
    return all(w is not None and w.p_value < P_VALUE and w.slope_per_hour > min_slope for w in windows)


def scan_one_process(agent_id: int, host: str, pid: int, now: datetime) -> LeakFinding | None:
    """Test one process's last two windows; record (or refresh) a finding. Returns a new finding."""
    window = timedelta(minutes=settings.MONITORING_LEAK_WINDOW_MINUTES)
    rows = list(
        AgentSample.objects.filter(agent_id=agent_id, host=host, pid=pid, at__gt=now - 2 * window, at__lte=now)
        .order_by("at")
        .values_list("at", "rss_bytes", "process")
    )
    split = now - window
    earlier = trend([(at, rss) for at, rss, _ in rows if at <= split])
    later = trend([(at, rss) for at, rss, _ in rows if at > split])
    if not is_leaking([earlier, later], settings.MONITORING_LEAK_MIN_SLOPE_BYTES_PER_HOUR):
        return None
    return _record(agent_id, host, pid, rows[-1][2], earlier, later, now, window)


def _record(agent_id, host, pid, process, earlier: Trend, later: Trend, now, window) -> LeakFinding | None:
    slope = later.slope_per_hour
    confidence = round(1 - max(earlier.p_value, later.p_value), 4)
    exhaustion = _exhaustion(host, slope, now)
    with transaction.atomic():
        # One finding per episode: a process still leaking at the next scan refreshes it.
        current = (
            LeakFinding.objects.select_for_update()
            .filter(agent_id=agent_id, host=host, pid=pid, last_seen_at__gte=now - 2 * window)
            .order_by("-detected_at")
            .first()
        )
        if current is not None:
            LeakFinding.objects.filter(pk=current.pk).update(
                slope_bytes_per_hour=slope, exhaustion_at=exhaustion, confidence=confidence,
                rss_bytes=int(later.median_level), last_seen_at=now, windows=current.windows + 1,
            )
            return None
        finding = LeakFinding.objects.create(
            agent_id=agent_id, host=host, pid=pid, process=process, slope_bytes_per_hour=slope, detected_at=now,
            exhaustion_at=exhaustion, confidence=confidence, rss_bytes=int(later.median_level), last_seen_at=now,
        )
        send_event_on_commit("leak.suspected", {"finding": finding_dict(finding)})
        from oversight.notifications import schedule_monitoring

        schedule_monitoring(
            "leak", str(finding.pk), f"[Oversight] Memory leak suspected: {process or pid} on {host}",
            f"Host:      {host}\nProcess:   {process or '-'} (pid {pid})\n"
            f"Growth:    {slope / 2**20:.1f} MiB per hour\nExhaustion: {iso(exhaustion) or '-'}\n",
        )
    return finding


def _exhaustion(host: str, slope_per_hour: float, now: datetime) -> datetime | None:
    available = HostSample.objects.filter(host=host).order_by("-at").values_list("available_bytes", flat=True).first()
    if not available or slope_per_hour <= 0:
        return None
    return now + timedelta(hours=available / slope_per_hour)


def finding_dict(finding: LeakFinding) -> dict:
    return {
        "id": finding.id,
        "agent": finding.agent.name if finding.agent_id else None,
        "host": finding.host,
        "pid": finding.pid,
        "process": finding.process,
        "slope_bytes_per_hour": round(finding.slope_bytes_per_hour),
        "rss_bytes": finding.rss_bytes,
        "confidence": finding.confidence,
        "detected_at": iso(finding.detected_at),
        "exhaustion_at": iso(finding.exhaustion_at),
    }


def processes_to_scan(now: datetime) -> list[tuple[int, str, int]]:
    """Agent processes that pushed a sample within the last window."""
    window = timedelta(minutes=settings.MONITORING_LEAK_WINDOW_MINUTES)
    return list(
        AgentSample.objects.filter(at__gt=now - window, at__lte=now)
        .values_list("agent_id", "host", "pid")
        .distinct()
    )


def scan(now: datetime | None = None) -> int:
    """Scan every recently active process; returns how many new suspects were found."""
    now = now or timezone.now()
    return sum(scan_one_process(a, h, p, now) is not None for a, h, p in processes_to_scan(now))


def weekly_summary(now: datetime | None = None) -> dict:
    """The week's findings in figures (logged by the weekly task, shown on the page)."""
    now = now or timezone.now()
    week = LeakFinding.objects.filter(detected_at__gt=now - timedelta(days=7))
    return {
        "findings": week.count(),
        "processes": week.values("agent_id", "host", "pid").distinct().count(),
        "fastest_bytes_per_hour": max(week.values_list("slope_bytes_per_hour", flat=True), default=0),
    }
