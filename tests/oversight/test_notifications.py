"""Notifications to people: e-mail, signed webhooks and Apprise URLs, through the outbox."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connections
from django.utils import timezone

from oversight import actions, deliveries, notifications
from oversight.models import AuditEvent, Delivery, Policy, Source, Status
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://oversight.example"
    settings.OVERSIGHT_WEBHOOK_SECRET = "webhook-secret"


def _deliver_all(req=None):
    rows = Delivery.objects.filter(state="pending")
    if req is not None:
        rows = rows.filter(request=req)
    for delivery_id in rows.values_list("pk", flat=True):
        deliveries.handle_one_delivery(str(delivery_id))


def _critical(agent, summary="Delegate the scrape"):
    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", summary, {}, {"delegation_depth": 5}))
    return req


def test_it_tells_the_targets_of_a_new_critical_request_and_its_decision(agent):
    with Receiver([200]) as receiver:
        actions.do_change_policy("delegate", {"notify": notifications.parse_notify(["lead@example.org", receiver.url])},
                                 by="maria")
        req = _critical(agent)
        _deliver_all(req)
        actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="no")
        _deliver_all(req)
    assert [m.subject for m in mail.outbox] == [
        "[Oversight] Waiting for a decision: delegate by scraper-7",
        "[Oversight] Decided: delegate by scraper-7",
    ]
    body = mail.outbox[0].body
    for line in ("Operation: delegate", "Agent:     scraper-7", "Summary:   Delegate the scrape",
                 "Rules:     delegation_depth 5 > 4", f"https://oversight.example/requests/{req.id}/"):
        assert line in body
    assert "Decision:  rejected (operator, olivia)" in mail.outbox[1].body
    assert [json.loads(b)["event"] for _, b in receiver.received] == ["created", "decided"]
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(b"webhook-secret", body, hashlib.sha256).hexdigest()
        assert headers["x-oversight-signature"] == expected
        assert Delivery.objects.filter(pk=headers["x-oversight-delivery"], state="delivered").exists()
    assert AuditEvent.objects.filter(request=req, kind="notification_delivered").count() == 4


def test_routine_approvals_notify_nobody(agent):
    actions.do_change_policy("delegate", {"notify": ["lead@example.org"]}, by="maria")
    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {}))
    assert req.status == Status.APPROVED and not Delivery.objects.filter(request=req).exists()


def test_it_reminds_every_interval_once_each_even_with_two_schedulers(agent):
    actions.do_change_policy("delegate", {"notify": ["lead@example.org"], "remind_every_seconds": 60}, by="maria")
    req = _critical(agent)
    assert notifications.schedule_reminders(now=req.created_at + timedelta(seconds=59)) == 0
    at = req.created_at + timedelta(seconds=61)
    assert notifications.schedule_reminders(now=at) == 1
    assert notifications.schedule_reminders(now=at) == 0
    assert notifications.schedule_reminders(now=req.created_at + timedelta(seconds=125)) == 1
    keys = sorted(Delivery.objects.filter(request=req, event="reminder").values_list("key", flat=True))
    assert [k.split(":")[3] for k in keys] == ["1", "2"]


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_racing_write_each_reminder_once(agent):
    actions.do_change_policy("delegate", {"notify": ["lead@example.org", "duty@example.org"],
                                          "remind_every_seconds": 60}, by="maria")
    req = _critical(agent)
    at = req.created_at + timedelta(seconds=61)
    barrier = threading.Barrier(4)
    written = []

    def scheduler():
        try:
            barrier.wait()
            written.append(notifications.schedule_reminders(now=at))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(written) == 2
    assert Delivery.objects.filter(request=req, event="reminder").count() == 2


def test_it_masks_credentials_and_stores_them_sealed(agent):
    url = "https://user:pass-word.1@hooks.example/T0K3N-xyz.42?x=1"  # "." never occurs in a sealed value
    stored = notifications.parse_notify([url, "ops@example.org"])
    assert stored[1] == "ops@example.org"
    assert "T0K3N-xyz.42" not in stored[0] and "pass-word.1" not in stored[0]
    assert notifications.unseal(stored[0]) == url
    assert notifications.mask(stored[0]) == "https://hooks.example/***"
    policy = actions.do_change_policy("delegate", {"notify": stored}, by="maria")
    change = AuditEvent.objects.get(policy=policy, kind="policy_changed")
    assert "T0K3N-xyz.42" not in json.dumps(change.data)
    assert "https://hooks.example/***" in json.dumps(change.data)
    assert notifications.parse_notify(stored) == stored  # an unchanged form keeps its sealed values


@pytest.mark.parametrize("target", [
    "file:///etc/passwd", "windows://", "json://127.0.0.1/x", "gopher://x", "not a target", "http://☃.com/",
])
def test_it_refuses_targets_outside_the_rules(target):
    with pytest.raises(notifications.InvalidTarget):
        notifications.parse_notify([target])


def test_generic_apprise_posters_only_when_listed(settings):
    settings.OVERSIGHT_NOTIFY_SCHEMES = ["json", "slack"]
    assert notifications.parse_notify(["json://127.0.0.1:9/x"])
    settings.OVERSIGHT_NOTIFY_SCHEMES = ["json", "file"]
    with pytest.raises(notifications.InvalidTarget):
        notifications.parse_notify(["file:///etc/passwd"])


@pytest.mark.parametrize(("scheme", "text", "absent"), [
    ("slack", "<!channel> look <http://x|here>", "<!channel>"),
    ("discord", "@everyone [click](http://evil)", "@everyone"),
    ("discord", "@everyone [click](http://evil)", "[click]("),
    ("msteams", "**bold** [x](http://evil)", "[x]("),
])
def test_the_agents_words_are_escaped_per_service(scheme, text, absent):
    assert absent not in notifications.escape(text, scheme)


def test_an_apprise_json_target_reaches_a_real_receiver(agent, settings):
    settings.OVERSIGHT_NOTIFY_SCHEMES = ["json"]
    with Receiver([200]) as receiver:
        url = receiver.url.replace("http://", "json://")
        actions.do_change_policy("delegate", {"notify": notifications.parse_notify([url])}, by="maria")
        req = _critical(agent, summary="@everyone <!channel> please")
        _deliver_all(req)
    [(_headers, body)] = receiver.received
    sent = json.loads(body)
    assert "Waiting for a decision" in sent["title"] and f"/requests/{req.id}/" in sent["message"]
    assert "@everyone" not in sent["message"]
    event = AuditEvent.objects.get(request=req, kind="notification_delivered")
    assert event.data["url"] == f"json://127.0.0.1:{receiver.server.server_address[1]}/***"


def test_an_apprise_target_on_a_metadata_address_is_refused_and_audited(agent, settings):
    settings.OVERSIGHT_NOTIFY_SCHEMES = ["json"]
    actions.do_change_policy("delegate", {"notify": notifications.parse_notify(["json://169.254.169.254/x"])},
                             by="maria")
    req = _critical(agent)
    _deliver_all(req)
    failure = AuditEvent.objects.get(request=req, kind="notification_failed")
    assert failure.data["error"] == "link-local or metadata address refused" and failure.data["final"] is True


def test_the_policy_keeps_notify_and_remind_every_seconds():
    assert {"notify", "remind_every_seconds"} <= set(Policy.SETTING_FIELDS)


def test_managers_see_the_requests_deliveries_masked(client, manager, agent):
    actions.do_change_policy("delegate", {"notify": notifications.parse_notify(["https://hooks.example/t0ken"])},
                             by="maria")
    req = _critical(agent)
    client.force_login(manager)
    page = client.get(f"/requests/{req.id}/").content.decode()
    assert 'id="deliveries"' in page and "https://hooks.example/***" in page and "t0ken" not in page


def test_critical_memory_alerts_reach_the_default_policys_targets_when_turned_on(settings):
    from monitoring import alerts
    from oversight.policy import ensure_default_policy

    ensure_default_policy()
    settings.MONITORING_ALERT_FOR_SECONDS = 0
    actions.do_change_policy("*", {"notify": ["ops@example.org"]}, by="maria")
    t0 = timezone.now()
    for i in range(3):
        alerts.observe("box-1", "", 97, t0 + timedelta(seconds=5 * i))
    assert not Delivery.objects.exists()  # OVERSIGHT_NOTIFY_MONITORING is off by default
    settings.OVERSIGHT_NOTIFY_MONITORING = True
    for i in range(3):
        alerts.observe("box-2", "", 97, t0 + timedelta(seconds=5 * i))
    _deliver_all()
    [message] = mail.outbox
    assert message.subject == "[Oversight] Critical memory pressure on box-2"
    assert "Pressure:  97 %" in message.body and "https://oversight.example/monitoring/" in message.body


def test_a_policy_change_validates_and_seals_notify_whoever_calls_it():
    policy = actions.do_change_policy("delegate", {"notify": ["https://hooks.example/t0ken"]}, by="cli")
    assert "t0ken" not in policy.notify[0] and policy.notify_masked == ["https://hooks.example/***"]
    with pytest.raises(notifications.InvalidTarget):
        actions.do_change_policy("delegate", {"notify": ["file:///etc/passwd"]}, by="cli")


def test_a_notified_operator_gets_decision_links_of_their_own(agent, operator, manager, settings):
    import re

    from django.test import Client

    settings.OVERSIGHT_DECISION_LINKS = True
    operator.email, manager.email = "olivia@example.org", "mia@example.org"
    operator.save()
    manager.save()
    actions.do_change_policy("delegate", {"notify": notifications.parse_notify(
        ["olivia@example.org", "mia@example.org", "team@example.org"])}, by="maria")
    req = _critical(agent)
    _deliver_all(req)
    bodies = {m.to[0]: m.body for m in mail.outbox}
    assert "Approve: https://oversight.example/d/" in bodies["olivia@example.org"]
    assert "/d/" not in bodies["mia@example.org"]  # a manager decides nothing
    assert "/d/" not in bodies["team@example.org"]  # not a person of ours
    approve = re.search(r"Approve: https://oversight\.example(/d/\S+/)", bodies["olivia@example.org"]).group(1)
    browser = Client()
    browser.force_login(operator)
    assert browser.post(approve).status_code == 200
    req.refresh_from_db()
    assert (req.status, req.decided_by) == ("approved", "olivia")


# Apprise opens its own connections: the address rules are checked on each address it
# actually connects to (redirects, service hosts, SMTP servers), not on the URL's host.

METADATA = "169.254.169.254"


def _failure(req) -> dict:
    return AuditEvent.objects.get(request=req, kind="notification_failed").data


def test_an_apprise_target_redirected_to_a_metadata_address_is_refused(agent, settings):
    settings.OVERSIGHT_NOTIFY_SCHEMES = ["json"]
    with Receiver([307], location=f"http://{METADATA}/latest/meta-data/") as receiver:
        url = receiver.url.replace("http://", "json://")
        actions.do_change_policy("delegate", {"notify": notifications.parse_notify([url])}, by="maria")
        req = _critical(agent)
        _deliver_all(req)
    assert len(receiver.received) == 1  # the first leg went out; the redirect did not
    failure = _failure(req)
    assert failure["error"] == "link-local or metadata address refused" and failure["final"] is True


def test_a_chat_service_is_checked_on_the_address_its_host_resolves_to(agent, settings, monkeypatch):
    """slack://A/B/C names no host (Slack's is Apprise's own): what is checked is where
    Apprise connects. Name resolution is outside the system, so it is scripted here."""
    import socket

    real = socket.getaddrinfo

    def resolver(host, port, *args, **kwargs):
        if host == "hooks.slack.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (METADATA, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    actions.do_change_policy("delegate", {"notify": notifications.parse_notify(
        ["slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"])}, by="maria")
    req = _critical(agent)
    _deliver_all(req)
    failure = _failure(req)
    assert failure["error"] == "link-local or metadata address refused" and failure["final"] is True


def test_an_e_mail_service_is_checked_on_its_smtp_server(agent, settings):
    settings.OVERSIGHT_NOTIFY_SCHEMES = ["mailto"]
    actions.do_change_policy("delegate", {"notify": notifications.parse_notify(
        [f"mailto://user:secret@example.org?smtp={METADATA}&from=oversight@example.org&to=ops@example.org"])},
        by="maria")
    req = _critical(agent)
    _deliver_all(req)
    failure = _failure(req)
    assert failure["error"] == "link-local or metadata address refused" and failure["final"] is True


def test_in_production_only_allow_listed_hosts_may_be_private_and_never_link_local(agent, settings):
    import socket

    settings.PRODUCTION = True
    settings.OVERSIGHT_NOTIFY_SCHEMES = ["json"]
    settings.OVERSIGHT_CALLBACK_ALLOWED_HOSTS = ["127.0.0.1", METADATA]
    with Receiver([200]) as receiver:
        # Allow-listed loopback: delivered.
        url = receiver.url.replace("http://", "json://")
        actions.do_change_policy("delegate", {"notify": notifications.parse_notify([url])}, by="maria")
        delivered = _critical(agent)
        _deliver_all(delivered)
        assert AuditEvent.objects.filter(request=delivered, kind="notification_delivered").exists()
        # The same receiver by another name is not allow-listed: refused as loopback.
        other = url.replace("127.0.0.1", "localhost")
        actions.do_change_policy("delegate", {"notify": notifications.parse_notify([other])}, by="maria")
        refused = _critical(agent, summary="by another name")
        _deliver_all(refused)
        assert _failure(refused)["error"] == "loopback address refused"
        # A link-local address stays refused although allow-listed.
        actions.do_change_policy("delegate", {"notify": notifications.parse_notify([f"json://{METADATA}/x"])},
                                 by="maria")
        metadata = _critical(agent, summary="metadata")
        _deliver_all(metadata)
        assert _failure(metadata)["error"] == "link-local or metadata address refused"
        # The check is scoped to the sends: this thread's own connections are its own.
        socket.create_connection(("127.0.0.1", receiver.server.server_address[1]), timeout=5).close()
    assert len(receiver.received) == 1
