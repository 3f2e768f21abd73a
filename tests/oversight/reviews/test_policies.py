"""/policies/: list, versions with diffs and counts, validated edits, applying a suggestion."""

from __future__ import annotations

import pytest

from oversight.models import AuditEvent, Policy
from oversight.policy import current_policy, ensure_default_policy
from tests.conftest import make_agent
from tests.oversight.reviews.helpers import at, make_request

pytestmark = pytest.mark.django_db

GOOD = {
    "memory_pressure": "85", "delegation_depth": "5", "circular_refs": "", "timeout_seconds": "120",
    "timeout_action": "reject", "escalate_after": "0.25", "trusted_agents": "scraper-7\nwriter-2",
    "escalation_contacts": "ops@example.org", "note": "Fewer reviews for scraping",
}


@pytest.fixture
def signed_manager(client, manager):
    ensure_default_policy()
    client.force_login(manager)
    return client


@pytest.mark.parametrize("method,path", [
    ("get", "/policies/"), ("get", "/policies/web_scrape/"), ("post", "/policies/web_scrape/"),
    ("post", "/policies/web_scrape/apply"),
])
def test_only_managers_reach_policies(client, operator, outsider, method, path):
    assert getattr(client, method)(path).status_code == 302  # anonymous: log in first
    for user in (operator, outsider):
        client.force_login(user)
        assert getattr(client, method)(path, GOOD if method == "post" else None).status_code == 403
    assert Policy.objects.filter(operation="web_scrape").count() == 0


def test_the_list_shows_current_policies_and_how_many_requests_they_evaluated(signed_manager):
    agent = make_agent("scraper-7").agent
    make_request(agent, at("2026-11-03 10:00"))
    make_request(agent, at("2026-11-03 10:00"))
    page = signed_manager.get("/policies/").content.decode()
    assert 'href="/policies/%2A/"' in page and "<td>2</td>" in page


def test_an_edit_of_a_new_operation_starts_from_the_default_policy(signed_manager, manager):
    from oversight.actions import do_change_policy

    do_change_policy("*", {"timeout_seconds": 900}, by="maria")
    response = signed_manager.post("/policies/web_scrape/", GOOD | {"timeout_seconds": "900"})
    assert response.status_code == 302 and response["Location"] == "/policies/web_scrape/"
    policy = current_policy("web_scrape")
    assert (policy.operation, policy.version, policy.created_by) == ("web_scrape", 1, manager.username)
    assert (policy.memory_pressure, policy.delegation_depth, policy.circular_refs) == (85.0, 5, None)
    assert (policy.timeout_seconds, policy.timeout_action, policy.escalate_after) == (900, "reject", 0.25)
    assert policy.trusted_agents == ["scraper-7", "writer-2"] and policy.note == "Fewer reviews for scraping"
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.POLICY_CHANGED, policy=policy, actor="maria").exists()


def test_versions_show_their_diff_and_nothing_changed_writes_no_version(signed_manager):
    signed_manager.post("/policies/web_scrape/", GOOD)
    signed_manager.post("/policies/web_scrape/", GOOD | {"delegation_depth": "6", "trusted_agents": "scraper-7"})
    signed_manager.post("/policies/web_scrape/", GOOD | {"delegation_depth": "6", "trusted_agents": "scraper-7"})
    assert list(Policy.objects.filter(operation="web_scrape").values_list("version", flat=True).order_by("version")) == [1, 2]
    page = signed_manager.get("/policies/web_scrape/").content.decode()
    assert "<code>delegation_depth</code>: 5 → 6" in page
    assert "<code>trusted_agents</code>: scraper-7, writer-2 → scraper-7" in page
    assert "first version" in page


@pytest.mark.parametrize("field,value", [
    ("memory_pressure", "101"), ("memory_pressure", "-1"), ("memory_pressure", "nan"), ("memory_pressure", "hot"),
    ("delegation_depth", "-1"), ("delegation_depth", "2.5"), ("circular_refs", "x"),
    ("timeout_seconds", "0"), ("timeout_seconds", ""), ("timeout_seconds", "99999999"),
    ("timeout_action", "ignore"), ("escalate_after", "1"), ("escalate_after", "0"), ("escalate_after", "1.5"),
    ("trusted_agents", "x" * 101), ("escalation_contacts", "a b"), ("note", "x" * 301),
])
def test_it_refuses_invalid_settings_and_says_why(signed_manager, field, value):
    response = signed_manager.post("/policies/web_scrape/", GOOD | {field: value})
    assert response.status_code == 400
    assert 'class="error"' in response.content.decode()
    assert not Policy.objects.filter(operation="web_scrape").exists()


def test_a_nul_in_a_field_is_refused_before_the_form_naming_it(signed_manager):
    """PostgreSQL stores no NUL: every browser form refuses one the same way (a 400 that
    names the field), before the editor's own checks."""
    response = signed_manager.post("/policies/web_scrape/", GOOD | {"trusted_agents": "ok\nbad\x00name"})
    assert response.status_code == 400
    assert "trusted_agents" in response.content.decode() and "NUL" in response.content.decode()
    assert not Policy.objects.filter(operation="web_scrape").exists()


def test_an_unknown_operation_name_is_a_404(signed_manager):
    assert signed_manager.get("/policies/Not%20An%20Op/").status_code == 404
    assert signed_manager.get("/policies/?operation=BAD NAME").status_code == 400
    assert signed_manager.get("/policies/?operation=web_scrape")["Location"] == "/policies/web_scrape/"


