"""Escalation notices to the policy's contacts."""


import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail
from django.utils import timezone

from oversight import actions, deliveries
from oversight.models import AuditEvent, Delivery, Source, Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def escalated(agent, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://oversight.example"
    User.objects.create_user("duty", email="duty@example.org")
    User.objects.create_user("no-mail")
    actions.do_change_policy("delegate", {"escalation_contacts": ["lead@example.org", "duty", "no-mail", "ghost"]},
                             by="maria")
    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "Delegate <b>the</b> scrape", {},
                                                               {"delegation_depth": 5}))
    with time_machine.travel(req.escalate_at, tick=False):
        assert actions.handle_one_escalation(req.id, now=req.escalate_at)
    return req


def _deliver_all(req):
    for delivery_id in Delivery.objects.filter(request=req, state="pending").values_list("pk", flat=True):
        # The escalation was written at the escalation time (a little ahead of now).
        deliveries.handle_one_delivery(str(delivery_id), now=max(timezone.now(), req.escalate_at))


def test_it_mails_the_contacts_with_a_link_to_decide(escalated):
    _deliver_all(escalated)
    assert sorted(m.to[0] for m in mail.outbox) == ["duty@example.org", "lead@example.org"]
    message = mail.outbox[0]
    assert "delegate by scraper-7" in message.subject
    assert f"https://oversight.example/requests/{escalated.id}/" in message.body
    assert "delegation_depth 5 > 4" in message.body
    events = AuditEvent.objects.filter(request=escalated, kind="notification_delivered")
    assert sorted(e.data["url"] for e in events) == ["duty@example.org", "lead@example.org"]
    assert {e.data["event"] for e in events} == {"escalated"}


def test_nothing_is_sent_once_the_request_is_decided(escalated):
    actions.do_decide(escalated.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    _deliver_all(escalated)
    assert mail.outbox == []
    assert AuditEvent.objects.filter(request=escalated, kind="notification_skipped").count() == 2


def test_a_mail_server_that_is_down_is_worth_a_retry(escalated, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1
    _deliver_all(escalated)
    failures = AuditEvent.objects.filter(request=escalated, kind="notification_failed")
    assert [f.data["error"] for f in failures] == ["mail server unavailable"] * 2
    assert all(f.data["final"] is False and f.data["retry_in"] > 0 for f in failures)
    assert Delivery.objects.filter(request=escalated, state="pending").count() == 2


@pytest.mark.live
def test_the_beat_escalates_and_a_worker_sends_the_notice(live, agent, short_timeouts):
    """End to end: beat's sweep escalates at half the timeout, the worker mails (console
    backend in the live stack) and audits it."""
    import time

    actions.do_change_policy("deploy", {"escalation_contacts": ["lead@example.org"], "always": True,
                                          "min_timeout_seconds": 1}, by="maria")
    req, _ = actions.do_submit(agent.agent, actions.Submission("deploy", "Ship it", {}, {}, timeout_seconds=4))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if AuditEvent.objects.filter(request=req, kind="notification_delivered").exists():
            break
        time.sleep(0.2)
    event = AuditEvent.objects.get(request=req, kind="notification_delivered")
    assert event.data["url"] == "lead@example.org" and event.data["event"] == "escalated"
    assert AuditEvent.objects.filter(request=req, kind="escalated").count() == 1


def test_no_contacts_no_notice(agent):
    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 5}))
    actions.handle_one_escalation(req.id, now=req.escalate_at)
    assert not Delivery.objects.filter(request=req).exists()
    assert mail.outbox == []
