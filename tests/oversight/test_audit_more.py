"""Keys, sign-ins, alert acknowledgements and policy edits are audited: who, when, from where."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from monitoring.models import Alert
from oversight.models import Agent, ApiKey, AuditEvent
from oversight.policy import ensure_default_policy

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"
ADDRESS = "203.0.113.7"


def events(kind):
    return list(AuditEvent.objects.filter(kind=kind).order_by("id"))


@pytest.fixture
def admin_client():
    User.objects.create_superuser("root", password=PASSWORD)
    client = Client(REMOTE_ADDR=ADDRESS)
    assert client.login(username="root", password=PASSWORD)
    return client


def test_it_audits_key_creation_and_revocation_by_command(db):
    call_command("create_agent", "ci-bot", stdout=StringIO())
    key = ApiKey.objects.get(agent__name="ci-bot")
    (created,) = events(AuditEvent.Kind.KEY_CREATED)
    assert created.actor == "cli"
    assert created.data == {"agent": "ci-bot", "prefix": key.prefix, "label": ""}
    assert abs((created.at - timezone.now()).total_seconds()) < 60

    call_command("revoke_agent", "ci-bot", stdout=StringIO())
    call_command("revoke_agent", "ci-bot", stdout=StringIO())  # nothing left: nothing audited
    (revoked,) = events(AuditEvent.Kind.KEY_REVOKED)
    assert (revoked.actor, revoked.data) == ("cli", {"agent": "ci-bot", "prefix": key.prefix})


def test_it_audits_key_creation_and_revocation_in_the_admin_with_the_address(admin_client):
    admin_client.post("/admin/oversight/agent/add/", {
        "name": "ci-bot", "description": "", "hosts": "[]", "operations": "[]", "max_pending": "20",
        "keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0",
    })
    agent = Agent.objects.get(name="ci-bot")
    admin_client.post("/admin/oversight/agent/", {"action": "create_key", "_selected_action": [agent.pk]})
    assert [(e.actor, e.data["address"]) for e in events(AuditEvent.Kind.KEY_CREATED)] == [("root", ADDRESS)] * 2

    first = ApiKey.objects.filter(agent=agent).order_by("id").first()
    admin_client.post("/admin/oversight/apikey/", {"action": "revoke", "_selected_action": [first.pk]})
    admin_client.post("/admin/oversight/agent/", {"action": "revoke_keys", "_selected_action": [agent.pk]})
    revoked = events(AuditEvent.Kind.KEY_REVOKED)
    assert [(e.actor, e.data["address"], e.data["agent"]) for e in revoked] == [("root", ADDRESS, "ci-bot")] * 2
    assert sorted(e.data["prefix"] for e in revoked) == sorted(ApiKey.objects.values_list("prefix", flat=True))
    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()


def test_it_audits_sign_ins_that_succeed_and_fail(operator):
    client = Client(REMOTE_ADDR=ADDRESS)
    assert client.post("/login/", {"username": "olivia", "password": "wrong password"}).status_code == 200
    assert client.post("/login/", {"username": "olivia", "password": PASSWORD}).status_code == 302
    (failed,) = events(AuditEvent.Kind.LOGIN_FAILED)
    (succeeded,) = events(AuditEvent.Kind.LOGIN_SUCCEEDED)
    assert (failed.actor, failed.data) == ("olivia", {"address": ADDRESS})
    assert (succeeded.actor, succeeded.data) == ("olivia", {"address": ADDRESS})
    assert "wrong password" not in str(failed.data)


def test_it_audits_the_admins_sign_in_too(db):
    User.objects.create_superuser("root", password=PASSWORD)
    client = Client(REMOTE_ADDR=ADDRESS)
    client.post("/admin/login/", {"username": "root", "password": "nope nope nope"})
    client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert [e.actor for e in events(AuditEvent.Kind.LOGIN_FAILED)] == ["root"]
    assert [e.actor for e in events(AuditEvent.Kind.LOGIN_SUCCEEDED)] == ["root"]


def test_it_audits_the_acknowledgement_that_stands(operator, second_operator):
    now = timezone.now()
    alert = Alert.objects.create(host="box-1", severity="warning", value=85, threshold=80, peak=88,
                                 started_at=now, raised_at=now)
    for user in (operator, second_operator):
        client = Client(REMOTE_ADDR=ADDRESS)
        client.force_login(user)
        client.post(f"/monitoring/alerts/{alert.id}/acknowledge")
    (ack,) = events(AuditEvent.Kind.ALERT_ACKNOWLEDGED)
    assert (ack.actor, ack.data) == ("olivia", {"address": ADDRESS, "alert": alert.id})


def test_it_audits_policy_edits_with_who_and_where(manager):
    ensure_default_policy()
    client = Client(REMOTE_ADDR=ADDRESS)
    client.force_login(manager)
    response = client.post("/policies/web_scrape/", {
        "memory_pressure": "85", "delegation_depth": "5", "circular_refs": "", "timeout_seconds": "120",
        "timeout_action": "reject", "escalate_after": "", "trusted_agents": "", "escalation_contacts": "",
        "note": "",
    })
    assert response.status_code in (200, 302)
    (edit,) = AuditEvent.objects.filter(kind=AuditEvent.Kind.POLICY_CHANGED, policy__operation="web_scrape")
    assert edit.actor == "maria"
    assert edit.data["address"] == ADDRESS


def test_it_writes_no_address_for_commands(db):
    call_command("create_agent", "ci-bot", stdout=StringIO())
    assert "address" not in AuditEvent.objects.get(kind=AuditEvent.Kind.KEY_CREATED).data
