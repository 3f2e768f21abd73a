"""Decisions: write-once, exactly one winner, timeouts that hold with no worker."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext

from oversight import actions
from oversight.dbclock import DatabaseNow, db_now
from oversight.models import AuditEvent, OversightRequest, Policy, Source, Status
from tests.conftest import past_deadline


def _critical(agent, **kwargs):
    req, _ = actions.do_submit(
        agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, **kwargs)
    )
    assert req.status == Status.PENDING
    return req


def _decisions(req):
    return AuditEvent.objects.filter(request=req, kind__in=["decided", "cancelled"]).count()


@pytest.mark.django_db
def test_an_operator_decision_is_recorded_with_who_and_why(agent):
    req = _critical(agent)
    decided = actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="too deep")
    assert (decided.status, decided.decision_source, decided.decided_by, decided.decision_reason) == (
        "rejected", "operator", "olivia", "too deep",
    )
    event = AuditEvent.objects.get(request=req, kind="decided")
    assert event.actor == "olivia" and event.data["outcome"] == "rejected"


@pytest.mark.django_db
def test_a_decision_is_write_once_and_the_loser_learns_who_won(agent):
    req = _critical(agent)
    actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    with pytest.raises(actions.AlreadyDecided) as lost:
        actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="oscar", reason="no")
    assert lost.value.request.decided_by == "olivia"
    req.refresh_from_db()
    assert req.status == Status.APPROVED and req.decided_by == "olivia"
    assert _decisions(req) == 1


@pytest.mark.django_db
def test_the_agent_can_cancel_only_while_pending(agent):
    req = _critical(agent)
    cancelled = actions.do_cancel(agent.agent, req.id)
    assert cancelled.status == Status.CANCELLED and cancelled.decision_source == Source.AGENT
    with pytest.raises(actions.AlreadyDecided):
        actions.do_cancel(agent.agent, req.id)
    assert AuditEvent.objects.filter(request=req, kind="cancelled").count() == 1


@pytest.mark.django_db
def test_the_timeout_applies_the_policy_action_as_a_timeout(agent):
    actions.do_change_policy("delegate", {"timeout_action": "reject", "timeout_seconds": 60}, by="maria")
    req = _critical(agent)
    assert req.timeout_action == "reject"
    past_deadline(req, 0.001)
    assert actions.expire_due() == 1
    req.refresh_from_db()
    assert (req.status, req.decision_source, req.decided_by) == ("rejected", "timeout", "")
    assert req.decided_at >= req.deadline  # stamped by the database's clock when applied
    assert req.decision_reason == "No decision before the deadline: the policy's timeout action (reject) applied."


@pytest.mark.django_db
def test_nothing_times_out_before_the_deadline(agent):
    req = _critical(agent)
    past_deadline(req, -5)  # five seconds to go, by the database's clock
    assert actions.expire_due() == 0
    assert actions.apply_timeout_if_due(OversightRequest.objects.get(id=req.id)).status == Status.PENDING
    past_deadline(req, 0)
    assert actions.apply_timeout_if_due(OversightRequest.objects.get(id=req.id)).status == Status.APPROVED


@pytest.mark.django_db
def test_a_deadline_is_due_within_its_own_millisecond(agent):
    """SQLite's now has milliseconds, stored datetimes microseconds: a deadline of exactly
    the database's now is due at once, both to a read and to the claim, never a
    millisecond later (a read within that millisecond found the request pending)."""
    req = _critical(agent)
    for _ in range(50):  # most rounds fall within db_now()'s millisecond
        OversightRequest.objects.filter(id=req.id).update(deadline=db_now())
        assert OversightRequest.objects.filter(id=req.id, deadline__lte=DatabaseNow()).exists()
    assert actions.apply_timeout_if_due(OversightRequest.objects.get(id=req.id)).status == Status.APPROVED


@pytest.mark.django_db
def test_a_read_that_saw_the_deadline_pass_claims_it_without_looking_again(agent):
    """The database's now read with the request decides it: past the deadline, the claim
    follows at once (one statement fewer than looking first); before it, nothing runs."""
    warm, looked, told = _critical(agent), _critical(agent), _critical(agent)
    for req in (warm, looked, told):
        past_deadline(req, 0.5)
    actions.apply_timeout_if_due(warm)  # the first receipt makes the signing key
    with CaptureQueriesContext(connection) as looking:
        assert actions.apply_timeout_if_due(OversightRequest.objects.get(id=looked.id)).status == Status.APPROVED
    with CaptureQueriesContext(connection) as knowing:
        read = OversightRequest.objects.annotate(database_now=DatabaseNow()).get(id=told.id)
        decided = actions.apply_timeout_if_due(read, database_now=read.database_now)
    assert (decided.status, decided.decision_source) == (Status.APPROVED, Source.TIMEOUT)
    assert len(knowing) == len(looking) - 1
    assert _decisions(told) == 1

    early = _critical(agent)
    read = OversightRequest.objects.annotate(database_now=DatabaseNow()).get(id=early.id)
    with CaptureQueriesContext(connection) as nothing:
        assert actions.apply_timeout_if_due(read, database_now=read.database_now).status == Status.PENDING
    assert len(nothing) == 0


@pytest.mark.django_db
def test_the_claim_returns_each_request_as_the_database_now_holds_it(agent, short_timeouts):
    """On PostgreSQL the claim's one statement returns the decided rows with their agent
    and policy: they must be the objects a fresh read builds, field for field."""
    reqs = [_critical(agent, timeout_seconds=10 + i) for i in range(3)]
    OversightRequest.objects.filter(id=reqs[1].id).update(payload={"table": "users", "rows": [1, 2.5, None]})
    for req in reqs:
        past_deadline(req, 0.5)
    claimed = {r.id: r for r in actions.claim_timeouts(limit=10)}
    assert claimed.keys() == {r.id for r in reqs}
    for fresh in OversightRequest.objects.select_related("agent", "policy").filter(id__in=claimed):
        got = claimed[fresh.id]
        for model, ours, theirs in ((OversightRequest, got, fresh), (type(fresh.agent), got.agent, fresh.agent),
                                    (type(fresh.policy), got.policy, fresh.policy)):
            for field in model._meta.concrete_fields:
                assert getattr(ours, field.attname) == getattr(theirs, field.attname), (model.__name__, field.name)
    assert claimed[reqs[1].id].payload == {"table": "users", "rows": [1, 2.5, None]}
    assert all(r.receipt for r in claimed.values())


@pytest.mark.django_db
def test_the_sweep_applies_a_batch_in_deadline_order(agent, short_timeouts):
    reqs = [_critical(agent, timeout_seconds=10 + i) for i in range(5)]
    for i, req in enumerate(reqs[:4]):
        past_deadline(req, 10 - i)
    assert actions.expire_due(batch=2) == 2
    assert [OversightRequest.objects.get(id=r.id).status for r in reqs] == ["approved"] * 2 + ["pending"] * 3
    assert actions.expire_due(batch=10) == 2
    assert actions.expire_due() == 0
    statuses = [OversightRequest.objects.get(id=r.id).status for r in reqs]
    assert statuses == ["approved"] * 4 + ["pending"]


@pytest.mark.django_db
def test_an_operator_cannot_decide_after_the_deadline_even_if_no_worker_ran(agent):
    req = _critical(agent)
    past_deadline(req)
    with pytest.raises(actions.AlreadyDecided) as lost:
        actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="late")
    assert lost.value.request.decision_source == Source.TIMEOUT
    req.refresh_from_db()
    assert req.status == Status.APPROVED and req.decision_source == "timeout" and req.decided_by == ""


@pytest.mark.django_db
def test_escalation_marks_the_request_once_at_its_time(agent):
    req = _critical(agent)  # default policy: 300 s, escalate after half
    assert (req.escalate_at - req.created_at).total_seconds() == 150
    assert actions.escalate_due() == 0
    with time_machine.travel(req.escalate_at + timedelta(seconds=1), tick=False):
        assert actions.escalate_due() == 0  # this process's clock says due: the database's decides
    OversightRequest.objects.filter(id=req.id).update(escalate_at=db_now() - timedelta(milliseconds=1))
    assert actions.escalate_due() == 1
    assert actions.escalate_due() == 0
    req.refresh_from_db()
    assert req.escalated_at is not None and req.status == Status.PENDING
    assert AuditEvent.objects.filter(request=req, kind="escalated").count() == 1


@pytest.mark.django_db
def test_a_shorter_timeout_moves_the_deadline_and_escalation(agent, short_timeouts):
    req = _critical(agent, timeout_seconds=20)
    assert (req.deadline - req.created_at).total_seconds() == 20
    assert (req.escalate_at - req.created_at).total_seconds() == 10


# --- Races that really race --------------------------------------------------------------


def _race(workers):
    """Run the callables at once (a barrier releases them together); returns what each gave."""
    barrier = threading.Barrier(len(workers))
    results = [None] * len(workers)

    def run(i, work):
        try:
            barrier.wait()
            results[i] = work()
        except actions.AlreadyDecided as lost:
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
def test_many_operators_racing_make_exactly_one_decision(agent):
    req = _critical(agent)
    workers = [
        (lambda i=i: actions.do_decide(req.id, outcome=Status.APPROVED if i % 2 else Status.REJECTED,
                                       source=Source.OPERATOR, by=f"op{i}", reason="r"))
        for i in range(12)
    ]
    results = _race(workers)
    winners = [r for r in results if isinstance(r, OversightRequest)]
    losers = [r for r in results if isinstance(r, actions.AlreadyDecided)]
    assert len(winners) == 1 and len(losers) == 11
    req.refresh_from_db()
    assert req.decided_by == winners[0].decided_by
    assert all(lost.request.decided_by == req.decided_by for lost in losers)
    assert _decisions(req) == 1


@pytest.mark.django_db(transaction=True)
def test_an_operator_and_the_timeout_racing_at_the_deadline_make_one_decision(agent, short_timeouts):
    Policy.objects.filter(is_current=True).update(reject_cooldown_seconds=0)  # the same request, asked five times
    for _ in range(5):
        req = past_deadline(_critical(agent), -0.005)  # due in 5 ms by the database's clock: either may win
        workers = [
            lambda req=req: actions.do_decide(req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia",
                                              reason="r"),
            lambda req=req: actions.apply_timeout_if_due(OversightRequest.objects.get(id=req.id)),
            lambda: actions.expire_due(),
        ]
        _race(workers)
        req.refresh_from_db()
        assert req.status in (Status.REJECTED, Status.APPROVED)
        assert req.decision_source == (Source.OPERATOR if req.status == Status.REJECTED else Source.TIMEOUT)
        assert _decisions(req) == 1


@pytest.mark.django_db(transaction=True)
def test_operators_in_separate_processes_make_exactly_one_decision(agent):
    import multiprocessing

    from tests.conftest import live_database_url
    from tests.race_child import decide

    req = _critical(agent)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(6), context.Queue()
    processes = [
        context.Process(target=decide, args=(live_database_url(), str(req.id), i, barrier, results)) for i in range(6)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    outcomes = [results.get(timeout=5) for _ in processes]
    winners = [who for kind, who in outcomes if kind == "won"]
    assert len(winners) == 1
    req.refresh_from_db()
    assert req.decided_by == f"proc{winners[0]}"
    assert all(who == req.decided_by for kind, who in outcomes if kind == "lost")
    assert _decisions(req) == 1
