"""An agent trying to get around the people who decide: each test is one attempt."""

from __future__ import annotations

import pytest

from oversight import actions
from oversight.models import OversightRequest, Source, Status
from tests.oversight.api_helpers import error_code, get, post, submit

pytestmark = pytest.mark.django_db(transaction=True)

CRITICAL = {"delegation_depth": 9}
JSON = {"Accept": "application/json"}


@pytest.mark.parametrize("operation", [
    "Delete", "delete ", " delete", "delete\n", "delete\t", "ｄelete", "dеlete", "delete\u200b", "de\u0301lete", "DELETE",
])
def test_an_operation_spelled_otherwise_is_refused_not_sent_to_the_default_policy(client, agent, operation):
    actions.do_change_policy("delete", {"always": True}, by="mia")
    response = submit(client, agent, operation=operation)
    assert response.status_code == 400 and error_code(response) == "validation_error", response.content
    assert "operation" in response.json()["error"]["details"]
    assert not OversightRequest.objects.exists()


def test_an_idempotency_key_never_returns_an_approval_for_another_payload(client, agent):
    routine = submit(client, agent, operation="delete", payload={"path": "/tmp/x"}, idempotency_key="k")
    assert routine.json()["status"] == "approved"
    for other in ({"operation": "delete", "payload": {"path": "/"}},
                  {"operation": "delete2", "payload": {"path": "/tmp/x"}},
                  {"operation": "delete", "payload": {"path": "/tmp/x"}, "metrics": CRITICAL}):
        response = post(client, "/api/v1/requests", agent,
                        json={"summary": "Delegate the scrape", "idempotency_key": "k"} | other)
        assert response.status_code == 409 and error_code(response) == "idempotency_conflict"
    header = post(client, "/api/v1/requests", agent, headers={"Idempotency-Key": "k"},
                  json={"operation": "delete", "summary": "Delegate the scrape", "payload": {"path": "/"}})
    assert header.status_code == 409


@pytest.mark.parametrize("text", [
    '{"b": 1, "a": "x"}',
    '{ "a" : "x" ,\n "b" : 1.0 }',
    '{"a": "\\u0078", "b": 1}',
    '{"a": "x", "b": 10e-1}',
    '{"b": 100e-2, "a": "x"}',
])
def test_the_reject_cooldown_holds_for_every_spelling_of_the_payload(client, agent, text):
    first = submit(client, agent, metrics=CRITICAL, payload={"a": "x", "b": 1}).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    body = '{"operation": "delegate", "summary": "Again", "payload": ' + text + ', "metrics": {"delegation_depth": 9}}'
    again = post(client, "/api/v1/requests", agent, data=body).json()
    assert (again["status"], again["decision"]["source"], again["decision"]["reason"]) == ("rejected", "policy", "No")


def test_the_reject_cooldown_holds_when_the_resubmission_would_be_routine(client, agent):
    first = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    again = submit(client, agent, payload={"a": 1}).json()
    assert again["status"] == "rejected" and again["decision"]["source"] == "policy"


def test_cancel_then_resubmit_after_a_reject_still_meets_the_cooldown(client, agent):
    first = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    second = submit(client, agent, metrics=CRITICAL, payload={"a": 1}, summary="other words").json()
    assert second["status"] == "rejected"


@pytest.mark.parametrize("metrics", [
    {"memory_pressure": "90"}, {"memory_pressure": True}, {"memory_pressure": -1}, {"memory_pressure": 100.5},
    {"delegation_depth": 9.0}, {"delegation_depth": "9"}, {"delegation_depth": -1}, {"delegation_depth": True},
    {"circular_refs": 1e3}, {"delegation_depth": 10**30}, {"host": 5}, {"host": ""},
])
def test_a_metric_of_the_wrong_kind_is_a_400_not_an_absent_value(client, agent, metrics):
    response = submit(client, agent, metrics=metrics)
    assert response.status_code == 400, (metrics, response.content)


def test_a_duplicate_metric_is_a_400_not_the_last_value(client, agent):
    body = '{"operation": "delegate", "summary": "x", "metrics": {"delegation_depth": 9, "delegation_depth": 0}}'
    response = post(client, "/api/v1/requests", agent, data=body)
    assert response.status_code == 400


