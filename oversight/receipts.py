"""Signed decision receipts: an Ed25519 JWS per final decision, and the keys that sign them.

A receipt proves, to the component that runs an operation, that this exact payload was
approved for this agent and operation, by whom and under which policy. Its claims carry
the SHA-256 of the payload's canonical JSON (RFC 8785), so a payload changed on the way
no longer matches.

Keys: one Ed25519 key signs at a time. It comes from OVERSIGHT_SIGNING_KEY (PEM) when
set; otherwise from the database (`SigningKey`, the private half encrypted with
SECRET_KEY), generated on first use. `rotate()` adds a key that is published in the
JWKS at once and signs only from `signs_from` on, so verifiers that cache the JWKS see
it first; a superseded key stays published until every receipt it signed has expired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

import jwt
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
DECISION_TTL = 600  # seconds: the receipt made at decision time
MAX_SAFE_INTEGER = 2**53  # beyond it, JSON numbers are not exact in every language


class SigningKeyError(Exception):
    """The configured key can't be used (bad PEM, not Ed25519, undecryptable)."""


# --- RFC 8785 canonical JSON --------------------------------------------------------


def canonical_json(value) -> bytes:
    """The JSON Canonicalization Scheme (RFC 8785) serialization of `value`, as UTF-8."""
    return "".join(_jcs(value)).encode("utf-8")


def payload_digest(payload) -> str:
    """Hex SHA-256 of the canonical JSON of `payload` (`{}` when there is none)."""
    return hashlib.sha256(canonical_json(payload if payload is not None else {})).hexdigest()


def _jcs(value):
    if value is None:
        yield "null"
    elif value is True:
        yield "true"
    elif value is False:
        yield "false"
    elif isinstance(value, int):
        if abs(value) <= MAX_SAFE_INTEGER:
            yield str(value)
        elif _written_double(value):
            # A double's shortest decimal digits, read back as an integer: PostgreSQL's
            # jsonb returns 3.27e16 as 32700853891907256 and 1e300 as 1 and 300 zeros.
            # The same number, so the same text.
            yield _number(float(value))
        else:
            raise ValueError(f"integer {value} is beyond ±2^53")
    elif isinstance(value, float):
        yield _number(value)
    elif isinstance(value, str):
        yield _string(value)
    elif isinstance(value, list | tuple):
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ","
            yield from _jcs(item)
        yield "]"
    elif isinstance(value, dict):
        yield "{"
        # Members sorted by their names' UTF-16 code units, as RFC 8785 §3.2.3 says.
        for n, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if not isinstance(key, str):
                raise TypeError("object keys must be strings")
            if n:
                yield ","
            yield _string(key)
            yield ":"
            yield from _jcs(value[key])
        yield "}"
    else:
        raise TypeError(f"not JSON: {type(value).__name__}")


def _written_double(value: int) -> bool:
    """Whether `value` is exactly the shortest decimal form of a double (and so came
    from one): 2^53 + 1 or 2^60 written as integers are not."""
    try:
        return int(Decimal(repr(float(value)))) == value
    except OverflowError:
        return False


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    """ECMAScript's Number.prototype.toString of a double (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(value):
        raise ValueError("NaN and Infinity are not JSON")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    n = len(digits) + exponent  # value = 0.digits × 10^n
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e > 0 else "-") + str(abs(e))


def unsafe_integers(value, path: str = "payload") -> list[str]:
    """Where `value` holds integers beyond ±2^53, whose digest would be ambiguous."""
    found: list[str] = []
    if isinstance(value, bool):
        return found
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            found.append(path)
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unsafe_integers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found += unsafe_integers(item, f"{path}.{n}")
    return found


class DuplicateKey(ValueError):
    pass


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """`object_pairs_hook` for json.loads: a duplicate member name is an error."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"duplicate key {key!r}")
        seen[key] = value
    return seen


# --- Keys ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(private: Ed25519PrivateKey) -> dict:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = _b64url(raw)
    # RFC 7638 thumbprint: SHA-256 over the required members, sorted, no whitespace.
    thumbprint = _b64url(hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x},
                                                   separators=(",", ":"), sort_keys=True).encode()).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": thumbprint, "alg": ALGORITHM, "use": "sig"}


def _fernet() -> Fernet:
    secret = hashlib.sha256(b"oversight signing key\x00" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(secret))


def _pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


