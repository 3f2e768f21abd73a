"""The live feed, /ws/feed/: a snapshot on connect, then events. Push-only."""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings

from oversight.events import FEED_GROUP, ROUTINE_GROUP
from oversight.roles import MANAGERS, OPERATORS, has_role


class SameOriginValidator:
    """Refuse a websocket whose Origin is not this site.

    The Origin must name the host the browser connected to (the Host header), or
    one of CSRF_TRUSTED_ORIGINS; a socket with no Origin (not a browser) is refused
    too, since the feed is only for people's browsers.
    """

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin1")
        host = headers.get(b"host", b"").decode("latin1")
        if not _origin_allowed(origin, host):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)


def _origin_allowed(origin: str, host: str) -> bool:
    if not origin or origin == "null":
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


class FeedConsumer(AsyncJsonWebsocketConsumer):
    """One browser's feed.

    Events are not written to the socket by the handler that receives them from the
    channel layer: they wait in a bounded backlog that a writer task drains, so a slow
    browser never holds up the layer (which would drop its messages unseen). When the
    backlog overflows it is thrown away and the browser gets a fresh snapshot instead:
    never silent loss, at worst one larger message.
    """

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(has_role)(user, OPERATORS, MANAGERS):
            await self.close(code=4403)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        wants_routine = query.get("routine", ["1"])[-1] != "0"
        self.feed_groups = (FEED_GROUP, ROUTINE_GROUP) if wants_routine else (FEED_GROUP,)
        for group in self.feed_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.backlog: deque[str] = deque()
        self.resync = False
        self.wake = asyncio.Event()
        await self.accept()
        # Joined first, snapshot second: an event between the two may arrive twice,
        # never not at all. Browsers apply events by request id, so twice is harmless.
        await self.send_json(await database_sync_to_async(snapshot)())
        self.writer = asyncio.ensure_future(self._write())

    async def disconnect(self, code):
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.cancel()
        for group in getattr(self, "feed_groups", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The socket only pushes: whatever a browser sends is ignored."""

    async def feed_event(self, message):
        if self.resync:
            return  # the snapshot on its way is read after this event was committed
        if len(self.backlog) >= settings.OVERSIGHT_FEED_SOCKET_BACKLOG:
            self.backlog.clear()
            self.resync = True
        else:
            self.backlog.append(message["text"])
        self.wake.set()

    async def _write(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.resync or self.backlog:
                if self.resync:
                    # Cleared before the read: whatever arrives during it is queued
                    # behind the snapshot (maybe twice, never lost).
                    self.resync = False
                    self.backlog.clear()
                    await self.send_json(await database_sync_to_async(snapshot)())
                else:
                    await self.send(text_data=self.backlog.popleft())


def snapshot() -> dict:
    from monitoring.hooks import firing_alerts
    from oversight.models import OversightRequest, Status
    from oversight.serializers import request_dict

    pending = (
        OversightRequest.objects.select_related("agent")
        .filter(status=Status.PENDING, critical=True)
        .order_by("deadline")
    )
    return {"type": "snapshot", "pending": [request_dict(r) for r in pending], "alerts": firing_alerts()}
