"""Fixtures for the SDK's tests.

``fake`` is a small Oversight server speaking the agent API (spec §4) over real HTTP on
127.0.0.1, with the default policy's thresholds, long-polling, idempotency keys and
cursors, plus scripted faults (an error status, or a connection cut after the request
was handled) so retries are exercised against a real socket.
"""

from __future__ import annotations

import gc
import json
import re
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio

from oversight_client import AsyncClient, Client, set_default_client
from oversight_client.auto_metrics import psutil_module

API_KEY = "ovs_test_0123456789abcdef"
OPERATION = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
REQUEST_PATH = re.compile(r"/api/v1/requests/([^/]+)")
CANCEL_PATH = re.compile(r"/api/v1/requests/([^/]+)/cancel")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status: int, code: str, message: str = "", details: Any = None) -> tuple[int, Any]:
    return status, {"error": {"code": code, "message": message or code, "details": details or {}}}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float
    status: int | None = None  # None: the connection was cut instead of answered


@dataclass
class Fault:
    method: str
    path: str
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    cut: bool = False
    times: int = 1


class FakeOversight:
    def __init__(self) -> None:
        self.api_key = API_KEY
        self.lock = threading.Condition()
        self.requests: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.keys: dict[str, tuple[str, Any]] = {}
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.pushes: list[dict[str, Any]] = []
        self.thresholds = {"memory_pressure": 80, "delegation_depth": 4, "circular_refs": 3}
        self.auto_decide: dict[str, tuple[str, str]] = {}  # operation -> (outcome, reason)
        self.hold = True  # honour ?wait=N
        # An operator's decision that lands just before the agent's cancel (a race).
        self.decide_before_cancel: str | None = None
        self.poll_after_ms = 50
        self.closing = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval keeps shutdown (once per test) quick.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # scripting

    def fail(self, method: str, path: str, *, status: int | None = None, body: Any = None,
             headers: dict[str, str] | None = None, cut: bool = False, times: int = 1) -> None:
        """The next ``times`` calls to method+path answer ``status`` or are cut."""
        with self.lock:
            self.faults.append(Fault(method, path, status, body, headers or {}, cut, times))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def calls_to(self, method: str, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method and c.path == path]

    def submitted(self) -> list[dict[str, Any]]:
        return [c.body for c in self.calls_to("POST", "/api/v1/requests")]

    def decide(self, request_id: str, outcome: str, reason: str = "", by: str | None = "alice",
               source: str = "operator", *, payload: dict | None = None, note: str = "") -> bool:
        with self.lock:
            resource = self.requests[request_id]
            if resource["status"] != "pending":
                return False
            self._decide(resource, outcome, reason, by, source)
            resource["decision"]["note"] = note
            if payload is not None:
                resource["decision"]["payload"] = payload
            self.lock.notify_all()
            return True

    def decide_when(self, ready: Callable[[], str | None], outcome: str, reason: str = "",
                    after: float = 0.1, source: str = "operator",
                    **changes: Any) -> threading.Thread:
        """In the background: once ``ready()`` names a request, decide it ``after`` later."""

        def run() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not self.closing:
                request_id = ready()
                if request_id:
                    time.sleep(after)
                    by = None if source == "agent" else "alice"
                    self.decide(request_id, outcome, reason, by=by, source=source, **changes)
                    return
                time.sleep(0.01)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def decide_next(self, operation: str, outcome: str, reason: str = "", after: float = 0.1,
                    source: str = "operator", **changes: Any) -> threading.Thread:
        """Decide the first pending request of ``operation`` once it appears."""

        def ready() -> str | None:
            with self.lock:
                for request_id in self.order:
                    r = self.requests[request_id]
                    if r["operation"] == operation and r["status"] == "pending":
                        return request_id
            return None

        return self.decide_when(ready, outcome, reason, after, source, **changes)

    # the API

    def _decide(self, resource: dict[str, Any], outcome: str, reason: str, by: str | None,
                source: str) -> None:
        resource["status"] = outcome
        resource["decision"] = {"outcome": outcome, "source": source, "by": by,
                                "reason": reason, "decided_at": iso(datetime.now(UTC))}

    def _hold(self, request_id: str, wait: int) -> None:
        if self.hold and wait > 0:
            self.lock.wait_for(
                lambda: self.requests[request_id]["status"] != "pending" or self.closing,
                timeout=wait,
            )

    def route(self, method: str, path: str, query: dict[str, str], body: Any,
              headers: dict[str, str]) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "unauthenticated", "unknown key")
        wait = int(query.get("wait", 0))
        if method == "POST" and path == "/api/v1/requests":
            return self._submit(body, wait)
        if method == "GET" and path == "/api/v1/requests":
            return self._list(query)
        if method == "POST" and path == "/api/v1/metrics":
            self.pushes.append(body)
            return 202, {"accepted": len(body.get("samples", []))}
        if method == "POST" and (m := CANCEL_PATH.fullmatch(path)):
            return self._cancel(m.group(1))
        if method == "GET" and (m := REQUEST_PATH.fullmatch(path)):
            if m.group(1) not in self.requests:
                return error(404, "not_found")
            self._hold(m.group(1), wait)
            return 200, self.requests[m.group(1)]
        return error(404, "not_found")

    def _submit(self, body: Any, wait: int) -> tuple[int, Any]:
        problems = {}
        if not isinstance(body.get("operation"), str) or not OPERATION.fullmatch(body["operation"]):
            problems["operation"] = ["must match [a-z0-9][a-z0-9_.-]{0,63}"]
        if not isinstance(body.get("summary"), str) or not 1 <= len(body["summary"]) <= 500:
            problems["summary"] = ["1 to 500 characters"]
        if problems:
            return error(400, "validation_error", "invalid request", problems)
        key = body.get("idempotency_key")
        if key in self.keys:
            request_id, first_body = self.keys[key]
            if first_body != body:
                return error(409, "idempotency_conflict", "key used with another body")
            self._hold(request_id, wait)
            return 200, self.requests[request_id]
        metrics = body.get("metrics") or {}
        triggers = []
        for rule, threshold in self.thresholds.items():
            value = metrics.get(rule)
            triggers.append({"rule": rule, "threshold": threshold, "value": value,
                             "fired": value is not None and value > threshold,
                             "source": "agent"})
        critical = any(t["fired"] for t in triggers)
        now = datetime.now(UTC)
        resource = {
            "id": str(uuid.uuid4()),
            "agent": "test-agent",
            "operation": body["operation"],
            "summary": body["summary"],
            "payload": body.get("payload") or {},
            "metrics": metrics,
            "status": "pending",
            "critical": critical,
            "triggers": triggers,
            "policy": {"operation": "*", "version": 1},
            "created_at": iso(now),
            "deadline": iso(now + timedelta(seconds=body.get("timeout_seconds") or 300)),
            "timeout_action": "approve",
            "decision": None,
            "poll_after_ms": self.poll_after_ms,
        }
        if not critical:
            self._decide(resource, "approved", "no rule fired", None, "policy")
        elif body["operation"] in self.auto_decide:
            outcome, reason = self.auto_decide[body["operation"]]
            self._decide(resource, outcome, reason, "alice", "operator")
        self.requests[resource["id"]] = resource
        self.order.append(resource["id"])
        if key:
            self.keys[key] = (resource["id"], body)
        self._hold(resource["id"], wait)
        return 201, resource

    def _cancel(self, request_id: str) -> tuple[int, Any]:
        resource = self.requests.get(request_id)
        if resource is None:
            return error(404, "not_found")
        if self.decide_before_cancel and resource["status"] == "pending":
            self._decide(resource, self.decide_before_cancel, "just in time", "alice", "operator")
        if resource["status"] != "pending":
            return error(409, "already_decided", f"request is {resource['status']}")
        self._decide(resource, "cancelled", "", None, "agent")
        self.lock.notify_all()
        return 200, resource

    def _list(self, query: dict[str, str]) -> tuple[int, Any]:
        rows = [self.requests[i] for i in reversed(self.order)]
        rows = [r for r in rows if query.get("status") in (None, r["status"])]
        rows = [r for r in rows if query.get("operation") in (None, r["operation"])]
        limit, offset = int(query.get("limit", 50)), int(query.get("cursor", 0))
        more = offset + limit < len(rows)
        return 200, {"results": rows[offset:offset + limit],
                     "next_cursor": str(offset + limit) if more else None}

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        call = Call(method, url.path, query, headers, body, time.monotonic())
        with self.lock:
            self.calls.append(call)
            fault = next((f for f in self.faults
                          if f.method == method and f.path == url.path and f.times > 0), None)
            if fault is not None:
                fault.times -= 1
            if fault is not None and not fault.cut:
                status, payload = fault.status or 503, fault.body
                if payload is None:
                    payload = error(status, "unavailable" if status == 503
                                    else "rate_limited" if status == 429
                                    else "validation_error")[1]
                extra = fault.headers
            elif raw and body is None:
                (status, payload), extra = error(400, "malformed_json"), {}
            else:
                # The lock is released while a long-poll holds (Condition.wait).
                (status, payload), extra = self.route(method, url.path, query, body, headers), {}
        if fault is not None and fault.cut:
            # Handled, but the answer never leaves: the client sees the connection drop.
            handler.close_connection = True
            return
        call.status = status
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.fake.handle(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.server.fake.handle(self, "POST")  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


# Short backoff for quick retries; one TLS context for all clients, as building one per
# client (loading the CA bundle) would be most of a test's setup time.
FAST = {"backoff": 0.01, "max_backoff": 0.05, "http_timeout": 5.0,
        "verify": ssl.create_default_context()}


@pytest.fixture
def fake() -> Iterator[FakeOversight]:
    server = FakeOversight()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_client(fake: FakeOversight) -> Iterator[Callable[..., Client]]:
    """``make_client(url=None, **options)``: a Client for the fake (or ``url``), fast backoff."""
    made: list[Client] = []

    def make(url: str | None = None, **options: Any) -> Client:
        made.append(Client(url or fake.url, fake.api_key, **{**FAST, **options}))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


@pytest_asyncio.fixture
async def make_async_client(fake: FakeOversight):
    """The asyncio twin of ``make_client``."""
    made: list[AsyncClient] = []

    def make(url: str | None = None, **options: Any) -> AsyncClient:
        made.append(AsyncClient(url or fake.url, fake.api_key, **{**FAST, **options}))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


@pytest_asyncio.fixture
async def async_client(make_async_client) -> AsyncClient:
    return make_async_client()


@pytest.fixture
def dead_url() -> str:
    """An address where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def no_psutil(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """psutil made unimportable, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "psutil", None)
    psutil_module.cache_clear()
    yield
    psutil_module.cache_clear()


@pytest.fixture
def paused_gc() -> Iterator[None]:
    """Automatic collection off, so cyclic garbage waits for the test to look at it."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


@pytest.fixture
def reset_default_client() -> Iterator[None]:
    set_default_client(None)
    yield
    set_default_client(None)