@lru_cache(maxsize=32)
def _load_pem(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"the signing key is not a readable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError("the signing key must be an Ed25519 key")
    return key


@lru_cache(maxsize=32)
def _decrypt(token: str, secret_key: str) -> bytes:
    try:
        return _fernet().decrypt(token.encode())
    except InvalidToken:
        raise SigningKeyError("a stored signing key can't be decrypted: SECRET_KEY changed?") from None


def _configured_key() -> tuple[Ed25519PrivateKey, dict] | None:
    pem = getattr(settings, "OVERSIGHT_SIGNING_KEY", "")
    if not pem:
        return None
    key = _load_pem(pem.replace("\\n", "\n").encode())
    return key, public_jwk(key)


def _new_key_row(generation: int, signs_from: datetime, now: datetime):
    from oversight.models import SigningKey

    private = Ed25519PrivateKey.generate()
    jwk = public_jwk(private)
    return SigningKey(kid=jwk["kid"], generation=generation, public_jwk=jwk, created_at=now,
                      signs_from=signs_from, private_key=_fernet().encrypt(_pem(private)).decode())


SIGNING_KEY_SQL = (
    "SELECT kid, private_key FROM oversight_signingkey WHERE signs_from <= %s ORDER BY generation DESC LIMIT 1"
)


def signing_key(now: datetime | None = None) -> tuple[Ed25519PrivateKey, str]:
    """The key that signs now, and its kid; the first one is generated on first use."""

    configured = _configured_key()
    if configured is not None:
        return configured[0], configured[1]["kid"]
    now = now or timezone.now()
    # Raw: read on every decision receipt, so no query compilation and no model.
    with connection.cursor() as cursor:
        cursor.execute(SIGNING_KEY_SQL, [connection.ops.adapt_datetimefield_value(now)])
        row = cursor.fetchone()
    return signing_key_from_row(row, now)


def signing_key_from_row(row: tuple[str, str] | None, now: datetime) -> tuple[Ed25519PrivateKey, str]:
    """`signing_key` for the row of SIGNING_KEY_SQL the caller read itself (as part of a
    larger statement): (kid, encrypted private key), or None when there is no key yet."""
    configured = _configured_key()
    if configured is not None:
        return configured[0], configured[1]["kid"]
    if row is None or row[0] is None:
        row = _first_key(now)
    kid, token = row
    return _load_pem(_decrypt(token, settings.SECRET_KEY)), kid


def _first_key(now: datetime) -> tuple[str, str]:
    from oversight.models import SigningKey

    try:
        with transaction.atomic():
            if not SigningKey.objects.exists():
                key = _new_key_row(1, now, now)
                key.save(force_insert=True)
                return key.kid, key.private_key
    except IntegrityError:
        pass  # another process made the first key at the same moment
    row = SigningKey.objects.order_by("generation").values_list("kid", "private_key").first()
    if row is None:  # pragma: no cover - the row that won the race is committed
        raise SigningKeyError("no signing key")
    return row


def _max_ttl() -> int:
    from oversight.models import Policy

    longest = Policy.objects.aggregate(longest=Max("receipt_ttl_seconds"))["longest"] or 0
    return max(DECISION_TTL, longest)


def published_keys(now: datetime | None = None) -> list[dict]:
    """The JWKS's keys: the signing key, keys about to sign, and superseded keys whose
    receipts may not have expired yet."""
    from oversight.models import SigningKey

    configured = _configured_key()
    if configured is not None:
        return [configured[1]]
    now = now or timezone.now()
    rows = list(SigningKey.objects.order_by("generation").values_list("public_jwk", "signs_from"))
    if not rows:
        signing_key(now)
        rows = list(SigningKey.objects.order_by("generation").values_list("public_jwk", "signs_from"))
    keep_for = timedelta(seconds=_max_ttl())
    keys = []
    for n, (jwk, _signs_from) in enumerate(rows):
        superseded_at = next((s for _, s in rows[n + 1:] if s <= now), None)
        if superseded_at is None or superseded_at + keep_for > now:
            keys.append(jwk)
    return keys


def rotate(*, delay_seconds: int = 300, now: datetime | None = None):
    """Add the next key: published now, signing `delay_seconds` later. Drops keys whose
    every receipt has expired. Returns the new `SigningKey`."""
    from oversight.models import SigningKey

    if _configured_key() is not None:
        raise SigningKeyError("the signing key comes from OVERSIGHT_SIGNING_KEY: rotate it there")
    now = now or timezone.now()
    signing_key(now)  # the first key, if there is none yet
    with transaction.atomic():
        rows = list(SigningKey.objects.select_for_update().order_by("generation"))
        keep_for = timedelta(seconds=_max_ttl())
        for n, row in enumerate(rows):
            superseded_at = next((r.signs_from for r in rows[n + 1:] if r.signs_from <= now), None)
            if superseded_at is not None and superseded_at + keep_for <= now:
                row.delete()
        key = _new_key_row(rows[-1].generation + 1, now + timedelta(seconds=delay_seconds), now)
        key.save(force_insert=True)
    return key


# --- Receipts -----------------------------------------------------------------------


def decided_payload(req) -> dict:
    """The payload the decision is about: the decision's own (an approval with changes)
    when there is one, else the request's as submitted."""
    decision_payload = getattr(req, "decision_payload", None)
    return decision_payload if decision_payload is not None else (req.payload or {})


def approvers(req) -> list[str]:
    """The names of the operators who approved (empty when none did).

    The one place that says who approved: a request decided by the two-person rule lists
    every approval here."""
    from oversight.models import Source, Status

    if req.status != Status.APPROVED:
        return []
    approvals = getattr(req, "approvals", None)
    if isinstance(approvals, list):
        return [a["by"] if isinstance(a, dict) else str(a) for a in approvals]
    if req.decision_source == Source.OPERATOR and req.decided_by:
        return [req.decided_by]
    return []


def claims(req, *, now: datetime, ttl: int) -> dict:
    iat = int(now.timestamp())
    source = req.decision_source
    grant = getattr(req, "standing_grant_id", None) if source == "standing" else None
    return {
        "jti": uuid.uuid4().hex,
        "iss": settings.SITE_URL,
        "sub": str(req.id),
        "agent": req.agent.name,
        "operation": req.operation,
        "payload_sha256": payload_digest(decided_payload(req)),
        "outcome": req.status,
        "source": source,
        "approvers": approvers(req),
        "policy": f"{req.policy_operation}@{req.policy_version}",
        "trusted": bool(req.trusted_bypass),
        "grant": grant,
        "iat": iat,
        "exp": iat + ttl,
    }


def sign(payload: dict, *, now: datetime | None = None, key=None) -> str:
    """`payload` signed by `key` ((private key, kid)), by default the key that signs `now`."""
    key, kid = key or signing_key(now)
    return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})


