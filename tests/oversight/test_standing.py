"""Standing approvals (spec §9.7): granted beside an approval, used at submission, revoked."""

from __future__ import annotations

import importlib
import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from oversight import actions, receipts
from oversight.models import AuditEvent, OversightRequest, Source, StandingGrant, Status

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"Accept": "application/json"}
HOT = {"memory_pressure": 91.0, "delegation_depth": 5}


@pytest.fixture
def standing_allowed(db):
    actions.do_change_policy("*", {"max_standing_seconds": 3600}, by="mia")


def submit(agent, payload=None, metrics=None, operation="delegate") -> OversightRequest:
    submission = actions.Submission(
        operation=operation, summary="Scrape", payload=payload if payload is not None else {"url": "a"},
        metrics=metrics or HOT,
    )
    return actions.do_submit(agent.agent, submission)[0]


def approve(client, req, **fields):
    return client.post(f"/requests/{req.id}/decide", {"outcome": "approve"} | fields, headers=JSON)


@pytest.fixture
def granted(client, operator, agent, standing_allowed):
    client.force_login(operator)
    first = submit(agent)
    response = approve(client, first, standing_seconds="900", standing_uses="2")
    assert response.status_code == 200, response.content
    return StandingGrant.objects.get(request=first)


def test_an_approval_grants_and_the_next_matching_request_is_approved_at_once(granted, agent):
    assert (granted.max_uses, granted.uses_left, granted.created_by) == (2, 2, "olivia")
    assert granted.rules == {"memory_pressure": 91.0, "delegation_depth": 5}
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.GRANT_CREATED, actor="olivia").count() == 1

    later = submit(agent, metrics={"memory_pressure": 85.0, "delegation_depth": 5})
    assert later.status == Status.APPROVED and later.decision_source == Source.STANDING
    assert later.decided_by == "olivia" and f"#{granted.pk}" in later.decision_reason
    assert later.standing_grant == granted
    assert later.deadline is None
    granted.refresh_from_db()
    assert granted.uses_left == 1

    resource = Client().get(f"/api/v1/requests/{later.id}", headers=agent.headers).json()
    assert resource["decision"]["source"] == "standing"


@pytest.mark.parametrize(
    ("payload", "metrics", "why"),
    [
        ({"url": "a"}, {"memory_pressure": 95.0, "delegation_depth": 5}, "a fired value above the granted one"),
        ({"url": "a"}, {"memory_pressure": 91.0, "delegation_depth": 5, "circular_refs": 9}, "a rule not fired before"),
        ({"url": "b"}, HOT, "another payload"),
    ],
)
def test_a_request_the_grant_does_not_cover_is_queued(granted, agent, payload, metrics, why):
    later = submit(agent, payload=payload, metrics=metrics)
    assert later.status == Status.PENDING, why
    granted.refresh_from_db()
    assert granted.uses_left == 2


def test_another_agent_or_operation_is_queued(granted, agent, other_agent):
    assert submit(other_agent).status == Status.PENDING
    assert submit(agent, operation="scrape").status == Status.PENDING


def test_any_payload_drops_the_payload_condition(client, operator, agent, standing_allowed):
    client.force_login(operator)
    approve(client, submit(agent), standing_seconds="300", standing_scope="any")
    assert submit(agent, payload={"url": "elsewhere"}).decision_source == Source.STANDING


def test_uses_run_out(granted, agent):
    assert [submit(agent).status for _ in range(3)] == [Status.APPROVED, Status.APPROVED, Status.PENDING]


def test_an_expired_grant_approves_nothing(granted, agent):
    StandingGrant.objects.filter(id=granted.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert submit(agent).status == Status.PENDING


def test_a_grant_never_outlives_its_policy_version(granted, agent):
    actions.do_change_policy("*", {"max_standing_seconds": 7200}, by="mia")
    assert submit(agent).status == Status.PENDING


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"standing_seconds": "3601"}, "1 to 3,600 seconds"),
        ({"standing_seconds": "-5"}, "1 to 3,600 seconds"),
        ({"standing_seconds": "60", "standing_uses": "101"}, "1 to 100 uses"),
        ({"standing_seconds": "60", "standing_uses": "0"}, "1 to 100 uses"),
        ({"standing_seconds": "60", "standing_scope": "everything"}, "payload or any"),
    ],
)
def test_a_bad_grant_is_a_400_and_the_request_stays_pending(client, operator, agent, standing_allowed, fields, message):
    client.force_login(operator)
    req = submit(agent)
    response = approve(client, req, **fields)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    req.refresh_from_db()
    assert req.status == Status.PENDING and not StandingGrant.objects.exists()


