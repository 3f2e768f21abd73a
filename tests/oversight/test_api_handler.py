"""The agent API's ASGI handler (oversight.asgi.AgentAPIHandler): Django's handling
without its per-request thread-sensitive hops, everything else kept."""

import asyncio
import json
import threading

import pytest
from django.core import signals

from oversight.models import OversightRequest

pytestmark = pytest.mark.django_db(transaction=True)


def _scope(path: str, method: str = "GET", body: bytes = b"", headers: dict | None = None) -> dict:
    raw = [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": raw, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}


async def _call(app, scope: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
    received = False
    start: dict = {}
    chunks: list[bytes] = []

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, b"".join(chunks)


def _request_signals_threads(app, scope: dict, body: bytes = b"") -> tuple[int, bytes, set, threading.Thread]:
    seen: set[threading.Thread] = set()

    def note(**kwargs):
        seen.add(threading.current_thread())

    async def run():
        status, _, content = await _call(app, scope, body)
        return status, content, threading.current_thread()

    signals.request_started.connect(note, weak=False)
    signals.request_finished.connect(note, weak=False)
    try:
        status, content, loop_thread = asyncio.run(run())
    finally:
        signals.request_started.disconnect(note)
        signals.request_finished.disconnect(note)
    return status, content, seen, loop_thread


def test_an_api_request_makes_no_hop_for_djangos_request_signals(agent):
    from oversight.asgi import application

    body = json.dumps({"operation": "scrape", "summary": "s", "metrics": {"delegation_depth": 1}}).encode()
    scope = _scope("/api/v1/requests", "POST", body, {"content-type": "application/json", **agent.headers})
    status, content, threads, loop_thread = _request_signals_threads(application, scope, body)
    assert status == 201, content
    # Django's own handler sends both signals from a thread-sensitive worker thread.
    assert threads == {loop_thread}
    assert OversightRequest.objects.filter(id=json.loads(content)["id"]).exists()  # committed before the 201


def test_pages_keep_djangos_handler():
    from oversight.asgi import application

    status, _, threads, loop_thread = _request_signals_threads(application, _scope("/login/"))
    assert status == 200
    assert threads and loop_thread not in threads


def test_the_api_handler_keeps_error_shapes_and_guards(agent):
    from oversight.asgi import application

    async def run():
        unknown = await _call(application, _scope("/api/v1/nothing-here"))
        wrong_method = await _call(application, _scope("/api/v1/keys", "DELETE"))
        body = b'{"operation": "scrape", "summary": "a\\u0000b"}'
        nul = await _call(application, _scope("/api/v1/requests", "POST", body,
                                              {"content-type": "application/json", **agent.headers}), body)
        return unknown, wrong_method, nul

    unknown, wrong_method, nul = asyncio.run(run())
    assert unknown[0] == 404 and json.loads(unknown[2])["error"]["code"] == "not_found"
    assert wrong_method[0] == 405 and json.loads(wrong_method[2])["error"]["code"] == "method_not_allowed"
    assert nul[0] == 400 and json.loads(nul[2])["error"]["code"] == "validation_error", nul
