"""Exceptions raised by the SDK.

Every error the server can answer with becomes one class here, carrying the server's
stable ``code``, its ``message``, ``details`` and the HTTP ``status``. Outcomes that are
not HTTP errors but stop an operation (a rejection, a cancellation, giving up waiting)
are exceptions too, so a checkpoint can be a plain ``with`` block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import OversightRequest


class OversightError(Exception):
    """Base class of everything the SDK raises about oversight."""

    default_code = "error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        request: OversightRequest | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}
        self.status = status
        self.request = request
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        return f"{self.code}{where}: {self.message}"


class Rejected(OversightError):
    """The request was rejected, by an operator or by a timeout whose action is reject."""

    default_code = "rejected"

    @property
    def reason(self) -> str:
        decision = self.request.decision if self.request else None
        return decision.reason if decision else ""

    @property
    def note(self) -> str:
        """The operator's note: how to do better next time ("" when none)."""
        decision = self.request.decision if self.request else None
        return decision.note if decision else ""


class PayloadChanged(OversightError):
    """Approved with changes to the payload that the code about to run cannot take:
    the call is not made (see ``require_approval``'s ``approval_arg``)."""

    default_code = "payload_changed"


class Cancelled(OversightError):
    """The request was cancelled (by this agent, possibly from another process)."""

    default_code = "cancelled"


class AlreadyDecided(OversightError):
    """409: the request is already final, so it cannot be cancelled."""

    default_code = "already_decided"


class Unauthenticated(OversightError):
    """401: no, unknown or revoked API key."""

    default_code = "unauthenticated"


class Forbidden(OversightError):
    default_code = "forbidden"


class NotFound(OversightError):
    """404: no such request for this agent."""

    default_code = "not_found"


class ValidationError(OversightError):
    """400: bad fields (see ``details``) or bad JSON."""

    default_code = "validation_error"


class IdempotencyConflict(OversightError):
    """409: the idempotency key was already used with a different body."""

    default_code = "idempotency_conflict"


class RateLimited(OversightError):
    """429 after the retries ran out; ``retry_after`` is the server's hint in seconds."""

    default_code = "rate_limited"


class PayloadTooLarge(OversightError):
    default_code = "payload_too_large"


class Unavailable(OversightError):
    """The server is down, unreachable or answered 503 (after the retries ran out)."""

    default_code = "unavailable"


class TimedOut(OversightError):
    """Waiting for a decision gave up; ``request`` is the last state seen."""

    default_code = "timed_out"


class DelegationLimitExceeded(OversightError):
    """Entering a delegation would go past the breaker's hard limit."""

    default_code = "delegation_limit_exceeded"

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"delegation depth {depth} is over the hard limit of {limit}")
        self.depth = depth
        self.limit = limit


_BY_CODE: dict[str, type[OversightError]] = {
    "validation_error": ValidationError,
    "malformed_json": ValidationError,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "already_decided": AlreadyDecided,
    "idempotency_conflict": IdempotencyConflict,
    "payload_too_large": PayloadTooLarge,
    "rate_limited": RateLimited,
    "unavailable": Unavailable,
}

# Used when the body is not our error shape (a proxy's page, an empty body).
_BY_STATUS: dict[int, type[OversightError]] = {
    400: ValidationError,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_class(status: int, code: str | None) -> type[OversightError]:
    if status in (502, 503, 504):
        # Whatever the body says, a gateway or overload answer means "try again later".
        return Unavailable
    if code in _BY_CODE:
        return _BY_CODE[code]
    return _BY_STATUS.get(status, OversightError)