def test_applying_a_suggestion_writes_one_audited_version(signed_manager):
    response = signed_manager.post("/policies/web_scrape/apply", {"rule": "delegation_depth", "threshold": "5",
                                                                   "month": "2026-11"})
    assert response.status_code == 302
    policy = current_policy("web_scrape")
    assert (policy.version, policy.delegation_depth, policy.memory_pressure) == (1, 5, 80.0)
    assert policy.note == "Applied a review suggestion: delegation_depth 4 → 5. (review 2026-11)"
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.POLICY_CHANGED, policy=policy)
    assert event.data["changes"]["delegation_depth"] == [4, 5]


@pytest.mark.parametrize("data", [
    {"rule": "always", "threshold": "1"}, {"rule": "delegation_depth", "threshold": "-2"},
    {"rule": "memory_pressure", "threshold": "250"}, {"rule": "delegation_depth", "threshold": ""}, {},
])
def test_a_bad_suggestion_is_refused(signed_manager, data):
    assert signed_manager.post("/policies/web_scrape/apply", data).status_code == 400
    assert not Policy.objects.filter(operation="web_scrape").exists()


def test_the_editor_takes_notify_targets_and_keeps_their_credentials_masked(signed_manager):
    form = GOOD | {"notify": "ops@example.org\nhttps://hooks.example/s3cr3t-token", "remind_every_seconds": "300"}
    assert signed_manager.post("/policies/web_scrape/", form).status_code == 302
    policy = current_policy("web_scrape")
    assert policy.remind_every_seconds == 300 and len(policy.notify) == 2
    assert "s3cr3t" not in str(policy.notify)  # stored sealed
    for page in (signed_manager.get("/policies/").content.decode(),
                 signed_manager.get("/policies/web_scrape/").content.decode()):
        assert "https://hooks.example/***" in page and "s3cr3t" not in page
    # Saving the form as shown keeps the stored target: no new version.
    shown = {"notify": "ops@example.org\nhttps://hooks.example/***", "remind_every_seconds": "300"}
    signed_manager.post("/policies/web_scrape/", GOOD | shown)
    assert current_policy("web_scrape").version == 1
    from oversight.notifications import unseal

    assert unseal(current_policy("web_scrape").notify[1]) == "https://hooks.example/s3cr3t-token"


@pytest.mark.parametrize("field,value", [
    ("notify", "file:///etc/passwd"), ("notify", "not an address"), ("notify", "http://☃.com/"),
    ("remind_every_seconds", "5"), ("remind_every_seconds", "soon"),
])
def test_it_refuses_bad_notify_settings(signed_manager, field, value):
    response = signed_manager.post("/policies/web_scrape/", GOOD | {field: value})
    assert response.status_code == 400
    assert not Policy.objects.filter(operation="web_scrape").exists()


def test_the_editor_offers_the_oversight_fields_and_saves_them(signed_manager):
    from django.contrib.auth.models import Group

    Group.objects.create(name="dba")
    page = signed_manager.get("/policies/drop-db/").content.decode()
    for field in ("min_timeout_seconds", "required_approvals", "approver_groups", "missing_metrics",
                  "reject_cooldown_seconds"):
        assert f'name="{field}"' in page, field
    response = signed_manager.post("/policies/drop-db/", GOOD | {
        "min_timeout_seconds": "120", "required_approvals": "2", "approver_groups": "dba",
        "missing_metrics": "critical", "reject_cooldown_seconds": "600",
    })
    assert response.status_code == 302
    policy = current_policy("drop-db")
    assert (policy.min_timeout_seconds, policy.required_approvals, policy.approver_groups, policy.missing_metrics,
            policy.reject_cooldown_seconds) == (120, 2, ["dba"], "critical", 600)
    page = signed_manager.get("/policies/drop-db/").content.decode()
    assert "Members of dba" in page and "2 different operators must approve" in page


@pytest.mark.parametrize("field,value", [
    ("min_timeout_seconds", "0"), ("required_approvals", "0"), ("required_approvals", "11"),
    ("approver_groups", "no-such-group"), ("missing_metrics", "panic"), ("reject_cooldown_seconds", "-1"),
])
def test_it_refuses_invalid_oversight_fields(signed_manager, field, value):
    response = signed_manager.post("/policies/drop-db/", GOOD | {field: value})
    assert response.status_code == 400 and 'class="error"' in response.content.decode()
    assert not Policy.objects.filter(operation="drop-db").exists()


def test_a_quorum_with_timeout_approve_is_refused(signed_manager):
    response = signed_manager.post("/policies/drop-db/", GOOD | {"required_approvals": "2", "timeout_action": "approve"})
    assert response.status_code == 400 and "Must be reject" in response.content.decode()
    assert not Policy.objects.filter(operation="drop-db").exists()


def test_it_warns_about_a_short_minimum_time_for_people(signed_manager):
    signed_manager.post("/policies/drop-db/", GOOD | {"min_timeout_seconds": "5"})
    page = signed_manager.get("/policies/drop-db/").content.decode()
    assert "Warning: Agents may shorten the time people get to decide below 60 seconds" in page
    assert "Warning" not in signed_manager.get("/policies/%2A/").content.decode()
