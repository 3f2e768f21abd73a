"""A circuit breaker for runaway delegation.

Depth lives in a ``ContextVar``: every thread starts at depth 0 and every asyncio task
starts at the depth of the code that created it, so parallel sub-agents never see or
disturb each other's depth. To carry the depth into a worker thread on purpose, run the
work in a copied context: ``contextvars.copy_context().run(fn)``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import DelegationLimitExceeded

if TYPE_CHECKING:
    from .checkpoint import OnUnavailable

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("oversight_delegation_depth",
                                                             default=0)


def current_depth() -> int:
    """How many delegations the current thread or task is inside (0 at the top)."""
    return _depth.get()


class Delegation:
    """One level of delegation: a context manager (sync or async) and a decorator.

    Entering goes one level deeper. Over ``hard_limit`` it raises
    ``DelegationLimitExceeded``; over ``soft_limit`` it first passes a checkpoint (so an
    operator may be asked) and enters only if approved; a soft limit at or above the hard
    limit means no checkpoint, only the stop. The ``with`` value is the new depth.
    Use one object per ``with`` block; as a decorator it is safe for any number of calls.
    """

    def __init__(
        self,
        soft_limit: int = 4,
        hard_limit: int = 8,
        client: Any = None,
        operation: str = "delegate",
        summary: str | Callable[[int], str] | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        on_unavailable: OnUnavailable | None = None,
    ) -> None:
        if soft_limit < 0 or hard_limit < 0:
            raise ValueError("delegation limits can't be negative")
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.client = client
        self.operation = operation
        self.summary = summary
        self.payload = payload
        self.metrics = metrics
        self.timeout = timeout
        self.on_unavailable = on_unavailable
        self._tokens: list[contextvars.Token[int]] = []

    def _copy(self) -> Delegation:
        return Delegation(
            self.soft_limit, self.hard_limit, self.client, self.operation, self.summary,
            payload=self.payload, metrics=self.metrics, timeout=self.timeout,
            on_unavailable=self.on_unavailable,
        )

    def _next_depth(self) -> int:
        depth = _depth.get() + 1
        if depth > self.hard_limit:
            raise DelegationLimitExceeded(depth, self.hard_limit)
        return depth

    def _checkpoint(self, depth: int) -> Any:
        from .client import default_client

        client = self.client or default_client()
        if callable(self.summary):
            summary = self.summary(depth)
        else:
            summary = self.summary or (
                f"Delegate to depth {depth} (soft limit {self.soft_limit}, "
                f"hard limit {self.hard_limit})"
            )
        return client.checkpoint(
            self.operation,
            summary=summary,
            payload=self.payload,
            metrics={**(self.metrics or {}), "delegation_depth": depth},
            timeout=self.timeout,
            on_unavailable=self.on_unavailable,
        )

    def __enter__(self) -> int:
        depth = self._next_depth()
        if depth > self.soft_limit:
            with self._checkpoint(depth):
                pass
        self._tokens.append(_depth.set(depth))
        return depth

    def __exit__(self, *exc_info: object) -> None:
        _depth.reset(self._tokens.pop())

    async def __aenter__(self) -> int:
        depth = self._next_depth()
        if depth > self.soft_limit:
            async with self._checkpoint(depth):
                pass
        self._tokens.append(_depth.set(depth))
        return depth

    async def __aexit__(self, *exc_info: object) -> None:
        _depth.reset(self._tokens.pop())

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._copy():
                    return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._copy():
                return fn(*args, **kwargs)

        return wrapper


def delegation(
    soft_limit: int = 4,
    hard_limit: int = 8,
    client: Any = None,
    operation: str = "delegate",
    summary: str | Callable[[int], str] | None = None,
    **options: Any,
) -> Delegation:
    """``with delegation(): ...`` / ``@delegation()``: see ``Delegation``."""
    return Delegation(soft_limit, hard_limit, client, operation, summary, **options)


__all__ = ["Delegation", "current_depth", "delegation"]