def test_no_grant_where_the_policy_allows_none(client, operator, agent):
    client.force_login(operator)
    req = submit(agent)
    response = approve(client, req, standing_seconds="60")
    assert response.status_code == 400 and "allows no standing approvals" in response.json()["error"]["message"]
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_any_payload_under_always_is_a_400(client, operator, agent):
    actions.do_change_policy("*", {"max_standing_seconds": 3600, "always": True}, by="mia")
    client.force_login(operator)
    req = submit(agent, metrics={})
    response = approve(client, req, standing_seconds="60", standing_scope="any")
    assert response.status_code == 400
    assert approve(client, req, standing_seconds="60").status_code == 200
    assert submit(agent, metrics={}).decision_source == Source.STANDING


def test_a_reject_or_a_bulk_approval_never_grants(client, operator, agent, standing_allowed):
    client.force_login(operator)
    req = submit(agent)
    response = client.post(f"/requests/{req.id}/decide",
                           {"outcome": "reject", "reason": "no", "standing_seconds": "60"}, headers=JSON)
    assert response.status_code == 400
    response = client.post("/requests/decide", {"ids": [str(req.id)], "outcome": "approve", "standing_seconds": "60"},
                           headers=JSON)
    assert response.status_code == 400
    req.refresh_from_db()
    assert req.status == Status.PENDING and not StandingGrant.objects.exists()


def test_an_operator_revokes_a_grant_from_the_queue(client, granted, agent, operator):
    page = client.get("/queue/")
    assert f'action="/grants/{granted.id}/revoke"'.encode() in page.content
    response = client.post(f"/grants/{granted.id}/revoke", headers=JSON)
    assert response.status_code == 200 and response.json()["grant"]["revoked_by"] == "olivia"
    assert submit(agent).status == Status.PENDING
    assert client.post(f"/grants/{granted.id}/revoke", headers=JSON).status_code == 404
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.GRANT_REVOKED, actor="olivia").count() == 1
    assert f'action="/grants/{granted.id}/revoke"'.encode() not in client.get("/queue/").content


def test_only_operators_revoke(granted, manager):
    browser = Client()
    browser.force_login(manager)
    assert browser.post(f"/grants/{granted.id}/revoke", headers=JSON).status_code == 403
    assert Client().post(f"/grants/{granted.id}/revoke").status_code in (302, 403)
    granted.refresh_from_db()
    assert granted.revoked_at is None


