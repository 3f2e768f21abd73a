"""The deadline loop (oversight/deadlines.py): timeouts applied when due, from the database alone."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from oversight import actions, deadlines
from oversight.models import AuditEvent, OversightRequest, Source, Status


@pytest.fixture(autouse=True)
def short_timeouts(agent):
    """These requests time out in seconds (the default policy grants people at least 60 s)."""
    actions.do_change_policy("*", {"min_timeout_seconds": 1}, by="maria")
    agent.agent.max_pending = 10_000  # many pending at once is the point here
    agent.agent.save(update_fields=["max_pending"])


def submit(agent, **fields) -> OversightRequest:
    submission = actions.Submission(
        operation="delegate", summary="s", payload={}, metrics={"memory_pressure": 91.0}, **fields
    )
    return actions.do_submit(agent.agent, submission)[0]


def test_it_sleeps_until_the_next_due_time_but_never_longer_than_the_poll(agent):
    now = timezone.now()
    assert deadlines.seconds_until_next(0.25, now=now) == 0.25  # nothing pending
    req = submit(agent, timeout_seconds=10)
    assert deadlines.next_due() == req.escalate_at  # escalation comes first (half the timeout)
    assert deadlines.seconds_until_next(60, now=req.escalate_at - timedelta(seconds=2)) == pytest.approx(2)
    assert deadlines.seconds_until_next(60, now=req.deadline + timedelta(seconds=1)) == 0


def test_it_applies_what_is_due_once_and_leaves_the_rest(agent):
    due = submit(agent, timeout_seconds=5)
    later = submit(agent, timeout_seconds=60)
    with time_machine.travel(due.deadline, tick=False):
        assert deadlines.handle_one_tick() == 1  # the timeout; a decided request is not escalated after
        assert deadlines.handle_one_tick() == 0
    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, due.decision_source, due.decided_at) == (Status.APPROVED, Source.TIMEOUT, due.deadline)
    assert later.status == Status.PENDING
    assert due.events.filter(kind=AuditEvent.Kind.DECIDED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_loops_racing_decide_each_request_exactly_once(agent, settings):
    requests = [submit(agent, timeout_seconds=1) for _ in range(20)]
    stops = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=deadlines.run, args=(stop, 0.05)) for stop in stops]
    for thread in threads:
        thread.start()
    try:
        end = time.monotonic() + 10
        while OversightRequest.objects.filter(status=Status.PENDING).exists() and time.monotonic() < end:
            time.sleep(0.05)
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
