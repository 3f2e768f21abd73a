"""The deadline loop: timeouts and escalations applied when they fall due.

Beat's sweep goes through the broker once a second, so a deadline waits up to a
second for it, and forever while Redis is down. This loop runs in a thread of
the beat process: it reads the next due time from the database (the partial
indexes on pending rows), sleeps until then (never longer than a poll interval,
so a request submitted meanwhile with an earlier deadline is seen in time), and
applies what is due through `actions.expire_due` and `actions.escalate_due` —
the same conditional-UPDATE claims as every other path, so two beats, a sweep
and a lazy read never decide one request twice. It needs only the database.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from django.db import close_old_connections, connections
from django.db.models import Min
from django.utils import timezone

from oversight import actions
from oversight.models import OversightRequest, Status

log = logging.getLogger(__name__)


def next_due() -> datetime | None:
    """The earliest pending deadline or escalation time (served by req_pending_deadline
    and req_pending_escalate)."""
    pending = OversightRequest.objects.filter(status=Status.PENDING)
    deadline = pending.aggregate(at=Min("deadline"))["at"]
    escalation = pending.filter(escalated_at__isnull=True).aggregate(at=Min("escalate_at"))["at"]
    due = [at for at in (deadline, escalation) if at is not None]
    return min(due) if due else None


def handle_one_tick(*, batch: int = 200) -> int:
    """Apply every timeout and escalation due now; returns how many this call applied.

    Each timeout is stamped with the time it is actually applied (not the time the
    tick began), so `decided_at − deadline` is the true lateness even in a burst.
    """
    applied = 0
    while True:
        now = timezone.now()
        due = list(
            OversightRequest.objects.filter(status=Status.PENDING, deadline__lte=now)
            .order_by("deadline")
            .values_list("id", "timeout_action")[:batch]
        )
        for request_id, action in due:
            try:
                actions.apply_timeout(request_id, action, now=timezone.now())
                applied += 1
            except actions.AlreadyDecided:
                pass  # a lazy read, an operator or another loop got there first
        escalated = actions.escalate_due(now=timezone.now(), batch=batch)
        applied += escalated
        if len(due) < batch and escalated < batch:
            return applied


def seconds_until_next(poll: float, *, now: datetime | None = None) -> float:
    due = next_due()
    if due is None:
        return poll
    now = now or timezone.now()
    return max(0.0, min(poll, (due - now).total_seconds()))


def run(stop: threading.Event, poll: float) -> None:
    try:
        _loop(stop, poll)
    finally:
        connections.close_all()  # this thread's own connections


def _loop(stop: threading.Event, poll: float) -> None:
    failures = 0
    while not stop.is_set():
        try:
            close_old_connections()
            wait = seconds_until_next(poll)
            if wait > 0 and stop.wait(wait):
                return
            handle_one_tick()
            failures = 0
        except Exception:  # the database away: keep trying, a little slower each time
            failures += 1
            log.exception("The deadline loop failed (%d in a row); retrying.", failures)
            stop.wait(min(5.0, poll * 2**failures))


def start(poll: float) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=run, args=(stop, poll), name="deadline-loop", daemon=True).start()
    log.info("Deadline loop started (polling every %.2f s).", poll)
    return stop
