"""The delivery outbox: callbacks and notifications that are never lost.

A delivery is a `Delivery` row written in the same transaction as the decision or
event that causes it (`schedule`), so a broker outage or a killed worker delays it
and loses none. After the commit a task on the `deliveries` queue is kicked; the
beat's sweep (`due`) kicks every pending row that is due, so a kick that never
reached the broker is made up for. A worker claims a row with a conditional UPDATE
that sets a lease (`handle_one_delivery`): two workers or two sweeps never send one
delivery at once, and a worker killed mid-delivery leaves a lease that expires, after
which the delivery is retried.

Delivery is at least once: every attempt carries `X-Oversight-Delivery: <row id>`
(the same on every retry). Failed attempts are retried with exponential backoff and
jitter until OVERSIGHT_CALLBACK_MAX_SECONDS after the row was written. Every attempt
is audited, with a short reason on failure.

Each kind has a sender: `callback` (the agent's signed callback) and `notification`
(see oversight/notifications.py). A delivery `key` is unique (`callback:<request>`,
`notify:<request>:<event>:<n>:<target>`): scheduling the same key twice is a no-op.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from oversight import netsafe
from oversight.models import AuditEvent, Delivery, OversightRequest, Status
from oversight.serializers import request_dict

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300
Refused = netsafe.Refused
AttemptFailed = netsafe.AttemptFailed
Skipped = netsafe.Skipped


# --- Scheduling (inside the causing transaction) ------------------------------------------


def schedule(
    key: str,
    kind: str,
    target: str,
    *,
    request: OversightRequest | None = None,
    event: str = "",
    payload: dict | None = None,
    now: datetime | None = None,
) -> bool:
    """Write one delivery (once per key) and kick it after the commit. Call inside the
    transaction that causes it. Returns whether this call wrote it."""
    now = now or timezone.now()
    row = Delivery(
        key=key[:300], kind=kind, target=target, request=request, event=event, payload=payload or {},
        created_at=now, next_attempt_at=now,
    )
    created = bool(Delivery.objects.bulk_create([row], ignore_conflicts=True)) and Delivery.objects.filter(
        pk=row.pk
    ).exists()
    if created:
        delivery_id = str(row.pk)
        transaction.on_commit(lambda: kick([delivery_id]))
    return created


def schedule_callback(req: OversightRequest) -> None:
    if req.callback_url:
        schedule(f"callback:{req.id}", Delivery.Kind.CALLBACK, req.callback_url, request=req, now=req.decided_at)


def kick(delivery_ids: Iterable[str]) -> None:
    """Queue a delivery task per id; the broker being away is fine (the sweep catches up)."""
    from oversight.tasks import deliver

    for delivery_id in delivery_ids:
        try:
            deliver.apply_async((delivery_id,), retry=False)  # fail fast: the row waits
        except Exception:
            log.warning("Could not queue delivery %s; the sweep will send it.", delivery_id)
            return


# --- Sending -------------------------------------------------------------------------------


def backoff(attempt: int) -> float:
    """Seconds before the attempt after `attempt`: 1, 2, 4, … capped at five minutes,
    each with up to a quarter taken off at random (so retries do not arrive in step)."""
    base = min(2 ** (max(attempt, 1) - 1), MAX_BACKOFF_SECONDS)
    return round(base * (1 - random.random() * 0.25), 3)


def due(*, now: datetime | None = None, batch: int = 500) -> list[str]:
    """Pending deliveries whose time has come and that no live lease holds."""
    now = now or timezone.now()
    return [
        str(pk)
        for pk in Delivery.objects.filter(_claimable(now)).order_by("next_attempt_at").values_list("pk", flat=True)[:batch]
    ]


def _claimable(now: datetime) -> Q:
    return Q(state=Delivery.State.PENDING, next_attempt_at__lte=now) & (
        Q(lease_until__isnull=True) | Q(lease_until__lte=now)
    )


def handle_one_delivery(delivery_id: str, *, now: datetime | None = None) -> float | None:
    """Claim one delivery and make one attempt. Returns the seconds until it is due
    again (a retry), or None (delivered, given up, or someone else holds it)."""
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.OVERSIGHT_DELIVERY_LEASE_SECONDS)
    won = Delivery.objects.filter(_claimable(now), pk=delivery_id).update(
        lease_until=lease, attempts=F("attempts") + 1
    )
    if won != 1:
        return None
    delivery = Delivery.objects.select_related("request", "request__api_key", "request__agent").get(pk=delivery_id)
    attempt = delivery.attempts
    status = None
    try:
        status = SENDERS[delivery.kind](delivery)
        outcome, reason = "delivered", None
    except Skipped as exc:
        outcome, reason = "skipped", str(exc)
    except Refused as exc:
        outcome, reason = "refused", str(exc)
    except AttemptFailed as exc:
        outcome, reason = "failed", str(exc)
    except Exception:
        log.exception("Delivery %s failed unexpectedly", delivery_id)
        outcome, reason = "failed", "internal error"

    finished = timezone.now()
    retry_in = None
    if outcome == "failed":
        retry_in = backoff(attempt)
        elapsed = (finished - delivery.created_at).total_seconds()
        if elapsed + retry_in > settings.OVERSIGHT_CALLBACK_MAX_SECONDS:
            retry_in = None
    done = retry_in is None
    mine = Delivery.objects.filter(pk=delivery_id, lease_until=lease)
    if outcome == "delivered":
        mine.update(state=Delivery.State.DELIVERED, lease_until=None, finished_at=finished, last_error="")
    elif outcome == "skipped":
        mine.update(state=Delivery.State.SKIPPED, lease_until=None, finished_at=finished, last_error=reason[:200])
    elif done:
        mine.update(state=Delivery.State.FAILED, lease_until=None, finished_at=finished, last_error=reason[:200])
    else:
        mine.update(lease_until=None, next_attempt_at=finished + timedelta(seconds=retry_in), last_error=reason[:200])
    if outcome == "skipped":
        _audit(delivery, attempt, delivered=False, skipped=True, reason=reason)
    else:
        _audit(delivery, attempt, delivered=outcome == "delivered", status=status, error=reason,
               final=(done if outcome != "delivered" else None), retry_in=retry_in)
    return retry_in


def _audit(delivery: Delivery, attempt: int, *, delivered: bool, skipped: bool = False, **data) -> None:
    from oversight.notifications import mask

    if delivery.kind == Delivery.Kind.CALLBACK:
        kind = AuditEvent.Kind.CALLBACK_DELIVERED if delivered else AuditEvent.Kind.CALLBACK_FAILED
        actor = "callback"
    else:
        kind = AuditEvent.Kind.NOTIFICATION_DELIVERED if delivered else AuditEvent.Kind.NOTIFICATION_FAILED
        if skipped:
            kind = AuditEvent.Kind.NOTIFICATION_SKIPPED
        actor = "notify"
    base = {"delivery": str(delivery.pk), "url": mask(delivery.target), "attempt": attempt}
    if delivery.event:
        base["event"] = delivery.event
    AuditEvent.objects.create(
        request=delivery.request, kind=kind, actor=actor,
        data=base | {k: v for k, v in data.items() if v is not None},
    )


# --- Senders --------------------------------------------------------------------------------


def sign(body: bytes, key: str) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def send_callback(delivery: Delivery) -> int:
    """The agent's callback: the final resource, signed with the submitting key's digest."""
    req = delivery.request
    if req is None or req.status == Status.PENDING:
        raise Refused("the request is not decided")
    if req.api_key is None:
        raise Refused("the submitting key no longer exists")
    body = json.dumps(request_dict(req), separators=(",", ":")).encode()
    return post_json(delivery.target, body, delivery, signature=sign(body, req.api_key.digest),
                     user_agent="Oversight-Callback/1")


def post_json(url: str, body: bytes, delivery: Delivery, *, signature: str, user_agent: str) -> int:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        "X-Oversight-Signature": signature,
        "X-Oversight-Delivery": str(delivery.pk),
    }
    answer = netsafe.post(url, body, headers)
    if 200 <= answer.status < 300:
        return answer.status
    raise AttemptFailed(f"HTTP {answer.status}")


def _send_notification(delivery: Delivery) -> int | None:
    from oversight.notifications import send

    return send(delivery)


SENDERS: dict[str, Callable[[Delivery], int | None]] = {
    Delivery.Kind.CALLBACK: send_callback,
    Delivery.Kind.NOTIFICATION: _send_notification,
}
