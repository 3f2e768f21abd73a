"""Signed callbacks, delivered to a real HTTP receiver."""

import hashlib
import hmac
import json
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.utils import timezone

from oversight import actions, callbacks
from oversight.models import AuditEvent, Source, Status
from tests.receiver import Receiver


def _verify(body: bytes, header: str, api_key: str) -> bool:
    """What an agent does: HMAC keyed with the hex SHA-256 digest of its key."""
    key = hashlib.sha256(api_key.encode()).hexdigest().encode()
    return hmac.compare_digest(header, "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest())


def _decided_with_callback(agent, url):
    req, _ = actions.do_submit(
        agent.agent,
        actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, callback_url=url),
        api_key=agent.agent.keys.get(),
    )
    return actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="no")


@pytest.mark.django_db
def test_it_posts_the_final_resource_signed_with_the_key_digest(agent):
    with Receiver([200]) as receiver:
        req = _decided_with_callback(agent, receiver.url)
        assert callbacks.handle_one_delivery(str(req.id), 1) is None
    headers, body = receiver.received[0]
    assert _verify(body, headers["x-oversight-signature"], agent.key)
    assert not _verify(body, headers["x-oversight-signature"], agent.key + "x")
    resource = json.loads(body)
    assert resource["id"] == str(req.id) and resource["status"] == "rejected"
    assert resource["decision"]["reason"] == "no"
    assert AuditEvent.objects.filter(request=req, kind="callback_delivered").count() == 1


@pytest.mark.django_db
def test_a_failing_receiver_is_retried_with_growing_backoff(agent):
    with Receiver([500, 503, 200]) as receiver:
        req = _decided_with_callback(agent, receiver.url)
        assert callbacks.handle_one_delivery(str(req.id), 1) == 1
        assert callbacks.handle_one_delivery(str(req.id), 2) == 2
        assert callbacks.handle_one_delivery(str(req.id), 3) is None
    assert len(receiver.received) == 3
    kinds = list(AuditEvent.objects.filter(request=req, kind__startswith="callback").values_list("kind", "data"))
    assert [k for k, _ in kinds] == ["callback_failed", "callback_failed", "callback_delivered"]
    assert kinds[0][1]["status"] == 500 and kinds[0][1]["retry_in"] == 1


@pytest.mark.django_db
def test_it_gives_up_after_the_retry_window(agent, settings):
    settings.OVERSIGHT_CALLBACK_MAX_SECONDS = 60
    with Receiver([500]) as receiver:
        req = _decided_with_callback(agent, receiver.url)
        with time_machine.travel(req.decided_at + timedelta(seconds=59), tick=False):
            assert callbacks.handle_one_delivery(str(req.id), 7) is None
    failure = AuditEvent.objects.filter(request=req, kind="callback_failed").last()
    assert failure.data["final"] is True


@pytest.mark.django_db
def test_an_unreachable_receiver_is_a_failure_not_a_crash(agent):
    from oversight.runner import free_port

    req = _decided_with_callback(agent, f"http://127.0.0.1:{free_port()}/gone")
    assert callbacks.handle_one_delivery(str(req.id), 1) == 1
    assert "ConnectError" in AuditEvent.objects.get(request=req, kind="callback_failed").data["error"]


def test_backoff_doubles_and_is_capped():
    assert [callbacks.backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert callbacks.backoff(30) == callbacks.MAX_BACKOFF_SECONDS


@pytest.mark.django_db(transaction=True)
def test_the_allow_list_restricts_callback_hosts(client, agent, settings):
    settings.OVERSIGHT_CALLBACK_ALLOWED_HOSTS = ["hooks.example"]
    assert callbacks.url_allowed("https://hooks.example/x")
    assert not callbacks.url_allowed("http://127.0.0.1/x")
    from tests.oversight.api_helpers import submit

    response = submit(client, agent, callback_url="http://127.0.0.1:9/x")
    assert response.status_code == 400 and "callback_url" in response.json()["error"]["details"]


@pytest.mark.live
def test_a_worker_delivers_the_callback_without_holding_up_the_decision(live, agent):
    with Receiver([500, 200]) as receiver:
        created = httpx.post(
            live.url + "/api/v1/requests", headers=agent.headers,
            json={"operation": "delegate", "summary": "s", "metrics": {"delegation_depth": 5}, "callback_url": receiver.url},
        ).json()
        started = timezone.now()
        actions.do_decide(created["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
        decided_in = (timezone.now() - started).total_seconds()
        assert receiver.arrived.wait(20), live.tail()
    assert decided_in < 1.0  # the decision did not wait for the 500 and the retry
    headers, body = receiver.received[-1]
    assert _verify(body, headers["x-oversight-signature"], agent.key)
    assert json.loads(body)["status"] == "approved"
    assert len(receiver.received) == 2
