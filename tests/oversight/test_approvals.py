"""The two-person rule in oversight/actions.py: N different operators approve, one
reject rejects, and every race ends in exactly one final decision."""

import threading

import pytest
from django.db import close_old_connections

from oversight import actions
from oversight.models import AuditEvent, OversightRequest, Source, Status
from oversight.serializers import request_dict
from tests.conftest import past_deadline


def quorum(n=2, **extra):
    return actions.do_change_policy(
        "drop-db", {"required_approvals": n, "timeout_action": "reject", "always": True} | extra, by="maria"
    )


def ask(agent, payload=None):
    req, _ = actions.do_submit(agent.agent, actions.Submission("drop-db", "Drop the staging db", payload or {}, {}))
    assert req.status == Status.PENDING
    return req


def approve(req, by, **kwargs):
    return actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by=by, **kwargs)


def decisions(req):
    return AuditEvent.objects.filter(request=req, kind="decided").count()


@pytest.mark.django_db
def test_it_needs_two_different_operators(agent):
    quorum()
    req = ask(agent)
    partial = approve(req, "alice")
    resource = request_dict(partial)
    assert resource["status"] == "pending" and resource["required_approvals"] == 2
    assert [a["by"] for a in resource["approvals"]] == ["alice"] and resource["approvals"][0]["at"].endswith("Z")
    with pytest.raises(actions.AlreadyApproved):
        approve(req, "alice")
    done = approve(req, "bob")
    assert (done.status, done.decision_source, done.decided_by) == ("approved", "operator", "bob")
    assert [a["by"] for a in request_dict(done)["approvals"]] == ["alice", "bob"]
    assert AuditEvent.objects.filter(request=req, kind="approved").count() == 2
    assert decisions(req) == 1


@pytest.mark.django_db
def test_one_reject_rejects_even_after_an_approval(agent):
    quorum()
    req = ask(agent)
    approve(req, "alice")
    rejected = actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="bob", reason="no")
    assert rejected.status == Status.REJECTED
    with pytest.raises(actions.AlreadyDecided):
        approve(req, "carol")


@pytest.mark.django_db
def test_a_single_approval_is_listed_too(agent):
    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 9}))
    resource = request_dict(approve(req, "alice"))
    assert resource["required_approvals"] == 1 and [a["by"] for a in resource["approvals"]] == ["alice"]


@pytest.mark.django_db
def test_a_quorum_not_reached_in_time_rejects(agent):
    quorum()
    req = ask(agent)
    approve(req, "alice")
    past_deadline(req)
    assert actions.expire_due() == 1
    req.refresh_from_db()
    assert (req.status, req.decision_source) == ("rejected", "timeout")


@pytest.mark.django_db
def test_a_bulk_approval_counts_as_one_approval_but_never_completes_a_quorum(agent):
    quorum(3)
    req = ask(agent)
    assert [a["by"] for a in approve(req, "alice", bulk=True).approvals] == ["alice"]
    with pytest.raises(actions.AlreadyApproved):
        approve(req, "alice", bulk=True)
    partial = approve(req, "bob", bulk=True)
    assert partial.status == Status.PENDING and [a["by"] for a in partial.approvals] == ["alice", "bob"]
    with pytest.raises(actions.BulkCannotCompleteQuorum):
        approve(req, "carol", bulk=True)  # the last one: on its own only
    req.refresh_from_db()
    assert req.status == Status.PENDING and req.approval_count == 2
    assert approve(req, "carol").status == Status.APPROVED
    assert decisions(req) == 1


@pytest.mark.django_db
def test_a_bulk_approval_never_adds_itself_to_an_edit_the_queue_does_not_show(agent, client, operator):
    """Under a quorum of three, alice approves with changes; bob's bulk approval from the
    queue (which shows no payload) would approve her edit unseen: refused, nothing recorded;
    on the request's page, where the edit is shown, he may."""
    quorum(3)
    req = ask(agent, {"rows": 10})
    approve(req, "alice", payload={"rows": 1})
    with pytest.raises(actions.BulkCannotApproveAnEdit):
        approve(req, "bob", bulk=True)
    req.refresh_from_db()
    assert [a["by"] for a in req.approvals] == ["alice"] and req.approval_count == 1
    client.force_login(operator)
    answer = client.post("/requests/decide", {"ids": [req.id], "outcome": "approve"},
                         headers={"Accept": "application/json"})
    assert [r["status"] for r in answer.json()["results"]] == [403]
    assert approve(req, "bob").approvals[-1]["by"] == "bob"


@pytest.mark.django_db
def test_the_request_keeps_the_quorum_it_was_evaluated_under(agent):
    quorum(3)
    req = ask(agent)
    actions.do_change_policy("drop-db", {"required_approvals": 1, "timeout_action": "approve"}, by="maria")
    approve(req, "alice")
    approve(req, "bob")
    req.refresh_from_db()
    assert req.status == Status.PENDING and req.required_approvals == 3 and req.timeout_action == "reject"


def test_a_quorum_needs_timeout_reject(db):
    with pytest.raises(actions.PolicyInvalid):
        actions.do_change_policy("drop-db", {"required_approvals": 2}, by="maria")
    with pytest.raises(actions.PolicyInvalid):
        actions.do_change_policy("drop-db", {"approver_groups": ["operators"]}, by="maria")


