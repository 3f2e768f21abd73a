"""The live feed, /ws/feed/: who may open it, the snapshot, and every event after commit."""

from __future__ import annotations

import json

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from django.db import transaction
from django.test import Client
from django.utils import timezone

from monitoring.hooks import firing_alerts
from monitoring.models import Alert
from oversight import actions
from oversight.asgi import application
from oversight.events import flush_events, send_event_now
from oversight.models import OversightRequest, Source, Status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

SITE = "http://testserver"
ALERT = {
    "id": 7, "host": "web-1", "process": "", "kind": "memory_pressure", "severity": "critical",
    "value": 93.2, "threshold": 90.0, "started_at": "2026-11-25T10:00:00.000Z", "resolved_at": None,
}


def alert(host: str, *, resolved: bool) -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        host=host, severity="critical", value=93.2, threshold=90.0, peak=95.0, started_at=now, raised_at=now,
        resolved_at=now if resolved else None,
    )


class Feed(ApplicationCommunicator):
    """A browser's end of /ws/feed/, driven in-process through the real ASGI stack.

    (channels.testing's communicator would pull in daphne, which we do not run.)
    """

    def __init__(self, headers: list):
        scope = {
            "type": "websocket", "path": "/ws/feed/", "raw_path": b"/ws/feed/", "query_string": b"",
            "headers": headers, "subprotocols": [], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }
        super().__init__(application, scope)

    async def connect(self, timeout: float = 5) -> bool:
        await self.send_input({"type": "websocket.connect"})
        return (await self.receive_output(timeout))["type"] == "websocket.accept"

    async def receive_json_from(self, timeout: float = 5) -> dict:
        message = await self.receive_output(timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send_input({"type": "websocket.receive", "text": text_data, "bytes": bytes_data})

    async def disconnect(self) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(1)


def session_cookie(user) -> str:
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}"


def submit(agent, summary="Delegate the scrape", *, critical=True, **fields) -> OversightRequest:
    metrics = {"memory_pressure": 95.0 if critical else 5.0}
    submission = actions.Submission(operation="delegate", summary=summary, payload={}, metrics=metrics, **fields)
    req = actions.do_submit(agent.agent, submission)[0]
    # Pushes leave through a background sender: let this one go out now, so a feed
    # opened next sees it in its snapshot and not as a late event.
    flush_events()
    return req


async def open_feed(cookie: str | None, origin: str | None = SITE, extra: list | None = None):
    headers = [(b"host", b"testserver")] + (extra or [])
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    feed = Feed(headers)
    return feed, await feed.connect()


async def opened(user):
    """A connected feed whose snapshot has been read; returns (feed, snapshot)."""
    feed, connected = await open_feed(await database_sync_to_async(session_cookie)(user))
    assert connected
    return feed, await feed.receive_json_from(timeout=5)


async def request_events_within(feed, seconds: float = 0.5) -> list[dict]:
    """Every request.* event that arrives within `seconds`. Other events are ignored: a
    live stack elsewhere in the session may be pushing memory samples to the feed."""
    import asyncio

    events = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        if await feed.receive_nothing(timeout=left):
            break
        event = await feed.receive_json_from(timeout=1)
        if event["type"].startswith("request."):
            events.append(event)
    return events


async def next_event(feed, event_type: str) -> dict:
    """The next event of `event_type`, skipping others (e.g. a monitoring sample)."""
    while True:
        event = await feed.receive_json_from(timeout=5)
        if event["type"] == event_type:
            return event


async def test_it_refuses_anonymous_people(db):
    _, connected = await open_feed(None)
    assert not connected


async def test_it_refuses_people_without_a_role(outsider):
    _, connected = await open_feed(await database_sync_to_async(session_cookie)(outsider))
    assert not connected


async def test_it_refuses_an_agent_key(agent):
    _, connected = await open_feed(None, extra=[(b"authorization", f"Bearer {agent.key}".encode())])
    assert not connected


