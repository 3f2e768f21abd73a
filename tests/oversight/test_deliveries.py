"""The outbox's claim: racing workers and sweeps never send one delivery twice at once."""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from oversight import actions, deliveries
from oversight.models import Delivery, Source, Status
from tests.conftest import other_workers_paused
from tests.receiver import Receiver


def _decided(agent, url):
    req, _ = actions.do_submit(
        agent.agent,
        actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, callback_url=url),
        api_key=agent.agent.keys.get(),
    )
    actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    return Delivery.objects.get(key=f"callback:{req.id}")


@pytest.mark.django_db(transaction=True)
def test_racing_workers_send_one_delivery_once(agent):
    with other_workers_paused(), Receiver([200]) as receiver:
        delivery = _decided(agent, receiver.url)
        barrier = threading.Barrier(6)
        errors = []

        def worker():
            try:
                barrier.wait()
                deliveries.handle_one_delivery(str(delivery.pk))
            except Exception as exc:
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []
    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts == 1


@pytest.mark.django_db
def test_a_held_lease_keeps_others_off_until_it_expires(agent, settings):
    settings.OVERSIGHT_DELIVERY_LEASE_SECONDS = 30
    delivery = _decided(agent, "http://127.0.0.1:9/x")
    now = timezone.now()
    # A worker claimed it and died (no answer, no release).
    Delivery.objects.filter(pk=delivery.pk).update(lease_until=now + timedelta(seconds=30), attempts=1)
    assert deliveries.due(now=now) == []
    assert deliveries.handle_one_delivery(str(delivery.pk), now=now) is None
    assert str(delivery.pk) in deliveries.due(now=now + timedelta(seconds=31))


@pytest.mark.django_db
def test_scheduling_one_key_twice_writes_one_row(agent):
    delivery = _decided(agent, "http://127.0.0.1:9/x")
    assert not deliveries.schedule(delivery.key, "callback", "http://other.test/", request=delivery.request)
    assert Delivery.objects.filter(key=delivery.key).count() == 1
