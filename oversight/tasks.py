"""Thin Celery tasks: each loops over, or retries, a testable unit in actions/callbacks."""

from __future__ import annotations

from celery import shared_task

from oversight import actions, callbacks, notify


@shared_task(name="oversight.sweep", ignore_result=True)
def sweep() -> dict:
    """Apply due timeouts and escalations (beat, every OVERSIGHT_SWEEP_SECONDS)."""
    return {"timed_out": actions.expire_due(), "escalated": actions.escalate_due()}


@shared_task(name="oversight.deliver_callback", bind=True, ignore_result=True, max_retries=None)
def deliver_callback(self, request_id: str, attempt: int = 1) -> None:
    delay = callbacks.handle_one_delivery(request_id, attempt)
    if delay is not None:
        raise self.retry(args=(request_id, attempt + 1), countdown=delay)


@shared_task(name="oversight.notify_escalation", bind=True, ignore_result=True, max_retries=3)
def notify_escalation(self, request_id: str) -> None:
    """E-mail the policy's escalation contacts about an escalated request."""
    try:
        notify.handle_one_escalation_notice(request_id)
    except notify.MailUnavailable as exc:
        raise self.retry(countdown=30, exc=exc)
