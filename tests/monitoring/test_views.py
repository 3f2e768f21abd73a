from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import AgentSample, Alert, HostRollup, HostSample, LeakFinding

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def host_sample(host="box-1", pressure=42.0, age=5, **extra):
    return HostSample.objects.create(
        host=host, at=timezone.now() - timedelta(seconds=age), pressure=pressure, total_bytes=8 << 30,
        available_bytes=4 << 30, used_bytes=4 << 30, psi_some_avg10=1.25,
        top_processes=[{"pid": 1, "name": "<b>init</b>", "rss_bytes": 1000, "vms_bytes": 2000}], **extra,
    )


def firing_alert(**fields):
    now = timezone.now()
    return Alert.objects.create(
        **{"host": "box-1", "severity": "warning", "value": 85, "threshold": 80, "peak": 88,
           "started_at": now - timedelta(minutes=2), "raised_at": now - timedelta(minutes=1)} | fields
    )


def test_it_shows_hosts_alerts_leaks_and_processes_escaped(client, operator, agent):
    host_sample(host="<script>alert(1)</script>")
    firing_alert()
    AgentSample.objects.create(agent=agent.agent, host="box-1", pid=9, process="<i>crawler</i>", rss_bytes=5 << 20, cycles_found=4)
    LeakFinding.objects.create(agent=agent.agent, host="box-1", pid=9, process="crawler", slope_bytes_per_hour=1 << 20,
                               detected_at=timezone.now(), confidence=0.99, last_seen_at=timezone.now())
    response = login(client, operator).get("/monitoring/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert "&lt;b&gt;init&lt;/b&gt;" in html
    assert "&lt;i&gt;crawler&lt;/i&gt;" in html
    assert "Acknowledge" in html
    assert "chart.umd.min.js" in html and "js/monitoring.js" in html


def test_it_lets_managers_look_but_not_acknowledge(client, manager):
    firing_alert()
    response = login(client, manager).get("/monitoring/")
    assert response.status_code == 200
    assert "Acknowledge" not in response.content.decode()
    alert = Alert.objects.get()
    assert client.post(f"/monitoring/alerts/{alert.id}/acknowledge").status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_it_keeps_outsiders_and_strangers_out(client, outsider):
    assert client.get("/monitoring/").status_code == 302
    assert client.get("/monitoring/series.json?host=x").status_code == 302
    login(client, outsider)
    assert client.get("/monitoring/").status_code == 403
    assert client.get("/monitoring/series.json?host=x").status_code == 403


def test_it_acknowledges_once_with_csrf(operator, second_operator):
    from django.test import Client

    alert = firing_alert()
    strict = login(Client(enforce_csrf_checks=True), operator)
    assert strict.post(f"/monitoring/alerts/{alert.id}/acknowledge").status_code == 403
    ok = login(Client(), operator).post(f"/monitoring/alerts/{alert.id}/acknowledge", headers={"Accept": "application/json"})
    assert ok.status_code == 200
    assert ok.json()["acknowledged_by"] == operator.username
    late = login(Client(), second_operator).post(f"/monitoring/alerts/{alert.id}/acknowledge", headers={"Accept": "application/json"})
    assert late.status_code == 409
    assert late.json()["acknowledged_by"] == operator.username
    form = login(Client(), operator).post(f"/monitoring/alerts/{alert.id}/acknowledge")
    assert form.status_code == 302
    assert login(Client(), operator).post("/monitoring/alerts/999999/acknowledge").status_code == 404
    assert login(Client(), operator).get(f"/monitoring/alerts/{alert.id}/acknowledge").status_code == 405


def test_it_serves_the_last_hour_raw_and_longer_ranges_from_rollups(client, operator):
    host_sample(pressure=30, age=120)
    host_sample(pressure=50, age=60)
    host_sample(pressure=70, age=7200)  # older than an hour
    minute = timezone.now().replace(second=0, microsecond=0)
    for i in range(25):
        HostRollup.objects.create(host="box-1", minute=minute - timedelta(minutes=i), samples=12, pressure_min=10,
                                  pressure_avg=20 + i, pressure_max=90, available_min=1, available_avg=1, available_max=1)
    login(client, operator)
    hour = client.get("/monitoring/series.json?host=box-1&range=1h").json()
    assert [p["avg"] for p in hour["points"]] == [30, 50]
    assert hour["points"][0]["psi_some"] == 1.25
    day = client.get("/monitoring/series.json?host=box-1&range=24h").json()
    assert len(day["points"]) == 25
    week = client.get("/monitoring/series.json?host=box-1&range=7d").json()
    assert 3 <= len(week["points"]) <= 4  # 25 minutes in 10-minute buckets
    assert max(p["max"] for p in week["points"]) == 90
    assert client.get("/monitoring/series.json?host=box-1&range=nonsense").json()["range"] == "1h"


def test_it_serves_a_process_series_and_refuses_nonsense(client, operator, agent):
    AgentSample.objects.create(agent=agent.agent, host="box-1", pid=9, rss_bytes=123)
    login(client, operator)
    body = client.get(f"/monitoring/process.json?agent={agent.agent.id}&host=box-1&pid=9").json()
    assert [p["rss"] for p in body["points"]] == [123]
    assert client.get("/monitoring/process.json?agent=x&pid=1").status_code == 404
