"""What to send and what the answers mean, with no I/O of its own.

Each operation is a generator ("flow") that yields what it needs done: a ``Send`` (an
HTTP request; the answer, or the transport exception, is sent back in) or a ``Sleep``.
``Client`` drives flows with blocking calls and ``AsyncClient`` with awaits, so retries,
long-polling and checkpoints are written once for both.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from .errors import (
    AlreadyDecided,
    OversightError,
    RateLimited,
    TimedOut,
    Unavailable,
    error_class,
)
from .models import OversightRequest

log = logging.getLogger("oversight_client")

API = "/api/v1"
MAX_WAIT = 55  # the server holds a long-poll for at most this many seconds

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    method: str
    path: str
    params: dict[str, str]
    body: bytes | None
    timeout: float  # seconds to wait for the answer, long-poll included


@dataclass(frozen=True)
class Sleep:
    seconds: float


Flow = Generator[Send | Sleep, Any, T]

# Errors after which the request may or may not have reached the server. Retrying is
# safe: reads are reads, and a submit carries its idempotency key.
RETRYABLE = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


def encode(body: Mapping[str, Any]) -> bytes:
    # Encoded once per call so every retry sends the very same bytes.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_from_response(response: httpx.Response) -> OversightError:
    code = message = None
    details: dict[str, Any] = {}
    try:
        error = response.json()["error"]
        code, message, details = error.get("code"), error.get("message"), error.get("details") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.text[:200]
    cls = error_class(response.status_code, code)
    return cls(
        message or response.reason_phrase,
        code=code,
        details=details,
        status=response.status_code,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise OversightError(
            f"the server answered {response.status_code} with a body that is not JSON",
            code="bad_response",
            status=response.status_code,
        ) from exc


def check_wait(wait: float | None) -> int | None:
    if wait is None:
        return None
    if not 0 <= wait <= MAX_WAIT:
        raise ValueError(f"wait must be between 0 and {MAX_WAIT} seconds, not {wait}")
    return int(wait)


class Protocol:
    """Connection settings plus the flows. Shared by ``Client`` and ``AsyncClient``."""

    def __init__(
        self,
        *,
        http_timeout: float,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        max_retry_after: float,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.http_timeout = http_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after

    def backoff_delay(self, attempt: int) -> float:
        # Exponential, with "equal jitter": half fixed, half random, so a crowd of agents
        # that lost the server at the same moment doesn't come back in step.
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)

    def send(
        self, method: str, path: str, *, body: Mapping[str, Any] | None = None, **params: Any
    ) -> Send:
        query = {k: str(v) for k, v in params.items() if v is not None}
        wait = int(params.get("wait") or 0)
        return Send(
            method=method,
            path=API + path,
            params=query,
            body=encode(body) if body is not None else None,
            timeout=self.http_timeout + wait,
        )

    def call(self, send: Send) -> Flow[httpx.Response]:
        """Send, retrying connection errors, 429 and 503 with backoff; return a 2xx."""
        attempt = 0
        while True:
            try:
                response = yield send
            except httpx.TransportError as exc:
                if not isinstance(exc, RETRYABLE) or attempt >= self.max_retries:
                    raise Unavailable(
                        f"cannot reach the Oversight server ({type(exc).__name__}: {exc})",
                        code="unreachable",
                    ) from exc
                delay = self.backoff_delay(attempt)
                log.info("%s %s failed (%r); retry in %.2fs", send.method, send.path, exc, delay)
            else:
                if response.status_code < 400:
                    return response
                error = error_from_response(response)
                retryable = isinstance(error, Unavailable | RateLimited)
                if not retryable or attempt >= self.max_retries:
                    raise error
                delay = self.backoff_delay(attempt)
                if error.retry_after is not None:
                    if error.retry_after > self.max_retry_after:
                        raise error  # the caller decides whether that long is worth waiting
                    delay = error.retry_after
                log.info("%s %s answered %s; retry in %.2fs", send.method, send.path,
                         response.status_code, delay)
            attempt += 1
            yield Sleep(delay)

    # The agent API, one flow per endpoint.

    def submit(
        self,
        operation: str,
        summary: str,
        *,
        payload: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        timeout_seconds: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Flow[OversightRequest]:
        body: dict[str, Any] = {
            "operation": operation,
            "summary": summary,
            # Always present, so a retry after a lost answer finds the first request
            # instead of making a second one.
            "idempotency_key": idempotency_key or str(uuid.uuid4()),
        }
        optional = {
            "payload": dict(payload) if payload is not None else None,
            "metrics": dict(metrics) if metrics is not None else None,
            "timeout_seconds": timeout_seconds,
            "callback_url": callback_url,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        send = self.send("POST", "/requests", body=body, wait=check_wait(wait))
        response = yield from self.call(send)
        return OversightRequest.from_dict(json_body(response))

    def get(self, request_id: str, wait: float | None = None) -> Flow[OversightRequest]:
        send = self.send("GET", f"/requests/{quote(str(request_id), safe='')}",
                         wait=check_wait(wait))
        response = yield from self.call(send)
        return OversightRequest.from_dict(json_body(response))

    def wait(self, request_id: str, timeout: float | None) -> Flow[OversightRequest]:
        """Long-poll until the request is final; ``TimedOut`` once ``timeout`` has passed.

        With ``timeout=None`` it waits as long as the request stays pending, which is
        bounded by the server: every read past the deadline returns the timeout decision.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            hold = MAX_WAIT if remaining is None else int(min(MAX_WAIT, max(0.0, remaining)))
            started = time.monotonic()
            request = yield from self.get(request_id, wait=hold)
            if request.final:
                return request
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimedOut(
                    f"request {request_id} still {request.status} after {timeout:g}s",
                    request=request,
                )
            if now - started < hold - 0.5 or hold == 0:
                # The server answered before the hold was up without a decision (or
                # doesn't hold at all): pace the polls as it asks.
                pause = request.poll_after_ms / 1000
                if deadline is not None:
                    pause = min(pause, deadline - now)
                if pause > 0:
                    yield Sleep(pause)

    def keys(self) -> Flow[dict[str, Any]]:
        response = yield from self.call(self.send("GET", "/keys"))
        return json_body(response)

    def receipt(self, request_id: str) -> Flow[str]:
        path = f"/requests/{quote(str(request_id), safe='')}/receipt"
        response = yield from self.call(self.send("GET", path))
        return json_body(response)["receipt"]

    def cancel(self, request_id: str) -> Flow[OversightRequest]:
        """Cancel a pending request. Cancelling a cancelled request returns it unchanged."""
        path = f"/requests/{quote(str(request_id), safe='')}/cancel"
        try:
            response = yield from self.call(self.send("POST", path, body={}))
        except AlreadyDecided as exc:
            # Either someone decided first, or our own earlier attempt went through and
            # only its answer was lost. Look, and tell the two apart.
            request = yield from self.get(request_id)
            if request.status == "cancelled":
                return request
            exc.request = request
            raise
        return OversightRequest.from_dict(json_body(response))

    def page(
        self,
        *,
        status: str | None,
        operation: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> Flow[tuple[list[OversightRequest], str | None]]:
        send = self.send("GET", "/requests", status=status, operation=operation, limit=limit,
                         cursor=cursor)
        data = json_body((yield from self.call(send)))
        results = [OversightRequest.from_dict(item) for item in data.get("results", [])]
        return results, data.get("next_cursor")

    def push_metrics(self, host: str, samples: list[Mapping[str, Any]]) -> Flow[None]:
        # A retry after a lost answer may store a batch twice; samples carry their own
        # time and pid, so a duplicate is recognisable and harmless.
        yield from self.call(self.send("POST", "/metrics",
                                       body={"host": host, "samples": list(samples)}))