# --- Races that really race --------------------------------------------------------------


def _race(workers):
    barrier = threading.Barrier(len(workers))
    results = [None] * len(workers)

    def run(i, work):
        try:
            barrier.wait()
            results[i] = work()
        except (actions.AlreadyDecided, actions.AlreadyApproved) as lost:
            results[i] = lost
        finally:
            close_old_connections()

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.django_db(transaction=True)
def test_the_last_two_approvals_at_once_make_one_decision(agent):
    quorum(3)
    for round_ in range(4):
        req = ask(agent, {"round": round_})
        approve(req, "alice")
        results = _race([lambda who=who, req=req: approve(req, who) for who in ("bob", "carol", "dave")])
        req.refresh_from_db()
        assert req.status == Status.APPROVED and req.approval_count == 3
        assert len({a["by"] for a in req.approvals}) == 3
        final = [r for r in results if isinstance(r, OversightRequest) and r.status == Status.APPROVED]
        assert len(final) == 1 and final[0].decided_by == req.decided_by
        assert decisions(req) == 1


@pytest.mark.django_db(transaction=True)
def test_the_last_approval_racing_a_reject_or_the_timeout_makes_one_decision(agent):
    quorum()
    for round_ in range(4):
        req = ask(agent, {"round": round_})
        approve(req, "alice")
        past_deadline(req, -0.005)  # due in 5 ms by the database's clock: any of the three may win
        _race([
            lambda req=req: approve(req, "bob"),
            lambda req=req: actions.do_decide(
                req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="carol", reason="no"),
            lambda: actions.expire_due(),
        ])
        req.refresh_from_db()
        assert req.status in (Status.APPROVED, Status.REJECTED)
        assert decisions(req) == 1
        if req.status == Status.APPROVED:
            assert req.decided_by == "bob" and req.approval_count == 2


@pytest.mark.django_db(transaction=True)
def test_approvals_in_separate_processes_make_exactly_one_decision(agent):
    import multiprocessing

    from tests.conftest import live_database_url
    from tests.race_child import approve as approve_in_process

    quorum(2)
    req = ask(agent)
    context = multiprocessing.get_context("spawn")
    people = ["p0", "p1", "p2", "p3"]
    barrier, results = context.Barrier(len(people)), context.Queue()
    processes = [
        context.Process(target=approve_in_process, args=(live_database_url(), str(req.id), who, barrier, results))
        for who in people
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    outcomes = [results.get(timeout=5) for _ in processes]
    req.refresh_from_db()
    assert req.status == Status.APPROVED and req.approval_count == 2
    assert [kind for kind, _ in outcomes].count("approved") == 1
    assert [kind for kind, _ in outcomes].count("partial") == 1
    assert decisions(req) == 1


@pytest.mark.django_db
def test_an_approval_with_changes_discards_the_approvals_before_it(agent):
    quorum()
    req = ask(agent, {"table": "staging"})
    approve(req, "alice")
    changed = approve(req, "bob", payload={"table": "staging_copy"})
    assert changed.status == Status.PENDING
    assert [a["by"] for a in request_dict(changed)["approvals"]] == ["bob"]
    done = approve(req, "alice")  # alice approves again: now the changed payload
    assert done.status == Status.APPROVED and done.decision_payload == {"table": "staging_copy"}
    assert [a["by"] for a in request_dict(done)["approvals"]] == ["bob", "alice"]


@pytest.mark.django_db
def test_the_resource_names_who_changed_the_payload_that_stands(agent):
    """What the queue's rows are drawn from (the feed's and the page's resource): the
    approver whose edit the approvals still needed are for, null while none stands."""
    quorum(3)
    req = ask(agent, {"table": "staging"})
    assert request_dict(req)["payload_changed_by"] is None
    assert request_dict(approve(req, "alice"))["payload_changed_by"] is None
    assert request_dict(approve(req, "bob", payload={"table": "copy"}))["payload_changed_by"] == "bob"
    assert request_dict(approve(req, "alice"))["payload_changed_by"] == "bob"  # a plain approval of it
    back = approve(req, "carol", payload={"table": "staging"})  # back to the agent's: nothing changed stands
    assert request_dict(back)["payload_changed_by"] is None and [a["by"] for a in back.approvals] == ["carol"]
    approve(req, "dave", payload={"table": "copy"})
    approve(req, "erin")
    done = request_dict(approve(req, "frank"))
    assert done["status"] == "approved" and done["decision"]["payload"] == {"table": "copy"}
    assert done["payload_changed_by"] == "dave"


@pytest.mark.django_db
def test_under_a_quorum_a_grant_needs_every_approver_and_the_shortest_applies(agent):
    from oversight.models import StandingGrant

    quorum(max_standing_seconds=3600)
    asked = actions.GrantAsked(seconds=1800, uses=5)
    first = ask(agent, {"n": 1})
    approve(first, "alice", grant=asked)
    approve(first, "bob")
    assert not StandingGrant.objects.exists()
    second = ask(agent, {"n": 2})
    approve(second, "alice", grant=actions.GrantAsked(seconds=600, uses=7))
    done = approve(second, "bob", grant=asked)
    grant = StandingGrant.objects.get()
    assert grant.created_by == "bob" and grant.max_uses == 5
    assert (grant.expires_at - done.decided_at).total_seconds() == 600
