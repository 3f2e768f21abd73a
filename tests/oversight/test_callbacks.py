"""Signed callbacks, delivered to a real HTTP receiver."""

import hashlib
import hmac
import json
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.utils import timezone

from oversight import actions, callbacks, deliveries
from oversight.models import AuditEvent, Delivery, Source, Status
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


def _deliver(req, now=None):
    """One attempt of the request's callback delivery, as a worker makes it."""
    delivery = Delivery.objects.get(key=f"callback:{req.id}")
    return deliveries.handle_one_delivery(str(delivery.pk), now=now)


def _due_again(req):
    Delivery.objects.filter(key=f"callback:{req.id}").update(next_attempt_at=timezone.now())


@pytest.mark.django_db
def test_it_posts_the_final_resource_signed_with_the_key_digest(agent):
    with Receiver([200]) as receiver:
        req = _decided_with_callback(agent, receiver.url)
        assert _deliver(req) is None
    headers, body = receiver.received[0]
    assert _verify(body, headers["x-oversight-signature"], agent.key)
    assert not _verify(body, headers["x-oversight-signature"], agent.key + "x")
    resource = json.loads(body)
    assert resource["id"] == str(req.id) and resource["status"] == "rejected"
    assert resource["decision"]["reason"] == "no"
    delivery = Delivery.objects.get(key=f"callback:{req.id}")
    assert headers["x-oversight-delivery"] == str(delivery.pk) and delivery.state == "delivered"
    assert AuditEvent.objects.filter(request=req, kind="callback_delivered").count() == 1


@pytest.mark.django_db
def test_it_retries_a_failing_receiver_with_growing_backoff_and_the_same_delivery_id(agent):
    with Receiver([500, 503, 200]) as receiver:
        req = _decided_with_callback(agent, receiver.url)
        first = _deliver(req)
        assert 0.75 <= first <= 1
        assert _deliver(req) is None  # not due yet: nobody claims it
        _due_again(req)
        assert 1.5 <= _deliver(req) <= 2
        _due_again(req)
        assert _deliver(req) is None
    assert len(receiver.received) == 3
    assert len({headers["x-oversight-delivery"] for headers, _ in receiver.received}) == 1
    kinds = list(AuditEvent.objects.filter(request=req, kind__startswith="callback").values_list("kind", "data"))
    assert [k for k, _ in kinds] == ["callback_failed", "callback_failed", "callback_delivered"]
    assert kinds[0][1]["error"] == "HTTP 500" and kinds[0][1]["retry_in"] == first
    assert [d["attempt"] for _, d in kinds] == [1, 2, 3]


@pytest.mark.django_db
def test_it_gives_up_after_the_retry_window(agent, settings):
    settings.OVERSIGHT_CALLBACK_MAX_SECONDS = 60
    with Receiver([500]) as receiver:
        req = _decided_with_callback(agent, receiver.url)
        with time_machine.travel(req.decided_at + timedelta(seconds=60), tick=False):
            assert _deliver(req) is None
    failure = AuditEvent.objects.filter(request=req, kind="callback_failed").last()
    assert failure.data["final"] is True
    assert Delivery.objects.get(key=f"callback:{req.id}").state == "failed"


@pytest.mark.django_db
def test_it_audits_an_unreachable_receiver_with_a_short_reason_not_a_crash(agent):
    from oversight.runner import free_port

    req = _decided_with_callback(agent, f"http://127.0.0.1:{free_port()}/gone")
    assert _deliver(req) is not None
    assert AuditEvent.objects.get(request=req, kind="callback_failed").data["error"] == "connection refused"


def test_it_doubles_the_backoff_with_jitter_and_caps_it():
    for attempt, base in ((1, 1), (2, 2), (3, 4), (4, 8), (30, deliveries.MAX_BACKOFF_SECONDS)):
        assert 0.75 * base <= deliveries.backoff(attempt) <= base


@pytest.mark.django_db(transaction=True)
def test_the_allow_list_restricts_callback_hosts(client, agent, settings):
    settings.OVERSIGHT_CALLBACK_ALLOWED_HOSTS = ["hooks.example"]
    assert callbacks.url_allowed("https://hooks.example/x")
    assert not callbacks.url_allowed("http://127.0.0.1/x")
    from tests.oversight.api_helpers import submit

    response = submit(client, agent, callback_url="http://127.0.0.1:9/x")
    assert response.status_code == 400 and "callback_url" in response.json()["error"]["details"]


@pytest.mark.django_db
def test_it_writes_the_callback_in_the_decision_transaction(agent):
    from django.db import transaction

    req, _ = actions.do_submit(
        agent.agent,
        actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, callback_url="http://127.0.0.1:9/x"),
        api_key=agent.agent.keys.get(),
    )
    with pytest.raises(RuntimeError), transaction.atomic():
        actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
        assert Delivery.objects.filter(key=f"callback:{req.id}").exists()
        raise RuntimeError("the decision rolls back")
    assert not Delivery.objects.filter(key=f"callback:{req.id}").exists()
    actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    assert Delivery.objects.get(key=f"callback:{req.id}").state == "pending"


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
