"""The deadline loop (oversight/deadlines.py): timeouts applied when due, by the database's
clock (spec §9.1), from the database alone; woken through Redis by a new earlier deadline."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta

import jwt
import pytest
import time_machine
from django.utils import timezone

from oversight import actions, deadlines, receipts
from oversight.dbclock import db_now
from oversight.models import AuditEvent, Delivery, OversightRequest, Source, Status
from tests.conftest import other_workers_paused, past_deadline


@pytest.fixture(autouse=True)
def short_timeouts(agent):
    """These requests time out in seconds (the default policy grants people at least 60 s)."""
    actions.do_change_policy("*", {"min_timeout_seconds": 1}, by="maria")
    agent.agent.max_pending = 10_000  # many pending at once is the point here
    agent.agent.save(update_fields=["max_pending"])


def in_thread(work) -> threading.Thread:
    """A thread that runs `work` and then closes that thread's database connection."""
    from django.db import connection

    def run():
        try:
            work()
        finally:
            connection.close()

    return threading.Thread(target=run)


def submit(agent, **fields) -> OversightRequest:
    submission = actions.Submission(
        operation="delegate", summary="s", payload={}, metrics={"memory_pressure": 91.0}, **fields
    )
    return actions.do_submit(agent.agent, submission)[0]


def test_it_sleeps_until_the_next_due_time_by_the_databases_clock(agent):
    assert deadlines.seconds_until_next(0.25) == 0.25  # nothing pending
    req = submit(agent, timeout_seconds=10)
    assert deadlines.next_due() == req.escalate_at  # escalation comes first (half the timeout)
    assert 4 < deadlines.seconds_until_next(60) <= 5.001
    assert deadlines.seconds_until_next(2) == 2
    # This process's clock an hour ahead or behind changes nothing: the interval is the database's.
    for skew in (timedelta(hours=1), -timedelta(hours=1)):
        with time_machine.travel(timezone.now() + skew, tick=True):
            assert 4 < deadlines.seconds_until_next(60) <= 5.001
    past_deadline(req, 1, escalation=True)
    assert deadlines.seconds_until_next(60) == 0


def test_it_applies_what_is_due_once_and_leaves_the_rest(agent):
    due = past_deadline(submit(agent, timeout_seconds=5))
    later = submit(agent, timeout_seconds=60)
    assert deadlines.handle_one_tick() == 1  # the timeout; a decided request is not escalated after
    assert deadlines.handle_one_tick() == 0
    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, due.decision_source) == (Status.APPROVED, Source.TIMEOUT)
    assert due.deadline <= due.decided_at <= db_now()
    assert later.status == Status.PENDING
    assert due.events.filter(kind=AuditEvent.Kind.DECIDED).count() == 1


