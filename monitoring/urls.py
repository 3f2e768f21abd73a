"""Monitoring pages and /metrics (filled by the monitoring module)."""

urlpatterns: list = []
