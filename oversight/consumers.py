"""The live feed, /ws/feed/: a snapshot on connect, then events. Push-only."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings

from oversight.events import FEED_GROUP, ROUTINE_GROUP
from oversight.roles import MANAGERS, OPERATORS, has_role

log = logging.getLogger(__name__)
FEED_REJOIN_SECONDS = 5.0  # how often a socket renews its group memberships


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
        self.session_key = await database_sync_to_async(_session_key)(self.scope)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        wants_routine = query.get("routine", ["1"])[-1] != "0"
        self.feed_groups = (FEED_GROUP, ROUTINE_GROUP) if wants_routine else (FEED_GROUP,)
        for group in self.feed_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.backlog: deque[str] = deque()
        self.resync = False
        self.wake = asyncio.Event()
        await self.accept()
        self.watch = asyncio.create_task(self.watch_access(user.pk))
        # Joined first, snapshot second: an event between the two may arrive twice,
        # never not at all. Browsers apply events by request id, so twice is harmless.
        await self.send_json(await database_sync_to_async(snapshot)())
        self.writer = asyncio.ensure_future(self._write())
        self.keeper = asyncio.ensure_future(self._keep_joined())

    async def _keep_joined(self) -> None:
        """Redis can go away and come back empty (it persists nothing): this socket's
        group memberships are then gone and events stop without a word. Join again every
        FEED_REJOIN_SECONDS (adding a member twice changes nothing); the first success
        after a failure also sends a fresh snapshot, so the browser catches up on what
        happened meanwhile."""
        lost = False
        while True:
            await asyncio.sleep(FEED_REJOIN_SECONDS)
            try:
                for group in self.feed_groups:
                    await asyncio.wait_for(self.channel_layer.group_add(group, self.channel_name), FEED_REJOIN_SECONDS)
                # A round trip through the layer: joining a group the pub/sub layer thinks
                # it is in already touches no server, so it cannot tell that Redis was away.
                await asyncio.wait_for(
                    self.channel_layer.send(self.channel_name, {"type": "feed.alive"}), FEED_REJOIN_SECONDS
                )
            except Exception:
                if not lost:
                    log.warning("The feed lost the channel layer; joining again every %s s", FEED_REJOIN_SECONDS)
                lost = True
                continue
            if lost:
                lost = False
                self.backlog.clear()
                self.resync = True
                self.wake.set()

    async def watch_access(self, user_id: int) -> None:
        """Close the socket once its person signs out, is deactivated or loses the role.

        Re-checked from the database every OVERSIGHT_FEED_RECHECK_SECONDS: sign-outs
        from another tab, the admin's deactivation and role changes on another node
        all show there, and nothing has to remember to notify the sockets.
        """
        while True:
            await asyncio.sleep(settings.OVERSIGHT_FEED_RECHECK_SECONDS)
            try:
                code = await database_sync_to_async(access_lost)(user_id, self.session_key)
            except Exception:  # a database hiccup: keep the socket, look again next time
                log.warning("The feed could not re-check a socket's access.", exc_info=True)
                continue
            if code:
                await self.close(code=code)
                return

    async def disconnect(self, code):
        for task in (getattr(self, "watch", None), getattr(self, "writer", None), getattr(self, "keeper", None)):
            if task is not None:
                task.cancel()
        for group in getattr(self, "feed_groups", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The socket only pushes: whatever a browser sends is ignored."""

    async def feed_alive(self, message):
        """The keeper's own round trip; nothing to do."""

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


def _session_key(scope) -> str | None:
    session = scope.get("session")
    return getattr(session, "session_key", None)


def access_lost(user_id: int, session_key: str | None) -> int | None:
    """4401 when the session no longer signs this user in (signed out, deactivated, deleted,
    password changed), 4403 when the user lost the role; None while access stands."""
    from importlib import import_module

    from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.utils.crypto import constant_time_compare

    if not session_key:
        return 4401
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_id):
        return 4401
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.is_active:
        return 4401
    if not constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()):
        return 4401
    return None if has_role(user, OPERATORS, MANAGERS) else 4403


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
