"""GET /healthz: the database, the channel layer and the broker, each with a short timeout."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

from oversight.events import forget_channel

log = logging.getLogger(__name__)
TIMEOUT = 2.0


CLOCK_SKEW_SECONDS = 2.0


def _database() -> str:
    """Checks the database and compares this node's clock with the database's: "ok",
    or "skewed" when they are more than 2 s apart (deadlines are the database's)."""
    try:
        with connection.cursor() as cursor:
            before = timezone.now()
            if connection.vendor == "sqlite":
                cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
                text = cursor.fetchone()[0]
                database_now = datetime.fromisoformat(text).replace(tzinfo=UTC)
            else:
                cursor.execute("SELECT clock_timestamp()")
                database_now = cursor.fetchone()[0]
            after = timezone.now()
    finally:
        connection.close()
    here = before + (after - before) / 2
    return "skewed" if abs((here - database_now).total_seconds()) > CLOCK_SKEW_SECONDS else "ok"


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
    clock: dict[str, str] = {}

    def database():
        clock["clock"] = _database()

    results = dict(
        await asyncio.gather(
            _check("database", sync_to_async(database, thread_sensitive=False)),
            _check("channel_layer", _channel_layer),
            _check("broker", sync_to_async(_broker, thread_sensitive=False)),
        )
    )
    healthy = all(v == "ok" for v in results.values())
    # A skewed clock is reported, not a failure: the node still serves.
    body = {"status": "ok" if healthy else "down", **results, **clock}
    return JsonResponse(body, status=200 if healthy else 503)
