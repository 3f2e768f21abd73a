"""Signed callbacks: on a final decision the agent's callback_url receives the resource.

The body is signed `X-Oversight-Signature: sha256=<hex HMAC-SHA256 of the raw body>`
keyed with the hex SHA-256 digest of the API key that submitted the request (the
digest is what the server keeps; the agent computes it from its key). Each callback
is a row of the delivery outbox (oversight/deliveries.py), written in the decision's
transaction and delivered at least once with `X-Oversight-Delivery: <delivery id>`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from oversight import netsafe
from oversight.deliveries import sign

__all__ = ["sign", "url_allowed"]


def url_allowed(url: str) -> bool:
    """At submission: an http(s) URL with a valid host that, when an allow-list is set,
    is on it. (Addresses are checked again when connecting: see oversight/netsafe.py.)"""
    try:
        host = netsafe.check_url(url)
    except netsafe.Refused:
        return False
    allowed = settings.OVERSIGHT_CALLBACK_ALLOWED_HOSTS
    return not allowed or host in {h.strip().lower() for h in allowed} or (
        (urlsplit(url).hostname or "").lower() in {h.strip().lower() for h in allowed}
    )