def test_a_revoke_racing_a_submission_ends_one_way_or_the_other(granted, agent):
    """Each round a fresh grant, then a revoke and a covered submission at once: the
    request is either approved by the grant (whose use is counted) or queued — never
    approved by a grant whose revoke committed first, never a use without a request."""
    outcomes = set()
    for _ in range(8):
        StandingGrant.objects.filter(id=granted.id).update(revoked_at=None, revoked_by="", uses_left=2)
        start = threading.Barrier(2)
        made = []

        def use(start=start, made=made):
            start.wait()
            try:
                made.append(submit(agent))
            finally:
                connection.close()

        def revoke(start=start):
            start.wait()
            try:
                actions.do_revoke_grant(granted.id, by="olivia")
            finally:
                connection.close()

        threads = [threading.Thread(target=use), threading.Thread(target=revoke)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        granted.refresh_from_db()
        assert granted.revoked_at is not None
        req = made[0]
        outcomes.add(req.status)
        if req.status == Status.APPROVED:
            assert req.decision_source == Source.STANDING and granted.uses_left == 1
        else:
            assert req.status == Status.PENDING and granted.uses_left == 2
    assert outcomes <= {Status.APPROVED, Status.PENDING}


def test_grants_are_in_the_openapi_enum_and_the_history_filter(client, operator):
    schema = client.get("/api/v1/openapi.json").json()
    assert "standing" in schema["components"]["schemas"]["Decision"]["properties"]["source"]["enum"]
    client.force_login(operator)
    assert client.get("/history/?source=standing").status_code == 200


def test_the_queue_reloads_grants_in_force_as_json(client, granted, manager):
    assert [g["id"] for g in client.get("/grants/").json()["grants"]] == [granted.id]
    actions.do_revoke_grant(granted.id, by="oscar")
    assert client.get("/grants/").json()["grants"] == []
    client.force_login(manager)
    assert client.get("/grants/").status_code == 403


def test_a_grant_covers_the_payload_approved_not_the_one_submitted(client, operator, agent, standing_allowed):
    """An operator edits a dangerous field out and approves for the next hour: the
    grant is for what they approved. The payload as first submitted, dangerous field
    and all, goes to a person again."""
    client.force_login(operator)
    dangerous = {"url": "a", "then": "rm -rf /"}
    first = submit(agent, payload=dangerous)
    response = approve(client, first, payload=json.dumps({"url": "a"}), standing_seconds="900")
    assert response.status_code == 200, response.content
    grant = StandingGrant.objects.get(request=first)
    assert grant.payload_digest == receipts.payload_digest({"url": "a"})

    again = submit(agent, payload=dangerous)
    assert again.status == Status.PENDING and again.standing_grant is None
    approved_one = submit(agent, payload={"url": "a"})
    assert approved_one.decision_source == Source.STANDING and approved_one.standing_grant == grant


def test_a_grant_matches_on_the_payload_sha256_of_rfc_8785(client, operator, agent, standing_allowed):
    """`{"n": 2}` and `{"n": 2.0}` are one payload in canonical JSON (RFC 8785), and the
    grant's digest is the request's `payload_sha256`."""
    client.force_login(operator)
    first = submit(agent, payload={"n": 2, "b": "x", "a": [1.5, -0.0]})
    assert approve(client, first, standing_seconds="900").status_code == 200
    grant = StandingGrant.objects.get(request=first)
    assert grant.payload_digest == first.payload_sha256
    later = submit(agent, payload={"a": [1.5, 0], "b": "x", "n": 2.0})
    assert later.payload_sha256 == first.payload_sha256
    assert later.decision_source == Source.STANDING


def test_the_upgrade_recomputes_the_digests_still_looked_up(client, operator, agent, standing_allowed):
    """Rejects and grants stored with the old sorted-keys digest keep holding after the
    upgrade (migration 0018); a grant is moved to the payload its operator approved."""
    from django.apps import apps

    upgrade = importlib.import_module("oversight.migrations.0018_payload_digests_rfc8785")
    client.force_login(operator)
    first = submit(agent, payload={"url": "a", "then": "rm -rf /", "n": 2.0})
    assert approve(client, first, payload=json.dumps({"url": "a", "n": 2.0}), standing_seconds="900").status_code == 200
    rejected = submit(agent, payload={"x": 1.0})
    actions.do_decide(rejected.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    old = "0" * 64
    StandingGrant.objects.update(payload_digest=old)
    OversightRequest.objects.filter(id=rejected.id).update(payload_digest=old)

    upgrade.recompute(apps, None)
    assert StandingGrant.objects.get().payload_digest == receipts.payload_digest({"url": "a", "n": 2})
    assert OversightRequest.objects.get(id=rejected.id).payload_digest == receipts.payload_digest({"x": 1})
    again = submit(agent, payload={"x": 1})
    assert (again.status, again.decision_source) == (Status.REJECTED, Source.POLICY)


def test_under_a_quorum_the_grant_covers_the_payload_the_quorum_approved(client, operator, second_operator, agent):
    actions.do_change_policy(
        "*", {"max_standing_seconds": 3600, "required_approvals": 2, "timeout_action": "reject"}, by="mia"
    )
    dangerous = {"url": "a", "then": "rm -rf /"}
    first = submit(agent, payload=dangerous)
    client.force_login(operator)
    assert approve(client, first, payload=json.dumps({"url": "a"}), standing_seconds="900").status_code == 200
    other = Client()
    other.force_login(second_operator)
    assert approve(other, first, standing_seconds="600").status_code == 200
    grant = StandingGrant.objects.get(request=first)
    assert grant.payload_digest == receipts.payload_digest({"url": "a"})
    assert submit(agent, payload=dangerous).status == Status.PENDING
    assert submit(agent, payload={"url": "a"}).decision_source == Source.STANDING


def test_a_policy_edit_between_a_submissions_read_and_its_grant_use_ends_the_grant(granted, agent):
    """The API reads the current policies before the submission's transaction: a new
    version committed in between must not let the old version's grant approve."""
    from oversight.api import submitread

    submission = actions.Submission(operation="delegate", summary="Scrape", payload={"url": "a"}, metrics=HOT)
    digest = receipts.payload_digest(submission.payload)
    read = submitread.read(agent.agent.keys.get().digest, "delegate", digest, timezone.now())
    actions.do_change_policy("*", {"always": True}, by="mia")
    req, _ = actions.do_submit(agent.agent, submission, read=read, payload_sha256=digest)
    assert req.status == Status.PENDING
    assert StandingGrant.objects.get(id=granted.id).uses_left == 2
