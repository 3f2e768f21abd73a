from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.hooks import recent_host_pressure
from monitoring.models import HostSample

pytestmark = pytest.mark.django_db(transaction=True)


def sample(host, pressure, age_seconds):
    return HostSample.objects.create(
        host=host, at=timezone.now() - timedelta(seconds=age_seconds), pressure=pressure,
        total_bytes=100, available_bytes=100 - int(pressure), used_bytes=int(pressure),
    )


def submit(client, agent, metrics):
    body = {"operation": "delegate", "summary": "Delegate the crawl", "metrics": metrics}
    response = client.post("/api/v1/requests", body, content_type="application/json", headers=agent.headers)
    assert response.status_code == 201, response.content
    return response.json()


def pressure_trigger(resource):
    return next(t for t in resource["triggers"] if t["rule"] == "memory_pressure")


def test_it_uses_the_latest_pressure_of_a_recent_sample_only(db):
    sample("box", 50, 30)
    sample("box", 70, 5)
    sample("stale", 99, 61)
    now = timezone.now()
    assert recent_host_pressure("box", now) == 70
    assert recent_host_pressure("stale", now) is None
    assert recent_host_pressure("nowhere", now) is None


def test_it_fires_the_policy_from_the_agents_host_when_the_request_has_no_pressure(agent, client):
    sample("box", 91.5, 10)
    agent.agent.last_host = "box"
    agent.agent.save()
    resource = submit(client, agent, {"delegation_depth": 1})
    trigger = pressure_trigger(resource)
    assert trigger == {**trigger, "value": 91.5, "fired": True, "source": "monitoring"}
    assert resource["status"] == "pending"


def test_it_does_not_fire_when_the_host_is_calm(agent, client):
    sample("calm-box", 42.0, 10)
    resource = submit(client, agent, {"host": "calm-box"})
    trigger = pressure_trigger(resource)
    assert (trigger["value"], trigger["fired"], trigger["source"]) == (42.0, False, "monitoring")
    assert resource["status"] == "approved"


def test_an_agent_cannot_understate_the_pressure_its_host_is_under(agent, client):
    """§9.1: the larger of the agent's value and the monitored one is judged."""
    sample("box", 99.0, 10)
    resource = submit(client, agent, {"host": "box", "memory_pressure": 12.0})
    trigger = pressure_trigger(resource)
    assert (trigger["value"], trigger["fired"], trigger["source"]) == (99.0, True, "monitoring")
    assert (trigger["agent_value"], trigger["monitored_value"]) == (12.0, 99.0)


def test_the_agents_value_counts_when_it_is_the_higher(agent, client):
    sample("box", 40.0, 10)
    trigger = pressure_trigger(submit(client, agent, {"host": "box", "memory_pressure": 85.0}))
    assert (trigger["value"], trigger["fired"], trigger["source"]) == (85.0, True, "agent")
