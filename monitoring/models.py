"""Memory samples of hosts (collected by workers) and of agents' processes (pushed)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class HostSample(models.Model):
    """One collection on one host: pressure per spec §6, PSI, the top processes."""

    host = models.CharField(max_length=255)
    at = models.DateTimeField(default=timezone.now)
    pressure = models.FloatField(help_text="Percent: 100 × (1 − available / total), cgroup-aware.")
    total_bytes = models.BigIntegerField()
    available_bytes = models.BigIntegerField()
    used_bytes = models.BigIntegerField()
    swap_total_bytes = models.BigIntegerField(default=0)
    swap_used_bytes = models.BigIntegerField(default=0)
    cgroup_pressure = models.FloatField(null=True, blank=True)
    cgroup_limit_bytes = models.BigIntegerField(null=True, blank=True, help_text="The cgroup's memory.max, when limited.")
    psi_some_avg10 = models.FloatField(null=True, blank=True)
    psi_some_avg60 = models.FloatField(null=True, blank=True)
    psi_full_avg10 = models.FloatField(null=True, blank=True)
    psi_full_avg60 = models.FloatField(null=True, blank=True)
    top_processes = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [
            # "Host over time": charts, the latest pressure of a host (policy hook).
            models.Index(fields=["host", "-at"], name="hostsample_host_at"),
            # Pruning by age.
            models.Index(fields=["at"], name="hostsample_at"),
        ]


class AgentSample(models.Model):
    """One sample an agent pushed about one of its processes."""

    agent = models.ForeignKey("oversight.Agent", on_delete=models.CASCADE, related_name="samples")
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    process = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(default=timezone.now)
    rss_bytes = models.BigIntegerField()
    vms_bytes = models.BigIntegerField(null=True, blank=True)
    gc_collected = models.BigIntegerField(null=True, blank=True)
    gc_uncollectable = models.BigIntegerField(null=True, blank=True)
    gc_counts = models.JSONField(null=True, blank=True)
    cycles_found = models.BigIntegerField(null=True, blank=True)
    tracemalloc_top = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [
            # "Process over time": an agent process's memory chart and the leak detector.
            models.Index(fields=["agent", "host", "pid", "at"], name="agentsample_process_at"),
            # Pruning by age.
            models.Index(fields=["at"], name="agentsample_at"),
        ]


class HostRollup(models.Model):
    """One host's samples over one minute: what the 24 h and 7 d charts read (kept 90 days)."""

    host = models.CharField(max_length=255)
    minute = models.DateTimeField()
    samples = models.PositiveIntegerField()
    pressure_min = models.FloatField()
    pressure_avg = models.FloatField()
    pressure_max = models.FloatField()
    available_min = models.BigIntegerField()
    available_avg = models.FloatField()
    available_max = models.BigIntegerField()
    psi_some_avg10_max = models.FloatField(null=True, blank=True)
    psi_full_avg10_max = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            # Also the "host over time" index of the long-range charts.
            models.UniqueConstraint(fields=["host", "minute"], name="hostrollup_host_minute"),
        ]
        indexes = [models.Index(fields=["minute"], name="hostrollup_minute")]


class AgentRollup(models.Model):
    """One agent process's samples over one minute (kept 90 days)."""

    agent = models.ForeignKey("oversight.Agent", on_delete=models.CASCADE, related_name="rollups")
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    process = models.CharField(max_length=200, blank=True)
    minute = models.DateTimeField()
    samples = models.PositiveIntegerField()
    rss_min = models.BigIntegerField()
    rss_avg = models.FloatField()
    rss_max = models.BigIntegerField()
    cycles_found_max = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            # Also the "process over time" index of the long-range charts.
            models.UniqueConstraint(fields=["agent", "host", "pid", "minute"], name="agentrollup_process_minute"),
        ]
        indexes = [models.Index(fields=["minute"], name="agentrollup_minute")]