@pytest.mark.parametrize("metrics", [{}, {"memory_pressure": None}, {"Memory_Pressure": 1, "delegation_depth": None}])
def test_with_missing_metrics_critical_an_omitted_or_null_metric_fires(client, agent, metrics):
    actions.do_change_policy("*", {"missing_metrics": "critical"}, by="mia")
    assert submit(client, agent, metrics=metrics).json()["status"] == "pending"


def test_a_short_timeout_never_hastens_an_approving_timeout_below_the_minimum(client, agent):
    actions.do_change_policy("*", {"timeout_seconds": 30, "min_timeout_seconds": 60}, by="mia")
    assert submit(client, agent, metrics=CRITICAL, timeout_seconds=29).status_code == 400
    ok = submit(client, agent, metrics=CRITICAL, timeout_seconds=30).json()
    assert ok["status"] == "pending"


def test_an_agent_reaches_no_other_agents_request(client, agent, other_agent):
    theirs = submit(client, other_agent, metrics=CRITICAL).json()
    for path in (f"/api/v1/requests/{theirs['id']}", f"/api/v1/requests/{theirs['id']}/receipt"):
        assert get(client, path, agent).status_code == 404
    assert post(client, f"/api/v1/requests/{theirs['id']}/cancel", agent).status_code == 404
    assert get(client, "/api/v1/requests", agent).json()["results"] == []
    assert OversightRequest.objects.get(id=theirs["id"]).status == "pending"


def test_an_agents_key_reaches_no_decide_endpoint(client, agent):
    mine = submit(client, agent, metrics=CRITICAL).json()
    response = client.post(f"/requests/{mine['id']}/decide", {"outcome": "approve"},
                           headers=JSON | agent.headers)
    assert response.status_code in (302, 403)
    assert OversightRequest.objects.get(id=mine["id"]).status == "pending"


def test_a_bound_agent_case_variant_host_is_refused(client, agent):
    agent.agent.hosts = ["web-1"]
    agent.agent.save()
    assert submit(client, agent, metrics={"host": "WEB-1"}).status_code == 400
    assert post(client, "/api/v1/metrics", agent, json={"host": "web-1 ", "samples": []}).status_code == 400


def _quorum_of_two():
    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="mia")


def test_one_operator_cannot_complete_a_quorum_by_editing_then_approving(agent):
    _quorum_of_two()
    req = actions.do_submit(agent.agent, actions.Submission("delegate", "x", {"rows": 1}, CRITICAL))[0]
    actions.do_approve(req.id, by="alice")
    edited = actions.do_approve(req.id, by="alice", payload={"rows": 2})
    assert edited.status == Status.PENDING and [a["by"] for a in edited.approvals] == ["alice"]
    with pytest.raises(actions.AlreadyApproved):
        actions.do_approve(req.id, by="alice")
    assert OversightRequest.objects.get(id=req.id).status == Status.PENDING


def test_a_timeout_after_a_partial_approval_with_changes_is_recorded_as_the_timeout(client, agent):
    from tests.conftest import past_deadline

    _quorum_of_two()
    req = actions.do_submit(agent.agent, actions.Submission("delegate", "x", {"rows": 1}, CRITICAL))[0]
    actions.do_approve(req.id, by="alice", payload={"rows": 2})
    past_deadline(req)
    seen = get(client, f"/api/v1/requests/{req.id}", agent).json()
    assert seen["status"] == "rejected"
    decision = seen["decision"]
    assert (decision["source"], decision["by"], "payload" in decision) == ("timeout", None, False)


def test_a_cancel_racing_nothing_is_final_and_cannot_be_undone_by_resubmitting(client, agent):
    first = submit(client, agent, metrics=CRITICAL, payload={"a": 1}, idempotency_key="k").json()
    assert post(client, f"/api/v1/requests/{first['id']}/cancel", agent).json()["status"] == "cancelled"
    again = submit(client, agent, metrics=CRITICAL, payload={"a": 1}, idempotency_key="k")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert post(client, f"/api/v1/requests/{first['id']}/cancel", agent).status_code == 409
