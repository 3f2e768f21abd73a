"""Verify a signed decision receipt where the operation runs.

    from oversight_client import verify_receipt

    claims = verify_receipt(receipt, payload, jwks, operation="deploy",
                            agent="release-bot", issuer="https://oversight.example.org",
                            seen=used_jtis, require_human=True)

Needs PyJWT and cryptography: ``pip install 'oversight-client[receipts]'``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any, Protocol

from .canonical import payload_digest
from .errors import OversightError

ALGORITHM = "EdDSA"


class ReceiptInvalid(OversightError):
    """The receipt does not prove an approval of this payload: do not run the operation."""

    default_code = "invalid_receipt"


class JtiStore(Protocol):
    def __contains__(self, jti: object) -> bool: ...

    def add(self, jti: str) -> Any: ...


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_for(kid: Any, jwks: Mapping[str, Any] | list[Mapping[str, Any]]):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = jwks.get("keys", []) if isinstance(jwks, Mapping) else jwks
    for jwk in keys:
        if (isinstance(jwk, Mapping) and jwk.get("kid") == kid and jwk.get("kty") == "OKP"
                and jwk.get("crv") == "Ed25519" and jwk.get("alg", ALGORITHM) == ALGORITHM):
            try:
                return Ed25519PublicKey.from_public_bytes(_b64url_decode(str(jwk.get("x", ""))))
            except (ValueError, binascii.Error):
                raise ReceiptInvalid(f"key {kid!r} in the JWKS is malformed") from None
    raise ReceiptInvalid(f"the receipt's key {kid!r} is not in the given JWKS")


def verify_receipt(
    receipt: str,
    payload: Mapping[str, Any] | None,
    jwks: Mapping[str, Any] | list[Mapping[str, Any]],
    *,
    operation: str,
    agent: str,
    issuer: str,
    seen: JtiStore | None = None,
    require_human: bool = False,
) -> dict[str, Any]:
    """The receipt's claims, once it proves an approval of exactly this payload.

    Checks: EdDSA only; the key only from ``jwks`` (``jku``/``jwk`` headers are
    ignored); the signature; expiry; outcome ``approved``; ``operation``, ``agent`` and
    ``issuer``; the SHA-256 of the payload's canonical JSON (RFC 8785). With ``seen`` (a
    set, or any store with ``in`` and ``add``) a receipt is good once: its ``jti`` is
    added, and a second use is refused. ``require_human`` refuses approvals by the
    policy, by the timeout and of trusted agents. Raises ``ReceiptInvalid`` otherwise.
    """
    import jwt

    if not isinstance(receipt, str) or receipt.count(".") != 2:
        raise ReceiptInvalid("not a compact JWS")
    try:
        header = jwt.get_unverified_header(receipt)
    except jwt.PyJWTError as exc:
        raise ReceiptInvalid(f"unreadable header: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise ReceiptInvalid(f"algorithm {header.get('alg')!r} refused: only {ALGORITHM}")
    key = _key_for(header.get("kid"), jwks)
    try:
        claims = jwt.decode(
            receipt, key, algorithms=[ALGORITHM], issuer=issuer,
            options={"require": ["exp", "iat", "jti", "iss", "sub"], "verify_aud": False,
                     "verify_iat": False},
        )
    except jwt.ExpiredSignatureError:
        raise ReceiptInvalid("the receipt has expired") from None
    except jwt.InvalidIssuerError:
        raise ReceiptInvalid("the receipt was issued by another server") from None
    except jwt.PyJWTError as exc:
        raise ReceiptInvalid(f"the receipt does not verify: {exc}") from None

    if claims.get("outcome") != "approved":
        raise ReceiptInvalid(f"the decision was {claims.get('outcome')!r}, not approved")
    if claims.get("operation") != operation:
        raise ReceiptInvalid(f"the receipt is for operation {claims.get('operation')!r}")
    if claims.get("agent") != agent:
        raise ReceiptInvalid(f"the receipt is for agent {claims.get('agent')!r}")
    try:
        digest = payload_digest(dict(payload) if payload is not None else {})
    except (TypeError, ValueError) as exc:
        raise ReceiptInvalid(f"the payload has no canonical JSON: {exc}") from None
    if not hmac.compare_digest(digest, str(claims.get("payload_sha256", ""))):
        raise ReceiptInvalid("the payload is not the one that was approved")
    if require_human and (claims.get("source") in ("policy", "timeout") or claims.get("trusted")):
        raise ReceiptInvalid(f"approved by {claims.get('source')}"
                             f"{' (trusted agent)' if claims.get('trusted') else ''}, not a person")
    if seen is not None:
        jti = claims["jti"]
        if jti in seen:
            raise ReceiptInvalid("the receipt was already used")
        seen.add(jti)
    return claims
