"""Signed callbacks: on a final decision the agent's callback_url receives the resource.

The body is signed `X-Oversight-Signature: sha256=<hex HMAC-SHA256 of the raw body>`
keyed with the hex SHA-256 digest of the API key that submitted the request (the
digest is what the server keeps; the agent computes it from its key).
Delivery runs on a worker, outside any transaction, and never blocks a decision.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.utils import timezone

from oversight.models import AuditEvent, OversightRequest, Status
from oversight.serializers import request_dict

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300


def sign(body: bytes, key_digest: str) -> str:
    return "sha256=" + hmac.new(key_digest.encode(), body, hashlib.sha256).hexdigest()


def url_allowed(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    allowed = settings.OVERSIGHT_CALLBACK_ALLOWED_HOSTS
    return not allowed or parts.hostname.lower() in {h.lower() for h in allowed}


def backoff(attempt: int) -> int:
    """Seconds before attempt `attempt + 1`: 1, 2, 4, … capped at five minutes."""
    return min(2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def handle_one_delivery(request_id: str, attempt: int) -> int | None:
    """Try one delivery. Returns the seconds to wait before retrying, or None when done
    (delivered, given up, or nothing to deliver). Every attempt is audited."""
    req = OversightRequest.objects.select_related("agent", "api_key").filter(id=request_id).first()
    if req is None or req.status == Status.PENDING or not req.callback_url:
        return None
    if req.api_key is None:
        _audit(req, AuditEvent.Kind.CALLBACK_FAILED, attempt, error="The submitting key no longer exists.", final=True)
        return None
    body = json.dumps(request_dict(req), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Oversight-Callback/1",
        "X-Oversight-Signature": sign(body, req.api_key.digest),
        "X-Oversight-Delivery": f"{req.id}:{attempt}",
    }
    error = None
    status = None
    if not url_allowed(req.callback_url):
        _audit(req, AuditEvent.Kind.CALLBACK_FAILED, attempt, error="The callback address is not allowed.", final=True)
        return None
    try:
        response = httpx.post(
            req.callback_url, content=body, headers=headers,
            timeout=settings.OVERSIGHT_CALLBACK_TIMEOUT, follow_redirects=False,
        )
        status = response.status_code
        if 200 <= status < 300:
            _audit(req, AuditEvent.Kind.CALLBACK_DELIVERED, attempt, status=status)
            return None
        error = f"HTTP {status}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"

    delay = backoff(attempt)
    elapsed = (timezone.now() - req.decided_at).total_seconds()
    give_up = elapsed + delay > settings.OVERSIGHT_CALLBACK_MAX_SECONDS
    _audit(req, AuditEvent.Kind.CALLBACK_FAILED, attempt, status=status, error=error, final=give_up,
           retry_in=None if give_up else delay)
    return None if give_up else delay


def _audit(req: OversightRequest, kind: str, attempt: int, **data) -> None:
    AuditEvent.objects.create(
        request=req, kind=kind, actor="callback",
        data={"url": req.callback_url, "attempt": attempt} | {k: v for k, v in data.items() if v is not None},
    )
