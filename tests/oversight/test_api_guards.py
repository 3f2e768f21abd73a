"""What an agent cannot get around at submission: minimum time, operations, bound hosts,
monitored pressure, missing metrics, the pending limit, the reject cooldown, and rate
limits with Redis down."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import HostSample
from oversight import actions
from oversight.models import OversightRequest, Source, Status
from tests.oversight.api_helpers import error_code, get, post, submit

pytestmark = pytest.mark.django_db(transaction=True)

CRITICAL = {"delegation_depth": 9}


def _sample(host, pressure, age=5):
    HostSample.objects.create(
        host=host, at=timezone.now() - timedelta(seconds=age), pressure=pressure,
        total_bytes=8 << 30, available_bytes=1 << 30, used_bytes=7 << 30,
    )


def test_it_refuses_a_timeout_below_the_policys_minimum_naming_the_field(client, agent):
    response = submit(client, agent, metrics={"memory_pressure": 99}, timeout_seconds=1)
    assert response.status_code == 400 and error_code(response) == "validation_error"
    assert "timeout_seconds" in response.json()["error"]["details"]
    assert not OversightRequest.objects.exists()
    at_minimum = submit(client, agent, metrics={"memory_pressure": 99}, timeout_seconds=60)
    assert at_minimum.status_code == 201 and at_minimum.json()["status"] == "pending"


def test_the_readme_example_without_a_timeout_still_works(client, agent):
    response = submit(client, agent, operation="drop-db", summary="x", metrics={"memory_pressure": 99})
    assert response.status_code == 201 and response.json()["status"] == "pending"


def test_a_lower_minimum_is_one_policy_setting_away(client, agent):
    actions.do_change_policy("*", {"min_timeout_seconds": 1}, by="maria")
    assert submit(client, agent, metrics={"memory_pressure": 99}, timeout_seconds=1).status_code == 201


def test_an_agent_restricted_to_operations_gets_403_for_others(client, agent):
    agent.agent.operations = ["delegate"]
    agent.agent.save()
    assert submit(client, agent, operation="delegate").status_code == 201
    refused = submit(client, agent, operation="delgate")
    assert refused.status_code == 403 and error_code(refused) == "forbidden"


def test_the_monitored_pressure_overrules_an_understated_value(client, agent):
    _sample("web-1", 95.0)
    body = submit(client, agent, metrics={"memory_pressure": 10, "host": "web-1"}).json()
    assert body["status"] == "pending"
    trigger = body["triggers"][0]
    assert (trigger["value"], trigger["source"], trigger["agent_value"], trigger["monitored_value"]) == (
        95.0, "monitoring", 10, 95.0,
    )


def test_a_sample_older_than_a_minute_is_not_used(client, agent):
    _sample("web-1", 95.0, age=61)
    body = submit(client, agent, metrics={"memory_pressure": 10, "host": "web-1"}).json()
    assert body["status"] == "approved" and body["triggers"][0]["monitored_value"] is None


def test_a_bound_agent_is_judged_by_its_own_host_and_may_name_no_other(client, agent):
    agent.agent.hosts = ["db-1"]
    agent.agent.save()
    _sample("db-1", 97.0)
    _sample("idle-9", 5.0)
    refused = submit(client, agent, metrics={"memory_pressure": 10, "host": "idle-9"})
    assert refused.status_code == 400 and "metrics.host" in refused.json()["error"]["details"]
    body = submit(client, agent, metrics={"memory_pressure": 10}).json()
    assert body["triggers"][0]["monitored_value"] == 97.0 and body["status"] == "pending"


def test_a_bound_agent_naming_its_calm_host_is_judged_by_the_highest_of_its_hosts(client, agent):
    """Naming the calm (or silent) one of its bound hosts does not hide the others' pressure."""
    agent.agent.hosts = ["db-1", "db-2", "db-3"]
    agent.agent.save()
    _sample("db-1", 97.0)
    _sample("db-2", 4.0)
    for named in ("db-2", "db-3"):  # db-3 has no recent sample at all
        body = submit(client, agent, metrics={"memory_pressure": 10, "host": named}).json()
        assert body["status"] == "pending", named
        assert body["triggers"][0]["monitored_value"] == 97.0 and body["triggers"][0]["source"] == "monitoring"