async def test_it_refuses_other_origins(operator):
    cookie = await database_sync_to_async(session_cookie)(operator)
    for origin in ("http://evil.example", None, "null", "http://testserver.evil.example", "file://"):
        _, connected = await open_feed(cookie, origin=origin)
        assert not connected, origin


async def test_it_accepts_operators_and_managers(operator, manager):
    for person in (operator, manager):
        feed, snapshot = await opened(person)
        assert snapshot["type"] == "snapshot"
        await feed.disconnect()


async def test_it_sends_a_snapshot_of_critical_pending_requests_and_firing_alerts(operator, agent, short_timeouts):
    late = await database_sync_to_async(submit)(agent, "later")
    soon = await database_sync_to_async(submit)(agent, "sooner", timeout_seconds=30)
    await database_sync_to_async(submit)(agent, "harmless", critical=False)
    decided = await database_sync_to_async(submit)(agent, "decided")
    await database_sync_to_async(actions.do_decide)(decided.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="x")
    firing = await database_sync_to_async(alert)("web-1", resolved=False)
    await database_sync_to_async(alert)("web-2", resolved=True)
    feed, snapshot = await opened(operator)
    assert [r["id"] for r in snapshot["pending"]] == [str(soon.id), str(late.id)]
    assert snapshot["pending"][0]["summary"] == "sooner" and snapshot["pending"][0]["status"] == "pending"
    # Only the firing alert, in the same form as everywhere else.
    assert [(a["id"], a["host"], a["severity"]) for a in snapshot["alerts"]] == [(firing.id, "web-1", "critical")]
    assert snapshot["alerts"] == await database_sync_to_async(firing_alerts)()
    await feed.disconnect()


async def test_it_pushes_created_and_decided_requests(operator, agent):
    feed, _ = await opened(operator)
    req = await database_sync_to_async(submit)(agent, "fresh one")
    created = await next_event(feed, "request.created")
    assert created["request"]["id"] == str(req.id) and created["request"]["summary"] == "fresh one"
    await database_sync_to_async(actions.do_decide)(
        req.id, outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No"
    )
    decided = await next_event(feed, "request.decided")
    assert decided["request"]["decision"] == decided["request"]["decision"] | {"outcome": "rejected", "by": "olivia"}
    await feed.disconnect()


async def test_it_pushes_escalations(operator, agent):
    req = await database_sync_to_async(submit)(agent)
    feed, _ = await opened(operator)
    await database_sync_to_async(actions.handle_one_escalation)(req.id, now=timezone.now())
    escalated = await next_event(feed, "request.escalated")
    assert escalated["request"]["id"] == str(req.id) and escalated["request"]["escalated_at"]
    await feed.disconnect()


async def test_it_forwards_monitoring_events(operator):
    feed, _ = await opened(operator)
    sent = [
        ("pressure.sample", {"host": "web-1", "pressure": 42.1, "available_bytes": 123, "at": "2026-11-25T10:00:00.000Z"}),
        ("alert.raised", {"alert": ALERT}),
        ("alert.resolved", {"alert": ALERT | {"resolved_at": "2026-11-25T10:05:00.000Z"}}),
        ("leak.suspected", {"finding": {"host": "web-1", "process": "worker", "slope_bytes_per_hour": 1e6}}),
    ]
    for event_type, body in sent:
        await database_sync_to_async(send_event_now)(event_type, body)
        assert await next_event(feed, event_type) == {"type": event_type, **body}
    await feed.disconnect()


