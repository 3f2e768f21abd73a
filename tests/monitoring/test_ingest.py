from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from monitoring.ingest import ingested, store_agent_samples
from monitoring.models import AgentSample, Alert, HostSample

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
GIB = 1 << 30


def host_sample(host, at, total=10 * GIB):
    return HostSample.objects.create(
        host=host, at=at, pressure=10, total_bytes=total, available_bytes=total // 2, used_bytes=total // 2
    )


def samples(rss_values, pid=42, start=T0):
    return [
        {"at": start + timedelta(seconds=5 * i), "pid": pid, "process": "crawler", "rss_bytes": rss,
         "gc": {"collected": 3, "uncollectable": 1}, "cycles_found": 2, "tracemalloc_top": []}
        for i, rss in enumerate(rss_values)
    ]


def test_it_stores_samples_against_the_agent_host_and_pid(agent):
    before = ingested("agent")
    assert store_agent_samples(agent.agent, "box-9", samples([100, 200])) == 2
    rows = list(AgentSample.objects.order_by("at"))
    assert [(r.agent_id, r.host, r.pid, r.rss_bytes, r.gc_collected, r.gc_uncollectable) for r in rows] == [
        (agent.agent.id, "box-9", 42, 100, 3, 1),
        (agent.agent.id, "box-9", 42, 200, 3, 1),
    ]
    agent.agent.refresh_from_db()
    assert agent.agent.last_host == "box-9"
    assert ingested("agent") == before + 2


def test_it_raises_a_process_alert_from_its_share_of_host_memory(agent, settings):
    from django.core.cache import cache

    cache.clear()
    host_sample("box-9", T0 - timedelta(seconds=1))
    with time_machine.travel(T0 + timedelta(seconds=35), tick=False):
        store_agent_samples(agent.agent, "box-9", samples([int(8.5 * GIB)] * 7))
    alert = Alert.objects.get()
    assert alert.severity == "warning"
    assert alert.host == "box-9"
    assert alert.process == "scraper-7/crawler (pid 42)"
    assert alert.value == pytest.approx(85.0)
    assert alert.agent_id == agent.agent.id


def test_it_keeps_a_late_sample_but_raises_no_alert_from_it(agent):
    from django.core.cache import cache

    cache.clear()
    host_sample("box-9", T0 - timedelta(seconds=1))
    # Received six minutes after the last sample's own time: a backfill.
    with time_machine.travel(T0 + timedelta(seconds=30 + 6 * 60), tick=False):
        assert store_agent_samples(agent.agent, "box-9", samples([int(8.5 * GIB)] * 7)) == 7
    assert AgentSample.objects.count() == 7
    assert Alert.objects.count() == 0


def test_it_raises_no_process_alert_on_a_host_nobody_samples(agent):
    from django.core.cache import cache

    cache.clear()
    store_agent_samples(agent.agent, "unsampled", samples([int(9.5 * GIB)] * 10))
    assert Alert.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_accepts_samples_through_the_api(agent, client):
    body = {"host": "box-9", "samples": [{"pid": 7, "process": "w", "rss_bytes": 5, "at": "2026-11-25T10:00:00Z"}]}
    response = client.post("/api/v1/metrics", body, content_type="application/json", headers=agent.headers)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    assert AgentSample.objects.get().at == T0