def test_this_processs_clock_far_ahead_times_nothing_out(agent, operator):
    """A web node or beat whose clock runs ahead must not time a request out early."""
    requests = [submit(agent, timeout_seconds=300) for _ in range(4)]
    with time_machine.travel(timezone.now() + timedelta(days=1), tick=True):
        assert deadlines.handle_one_tick() == 0
        assert actions.expire_due() == 0
        assert actions.expire_overdue() == 0
        assert actions.apply_timeout_if_due(OversightRequest.objects.get(id=requests[0].id)).status == Status.PENDING
        decided = actions.do_decide(requests[1].id, outcome=Status.REJECTED, source=Source.OPERATOR,
                                    by="olivia", reason="still in time")
        approved = actions.do_decide(requests[2].id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    assert (decided.status, decided.decision_source) == (Status.REJECTED, Source.OPERATOR)
    assert (approved.status, approved.decision_source) == (Status.APPROVED, Source.OPERATOR)
    assert OversightRequest.objects.get(id=requests[0].id).status == Status.PENDING
    assert OversightRequest.objects.get(id=requests[3].id).status == Status.PENDING


def test_this_processs_clock_far_behind_does_not_hold_a_passed_deadline(agent):
    """The reverse: the database's clock says the deadline passed; this process thinks it is a day earlier."""
    requests = [past_deadline(submit(agent, timeout_seconds=300)) for _ in range(4)]
    with time_machine.travel(timezone.now() - timedelta(days=1), tick=True):
        read = actions.apply_timeout_if_due(OversightRequest.objects.get(id=requests[0].id))
        with pytest.raises(actions.AlreadyDecided) as lost:
            actions.do_decide(requests[1].id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="r")
        with pytest.raises(actions.AlreadyDecided) as lost_approval:
            actions.do_decide(requests[2].id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
        assert deadlines.handle_one_tick() == 1  # the last one
    assert (read.status, read.decision_source) == (Status.APPROVED, Source.TIMEOUT)
    assert lost.value.request.decision_source == Source.TIMEOUT
    assert lost_approval.value.request.decision_source == Source.TIMEOUT
    for req in requests:
        req.refresh_from_db()
        assert (req.status, req.decision_source) == (Status.APPROVED, Source.TIMEOUT)
        assert req.events.filter(kind=AuditEvent.Kind.DECIDED).count() == 1


def test_each_timeout_gets_its_callback_and_receipt_once(agent):
    requests = [past_deadline(submit(agent, timeout_seconds=60, callback_url=f"https://agent.example/cb/{i}"))
                for i in range(3)]
    assert actions.expire_due() == 3  # one claim, one batch of receipts
    assert actions.expire_due() == 0
    for req in requests:
        assert Delivery.objects.filter(request=req, kind=Delivery.Kind.CALLBACK).count() == 1
        req.refresh_from_db()
        key, kid = receipts.signing_key()
        assert jwt.get_unverified_header(req.receipt)["kid"] == kid
        claims = jwt.decode(req.receipt, key.public_key(), algorithms=["EdDSA"], options={"verify_exp": False})
        expected = receipts.claims(req, now=req.decided_at, ttl=receipts.DECISION_TTL)
        assert {k: v for k, v in claims.items() if k != "jti"} == {k: v for k, v in expected.items() if k != "jti"}
        assert (claims["sub"], claims["source"]) == (str(req.id), "timeout")


def _wait_until(condition, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@contextlib.contextmanager
def running_loop(*, poll: float):
    """Beat's deadline loop and its Redis wake-up listener, in threads; yields the waker."""
    stop = deadlines.Stopper()
    stop.waker = deadlines.Waker()
    threads = [
        threading.Thread(target=stop.waker.listen, args=(stop,)),
        threading.Thread(target=deadlines.run, args=(stop, poll), kwargs={"idle": 600, "waker": stop.waker}),
    ]
    for thread in threads:
        thread.start()
    try:
        yield stop.waker
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)


@pytest.mark.django_db(transaction=True)
def test_a_new_earlier_deadline_wakes_the_sleeping_loop(agent):
    """The loop sleeps towards a far due time (and would poll only every 10 minutes);
    a submission announcing an earlier one wakes it, and that one is applied."""
    submit(agent, timeout_seconds=300)
    with running_loop(poll=600) as waker:
        assert _wait_until(waker.listening.is_set)
        time.sleep(0.5)  # the loop asleep towards the far escalation
        soon = past_deadline(submit(agent, timeout_seconds=60), -1.0)  # due in a second
        deadlines.announce()
        assert _wait_until(lambda: OversightRequest.objects.get(id=soon.id).status != Status.PENDING)
    soon.refresh_from_db()
    assert (soon.status, soon.decision_source) == (Status.APPROVED, Source.TIMEOUT)


@pytest.mark.django_db(transaction=True)
def test_without_redis_the_loop_still_applies_deadlines_from_the_database(agent, settings):
    """The backstop: no wake-ups at all (Redis gone), the loop looks every `poll` seconds."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    requests = [submit(agent, timeout_seconds=300) for _ in range(3)]
    with running_loop(poll=0.2) as waker:
        time.sleep(0.5)
        assert not waker.listening.is_set()
        for req in requests:
            past_deadline(req)
        deadlines.announce()  # goes nowhere
        assert _wait_until(lambda: not OversightRequest.objects.filter(status=Status.PENDING).exists())
    for req in requests:
        assert req.events.filter(kind=AuditEvent.Kind.DECIDED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_loops_racing_decide_each_request_exactly_once(agent):
    requests = [submit(agent, timeout_seconds=1) for _ in range(20)]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=deadlines.run, args=(stop, 0.05)) for stop in stops]
    for thread in threads:
        thread.start()
    try:
        _wait_until(lambda: not OversightRequest.objects.filter(status=Status.PENDING).exists(), 10)
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(5)
    for req in requests:
        req.refresh_from_db()
        assert req.status == Status.APPROVED and req.decision_source == Source.TIMEOUT
        assert req.events.filter(kind=AuditEvent.Kind.DECIDED).count() == 1
        # Escalated once, or not at all when the loop first saw it already past its deadline.
        assert req.events.filter(kind=AuditEvent.Kind.ESCALATED).count() <= 1


@pytest.mark.django_db(transaction=True)
def test_processes_sweeping_the_same_due_requests_time_each_out_exactly_once(agent):
    """500 requests due at once, four processes claiming them together: each request is
    timed out once, with one audit row and one callback delivery, by exactly one process."""
    import multiprocessing

    from tests.conftest import live_database_url
    from tests.race_child import sweep

    submission = actions.Submission(operation="delegate", summary="s", payload={}, metrics={"memory_pressure": 91.0},
                                    timeout_seconds=60, callback_url="https://agent.example/cb")
    requests = [actions.do_submit(agent.agent, submission)[0] for _ in range(500)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=sweep, args=(live_database_url(), barrier, results)) for _ in range(4)]
    with other_workers_paused():  # the session's live beat would claim them first
        OversightRequest.objects.filter(id__in=[r.id for r in requests]).update(
            deadline=past_deadline(requests[0]).deadline
        )
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(30)
    assert [kind for kind, _ in outcomes] == ["won"] * 4, outcomes
    won = [request_id for _, ids in outcomes for request_id in ids]
    assert sorted(won) == sorted(str(r.id) for r in requests)  # each once, none left out
    assert not OversightRequest.objects.filter(status=Status.PENDING).exists()
    ids = [r.id for r in requests]
    decided = AuditEvent.objects.filter(request_id__in=ids, kind=AuditEvent.Kind.DECIDED)
    assert decided.count() == 500 and decided.values("request_id").distinct().count() == 500
    callbacks = Delivery.objects.filter(request_id__in=ids, kind=Delivery.Kind.CALLBACK)
    assert callbacks.count() == 500 and callbacks.values("request_id").distinct().count() == 500


@pytest.mark.django_db(transaction=True)
def test_a_read_past_the_deadline_waits_for_a_claim_in_flight_and_answers_its_decision(agent):
    """A sweep has claimed the request but not committed yet: a read of it (an agent's
    GET, an operator's losing decide) must answer the timeout that sweep is about to
    commit, not "pending" past the deadline."""
    from django.db import transaction

    with other_workers_paused():
        req = past_deadline(submit(agent, timeout_seconds=300))
        claimed, commit = threading.Event(), threading.Event()

        def sweep_in_flight():
            with transaction.atomic():
                assert [r.id for r in actions.claim_timeouts()] == [req.id]
                claimed.set()
                commit.wait(10)

        answers = []
        sweeper = in_thread(sweep_in_flight)
        sweeper.start()
        assert claimed.wait(10)
        reader = in_thread(lambda: answers.append(actions.apply_timeout_if_due(OversightRequest.objects.get(id=req.id))))
        reader.start()
        reader.join(0.5)  # still waiting for the sweep's commit (or, before, answered "pending")
        commit.set()
        sweeper.join(10)
        reader.join(10)
    assert [(a.status, a.decision_source) for a in answers] == [(Status.APPROVED, Source.TIMEOUT)]
    assert req.events.filter(kind=AuditEvent.Kind.DECIDED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_sweep_with_nothing_due_does_not_wait_for_another_writer(agent):
    """The broker's sweep runs every second and, with the loop keeping deadlines, finds
    nothing due: it must not take the write lock for that (SQLite's IMMEDIATE
    transaction), or the loop's next claim queues behind it. Here another writer holds
    the lock; the sweep answers 0 without waiting for it."""
    from django.db import connection, transaction

    submit(agent, timeout_seconds=60)  # pending, not due
    holding, release = threading.Event(), threading.Event()

    def writer():
        with transaction.atomic():  # SQLite: BEGIN IMMEDIATE takes the write lock
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {OversightRequest._meta.db_table} IN EXCLUSIVE MODE")
            holding.set()
            release.wait(30)

    results = []
    holder, sweeper = in_thread(writer), in_thread(lambda: results.append(actions.expire_due()))
    holder.start()
    try:
        assert holding.wait(10)
        sweeper.start()
        sweeper.join(10)  # before: queued on the lock (SQLite's busy timeout is 20 s)
        assert results == [0]
    finally:
        release.set()
        holder.join(10)
        if sweeper.is_alive():
            sweeper.join(30)
