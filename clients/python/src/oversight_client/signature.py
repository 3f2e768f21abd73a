"""Checking that a decision callback really comes from the Oversight server (spec §4)."""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def signing_key(api_key: str) -> bytes:
    # The server keeps only the key's SHA-256 digest, so that digest (as hex) is the
    # shared secret; the agent derives it from the key it holds.
    return hashlib.sha256(api_key.encode()).hexdigest().encode()


def sign(body: bytes, api_key: str) -> str:
    """The ``X-Oversight-Signature`` value the server sends with ``body``."""
    return PREFIX + hmac.new(signing_key(api_key), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str, api_key: str) -> bool:
    """True if ``header`` is ``sha256=<hex HMAC-SHA256 of the raw body>`` for this key.

    Pass the body exactly as received, before any JSON parsing.
    """
    given = (header or "").strip().lower()
    if not given.startswith(PREFIX):
        return False
    return hmac.compare_digest(given.encode(), sign(body, api_key).encode())
