"""Deciding from the browser: POST /requests/<id>/decide and the bulk form."""

from __future__ import annotations

import pytest
from django.test import Client

from oversight import actions
from oversight.models import AuditEvent, OversightRequest, Source, Status
from tests.conftest import past_deadline

JSON = {"Accept": "application/json"}


def submit(agent, summary="Delegate the scrape", **fields) -> OversightRequest:
    submission = actions.Submission(
        operation="delegate", summary=summary, payload={}, metrics={"memory_pressure": 91.0}, **fields
    )
    return actions.do_submit(agent.agent, submission)[0]


@pytest.fixture
def pending(agent):
    return submit(agent)


def decide(client, req, **data):
    return client.post(f"/requests/{req.id}/decide", data, headers=data.pop("headers", {}))


def test_it_approves_and_redirects_to_the_queue(client, operator, pending):
    client.force_login(operator)
    response = decide(client, pending, outcome="approve")
    assert response.status_code == 302 and response["Location"] == "/queue/"
    pending.refresh_from_db()
    assert (pending.status, pending.decision_source, pending.decided_by) == ("approved", "operator", "olivia")
    assert pending.events.filter(kind=AuditEvent.Kind.DECIDED, actor="olivia").exists()


def test_it_rejects_with_a_reason_and_answers_json(client, operator, pending):
    client.force_login(operator)
    response = client.post(f"/requests/{pending.id}/decide", {"outcome": "reject", "reason": " Too deep "}, headers=JSON)
    assert response.status_code == 200
    decision = response.json()["request"]["decision"]
    assert decision["outcome"] == "rejected" and decision["reason"] == "Too deep" and decision["by"] == "olivia"


def test_it_answers_400_to_a_reject_without_reason_and_keeps_the_request_pending(client, operator, pending):
    client.force_login(operator)
    for reason in ("", "   "):
        response = client.post(f"/requests/{pending.id}/decide", {"outcome": "reject", "reason": reason})
        assert response.status_code == 400
        assert b"A reason is required" in response.content
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_it_answers_400_to_an_unknown_outcome(client, operator, pending):
    client.force_login(operator)
    for outcome in ("", "maybe", "approved", "cancel"):
        response = client.post(f"/requests/{pending.id}/decide", {"outcome": outcome}, headers=JSON)
        assert response.status_code == 400, outcome
        assert response.json()["error"]["code"] == "validation_error"
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_it_answers_409_with_the_winner_when_already_decided(client, operator, pending):
    actions.do_decide(pending.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="oscar", reason="No")
    client.force_login(operator)
    response = client.post(f"/requests/{pending.id}/decide", {"outcome": "approve"}, headers=JSON)
    assert response.status_code == 409
    body = response.json()
    assert body["error"]["code"] == "already_decided" and "oscar" in body["error"]["message"]
    assert body["request"]["decision"]["by"] == "oscar"
    page = client.post(f"/requests/{pending.id}/decide", {"outcome": "approve"})
    assert page.status_code == 409 and b"Already rejected by oscar" in page.content
    pending.refresh_from_db()
    assert pending.decided_by == "oscar"


def test_it_answers_409_once_the_deadline_has_passed(client, operator, agent, short_timeouts):
    req = past_deadline(submit(agent, timeout_seconds=10))
    client.force_login(operator)
    response = client.post(f"/requests/{req.id}/decide", {"outcome": "reject", "reason": "late"}, headers=JSON)
    assert response.status_code == 409
    assert response.json()["request"]["decision"]["source"] == "timeout"


def test_it_lets_only_operators_decide(client, manager, outsider, agent, pending):
    people = [None, manager, outsider]
    for person in people:
        client.logout()
        if person is not None:
            client.force_login(person)
        response = decide(client, pending, outcome="approve")
        assert response.status_code == 403, person
        assert client.post("/requests/decide", {"ids": [pending.id], "outcome": "approve"}).status_code == 403
    response = client.post(f"/requests/{pending.id}/decide", {"outcome": "approve"}, headers=agent.headers)
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_it_refuses_a_post_without_the_csrf_token(operator, pending):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    response = browser.post(f"/requests/{pending.id}/decide", {"outcome": "approve"})
    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_it_accepts_the_csrf_token_from_the_queue_page(operator, pending):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    browser.get("/queue/")
    token = browser.cookies["csrftoken"].value
    response = browser.post(f"/requests/{pending.id}/decide", {"outcome": "approve", "csrfmiddlewaretoken": token})
    assert response.status_code == 302


def test_it_answers_404_for_an_unknown_request(client, operator):
    client.force_login(operator)
    assert client.post("/requests/6f1c0000-0000-0000-0000-000000000000/decide", {"outcome": "approve"}).status_code == 404


def test_it_refuses_get(client, operator, pending):
    client.force_login(operator)
    assert client.get(f"/requests/{pending.id}/decide").status_code == 405


def test_it_only_redirects_to_this_site(client, operator, agent):
    client.force_login(operator)
    first, second = submit(agent), submit(agent)
    assert decide(client, first, outcome="approve", next=f"/requests/{first.id}/")["Location"] == f"/requests/{first.id}/"
    assert decide(client, second, outcome="approve", next="https://evil.example/")["Location"] == "/queue/"


# --- Bulk -------------------------------------------------------------------------------


def test_it_decides_several_at_once(client, operator, agent):
    reqs = [submit(agent), submit(agent)]
    client.force_login(operator)
    response = client.post("/requests/decide", {"ids": [r.id for r in reqs], "outcome": "approve"}, headers=JSON)
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == [200, 200]
    assert set(OversightRequest.objects.values_list("status", flat=True)) == {Status.APPROVED}


def test_it_reports_each_id_of_a_bulk_decision(client, operator, agent):
    fresh, taken = submit(agent), submit(agent)
    actions.do_decide(taken.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="oscar")
    client.force_login(operator)
    ids = [fresh.id, taken.id, "not-an-id"]
    response = client.post("/requests/decide", {"ids": ids, "outcome": "reject", "reason": "No"}, headers=JSON)
    assert response.status_code == 200
    assert {r["id"]: r["status"] for r in response.json()["results"]} == {
        str(fresh.id): 200, str(taken.id): 409, "not-an-id": 404,
    }
    page = client.post("/requests/decide", {"ids": [taken.id], "outcome": "approve"})
    assert page.status_code == 409 and b"Already approved by oscar" in page.content


def test_it_applies_the_single_rules_to_bulk(client, operator, agent):
    reqs = [submit(agent), submit(agent)]
    client.force_login(operator)
    response = client.post("/requests/decide", {"ids": [r.id for r in reqs], "outcome": "reject"}, headers=JSON)
    assert response.status_code == 400
    assert client.post("/requests/decide", {"outcome": "approve"}).status_code == 400
    assert set(OversightRequest.objects.values_list("status", flat=True)) == {Status.PENDING}
