"""GET /healthz: the database, the channel layer and the broker, each with a short timeout."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from oversight.events import forget_channel

log = logging.getLogger(__name__)
TIMEOUT = 2.0


def _database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


async def _channel_layer() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "health.ping"})
    await layer.receive(channel)
    # Only a receive that got its message gets here; a cancelled one (the check timing
    # out) has already released the channel.
    await forget_channel(layer, channel)


def _broker() -> None:
    if not settings.REDIS_URL:
        return  # tasks run in-process: there is no broker to be down
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    try:
        client.ping()
    finally:
        client.close()


async def _check(name: str, check) -> tuple[str, str]:
    try:
        await asyncio.wait_for(check(), timeout=TIMEOUT)
        return name, "ok"
    except Exception as exc:
        log.warning("Health check of %s failed: %s", name, exc)
        return name, "down"


async def healthz(request):
    results = dict(
        await asyncio.gather(
            _check("database", sync_to_async(_database, thread_sensitive=False)),
            _check("channel_layer", _channel_layer),
            _check("broker", sync_to_async(_broker, thread_sensitive=False)),
        )
    )
    healthy = all(v == "ok" for v in results.values())
    body = {"status": "ok" if healthy else "down", **results}
    return JsonResponse(body, status=200 if healthy else 503)
