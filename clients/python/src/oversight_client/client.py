"""``Client`` (blocking) and ``AsyncClient``: the same flows, driven two ways."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from ._protocol import Flow, Protocol, Send, Sleep
from .auto_metrics import default_host
from .checkpoint import Checkpoint, OnUnavailable, check_on_unavailable, require_approval
from .models import OversightRequest

__version__ = "0.1.0"

DEFAULT_URL = "http://127.0.0.1:8000"

T = TypeVar("T")


class _Settings:
    """Arguments first, then ``OVERSIGHT_URL`` / ``OVERSIGHT_API_KEY``."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        *,
        http_timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        on_unavailable: OnUnavailable = "deny",
        host: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        jwks: Mapping[str, Any] | None = None,
        issuer: str | None = None,
    ) -> None:
        self.url = (url or os.environ.get("OVERSIGHT_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("OVERSIGHT_API_KEY")
        if not key:
            raise ValueError("no API key: pass api_key= or set OVERSIGHT_API_KEY")
        self.api_key = key
        self.on_unavailable = check_on_unavailable(on_unavailable)
        self.host = host or default_host()
        # TLS verification as httpx takes it: a CA bundle path or an SSLContext for a
        # server with its own certificate authority.
        self.verify = verify
        # With the server's JWKS, checkpoints verify the decision's signed receipt.
        self.jwks = jwks
        self.issuer = (issuer or self.url).rstrip("/")
        self.protocol = Protocol(
            http_timeout=http_timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            max_retry_after=max_retry_after,
        )

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"oversight-client/{__version__}",
        }


class _Base:
    protocol: Protocol
    on_unavailable: OnUnavailable
    host: str
    url: str
    jwks: Mapping[str, Any] | None
    issuer: str

    def _configure(self, settings: _Settings) -> None:
        self.jwks = settings.jwks
        self.issuer = settings.issuer
        self.protocol = settings.protocol
        self.on_unavailable = settings.on_unavailable
        self.host = settings.host
        self.url = settings.url

    def checkpoint(self, operation: str, summary: str, **options: Any) -> Checkpoint:
        """A gate around an operation; see ``Checkpoint`` for the options."""
        return Checkpoint(self, operation, summary, **options)  # type: ignore[arg-type]

    def require_approval(
        self, operation: str, summary: str | Callable[..., str] | None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: each call passes a checkpoint first (see ``require_approval``)."""
        return require_approval(operation, summary, client=self, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class Client(_Base):
    """Blocking client. Thread-safe: one instance can serve a whole process.

    Retries connection errors, 429 (honouring ``Retry-After`` up to
    ``max_retry_after`` seconds) and 502/503/504, up to ``max_retries`` times with
    exponential backoff from ``backoff`` seconds, capped at ``max_backoff``.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Any):
        settings = _Settings(url, api_key, **options)
        self._configure(settings)
        self._http = httpx.Client(base_url=settings.url, headers=settings.headers(),
                                  verify=settings.verify)

    def run(self, flow: Flow[T]) -> T:
        """Drive a flow with blocking I/O."""
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    time.sleep(action.seconds)
                    action = flow.send(None)
                    continue
                try:
                    response = self._request(action)
                except httpx.TransportError as exc:
                    action = flow.throw(exc)
                else:
                    action = flow.send(response)
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    def _request(self, send: Send) -> httpx.Response:
        return self._http.request(send.method, send.path, params=send.params,
                                  content=send.body, timeout=send.timeout)

    def submit(
        self,
        operation: str,
        summary: str,
        payload: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        timeout_seconds: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> OversightRequest:
        """Ask for permission. ``wait`` (0-55 s) holds the answer until decided."""
        return self.run(self.protocol.submit(
            operation, summary, payload=payload, metrics=metrics,
            timeout_seconds=timeout_seconds, callback_url=callback_url,
            idempotency_key=idempotency_key, wait=wait,
        ))

    def get(self, id: str, wait: float | None = None) -> OversightRequest:
        return self.run(self.protocol.get(id, wait))

    def keys(self) -> dict[str, Any]:
        """The server's JWKS, the public keys that verify decision receipts."""
        return self.run(self.protocol.keys())

    def receipt(self, id: str) -> str:
        """A fresh receipt of a decided request, valid for the policy's receipt TTL."""
        return self.run(self.protocol.receipt(id))

    def wait(self, id: str, timeout: float | None = None) -> OversightRequest:
        """Block until the request is final (any outcome); ``TimedOut`` after ``timeout``."""
        return self.run(self.protocol.wait(id, timeout))

    def cancel(self, id: str) -> OversightRequest:
        return self.run(self.protocol.cancel(id))

    def list(
        self, status: str | None = None, operation: str | None = None, limit: int | None = None
    ) -> Iterator[OversightRequest]:
        """The agent's requests, newest first, fetched a page (of ``limit``) at a time."""
        cursor = None
        while True:
            results, cursor = self.run(self.protocol.page(
                status=status, operation=operation, limit=limit, cursor=cursor))
            yield from results
            if not cursor:
                return

    def push_metrics(self, host: str, samples: list[Mapping[str, Any]]) -> None:
        self.run(self.protocol.push_metrics(host, samples))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio twin of ``Client``: same arguments, same behaviour, awaitable."""

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Any):
        settings = _Settings(url, api_key, **options)
        self._configure(settings)
        self._http = httpx.AsyncClient(base_url=settings.url, headers=settings.headers(),
                                       verify=settings.verify)

    async def arun(self, flow: Flow[T]) -> T:
        """Drive a flow with asyncio I/O."""
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                    action = flow.send(None)
                    continue
                try:
                    response = await self._http.request(
                        action.method, action.path, params=action.params,
                        content=action.body, timeout=action.timeout)
                except httpx.TransportError as exc:
                    action = flow.throw(exc)
                else:
                    action = flow.send(response)
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    async def submit(
        self,
        operation: str,
        summary: str,
        payload: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        timeout_seconds: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> OversightRequest:
        return await self.arun(self.protocol.submit(
            operation, summary, payload=payload, metrics=metrics,
            timeout_seconds=timeout_seconds, callback_url=callback_url,
            idempotency_key=idempotency_key, wait=wait,
        ))

    async def get(self, id: str, wait: float | None = None) -> OversightRequest:
        return await self.arun(self.protocol.get(id, wait))

    async def keys(self) -> dict[str, Any]:
        return await self.arun(self.protocol.keys())

    async def receipt(self, id: str) -> str:
        return await self.arun(self.protocol.receipt(id))

    async def wait(self, id: str, timeout: float | None = None) -> OversightRequest:
        return await self.arun(self.protocol.wait(id, timeout))

    async def cancel(self, id: str) -> OversightRequest:
        return await self.arun(self.protocol.cancel(id))

    async def list(
        self, status: str | None = None, operation: str | None = None, limit: int | None = None
    ) -> AsyncIterator[OversightRequest]:
        cursor = None
        while True:
            results, cursor = await self.arun(self.protocol.page(
                status=status, operation=operation, limit=limit, cursor=cursor))
            for request in results:
                yield request
            if not cursor:
                return

    async def push_metrics(self, host: str, samples: list[Mapping[str, Any]]) -> None:
        await self.arun(self.protocol.push_metrics(host, samples))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """A process-wide ``Client`` configured from the environment, made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def set_default_client(client: Client | None) -> None:
    """Use ``client`` wherever no client is passed (``None`` resets to the environment)."""
    global _default
    with _default_lock:
        _default = client
