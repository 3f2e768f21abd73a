"""Statements of the contract's §9 (v1.1) that no other test holds the server to, each
checked through the same doors an outside client uses (the API, the decide form,
the commands)."""

from __future__ import annotations

import json

import jwt
import pytest
from django.core.management import call_command

from oversight import actions
from oversight.models import OversightRequest, Source, Status
from tests.conftest import past_deadline
from tests.oversight.api_helpers import get, post, submit
from tests.oversight.test_policy_command import run as run_policy

pytestmark = pytest.mark.django_db(transaction=True)

CRITICAL = {"delegation_depth": 9}
JSON = {"Accept": "application/json"}


def decide(client, request_id, outcome="approve", headers=JSON, **fields):
    return client.post(f"/requests/{request_id}/decide", {"outcome": outcome, **fields}, headers=headers)


# --- §9.1 ------------------------------------------------------------------------------


def test_an_agent_made_by_the_command_may_have_20_pending(client, capsys):
    from oversight.models import Agent
    from tests.conftest import AgentPersona

    call_command("create_agent", "fresh-bot")
    bot = AgentPersona(Agent.objects.get(name="fresh-bot"), capsys.readouterr().out.strip().splitlines()[-1])
    for n in range(20):
        assert submit(client, bot, metrics=CRITICAL, payload={"n": n}).status_code == 201
    flooded = submit(client, bot, metrics=CRITICAL, payload={"n": 20})
    assert flooded.status_code == 429 and flooded.json()["error"]["code"] == "too_many_pending"
    assert int(flooded["Retry-After"]) >= 1