class Severity(models.TextChoices):
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(models.Model):
    """A memory pressure alert: raised after holding above its threshold, resolved after holding below."""

    host = models.CharField(max_length=255)
    process = models.CharField(max_length=255, blank=True, help_text="Empty for a host alert; 'name (pid N)' for an agent process.")
    agent = models.ForeignKey("oversight.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    kind = models.CharField(max_length=30, default="pressure")
    severity = models.CharField(max_length=10, choices=Severity.choices)
    value = models.FloatField(help_text="The pressure when it was raised.")
    threshold = models.FloatField()
    peak = models.FloatField()
    started_at = models.DateTimeField(help_text="When the pressure first crossed the threshold.")
    raised_at = models.DateTimeField(help_text="When it had held long enough to raise.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    # Write-once: an operator marked it a false positive (who, when, why).
    false_positive_by = models.CharField(max_length=150, blank=True)
    false_positive_at = models.DateTimeField(null=True, blank=True)
    false_positive_reason = models.TextField(blank=True)

    class Meta:
        indexes = [
            # Firing alerts: the feed's snapshot, /metrics and the page.
            models.Index(fields=["host", "process"], condition=models.Q(resolved_at__isnull=True), name="alert_firing"),
            # Recent alerts and the monthly reports.
            models.Index(fields=["-started_at"], name="alert_started"),
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.kind} on {self.host} {self.process}".strip()


class AlertTrack(models.Model):
    """The alert state machine's state for one (host, process, severity): survives restarts and
    is shared by every worker, so whichever worker stores the next sample continues it."""

    host = models.CharField(max_length=255)
    process = models.CharField(max_length=255, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    phase = models.CharField(max_length=10, default="ok")  # ok | pending | firing | clearing
    since = models.DateTimeField(null=True, blank=True)
    last_at = models.DateTimeField(null=True, blank=True)
    first_value = models.FloatField(null=True, blank=True)
    peak = models.FloatField(null=True, blank=True)
    alert = models.ForeignKey(Alert, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "process", "severity"], name="alerttrack_key"),
        ]


class LeakStatus(models.TextChoices):
    SUSPECTED = "suspected"
    CLEARED = "cleared"  # the trend stopped
    DISMISSED = "dismissed"  # an operator marked it a false positive


class LeakFinding(models.Model):
    """A process whose memory keeps rising: a robust trend confirmed over consecutive windows.

    `agent` is empty for a host process (found in the workers' top-process samples)."""

    agent = models.ForeignKey("oversight.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="leaks")
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    process = models.CharField(max_length=200, blank=True)
    slope_bytes_per_hour = models.FloatField()
    detected_at = models.DateTimeField()
    exhaustion_at = models.DateTimeField(null=True, blank=True)
    confidence = models.FloatField(help_text="0–1: how far the net growth stands above the noise (1 − 1/z).")
    rss_bytes = models.BigIntegerField(default=0, help_text="The fitted level at last_seen_at.")
    windows = models.PositiveSmallIntegerField(default=2)
    last_seen_at = models.DateTimeField(help_text="The end of the latest span that still showed the trend.")
    status = models.CharField(max_length=10, choices=LeakStatus.choices, default=LeakStatus.SUSPECTED)
    cleared_at = models.DateTimeField(null=True, blank=True)
    dismissed_by = models.CharField(max_length=150, blank=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    dismiss_reason = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["agent", "host", "pid", "-detected_at"], name="leak_process"),
            models.Index(fields=["-detected_at"], name="leak_detected"),
        ]

    def __str__(self) -> str:
        return f"leak {self.process or self.pid} on {self.host}"


class LeakWeek(models.Model):
    """The weekly leak scan's figures for one week (Monday 00:00 UTC to the next)."""

    week = models.DateField(unique=True, help_text="The Monday the week starts on.")
    findings = models.PositiveIntegerField()
    processes = models.PositiveIntegerField()
    fastest_bytes_per_hour = models.FloatField()
    cleared = models.PositiveIntegerField()
    dismissed = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    mailed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"leaks in the week of {self.week}"


class MetricsCheckpoint(models.Model):
    """The /metrics counters over every request decided before `watermark`, folded once.

    A scrape adds to these only what was decided (or escalated, or failed) since the
    watermark — a short index range — instead of aggregating every request ever made.
    The watermark trails the clock by a margin longer than any transaction that writes
    those rows, so a row committed late still lands after it. One row; it moves by a
    conditional UPDATE, so two scrapers folding at once count nothing twice.
    """

    watermark = models.DateTimeField()
    figures = models.JSONField(default=dict)