async def test_it_sends_nothing_for_a_rolled_back_decision(operator, agent):
    req = await database_sync_to_async(submit)(agent)
    feed, _ = await opened(operator)

    def decide_then_roll_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            actions.do_decide(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
            raise RuntimeError("the surrounding work failed")
        flush_events()  # anything queued would be on its way now

    await database_sync_to_async(decide_then_roll_back)()
    assert await request_events_within(feed) == []
    await database_sync_to_async(req.refresh_from_db)()
    assert req.status == Status.PENDING
    await feed.disconnect()


async def test_it_ignores_whatever_the_browser_sends(operator, agent):
    req = await database_sync_to_async(submit)(agent)
    feed, _ = await opened(operator)
    await feed.send_to(text_data=json.dumps({"type": "decide", "id": str(req.id), "outcome": "approve"}))
    await feed.send_to(text_data="not json at all")
    await feed.send_to(bytes_data=b"\x00\x01")
    assert await request_events_within(feed) == []
    await database_sync_to_async(req.refresh_from_db)()
    assert req.status == Status.PENDING
    # Still connected and still pushing.
    await database_sync_to_async(send_event_now)("pressure.sample", {"host": "h", "pressure": 1.0})
    assert (await next_event(feed, "pressure.sample"))["host"] == "h"
    await feed.disconnect()


# --- Several web processes ------------------------------------------------------------------


@pytest.mark.live
async def test_it_reaches_a_socket_on_another_web_process(operator, agent):
    """Two uvicorn processes on one Redis: an event committed in one reaches a browser on the other."""
    import asyncio

    import httpx
    import websockets

    from tests.conftest import start_stack

    first, second = await asyncio.gather(*(asyncio.to_thread(start_stack, worker=False, beat=False) for _ in "12"))
    try:
        cookie = await asyncio.to_thread(sign_in, first.url, operator.username)
        socket_url = first.url.replace("http://", "ws://") + "/ws/feed/"
        async with websockets.connect(socket_url, origin=first.url, additional_headers={"Cookie": cookie}) as browser:
            assert json.loads(await asyncio.wait_for(browser.recv(), 5))["type"] == "snapshot"
            async with httpx.AsyncClient(base_url=second.url, headers=agent.headers, timeout=10) as api:
                submitted = await api.post("/api/v1/requests", json={
                    "operation": "delegate", "summary": "via the second process", "metrics": {"memory_pressure": 97}})
                assert submitted.status_code == 201
                request_id = submitted.json()["id"]
                created = await _socket_event(browser, "request.created")
                assert created["request"]["id"] == request_id
                assert (await api.post(f"/api/v1/requests/{request_id}/cancel")).status_code == 200
                decided = await _socket_event(browser, "request.decided")
                assert decided["request"]["id"] == request_id and decided["request"]["status"] == "cancelled"
    finally:
        await asyncio.gather(asyncio.to_thread(first.stop), asyncio.to_thread(second.stop))


def sign_in(site: str, username: str) -> str:
    """Signs in through the login form of a live server (its sessions use its own secret key)."""
    import httpx

    with httpx.Client(base_url=site, timeout=10) as browser:
        token = browser.get("/login/").cookies["csrftoken"]
        answer = browser.post("/login/", data={"username": username, "password": "correct horse battery",
                                                "csrfmiddlewaretoken": token}, headers={"Referer": site + "/login/"})
        assert answer.status_code == 302, answer.text
        return f"sessionid={browser.cookies['sessionid']}"


async def _socket_event(browser, event_type: str) -> dict:
    import asyncio

    while True:
        event = json.loads(await asyncio.wait_for(browser.recv(), 5))
        if event["type"] == event_type:
            return event


async def test_routine_policy_approvals_can_be_kept_off_the_feed(operator, agent, settings):
    settings.OVERSIGHT_FEED_POLICY_DECISIONS = False
    feed, _ = await opened(operator)
    await database_sync_to_async(submit)(agent, "routine", critical=False)
    assert await request_events_within(feed) == []
    critical = await database_sync_to_async(submit)(agent, "needs a look")
    assert (await next_event(feed, "request.created"))["request"]["id"] == str(critical.id)
    await feed.disconnect()


async def test_a_routine_approval_by_the_policy_is_a_decided_event_by_default(operator, agent):
    feed, _ = await opened(operator)
    routine = await database_sync_to_async(submit)(agent, "routine", critical=False)
    event = await next_event(feed, "request.decided")
    assert event["request"]["id"] == str(routine.id)
    assert event["request"]["decision"]["source"] == "policy"
    await feed.disconnect()