def test_an_idempotent_retry_at_the_pending_limit_returns_the_request(client, agent):
    agent.agent.max_pending = 1
    agent.agent.save()
    first = submit(client, agent, metrics=CRITICAL, idempotency_key="k-1")
    assert first.status_code == 201
    again = submit(client, agent, metrics=CRITICAL, idempotency_key="k-1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_a_cooldown_reject_at_the_pending_limit_is_no_429(client, agent):
    # "a critical submission that would leave more pending": one rejected at once does not.
    agent.agent.max_pending = 1
    agent.agent.save()
    first = submit(client, agent, metrics=CRITICAL, payload={"x": 1}).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    assert submit(client, agent, metrics=CRITICAL, payload={"y": 1}).status_code == 201
    again = submit(client, agent, metrics=CRITICAL, payload={"x": 1})
    assert again.status_code == 201 and again.json()["status"] == "rejected"


def test_a_standing_approval_at_the_pending_limit_is_no_429(client, agent, operator):
    actions.do_change_policy("*", {"max_standing_seconds": 600}, by="maria")
    agent.agent.max_pending = 1
    agent.agent.save()
    first = submit(client, agent, metrics=CRITICAL, payload={"x": 1}).json()
    client.force_login(operator)
    assert decide(client, first["id"], standing_seconds="60").status_code == 200
    assert submit(client, agent, metrics=CRITICAL, payload={"y": 1}).status_code == 201
    again = submit(client, agent, metrics=CRITICAL, payload={"x": 1})
    assert again.status_code == 201 and again.json()["decision"]["source"] == "standing"


def test_a_timeout_reject_starts_no_cooldown(client, agent):
    actions.do_change_policy("*", {"timeout_action": "reject"}, by="maria")
    first = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    past_deadline(OversightRequest.objects.get(id=first["id"]))
    assert get(client, f"/api/v1/requests/{first['id']}", agent).json()["decision"]["source"] == "timeout"
    assert submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()["status"] == "pending"


def test_the_cooldown_is_per_operation(client, agent):
    first = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    actions.do_decide(first["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    other = submit(client, agent, operation="deploy", metrics=CRITICAL, payload={"a": 1}).json()
    assert other["status"] == "pending"


def test_a_single_approval_policy_lists_its_one_approver_once_decided(client, agent, operator):
    body = submit(client, agent, metrics=CRITICAL).json()
    assert body["required_approvals"] == 1 and body["approvals"] == []
    client.force_login(operator)
    done = decide(client, body["id"]).json()["request"]
    assert done["status"] == "approved"
    assert [a["by"] for a in done["approvals"]] == [operator.username]
    assert done["approvals"][0]["at"].endswith("Z")
    seen = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    assert [a["by"] for a in seen["approvals"]] == [operator.username]


def test_an_approval_with_changes_discards_the_approvals_before_it(client, agent, operator, second_operator):
    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="maria")
    body = submit(client, agent, metrics=CRITICAL, payload={"rows": 10}).json()
    client.force_login(operator)
    assert decide(client, body["id"]).json()["request"]["status"] == "pending"
    client.force_login(second_operator)
    changed = decide(client, body["id"], payload=json.dumps({"rows": 1})).json()["request"]
    assert changed["status"] == "pending"
    assert [a["by"] for a in changed["approvals"]] == [second_operator.username]


def test_healthz_names_the_clock(client):
    body = client.get("/healthz").json()
    assert body["clock"] == "ok"


# --- §9.7 ------------------------------------------------------------------------------


def test_a_note_over_2000_characters_is_a_400_and_the_request_stays_pending(client, agent, operator):
    body = submit(client, agent, metrics=CRITICAL).json()
    client.force_login(operator)
    refused = decide(client, body["id"], note="n" * 2001)
    assert refused.status_code == 400
    assert OversightRequest.objects.get(id=body["id"]).status == Status.PENDING
    done = decide(client, body["id"], "reject", reason="No", note="n" * 2000)
    assert done.status_code == 200
    assert done.json()["request"]["decision"]["note"] == "n" * 2000


def test_an_unchanged_approval_has_no_decision_payload(client, agent, operator):
    body = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    client.force_login(operator)
    decision = decide(client, body["id"]).json()["request"]["decision"]
    assert "payload" not in decision


def test_a_changed_approval_carries_the_payload(client, agent, operator):
    body = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    client.force_login(operator)
    decision = decide(client, body["id"], payload='{"a": 2}', note="smaller").json()["request"]["decision"]
    assert decision["payload"] == {"a": 2} and decision["note"] == "smaller"
    seen = get(client, f"/api/v1/requests/{body['id']}", agent).json()["decision"]
    assert seen["payload"] == {"a": 2}


@pytest.mark.parametrize("fields", [
    {"standing_seconds": "601"},
    {"standing_seconds": "60", "standing_uses": "101"},
    {"standing_seconds": "60", "standing_scope": "any"},
])
def test_bad_standing_fields_are_a_400_and_the_request_stays_pending(client, agent, operator, fields):
    actions.do_change_policy("*", {"max_standing_seconds": 600, "always": True}, by="maria")
    body = submit(client, agent, metrics=CRITICAL).json()
    client.force_login(operator)
    refused = decide(client, body["id"], **fields)
    assert refused.status_code == 400
    assert OversightRequest.objects.get(id=body["id"]).status == Status.PENDING


def test_standing_seconds_where_the_maximum_is_0_is_a_400(client, agent, operator):
    body = submit(client, agent, metrics=CRITICAL).json()
    client.force_login(operator)
    assert decide(client, body["id"], standing_seconds="1").status_code == 400
    assert OversightRequest.objects.get(id=body["id"]).status == Status.PENDING


def test_a_standing_grant_approves_the_next_request_with_source_standing(client, agent, operator):
    actions.do_change_policy("*", {"max_standing_seconds": 600}, by="maria")
    body = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    client.force_login(operator)
    assert decide(client, body["id"], standing_seconds="60", standing_uses="1").status_code == 200
    later = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    assert later["status"] == "approved"
    assert later["decision"]["source"] == "standing" and later["decision"]["by"] == operator.username
    claims = jwt.decode(later["decision"]["receipt"], options={"verify_signature": False})
    assert claims["grant"] is not None and claims["source"] == "standing"
    deeper = submit(client, agent, metrics={"delegation_depth": 10}, payload={"a": 1}).json()
    assert deeper["status"] == "pending"  # a higher fired value
    used_up = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    assert used_up["status"] == "pending"  # one use only


def test_a_grant_without_standing_uses_is_good_for_10(client, agent, operator):
    from oversight.models import StandingGrant

    actions.do_change_policy("*", {"max_standing_seconds": 600}, by="maria")
    body = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    client.force_login(operator)
    assert decide(client, body["id"], standing_seconds="60").status_code == 200
    assert (StandingGrant.objects.get().max_uses, StandingGrant.objects.get().uses_left) == (10, 10)
    outcomes = [submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()["status"] for _ in range(11)]
    assert outcomes == ["approved"] * 10 + ["pending"]


def test_a_receipt_of_a_cancel_is_served(client, agent):
    body = submit(client, agent, metrics=CRITICAL).json()
    post(client, f"/api/v1/requests/{body['id']}/cancel", agent, json={})
    answer = get(client, f"/api/v1/requests/{body['id']}/receipt", agent)
    assert answer.status_code == 200 and set(answer.json()) == {"receipt"}
    claims = jwt.decode(answer.json()["receipt"], options={"verify_signature": False})
    assert claims["outcome"] == "cancelled" and claims["source"] == "agent"
    assert set(claims) == {"jti", "iss", "sub", "agent", "operation", "payload_sha256", "outcome", "source",
                           "approvers", "policy", "trusted", "grant", "iat", "exp"}


def test_the_jwks_is_served_without_a_key(client):
    answer = client.get("/api/v1/keys")
    assert answer.status_code == 200
    key = answer.json()["keys"][0]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and "d" not in key


# --- §9.1 commands ----------------------------------------------------------------------


def test_the_policy_command_switches_keys_off_and_empties_lists(capsys):
    from oversight.policy import ensure_default_policy

    ensure_default_policy()
    shown = run_policy("*", "--set", "escalate_after=0.5", "--set", "trusted_agents=a,b", capsys=capsys)
    assert shown["escalate_after"] == 0.5 and shown["trusted_agents"] == ["a", "b"]
    shown = run_policy("*", "--set", "escalate_after=null", "--set", "trusted_agents=", "--set", "always=false",
                    "--set", "delegation_depth=null", "--set", "circular_refs=7", capsys=capsys)
    assert shown["escalate_after"] is None and shown["trusted_agents"] == [] and shown["always"] is False
    assert shown["delegation_depth"] is None and shown["circular_refs"] == 7


@pytest.mark.parametrize("assignment", ["timeout_action=approve"])
def test_the_policy_command_refuses_to_let_a_quorum_time_out_by_approving(assignment, capsys):
    from django.core.management.base import CommandError

    from oversight.models import Policy

    run_policy("drop-db", "--set", "required_approvals=2", "--set", "timeout_action=reject", capsys=capsys)
    with pytest.raises(CommandError) as error:
        call_command("policy", "drop-db", "--set", assignment)
    assert error.value.returncode == 2
    assert Policy.objects.get(operation="drop-db", is_current=True).timeout_action == "reject"


def test_create_agent_empty_operations_means_any(capsys, client):
    from oversight.models import Agent
    from tests.conftest import AgentPersona

    call_command("create_agent", "ops-bot", "--operations", "deploy")
    call_command("create_agent", "ops-bot", "--operations", "")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    agent = Agent.objects.get(name="ops-bot")
    assert agent.operations == []
    assert submit(client, AgentPersona(agent, raw), operation="delegate").status_code == 201


# --- §9.7 standing approvals under the two-person rule ------------------------------------


def _quorum_with_grants():
    actions.do_change_policy(
        "*", {"max_standing_seconds": 3600, "required_approvals": 2, "timeout_action": "reject"}, by="maria"
    )


def test_under_a_quorum_no_grant_unless_every_approver_asked(client, agent, operator, second_operator):
    from oversight.models import StandingGrant

    _quorum_with_grants()
    body = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    client.force_login(operator)
    assert decide(client, body["id"], standing_seconds="900").json()["request"]["status"] == "pending"
    client.force_login(second_operator)
    assert decide(client, body["id"]).json()["request"]["status"] == "approved"
    assert not StandingGrant.objects.exists()
    assert submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()["status"] == "pending"


def test_under_a_quorum_the_shortest_duration_applies_by_the_last_approver(client, agent, operator, second_operator):
    from oversight.models import StandingGrant

    _quorum_with_grants()
    body = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    client.force_login(operator)
    decide(client, body["id"], standing_seconds="900")
    client.force_login(second_operator)
    decide(client, body["id"], standing_seconds="1200")
    grant = StandingGrant.objects.get()
    assert round((grant.expires_at - grant.created_at).total_seconds()) == 900
    assert grant.created_by == second_operator.username
    later = submit(client, agent, metrics=CRITICAL, payload={"a": 1}).json()
    assert later["decision"]["source"] == "standing" and later["decision"]["by"] == second_operator.username


def test_the_policy_command_refuses_approver_groups_on_a_policy_that_times_out_approving(capsys):
    from django.contrib.auth.models import Group
    from django.core.management.base import CommandError

    from oversight.models import Policy
    from oversight.policy import ensure_default_policy

    ensure_default_policy()
    Group.objects.create(name="dba")
    with pytest.raises(CommandError) as error:
        call_command("policy", "*", "--set", "approver_groups=dba")
    assert error.value.returncode == 2
    assert Policy.objects.get(operation="*", is_current=True).approver_groups == []
    shown = run_policy("*", "--set", "approver_groups=dba", "--set", "timeout_action=reject", capsys=capsys)
    assert shown["approver_groups"] == ["dba"] and shown["timeout_action"] == "reject"


def test_an_agent_without_bound_hosts_is_judged_by_the_host_of_its_latest_samples(client, agent):
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.models import HostSample

    sample = {"pid": 1, "process": "a", "rss_bytes": 100}
    assert post(client, "/api/v1/metrics", agent, json={"host": "box-7", "samples": [sample]}).status_code == 202
    HostSample.objects.create(host="box-7", at=timezone.now() - timedelta(seconds=5), pressure=96.0,
                              total_bytes=8 << 30, available_bytes=1 << 30, used_bytes=7 << 30)
    body = submit(client, agent, metrics={"memory_pressure": 3}).json()
    trigger = body["triggers"][0]
    assert body["status"] == "pending"
    assert (trigger["value"], trigger["source"], trigger["agent_value"], trigger["monitored_value"]) == (
        96.0, "monitoring", 3, 96.0)
    calm = submit(client, agent, metrics={"memory_pressure": 99, "host": "other"}).json()["triggers"][0]
    assert (calm["value"], calm["source"], calm["monitored_value"]) == (99, "agent", None)


# --- §9.1 deadlines by one clock ---------------------------------------------------------


def test_a_node_whose_clock_runs_behind_cannot_submit_a_request_already_overdue(client, agent):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from tests.conftest import database_now

    with time_machine.travel(timezone.now() - timedelta(minutes=10), tick=True):
        body = submit(client, agent, metrics=CRITICAL, timeout_seconds=300).json()
    left = OversightRequest.objects.get(id=body["id"]).deadline - database_now()
    assert timedelta(seconds=290) < left <= timedelta(seconds=300)
    read = get(client, f"/api/v1/requests/{body['id']}", agent).json()
    assert read["status"] == "pending" and read["decision"] is None


def test_a_grant_made_on_a_node_whose_clock_runs_ahead_lasts_what_was_asked(client, agent, operator):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from oversight.models import StandingGrant
    from tests.conftest import database_now

    actions.do_change_policy("*", {"max_standing_seconds": 600}, by="maria")
    body = submit(client, agent, metrics=CRITICAL, payload={"x": 1}).json()
    client.force_login(operator)
    with time_machine.travel(timezone.now() + timedelta(hours=1), tick=True):
        assert decide(client, body["id"], standing_seconds="60").status_code == 200
    left = StandingGrant.objects.get().expires_at - database_now()
    assert timedelta(seconds=50) < left <= timedelta(seconds=60)


# --- §4 error shape on the decide endpoint's JSON answers (§9.1 already_approved) -------


def _assert_error_shape(response, status, code):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and isinstance(error["details"], dict)
    assert error["code"] == code and error["message"]


def test_the_decide_endpoints_json_errors_have_the_one_shape(client, agent, operator, second_operator):
    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="maria")
    body = submit(client, agent, metrics=CRITICAL).json()
    _assert_error_shape(decide(client, body["id"], headers={**JSON, **agent.headers}), 403, "forbidden")
    client.force_login(operator)
    _assert_error_shape(decide(client, body["id"], "maybe"), 400, "validation_error")
    _assert_error_shape(decide(client, body["id"], "reject"), 400, "validation_error")
    _assert_error_shape(decide(client, body["id"], note="n" * 2001), 400, "validation_error")
    assert decide(client, body["id"]).status_code == 200
    _assert_error_shape(decide(client, body["id"]), 409, "already_approved")
    bulk = client.post("/requests/decide", {"outcome": "approve", "ids": [body["id"]], "payload": "{}"}, headers=JSON)
    _assert_error_shape(bulk, 400, "validation_error")
    _assert_error_shape(client.post("/grants/999999/revoke", headers=JSON), 404, "not_found")
    client.force_login(second_operator)
    decide(client, body["id"], "reject", reason="No")
    _assert_error_shape(decide(client, body["id"]), 409, "already_decided")


def test_quorum_and_timeout_action_come_from_the_policy_version_of_evaluation(client, agent, operator):
    actions.do_change_policy("*", {"required_approvals": 2, "timeout_action": "reject"}, by="maria")
    body = submit(client, agent, metrics=CRITICAL).json()
    other = submit(client, agent, metrics=CRITICAL, payload={"n": 2}).json()
    actions.do_change_policy("*", {"required_approvals": 1, "timeout_action": "approve"}, by="maria")
    client.force_login(operator)
    answer = decide(client, body["id"]).json()["request"]
    assert answer["status"] == "pending" and answer["required_approvals"] == 2
    past_deadline(OversightRequest.objects.get(id=other["id"]))
    timed_out = get(client, f"/api/v1/requests/{other['id']}", agent).json()
    assert (timed_out["status"], timed_out["decision"]["source"]) == ("rejected", "timeout")
