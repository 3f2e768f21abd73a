"""Thin Celery tasks: each loops over, or retries, a testable unit in actions/deliveries."""

from __future__ import annotations

import contextlib

from celery import shared_task
from django.conf import settings

from oversight import actions, deliveries, notifications

# One attempt has an overall limit of OVERSIGHT_CALLBACK_TIMEOUT; the task's limits only
# catch a worker stuck elsewhere (the lease makes the delivery retried either way).
_LIMIT = settings.OVERSIGHT_CALLBACK_TIMEOUT + 30


@shared_task(name="oversight.sweep", ignore_result=True)
def sweep() -> dict:
    """Apply due timeouts and escalations (beat, every OVERSIGHT_SWEEP_SECONDS)."""
    return {"timed_out": actions.expire_due(), "escalated": actions.escalate_due()}


@shared_task(name="oversight.deliver", ignore_result=True, acks_late=True,
             soft_time_limit=_LIMIT, time_limit=_LIMIT + 10)
def deliver(delivery_id: str) -> None:
    """One attempt of one outbox delivery; a retry is kicked when its time comes (and
    the sweep kicks it anyway if this never happens)."""
    delay = deliveries.handle_one_delivery(delivery_id)
    if delay is not None:
        with contextlib.suppress(Exception):  # the broker away: the sweep finds it due
            deliver.apply_async((delivery_id,), countdown=delay)


@shared_task(name="oversight.deliveries_sweep", ignore_result=True)
def deliveries_sweep() -> dict:
    """Beat: write due reminders, and kick every due delivery (those whose kick never
    reached the broker, whose retry is due, or whose worker died holding the lease)."""
    reminders = notifications.schedule_reminders()
    due = deliveries.due()
    deliveries.kick(due)
    return {"reminders": reminders, "kicked": len(due)}
