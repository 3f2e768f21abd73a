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
