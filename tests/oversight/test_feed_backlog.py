"""What each socket is sent: routine approvals only on request, and a slow socket is
resynchronised with a snapshot rather than silently dropping events."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async

from oversight.asgi import application
from tests.oversight.test_feed import Feed, next_event, request_events_within, session_cookie, submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


class FeedOn(Feed):
    """A browser's end of /ws/feed/ with a query string, through `app` (by default the real one)."""

    def __init__(self, headers: list, query: bytes, app):
        super().__init__(headers)
        self.scope["query_string"] = query
        ApplicationCommunicator.__init__(self, app, self.scope)


async def feed_with(user, query: bytes = b"", app=application) -> Feed:
    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", cookie.encode())]
    feed = FeedOn(headers, query, app)
    assert await feed.connect()
    assert (await feed.receive_json_from())["type"] == "snapshot"
    return feed


async def test_it_keeps_routine_approvals_off_the_pages_sockets(operator, agent):
    page = await feed_with(operator, b"routine=0")
    raw = await feed_with(operator)
    routine = await database_sync_to_async(submit)(agent, "routine", critical=False)
    assert (await next_event(raw, "request.decided"))["request"]["id"] == str(routine.id)
    assert await request_events_within(page) == []
    critical = await database_sync_to_async(submit)(agent, "needs a look")
    assert (await next_event(page, "request.created"))["request"]["id"] == str(critical.id)
    await page.disconnect()
    await raw.disconnect()


async def test_the_pages_open_the_feed_without_routine_approvals():
    from django.conf import settings

    script = (settings.BASE_DIR / "static" / "js" / "feed.js").read_text()
    assert '"/ws/feed/?routine=0"' in script


class StalledNetwork:
    """The server's side of a browser that stopped reading: every frame written to the
    socket waits until `release()` (as a full TCP window makes a real send wait)."""

    def __init__(self, app):
        self.app = app
        self.open = asyncio.Event()
        self.open.set()

    def stall(self):
        self.open.clear()

    def release(self):
        self.open.set()

    async def __call__(self, scope, receive, send):
        async def slow_send(message):
            if message["type"] == "websocket.send":
                await self.open.wait()
            await send(message)

        return await self.app(scope, receive, slow_send)


async def test_a_stalled_socket_gets_a_fresh_snapshot_instead_of_losing_events(operator, agent, settings):
    settings.OVERSIGHT_FEED_SOCKET_BACKLOG = 5
    network = StalledNetwork(application)
    feed = await feed_with(operator, b"routine=0", app=network)
    other = await feed_with(operator, b"routine=0")
    network.stall()
    made = [await database_sync_to_async(submit)(agent, f"critical {n}") for n in range(12)]
    # A socket that keeps up is not affected: it gets every event, in order.
    for req in made:
        assert (await next_event(other, "request.created"))["request"]["id"] == str(req.id)
    network.release()
    seen: set[str] = set()
    snapshots = 0
    while len(seen) < len(made):
        message = json.loads((await feed.receive_output(5))["text"])
        if message["type"] == "snapshot":
            snapshots += 1
            seen |= {r["id"] for r in message["pending"]}
        elif message["type"] == "request.created":
            seen.add(message["request"]["id"])
    assert snapshots == 1
    assert seen == {str(r.id) for r in made}
    await feed.disconnect()
    await other.disconnect()


async def test_a_socket_that_keeps_up_never_gets_a_second_snapshot(operator, agent, settings):
    settings.OVERSIGHT_FEED_SOCKET_BACKLOG = 5
    feed = await feed_with(operator, b"routine=0")
    for n in range(12):
        req = await database_sync_to_async(submit)(agent, f"critical {n}")
        assert (await next_event(feed, "request.created"))["request"]["id"] == str(req.id)
    assert await request_events_within(feed) == []
    await feed.disconnect()
