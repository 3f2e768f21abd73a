"""Checkpoints: submit, block until a final decision, go on only if approved."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ._protocol import MAX_WAIT, Flow, Protocol
from .auto_metrics import fill_metrics
from .cycles import find_cycles
from .errors import Cancelled, OversightError, PayloadChanged, Rejected, TimedOut, Unavailable
from .models import OversightRequest

if TYPE_CHECKING:
    from .client import AsyncClient, Client

log = logging.getLogger("oversight_client")

OnUnavailable = Literal["deny", "allow"] | Callable[[str, Unavailable], bool]


def check_on_unavailable(policy: OnUnavailable) -> OnUnavailable:
    if policy in ("deny", "allow") or callable(policy):
        return policy
    raise ValueError(f"on_unavailable must be 'deny', 'allow' or a callable, not {policy!r}")


def let_through(policy: OnUnavailable, operation: str, exc: Unavailable) -> bool:
    """Whether an operation may go ahead although no decision could be had."""
    if policy == "deny":
        return False
    if policy == "allow":
        log.warning(
            "OVERSIGHT UNAVAILABLE: %r goes ahead WITHOUT APPROVAL because "
            "on_unavailable='allow' (%s)", operation, exc,
        )
        return True
    allowed = bool(policy(operation, exc))
    if allowed:
        log.warning("OVERSIGHT UNAVAILABLE: %r goes ahead WITHOUT APPROVAL, as the "
                    "on_unavailable callable decided (%s)", operation, exc)
    return allowed


def ensure_approved(request: OversightRequest) -> OversightRequest:
    if request.approved:
        return request
    decision = request.decision
    who = (decision.by or decision.source) if decision else "?"
    if request.status == "rejected":
        raise Rejected(f"{request.operation} rejected by {who}: {request.reason}",
                       request=request)
    if request.status == "cancelled":
        raise Cancelled(f"{request.operation} was cancelled", request=request)
    raise OversightError(f"request {request.id} is {request.status}, not final",
                         request=request)


def checkpoint_flow(
    protocol: Protocol,
    operation: str,
    summary: str,
    *,
    payload: Mapping[str, Any] | None,
    metrics: Mapping[str, Any],
    timeout: float | None,
    timeout_seconds: int | None,
    callback_url: str | None,
    idempotency_key: str | None,
    on_unavailable: OnUnavailable,
) -> Flow[OversightRequest | None]:
    started = time.monotonic()
    try:
        request = yield from protocol.submit(
            operation, summary, payload=payload, metrics=metrics,
            timeout_seconds=timeout_seconds, callback_url=callback_url,
            idempotency_key=idempotency_key,
            wait=MAX_WAIT if timeout is None else int(min(MAX_WAIT, timeout)),
        )
        if not request.final:
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            request = yield from protocol.wait(request.id, left)
    except Unavailable as exc:
        if let_through(on_unavailable, operation, exc):
            return None
        raise
    except TimedOut as exc:
        request = yield from _give_up(protocol, exc)
    return ensure_approved(request)


def _give_up(protocol: Protocol, timed_out: TimedOut) -> Flow[OversightRequest]:
    # Withdraw the request, so nobody approves something that will no longer happen.
    # If a decision landed in the meantime, that decision stands.
    assert timed_out.request is not None
    try:
        request = yield from protocol.cancel(timed_out.request.id)
    except OversightError as exc:
        if exc.request is not None and exc.request.final:
            return exc.request
        raise timed_out from exc
    if request.status == "cancelled":
        raise timed_out
    return request


class Checkpoint:
    """``with client.checkpoint(...) as request:`` (``async with`` works too).

    Entering submits, waits for the final decision and returns the approved request;
    it raises ``Rejected``, ``Cancelled``, ``TimedOut`` (after withdrawing the request)
    or, when the server can't be reached and ``on_unavailable`` says deny, ``Unavailable``.
    When ``on_unavailable`` lets the operation through, the value is ``None``.
    """

    def __init__(
        self,
        client: Client | AsyncClient,
        operation: str,
        summary: str,
        *,
        payload: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        timeout_seconds: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        auto_metrics: bool = True,
        scan_cycles: bool = False,
        on_unavailable: OnUnavailable | None = None,
    ) -> None:
        self.client = client
        self.operation = operation
        self.summary = summary
        self.payload = payload
        self.metrics = metrics
        self.timeout = timeout
        self.timeout_seconds = timeout_seconds
        self.callback_url = callback_url
        self.idempotency_key = idempotency_key
        self.auto_metrics = auto_metrics
        self.scan_cycles = scan_cycles
        self.on_unavailable = check_on_unavailable(
            on_unavailable if on_unavailable is not None else client.on_unavailable
        )
        self.request: OversightRequest | None = None

    def _flow(self) -> Flow[OversightRequest | None]:
        # Figures are taken here, in the caller's thread and context, where the
        # delegation depth is the caller's.
        if self.scan_cycles:
            find_cycles()
        metrics = (fill_metrics(self.metrics, self.client.host) if self.auto_metrics
                   else dict(self.metrics or {}))
        return checkpoint_flow(
            self.client.protocol, self.operation, self.summary,
            payload=self.payload, metrics=metrics, timeout=self.timeout,
            timeout_seconds=self.timeout_seconds, callback_url=self.callback_url,
            idempotency_key=self.idempotency_key, on_unavailable=self.on_unavailable,
        )

    def _verified(self, request: OversightRequest | None) -> OversightRequest | None:
        """With the server's JWKS, the approval must come with a receipt that verifies."""
        jwks = getattr(self.client, "jwks", None)
        if request is None or not jwks:
            return request
        from .receipts import ReceiptInvalid, verify_receipt

        decision = request.raw.get("decision") or {}
        receipt = decision.get("receipt")
        if not receipt:
            raise ReceiptInvalid(f"request {request.id} was approved without a receipt",
                                 request=request)
        approved_payload = decision.get("payload")
        if approved_payload is None:
            approved_payload = request.payload
        try:
            verify_receipt(receipt, approved_payload, jwks, operation=self.operation,
                           agent=request.agent, issuer=self.client.issuer)
        except ReceiptInvalid as exc:
            exc.request = request
            raise
        return request

    def __enter__(self) -> OversightRequest | None:
        run = getattr(self.client, "run", None)
        if run is None:
            raise TypeError("an AsyncClient checkpoint needs `async with`")
        self.request = self._verified(run(self._flow()))
        return self.request

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def __aenter__(self) -> OversightRequest | None:
        arun = getattr(self.client, "arun", None)
        flow = self._flow()
        if arun is not None:
            self.request = await arun(flow)
        else:
            # A blocking client in async code: wait in a thread, not on the event loop.
            self.request = await asyncio.to_thread(self.client.run, flow)  # type: ignore[union-attr]
        self.request = self._verified(self.request)
        return self.request

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _resolve(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return value(*args, **kwargs) if callable(value) else value


def _hand_over(fn: Callable[..., Any], approval_arg: str, request: OversightRequest | None,
               kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's keyword arguments, with the approved request under ``approval_arg`` when
    ``fn`` takes it. An approval with changes that ``fn`` cannot receive stops the call:
    running the arguments as they were would run what nobody approved."""
    takes_it = approval_arg in inspect.signature(fn).parameters
    if takes_it:
        return kwargs | {approval_arg: request}
    if request is not None and request.changed:
        raise PayloadChanged(
            f"{request.operation} was approved with changes to its payload, and "
            f"{fn.__qualname__} has no `{approval_arg}` parameter to receive them: not run",
            request=request,
        )
    return kwargs


def require_approval(
    operation: str,
    summary: str | Callable[..., str] | None = None,
    *,
    client: Client | AsyncClient | None = None,
    payload: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
    metrics: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
    approval_arg: str = "approval",
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: every call passes a checkpoint first, and runs only if approved.

    ``summary``, ``payload`` and ``metrics`` may be callables, given the call's
    arguments. Without ``client`` the default client (from the environment) is used.
    Coroutine functions are supported; with a blocking ``Client`` the wait happens in a
    worker thread. Other keyword options are those of ``Checkpoint``.

    A function with a parameter named ``approval_arg`` (default ``approval``) gets the
    approved request there: run ``approval.payload`` (what was approved, with any
    operator's changes) and read ``approval.note``. An approval with changes to a
    function without that parameter raises ``PayloadChanged`` instead of running it.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Checkpoint:
            from .client import default_client

            text = _resolve(summary, args, kwargs) or f"call {fn.__module__}.{fn.__qualname__}"
            return Checkpoint(
                client or default_client(), operation, text,
                payload=_resolve(payload, args, kwargs),
                metrics=_resolve(metrics, args, kwargs),
                **options,
            )

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with make(args, kwargs) as approval:
                    return await fn(*args, **_hand_over(fn, approval_arg, approval, kwargs))

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with make(args, kwargs) as approval:
                return fn(*args, **_hand_over(fn, approval_arg, approval, kwargs))

        return wrapper

    return decorate
