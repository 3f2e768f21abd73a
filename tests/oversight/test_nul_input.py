"""A NUL character (\\x00) in any free text a person or an agent sends: PostgreSQL stores
none in text or jsonb, so each is a 400 naming the field, never a 500 — and, run on
SQLite as well, never stored either."""

from __future__ import annotations

import pytest
from django.test import Client

from oversight import actions
from oversight.models import OversightRequest, Policy, Status
from tests.oversight.api_helpers import get, post, submit

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"Accept": "application/json"}
NUL = "bad\x00text"


@pytest.fixture
def pending(agent) -> OversightRequest:
    submission = actions.Submission(operation="delegate", summary="Scrape", payload={}, metrics={"memory_pressure": 95.0})
    return actions.do_submit(agent.agent, submission)[0]


def still_pending(req) -> bool:
    req.refresh_from_db()
    return req.status == Status.PENDING and NUL not in (req.decision_reason + req.decision_note)


def assert_json_400_naming(response, field):
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"], error
    assert "NUL" in " ".join(error["details"][field])


@pytest.mark.parametrize(
    "fields",
    [
        {"outcome": "reject", "reason": NUL},
        {"outcome": "reject", "reason": "no", "note": NUL},
        {"outcome": "approve", "note": NUL},
        {"outcome": "approve", "reason": NUL},
    ],
)
def test_a_nul_in_a_decisions_reason_or_note_is_a_400(client, operator, pending, fields):
    client.force_login(operator)
    field = "note" if "note" in fields else "reason"
    assert_json_400_naming(client.post(f"/requests/{pending.id}/decide", fields, headers=JSON), field)
    page = client.post(f"/requests/{pending.id}/decide", fields)
    assert page.status_code == 400 and field.encode() in page.content and b"NUL" in page.content
    assert still_pending(pending)


@pytest.mark.parametrize("fields", [{"outcome": "reject", "reason": NUL}, {"outcome": "approve", "note": NUL}])
def test_a_nul_in_a_bulk_decision_is_a_400(client, operator, pending, fields):
    client.force_login(operator)
    field = "note" if "note" in fields else "reason"
    body = {"ids": [str(pending.id)]} | fields
    assert_json_400_naming(client.post("/requests/decide", body, headers=JSON), field)
    assert client.post("/requests/decide", body).status_code == 400
    assert still_pending(pending)


def test_a_nul_in_a_standing_grants_fields_is_a_400(client, operator, pending):
    actions.do_change_policy("*", {"max_standing_seconds": 3600}, by="mia")
    client.force_login(operator)
    for name, value in (("standing_scope", "any\x00"), ("standing_seconds", "60\x00"), ("standing_uses", "\x00")):
        fields = {"outcome": "approve", "standing_seconds": "60", name: value}
        response = client.post(f"/requests/{pending.id}/decide", fields, headers=JSON)
        assert response.status_code == 400, (name, response.content[:300])
    assert still_pending(pending)


def test_a_nul_in_a_decision_links_reason_is_a_400(settings, operator, pending):
    from oversight.links import links_for

    settings.OVERSIGHT_DECISION_LINKS = True
    settings.SITE_URL = "https://oversight.example"
    reject = links_for(pending, operator)["reject"].removeprefix("https://oversight.example")
    browser = Client()
    browser.force_login(operator)
    response = browser.post(reject, {"reason": NUL})
    assert response.status_code == 400 and b"reason" in response.content
    assert still_pending(pending)
    assert browser.post(reject, {"reason": "Too deep"}).status_code == 200  # the link was not burnt
    assert status_of(pending) == Status.REJECTED


def status_of(req) -> str:
    req.refresh_from_db()
    return req.status


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"summary": NUL}, "body"),
        ({"operation": "dele\x00gate"}, "body"),
        ({"payload": {"k": NUL}}, "body"),
        ({"metrics": {"host": NUL}}, "body"),
        ({"idempotency_key": NUL}, "body"),
    ],
)
def test_a_nul_in_a_submission_is_a_400(client, agent, fields, field):
    assert_json_400_naming(submit(client, agent, **fields), field)
    assert not OversightRequest.objects.exists()


def test_a_nul_in_the_idempotency_key_header_is_a_400(client, agent):
    response = post(client, "/api/v1/requests", agent, json={"operation": "delegate", "summary": "s"},
                    headers={"Idempotency-Key": "k\x00"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize("query", ["operation=dele%00gate", "status=pen%00ding", "cursor=%00"])
def test_a_nul_in_an_api_query_is_a_400(client, agent, query):
    response = get(client, f"/api/v1/requests?{query}", agent)
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    "field", ["note", "escalation_contacts", "trusted_agents", "approver_groups", "timeout_seconds", "timeout_action"]
)
def test_a_nul_in_a_policy_editor_field_is_a_400(client, manager, field):
    client.force_login(manager)
    versions = Policy.objects.count()
    response = client.post("/policies/delegate/", {"timeout_seconds": "300", field: NUL})
    assert response.status_code == 400, response.content[:300]
    assert Policy.objects.count() == versions


def test_a_nul_in_a_policy_editors_operation_is_a_4xx(client, manager):
    client.force_login(manager)
    assert client.get("/policies/dele%00gate/").status_code in (400, 404)
    assert client.post("/policies/dele%00gate/", {"note": "x"}).status_code in (400, 404)
    assert client.post("/policies/dele%00gate/apply", {"rule": "memory_pressure", "threshold": "80"}).status_code in (
        400, 404)


@pytest.mark.parametrize("query", ["q=a%00b", "operation=a%00b", "agent=a%00b", "decided_by=a%00b"])
def test_a_nul_in_the_history_filters_is_a_400(client, operator, query):
    client.force_login(operator)
    assert client.get(f"/history/?{query}").status_code == 400


def test_a_nul_in_a_login_is_refused_not_a_500(client):
    response = client.post("/login/", {"username": "olivia\x00", "password": "x\x00y"})
    assert response.status_code in (200, 400)
    assert b"Something went wrong" not in response.content


@pytest.mark.parametrize(
    "path", ["/monitoring/alerts/1/acknowledge", "/monitoring/alerts/1/false-positive", "/monitoring/leaks/1/dismiss"]
)
def test_a_nul_in_a_monitoring_reason_is_a_400(client, operator, path):
    client.force_login(operator)
    assert_json_400_naming(client.post(path, {"reason": NUL}, headers=JSON), "reason")


def test_a_nul_in_a_fields_name_is_a_400_too(client, operator, pending):
    client.force_login(operator)
    response = client.post(f"/requests/{pending.id}/decide", {"outcome": "approve", "x\x00": "1"}, headers=JSON)
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"
    assert still_pending(pending)
