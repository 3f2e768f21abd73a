"""The deadline loop: timeouts and escalations applied when they fall due.

It runs in a thread of the beat process. It asks the database for the next due
time (the partial indexes on pending rows) and for the database's own clock, and
sleeps exactly until then — the deadline is the database's (spec §9.1), so this
process's clock only measures the interval. A submission that brings an earlier
due time announces it on a Redis channel (`announce`, after commit); a listener
thread wakes the loop, which looks again. Without that channel (no Redis, or Redis
down) the loop never sleeps longer than OVERSIGHT_DEADLINE_POLL_SECONDS; with it,
at most OVERSIGHT_DEADLINE_IDLE_SECONDS, a backstop for a lost announcement.

What is due is applied by `actions.claim_timeouts` and `actions.escalate_due`, the
same conditional-UPDATE claims as every other path (beat's sweep through the
broker, lazy reads, other loops): each request times out exactly once. It needs
only the database.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections, connections

from oversight import actions, dbclock
from oversight.models import OversightRequest

log = logging.getLogger(__name__)



def channel() -> str:
    """The wake-up channel; pub/sub ignores Redis database numbers, so it names its own."""
    from urllib.parse import urlparse

    return f"oversight:deadlines:{urlparse(settings.REDIS_URL or '').path.strip('/') or '0'}"

# A tick wakes a hair after the due time: a wait rounded down would find nothing due yet.
_SLACK = 0.001


def _due_times() -> tuple[datetime | None, datetime | None]:
    """(the earliest pending deadline or escalation time, the database's now), in one
    query served by req_pending_deadline and req_pending_escalate."""
    from django.db import connection

    table = connection.ops.quote_name(OversightRequest._meta.db_table)
    now = dbclock.NOW_SQL[connection.vendor]
    sql = (
        f"SELECT (SELECT MIN(deadline) FROM {table} WHERE status = 'pending'),"  # noqa: S608 (constants only)
        f" (SELECT MIN(escalate_at) FROM {table} WHERE status = 'pending' AND escalated_at IS NULL), {now}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [])
        deadline, escalation, database_now = cursor.fetchone()
    if connection.vendor == "sqlite":
        deadline, escalation, database_now = (dbclock.parse_sqlite_datetime(v) for v in (deadline, escalation,
                                                                                        database_now))
    due = [at for at in (deadline, escalation) if at is not None]
    return (min(due) if due else None), database_now


def next_due() -> datetime | None:
    """The earliest pending deadline or escalation time."""
    return _due_times()[0]


def seconds_until_next(limit: float) -> float:
    """How long to sleep: until the next due time by the database's clock, at most `limit`."""
    due, database_now = _due_times()
    if due is None:
        return limit
    return max(0.0, min(limit, (due - database_now).total_seconds() + _SLACK))


def handle_one_tick(*, batch: int = 500) -> int:
    """Apply every timeout and escalation due now; returns how many this call applied.

    Each claim stamps `decided_at` with the database's clock at the claiming statement,
    so `decided_at − deadline` is the true lateness even in a burst.
    """
    applied = 0
    while True:
        timed_out = len(actions.claim_timeouts(limit=batch))
        escalated = actions.escalate_due(batch=batch)
        applied += timed_out + escalated
        if timed_out < batch and escalated < batch:
            return applied


# --- Waking on a new earlier deadline ---------------------------------------------------

_publisher = None
_publisher_down_until = 0.0


def announce() -> None:
    """Tell the deadline loops that a new due time exists (call after commit). Costs one
    PUBLISH; with Redis away it is skipped for a few seconds (the loops poll then)."""
    global _publisher, _publisher_down_until
    if not settings.REDIS_URL or time.monotonic() < _publisher_down_until:
        return
    try:
        if _publisher is None:
            import redis

            _publisher = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.2, socket_timeout=0.2)
        _publisher.publish(channel(), b"1")
    except Exception:
        _publisher = None
        _publisher_down_until = time.monotonic() + 5.0


class Waker:
    """Wakes a sleeping loop on announcements; `listening` says whether it can."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.listening = threading.Event()

    def listen(self, stop: threading.Event) -> None:
        import redis

        while not stop.is_set():
            pubsub = None
            try:
                client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=1.0, socket_timeout=10.0, health_check_interval=5
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel())
                self.listening.set()
                self.event.set()  # announcements may have been missed while away: look again
                while not stop.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self.event.set()
            except Exception:
                self.listening.clear()
                self.event.set()
                stop.wait(1.0)
            finally:
                self.listening.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: S110 - already gone
                        pass


def run(stop: threading.Event, poll: float, *, idle: float | None = None, waker: Waker | None = None) -> None:
    try:
        _loop(stop, poll, idle if idle is not None else poll, waker)
    finally:
        connections.close_all()  # this thread's own connections


def _loop(stop: threading.Event, poll: float, idle: float, waker: Waker | None) -> None:
    failures = 0
    wake = waker.event if waker else threading.Event()
    while not stop.is_set():
        try:
            close_old_connections()
            wake.clear()  # before looking: an announcement from now on wakes the wait
            limit = idle if waker is not None and waker.listening.is_set() else poll
            wait = seconds_until_next(limit)
            if wait > 0:
                wake.wait(wait)
                if stop.is_set():
                    return
                if wait >= limit or wake.is_set():
                    continue  # woken, or the backstop's limit: look again before claiming
            handle_one_tick()
            failures = 0
        except Exception:  # the database away: keep trying, a little slower each time
            failures += 1
            log.exception("The deadline loop failed (%d in a row); retrying.", failures)
            stop.wait(min(5.0, poll * 2**failures))


class Stopper(threading.Event):
    """The loop's stop flag; setting it also wakes the loop at once."""

    waker: Waker | None = None

    def set(self) -> None:
        super().set()
        if self.waker is not None:
            self.waker.event.set()


def start(poll: float, idle: float | None = None) -> threading.Event:
    stop = Stopper()
    if settings.REDIS_URL:
        stop.waker = Waker()
        threading.Thread(target=stop.waker.listen, args=(stop,), name="deadline-waker", daemon=True).start()
    threading.Thread(
        target=run, args=(stop, poll), kwargs={"idle": idle, "waker": stop.waker}, name="deadline-loop", daemon=True
    ).start()
    log.info("Deadline loop started (sleeping until each due time; at most %.2f s without Redis).", poll)
    return stop
