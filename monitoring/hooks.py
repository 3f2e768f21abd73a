"""What the oversight core asks of monitoring."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from monitoring.models import HostSample


def recent_host_pressure(host: str, now: datetime) -> float | None:
    """The host's latest pressure if sampled within MONITORING_HOST_PRESSURE_MAX_AGE (60 s).

    On the submit path: one index read of `hostsample_host_at`."""
    since = now - timedelta(seconds=settings.MONITORING_HOST_PRESSURE_MAX_AGE)
    return (
        HostSample.objects.filter(host=host, at__gt=since, at__lte=now)
        .order_by("-at")
        .values_list("pressure", flat=True)
        .first()
    )


def firing_alerts() -> list[dict]:
    """Every firing memory alert, as sent in the feed's snapshot."""
    from monitoring.alerts import alert_dict, firing

    return [alert_dict(alert) for alert in firing()]
