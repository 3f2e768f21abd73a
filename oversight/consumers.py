"""The live feed, /ws/feed/: a snapshot on connect, then events. Push-only."""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings

from oversight.events import FEED_GROUP
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
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(has_role)(user, OPERATORS, MANAGERS):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(FEED_GROUP, self.channel_name)
        await self.accept()
        # Joined first, snapshot second: an event between the two may arrive twice,
        # never not at all. Browsers apply events by request id, so twice is harmless.
        await self.send_json(await database_sync_to_async(snapshot)())

    async def disconnect(self, code):
        await self.channel_layer.group_discard(FEED_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The socket only pushes: whatever a browser sends is ignored."""

    async def feed_event(self, message):
        await self.send(text_data=message["text"])


def snapshot() -> dict:
    from monitoring.hooks import firing_alerts
    from oversight.actions import expire_overdue
    from oversight.models import OversightRequest, Status
    from oversight.serializers import request_dict

    expire_overdue()
    pending = (
        OversightRequest.objects.select_related("agent")
        .filter(status=Status.PENDING, critical=True)
        .order_by("deadline")
    )
    return {"type": "snapshot", "pending": [request_dict(r) for r in pending], "alerts": firing_alerts()}
