"""A long-polling agent whose request reaches its deadline: the waiter applies the timeout
itself, through the same claim as the deadline loop and the sweep (decided once), and
answers with it; it needs no beat, no worker and no push to do so."""

import asyncio
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db.models import DateTimeField, ExpressionWrapper, Value

from oversight import actions, deadlines
from oversight.api import views
from oversight.dbclock import DatabaseNow
from oversight.models import AuditEvent, Delivery, OversightRequest, Source, Status
from oversight.serializers import iso
from tests.conftest import allow_short_timeouts, other_workers_paused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _critical(agent, **fields) -> OversightRequest:
    allow_short_timeouts()
    agent.agent.max_pending = 100
    agent.agent.save(update_fields=["max_pending"])
    submission = actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, **fields)
    req, _ = actions.do_submit(agent.agent, submission)
    assert req.status == Status.PENDING
    return req


def _decided_once(req) -> OversightRequest:
    req.refresh_from_db()
    assert (req.status, req.decision_source) == (Status.APPROVED, Source.TIMEOUT)
    assert req.events.filter(kind=AuditEvent.Kind.DECIDED).count() == 1
    assert req.receipt
    return req


async def test_a_waiter_answers_with_the_timeout_it_applied_itself_with_no_beat_or_worker(agent):
    with other_workers_paused():  # the session's live beat and worker would apply it otherwise
        req = await sync_to_async(_critical)(agent, timeout_seconds=1, callback_url="https://agent.example/cb")
        resource = await asyncio.wait_for(views._wait_for_decision(str(req.id), req.deadline, 20), 15)
    assert (resource["status"], resource["decision"]["source"]) == ("approved", "timeout")
    decided = await sync_to_async(_decided_once)(req)
    assert decided.decided_at >= decided.deadline  # never before the deadline (database's clock)
    assert (resource["decision"]["decided_at"], resource["decision"]["receipt"]) == (
        iso(decided.decided_at), decided.receipt)
    assert await Delivery.objects.filter(request=req, kind=Delivery.Kind.CALLBACK).acount() == 1


async def test_waiters_and_the_deadline_loop_racing_decide_it_exactly_once(agent):
    """Eight agents wait on the same request while a deadline loop runs: whoever claims
    first decides; every waiter answers that one decision, with one audit row, one
    receipt and one callback."""
    with other_workers_paused():
        req = await sync_to_async(_critical)(agent, timeout_seconds=1, callback_url="https://agent.example/cb")
        stop = threading.Event()
        loop = threading.Thread(target=deadlines.run, args=(stop, 0.001))
        loop.start()
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(views._wait_for_decision(str(req.id), req.deadline, 20) for _ in range(8))), 15
            )
        finally:
            stop.set()
            await asyncio.to_thread(loop.join, 10)
    decided = await sync_to_async(_decided_once)(req)
    assert {(a["status"], a["decision"]["source"], a["decision"]["decided_at"], a["decision"]["receipt"])
            for a in answers} == {("approved", "timeout", iso(decided.decided_at), decided.receipt)}
    assert await Delivery.objects.filter(request=req, kind=Delivery.Kind.CALLBACK).acount() == 1


async def test_a_waiter_that_wakes_before_the_database_judges_the_deadline_passed_waits_again(agent, monkeypatch):
    """The waiter's reading of the database's clock puts the deadline 0.3 s early: at that
    moment the request is not due (the database decides, spec §9.1), so the answer is not
    an early `pending` but the timeout, applied once it is due."""
    ahead = ExpressionWrapper(DatabaseNow() + Value(timedelta(seconds=0.3)), output_field=DateTimeField())
    monkeypatch.setattr(views, "DatabaseNow", lambda: ahead)
    with other_workers_paused():
        req = await sync_to_async(_critical)(agent, timeout_seconds=1)
        resource = await asyncio.wait_for(views._wait_for_decision(str(req.id), req.deadline, 20), 15)
    assert resource["status"] == "approved", "answered before the deadline"
    assert resource["decision"]["source"] == "timeout"
    decided = await sync_to_async(_decided_once)(req)
    assert decided.decided_at >= decided.deadline