def test_a_bound_agent_cannot_push_samples_for_another_host(client, agent):
    agent.agent.hosts = ["db-1"]
    agent.agent.save()
    sample = {"pid": 1, "process": "a", "rss_bytes": 100}
    refused = post(client, "/api/v1/metrics", agent, json={"host": "idle-9", "samples": [sample]})
    assert refused.status_code == 400 and error_code(refused) == "validation_error"
    accepted = post(client, "/api/v1/metrics", agent, json={"host": "db-1", "samples": [sample]})
    assert accepted.status_code == 202
    from monitoring.models import AgentSample

    assert list(AgentSample.objects.values_list("host", flat=True)) == ["db-1"]


def test_missing_metrics_critical_sends_a_bare_request_to_people(client, agent):
    actions.do_change_policy("*", {"missing_metrics": "critical"}, by="maria")
    body = submit(client, agent).json()
    assert body["status"] == "pending" and all(t["fired"] for t in body["triggers"])


def test_a_critical_submission_over_the_pending_limit_is_429(client, agent):
    agent.agent.max_pending = 2
    agent.agent.save()
    for _ in range(2):
        assert submit(client, agent, metrics=CRITICAL, payload={"n": _}).status_code == 201
    flooded = submit(client, agent, metrics=CRITICAL, payload={"n": 3})
    assert flooded.status_code == 429 and error_code(flooded) == "too_many_pending"
    assert int(flooded["Retry-After"]) >= 1
    routine = submit(client, agent, metrics={"delegation_depth": 1})
    assert routine.status_code == 201 and routine.json()["status"] == "approved"


def test_after_an_operator_rejects_the_same_ask_is_rejected_at_once(client, agent):
    first = submit(client, agent, metrics=CRITICAL, payload={"b": 1, "a": [1, 2]}).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="Not now")
    again = submit(client, agent, metrics=CRITICAL, summary="Trying again", payload={"a": [1, 2], "b": 1}).json()
    assert again["status"] == "rejected"
    assert again["decision"]["source"] == "policy" and again["decision"]["reason"] == "Not now"
    other = submit(client, agent, metrics=CRITICAL, payload={"a": [1, 2], "b": 2}).json()
    assert other["status"] == "pending"


def test_the_reject_cooldown_ends(client, agent, time_machine):
    first = submit(client, agent, metrics=CRITICAL).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    time_machine.move_to(timezone.now() + timedelta(seconds=301))
    assert submit(client, agent, metrics=CRITICAL).json()["status"] == "pending"


def test_rate_limits_hold_from_the_database_when_redis_is_down(client, agent, settings, time_machine):
    from oversight.runner import free_port

    start = timezone.now().replace(second=1, microsecond=0) + timedelta(minutes=1)
    time_machine.move_to(start, tick=True)  # all five in one window

    settings.OVERSIGHT_RATE_LIMIT_PER_MINUTE = 3
    # A Redis that is down: nothing listens on this port.
    settings.CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }}
    statuses = [get(client, "/api/v1/requests", agent).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_existing_and_new_policies_get_the_defaults(db):
    from oversight.policy import ensure_default_policy

    policy = ensure_default_policy()
    assert (policy.min_timeout_seconds, policy.required_approvals, policy.approver_groups, policy.missing_metrics,
            policy.reject_cooldown_seconds, policy.timeout_action) == (60, 1, [], "ignore", 300, "approve")


def test_openapi_describes_the_oversight_fields_and_codes(client):
    doc = client.get("/api/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    resource = schemas["RequestResource"]["properties"]
    assert {"required_approvals", "approvals", "approver_groups", "payload_changed_by"} <= set(resource)
    assert set(schemas["Approval"]["properties"]) == {"by", "at"}
    assert {"agent_value", "monitored_value"} <= set(schemas["Trigger"]["properties"])
    assert "min_timeout_seconds" in schemas["SubmitRequest"]["properties"]["timeout_seconds"]["description"]
    codes = schemas["ErrorBody"]["properties"]["code"]["description"]
    assert "too_many_pending" in codes and "already_approved" in codes
    responses = doc["paths"]["/api/v1/requests"]["post"]["responses"]
    assert "too_many_pending" in responses["429"]["description"] and "403" in responses


def test_the_reject_cooldown_matches_on_canonical_json(client, agent):
    """`{"n": 2}` and `{"n": 2.0}` are the same payload in canonical JSON (RFC 8785, as
    `payload_sha256`): resubmitting the other spelling does not dodge a person's no."""
    first = submit(client, agent, metrics=CRITICAL, payload={"n": 2, "k": ["a", -0.0]}).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    again = submit(client, agent, metrics=CRITICAL, payload={"k": ["a", 0], "n": 2.0}).json()
    assert again["payload_sha256"] == first["payload_sha256"]
    assert (again["status"], again["decision"]["source"], again["decision"]["reason"]) == ("rejected", "policy", "No")
