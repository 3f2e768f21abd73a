"""Who may decide: approver groups, the agent's owner, superusers bound too; repeat
approvals, bulk quorums, and what the queue and request page show each person."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from oversight import actions
from oversight.models import OversightRequest, Status
from tests.conftest import _person

pytestmark = pytest.mark.django_db

JSON = {"Accept": "application/json"}


def guarded_policy(**extra):
    Group.objects.get_or_create(name="dba")
    return actions.do_change_policy(
        "drop-db", {"always": True, "timeout_action": "reject", "approver_groups": ["dba"]} | extra, by="maria"
    )


def ask(agent, operation="drop-db", payload=None) -> OversightRequest:
    req, _ = actions.do_submit(agent.agent, actions.Submission(operation, "Drop staging", payload or {}, {"delegation_depth": 9}))
    assert req.status == Status.PENDING
    return req


@pytest.fixture
def dba(db) -> User:
    user = _person("alice", "operators")
    user.groups.add(Group.objects.get_or_create(name="dba")[0])
    return user


@pytest.fixture
def second_dba(db) -> User:
    user = _person("bob", "operators")
    user.groups.add(Group.objects.get_or_create(name="dba")[0])
    return user


def post(client, req, outcome="approve", reason="", headers=None):
    return client.post(f"/requests/{req.id}/decide", {"outcome": outcome, "reason": reason}, headers=headers or {})


def test_an_operator_outside_the_approver_groups_gets_403_and_sees_no_buttons(client, operator, dba, agent):
    guarded_policy()
    req = ask(agent)
    client.force_login(operator)
    refused = post(client, req, headers=JSON)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert post(client, req, "reject", "no").status_code == 403
    bulk = client.post("/requests/decide", {"outcome": "approve", "ids": [str(req.id)]}, headers=JSON)
    assert bulk.json()["results"][0]["status"] == 403
    queue = client.get("/queue/").content.decode()
    assert str(req.id) in queue and f'action="/requests/{req.id}/decide"' not in queue
    page = client.get(f"/requests/{req.id}/").content.decode()
    assert "Drop staging" in page and 'class="decide approve-form"' not in page
    req.refresh_from_db()
    assert req.status == Status.PENDING
    client.force_login(dba)
    assert f'action="/requests/{req.id}/decide"' in client.get("/queue/").content.decode()
    assert post(client, req).status_code == 302


def test_the_owner_of_the_agent_never_decides_its_requests(client, operator, second_operator, agent):
    agent.agent.owner = operator
    agent.agent.save()
    req = ask(agent, operation="delegate")
    client.force_login(operator)
    assert post(client, req, headers=JSON).status_code == 403
    assert post(client, req, "reject", "mine").status_code == 403
    assert f'action="/requests/{req.id}/decide"' not in client.get("/queue/").content.decode()
    assert 'class="decide approve-form"' not in client.get(f"/requests/{req.id}/").content.decode()
    client.force_login(second_operator)
    assert post(client, req).status_code == 302


def test_superusers_are_bound_by_groups_and_ownership(client, agent):
    guarded_policy()
    root = User.objects.create_superuser("root", password="correct horse battery")
    req = ask(agent)
    client.force_login(root)
    assert post(client, req, headers=JSON).status_code == 403
    agent.agent.owner = root
    agent.agent.save()
    own = ask(agent, operation="delegate")
    assert post(client, own, headers=JSON).status_code == 403


def test_the_groups_and_owner_come_from_the_moment_of_evaluation(client, operator, dba, agent):
    guarded_policy()
    req = ask(agent)
    actions.do_change_policy("drop-db", {"approver_groups": [], "timeout_action": "approve"}, by="maria")
    client.force_login(operator)
    assert post(client, req, headers=JSON).status_code == 403


def test_two_operators_approve_and_a_repeat_is_409_already_approved(client, dba, second_dba, agent):
    guarded_policy(required_approvals=2)
    req = ask(agent)
    client.force_login(dba)
    first = post(client, req, headers=JSON)
    assert first.status_code == 200
    body = first.json()["request"]
    assert body["status"] == "pending" and [a["by"] for a in body["approvals"]] == ["alice"]
    repeat = post(client, req, headers=JSON)
    assert repeat.status_code == 409 and repeat.json()["error"]["code"] == "already_approved"
    queue = client.get("/queue/").content.decode()
    assert "1 of 2 approved — by alice" in queue
    row = queue.split(f'data-id="{req.id}"')[1].split('<p class="result"')[0]
    assert 'class="decide approve-form"' not in row and 'class="decide reject-form"' in row
    client.force_login(second_dba)
    done = post(client, req, headers=JSON).json()["request"]
    assert done["status"] == "approved" and [a["by"] for a in done["approvals"]] == ["alice", "bob"]


def test_a_bulk_approval_adds_one_approval_and_never_completes_a_quorum(client, dba, second_dba, agent):
    guarded_policy(required_approvals=2)
    req = ask(agent)
    other = ask(agent, operation="delegate")
    client.force_login(dba)
    response = client.post("/requests/decide", {"outcome": "approve", "ids": [str(req.id), str(other.id)]},
                           headers=JSON)
    results = {r["id"]: r for r in response.json()["results"]}
    # One operator's approval, recorded: the request waits for another operator.
    assert results[str(req.id)]["status"] == 200 and results[str(other.id)]["status"] == 200
    assert results[str(req.id)]["request"]["status"] == "pending"
    assert [a["by"] for a in results[str(req.id)]["request"]["approvals"]] == ["alice"]
    again = client.post("/requests/decide", {"outcome": "approve", "ids": [str(req.id)]}, headers=JSON).json()
    assert again["results"][0]["status"] == 409 and again["results"][0]["code"] == "already_approved"
    client.force_login(second_dba)
    last = client.post("/requests/decide", {"outcome": "approve", "ids": [str(req.id)]}, headers=JSON)
    item = last.json()["results"][0]
    assert last.status_code == 403 and (item["status"], item["code"]) == (403, "forbidden")
    assert item["request"]["status"] == "pending"
    req.refresh_from_db()
    assert req.status == Status.PENDING and [a["by"] for a in req.approvals] == ["alice"]
    assert post(client, req, headers=JSON).json()["request"]["status"] == "approved"  # on its own


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_partial_approval_is_pushed_as_request_updated(dba, agent):
    from channels.db import database_sync_to_async

    from oversight.models import Source
    from tests.oversight.test_feed import next_event, opened

    await database_sync_to_async(guarded_policy)(required_approvals=2)
    req = await database_sync_to_async(ask)(agent)
    feed, _ = await opened(dba)
    await database_sync_to_async(actions.do_decide)(
        req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="alice"
    )
    event = await next_event(feed, "request.updated")
    assert event["request"]["id"] == str(req.id) and event["request"]["status"] == "pending"
    assert [a["by"] for a in event["request"]["approvals"]] == ["alice"]
    await feed.disconnect()


def _dba(name: str) -> User:
    user = _person(name, "operators")
    user.groups.add(Group.objects.get_or_create(name="dba")[0])
    return user


def _at_once(*posts):
    """Run each `post(client)` in its own thread, each with its own signed-in client and
    database connection, all released together."""
    import threading

    from django.db import close_old_connections
    from django.test import Client

    barrier = threading.Barrier(len(posts))
    answers: list = [None] * len(posts)

    def run(index, user, send):
        browser = Client()
        browser.force_login(user)
        try:
            barrier.wait()
            answers[index] = send(browser)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=run, args=(i, user, send)) for i, (user, send) in enumerate(posts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def _bulk(ids):
    return lambda browser: browser.post("/requests/decide", {"outcome": "approve", "ids": ids}, headers=JSON).json()


@pytest.mark.django_db(transaction=True)
def test_two_operators_bulk_approving_at_once_make_one_approval_each_and_one_decision_follows(agent):
    from oversight.models import AuditEvent

    guarded_policy(required_approvals=2)
    alice, bob, carol, dave = (_dba(name) for name in ("alice", "bob", "carol", "dave"))
    reqs = [ask(agent, payload={"n": n}) for n in range(10)]
    ids = [str(r.id) for r in reqs]
    first, second = _at_once((alice, _bulk(ids)), (bob, _bulk(ids)))
    by_person = {"alice": {r["id"]: r for r in first["results"]}, "bob": {r["id"]: r for r in second["results"]}}
    for req in reqs:
        req.refresh_from_db()
        # Exactly one of the two approvals counts; the other would have been the last one.
        assert req.status == Status.PENDING and req.approval_count == 1 and len(req.approvals) == 1
        winner = req.approvals[0]["by"]
        loser = "bob" if winner == "alice" else "alice"
        won, lost = by_person[winner][str(req.id)], by_person[loser][str(req.id)]
        assert won["status"] == 200 and won["request"]["status"] == "pending"
        assert (lost["status"], lost["code"]) == (403, "forbidden")
        assert AuditEvent.objects.filter(request=req, kind="approved").count() == 1
    # The last approval, given on its own while a third operator bulk-approves: one decision each.
    answers = _at_once(
        *[(carol, lambda browser, req=req: post(browser, req, headers=JSON).json()) for req in reqs],
        (dave, _bulk(ids)),
    )
    for req, answer in zip(reqs, answers, strict=False):
        req.refresh_from_db()
        assert answer["request"]["status"] == "approved"
        assert (req.status, req.decided_by, req.approval_count) == (Status.APPROVED, "carol", 2)
        assert AuditEvent.objects.filter(request=req, kind="decided").count() == 1
    assert {r["status"] for r in answers[-1]["results"]} <= {403, 409}