def make_receipt(req, *, now: datetime | None = None, ttl: int = DECISION_TTL, key=None) -> str:
    """A receipt of `req`'s final decision, valid for `ttl` seconds from `now`."""
    now = now or timezone.now()
    return sign(claims(req, now=now, ttl=ttl), now=now, key=key)


def decision_receipt(req, *, now: datetime | None = None, key=None) -> str:
    """The decision-time receipt, or "" when no key can sign (logged as an error).

    A node that can't sign (SECRET_KEY differs from the one that stored the key, a bad
    OVERSIGHT_SIGNING_KEY) still records the decision: verifiers then find no receipt
    and refuse, which is the safe side, while deadlines keep being applied."""
    try:
        return make_receipt(req, now=now, key=key)
    except SigningKeyError:
        log.exception("No receipt for request %s", req.pk)
        return ""


def attach(req, *, now: datetime | None = None, key=None) -> None:
    """Make the decision-time receipt of a request just decided, and store it; `key`,
    (private key, kid), when the caller read the key that signs `now` itself."""
    from oversight.models import OversightRequest

    req.receipt = decision_receipt(req, now=now, key=key)
    if req.receipt:
        OversightRequest.objects.filter(pk=req.pk).update(receipt=req.receipt)


def attach_many(reqs: list, *, now: datetime | None = None, key=None) -> None:
    """`attach` for a batch decided by one statement (the timeout claim): the signing
    key loaded once (or given), each receipt made with its request's `decided_at`, all
    stored by one UPDATE."""
    from oversight.models import OversightRequest

    if not reqs:
        return
    try:
        key, kid = key or signing_key(now or reqs[0].decided_at)
    except SigningKeyError:
        log.exception("No receipts for %d requests", len(reqs))
        return
    for req in reqs:
        payload = claims(req, now=req.decided_at, ttl=DECISION_TTL)
        req.receipt = jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})
    OversightRequest.objects.bulk_update(reqs, ["receipt"], batch_size=500)


def fresh_receipt(req, *, now: datetime | None = None) -> str:
    """For agents that act later: a new receipt valid for the policy's receipt_ttl_seconds."""
    ttl = req.policy.receipt_ttl_seconds if req.policy_id else DECISION_TTL
    return make_receipt(req, now=now, ttl=ttl)
