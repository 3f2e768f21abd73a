"""Escalation notices to the policy's contacts."""


import pytest
import time_machine
from django.contrib.auth.models import User
from django.core import mail

from oversight import actions, notify
from oversight.models import AuditEvent, Source, Status

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


def test_it_mails_the_contacts_with_a_link_to_decide(escalated):
    assert notify.handle_one_escalation_notice(str(escalated.id)) == 2
    [message] = mail.outbox
    assert sorted(message.to) == ["duty@example.org", "lead@example.org"]
    assert "delegate by scraper-7" in message.subject
    assert f"https://oversight.example/requests/{escalated.id}/" in message.body
    assert "delegation_depth 5 > 4" in message.body
    event = AuditEvent.objects.get(request=escalated, kind="escalation_notified")
    assert event.data == {"recipients": ["duty@example.org", "lead@example.org"], "unknown_contacts": ["no-mail", "ghost"]}


def test_nothing_is_sent_once_the_request_is_decided(escalated):
    actions.do_decide(escalated.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    assert notify.handle_one_escalation_notice(str(escalated.id)) == 0
    assert mail.outbox == []


def test_a_mail_server_that_is_down_is_worth_a_retry(escalated, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1
    with pytest.raises(notify.MailUnavailable):
        notify.handle_one_escalation_notice(str(escalated.id))
    assert not AuditEvent.objects.filter(request=escalated, kind="escalation_notified").exists()


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
        if AuditEvent.objects.filter(request=req, kind="escalation_notified").exists():
            break
        time.sleep(0.2)
    event = AuditEvent.objects.get(request=req, kind="escalation_notified")
    assert event.data["recipients"] == ["lead@example.org"]
    assert AuditEvent.objects.filter(request=req, kind="escalated").count() == 1


def test_no_contacts_no_notice(agent):
    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 5}))
    actions.handle_one_escalation(req.id, now=req.escalate_at)
    assert notify.handle_one_escalation_notice(str(req.id)) == 0
    assert mail.outbox == []
