"""Monitoring pages, their JSON, the acknowledge POST, and /metrics (served by the lean API handler)."""

from django.urls import path

from monitoring import metrics, views

urlpatterns = [
    path("metrics", metrics.metrics, name="metrics"),
    path("monitoring/", views.monitoring_page, name="monitoring"),
    path("monitoring/series.json", views.host_series, name="monitoring-host-series"),
    path("monitoring/process.json", views.process_series, name="monitoring-process-series"),
    path("monitoring/leaks.json", views.leaks_json, name="monitoring-leaks"),
    path("monitoring/leaks/<int:finding_id>.json", views.leak_series, name="monitoring-leak-series"),
    path("monitoring/leaks/<int:finding_id>/dismiss", views.dismiss_leak, name="monitoring-leak-dismiss"),
    path("monitoring/leaks/weekly/", views.weekly_leaks, name="monitoring-leaks-weekly"),
    path("monitoring/alerts/<int:alert_id>/acknowledge", views.acknowledge, name="monitoring-acknowledge"),
    path("monitoring/alerts/<int:alert_id>/false-positive", views.alert_false_positive,
         name="monitoring-alert-false-positive"),
]
