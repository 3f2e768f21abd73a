"""Monitoring's live feed events (group `feed`)."""

from __future__ import annotations

from django.core.cache import cache

from oversight.events import send_event_now
from oversight.serializers import iso


def pressure_sample(sample) -> bool:
    """Push `pressure.sample` for a stored host sample, at most once a second per host.

    The collection interval can be set below a second; browsers only draw a gauge.
    Returns whether it was sent."""
    if not cache.add(f"monitoring:pushed:{sample.host}", 1, 1):
        return False
    send_event_now(
        "pressure.sample",
        {
            "host": sample.host,
            "pressure": sample.pressure,
            "available_bytes": sample.available_bytes,
            "at": iso(sample.at),
        },
    )
    return True
