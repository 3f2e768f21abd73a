"""The Django admin: keys shown once, policy edits as new versions, requests read-only."""

import pytest
from django.contrib.auth.models import User

from oversight.models import Agent, ApiKey, OversightRequest, Policy
from oversight.policy import ensure_default_policy

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("root", password="correct horse battery")
    client.login(username="root", password="correct horse battery")
    return client


def test_creating_an_agent_shows_its_key_once(admin_client):
    response = admin_client.post("/admin/oversight/agent/add/", {
        "name": "ci-bot", "description": "", "hosts": "[]", "operations": "[]", "max_pending": "20",
        "keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0",
    }, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    agent = Agent.objects.get(name="ci-bot")
    key = ApiKey.objects.get(agent=agent)
    assert "shown only once" in text
    raw = text.split("<code>")[1].split("</code>")[0]
    assert key.matches(raw)
    assert raw not in admin_client.get(f"/admin/oversight/agent/{agent.pk}/change/").content.decode()


def test_editing_a_policy_writes_a_new_version(admin_client):
    policy = ensure_default_policy()
    data = {
        "memory_pressure": "85", "delegation_depth": "4", "circular_refs": "3", "timeout_seconds": "300",
        "timeout_action": "reject", "escalate_after": "0.5", "escalation_contacts": "[]", "trusted_agents": '["ci-bot"]',
        "min_timeout_seconds": "60", "required_approvals": "1", "approver_groups": "[]", "missing_metrics": "ignore",
        "reject_cooldown_seconds": "300", "max_standing_seconds": "0", "receipt_ttl_seconds": "600", "notify": "[]",
        "note": "quieter",
    }
    response = admin_client.post(f"/admin/oversight/policy/{policy.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    versions = list(Policy.objects.filter(operation="*").order_by("version").values_list(
        "version", "is_current", "memory_pressure", "timeout_action", "trusted_agents"))
    assert versions == [(1, False, 80.0, "approve", []), (2, True, 85.0, "reject", ["ci-bot"])]
    assert admin_client.get(f"/admin/oversight/policy/{policy.pk}/change/").status_code in (200, 403)
    assert admin_client.post(f"/admin/oversight/policy/{policy.pk}/change/", data).status_code == 403


def test_requests_cannot_be_changed_in_the_admin(admin_client, agent):
    from oversight import actions

    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 5}))
    page = admin_client.get(f"/admin/oversight/oversightrequest/{req.id}/change/")
    assert page.status_code == 200
    admin_client.post(f"/admin/oversight/oversightrequest/{req.id}/change/", {"status": "approved"})
    assert OversightRequest.objects.get(id=req.id).status == "pending"


def test_people_who_are_not_staff_are_kept_out(client, operator):
    client.login(username="olivia", password="correct horse battery")
    assert client.get("/admin/oversight/agent/").status_code == 302


def test_the_agent_list_shows_owner_hosts_operations_and_limit(admin_client, operator):
    Agent.objects.create(name="db-bot", owner=operator, hosts=["db-1"], operations=["drop-db"], max_pending=5)
    page = admin_client.get("/admin/oversight/agent/").content.decode()
    assert "olivia" in page and "db-1" in page and "drop-db" in page and "<td class=\"field-max_pending\">5</td>" in page


def test_a_policy_edit_in_the_admin_that_breaks_the_quorum_rule_is_refused(admin_client):
    policy = ensure_default_policy()
    data = {
        "memory_pressure": "80", "delegation_depth": "4", "circular_refs": "3", "timeout_seconds": "300",
        "timeout_action": "approve", "escalate_after": "0.5", "escalation_contacts": "[]", "trusted_agents": "[]",
        "min_timeout_seconds": "60", "required_approvals": "2", "approver_groups": "[]", "missing_metrics": "ignore",
        "reject_cooldown_seconds": "300", "max_standing_seconds": "0", "note": "",
    }
    response = admin_client.post(f"/admin/oversight/policy/{policy.pk}/change/", data)
    assert response.status_code == 200 and "must be reject" in response.content.decode()
    assert Policy.objects.filter(operation="*").count() == 1
