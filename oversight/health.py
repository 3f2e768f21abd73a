"""GET /healthz: the database, the channel layer and the broker, each with a short timeout.

Answers within TIMEOUT whatever is down, from results cached for at most CACHE_SECONDS
(a probe storm costs one round of checks a second). The blocking checks run on a small
pool of their own: a check that overruns is left to finish in its thread, never awaited
(awaiting it would make /healthz as slow as the dead dependency), and the next round
reuses it rather than starting another. Each check has its own thread, so a hung
database check cannot make the broker look down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from oversight.events import forget_channel

log = logging.getLogger(__name__)
# Each check's limit: below the 2 s promised for the whole answer, leaving room for the
# request itself on a busy machine.
TIMEOUT = 1.5
CACHE_SECONDS = 1.0

_checks_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="healthz")
_running: dict[str, Future] = {}
_running_lock = threading.Lock()
_cached: tuple[float, dict] | None = None


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


def _in_own_thread(name: str, check) -> Future:
    """The running check of this name, or a new one: never two at once."""
    with _running_lock:
        future = _running.get(name)
        if future is None or future.done():
            future = _checks_pool.submit(check)
            _running[name] = future
        return future


async def _blocking_check(name: str, check) -> tuple[str, str]:
    future = asyncio.wrap_future(_in_own_thread(name, check))
    # asyncio.wait, not wait_for: on a timeout it leaves the thread alone instead of
    # waiting for it to notice a cancellation it cannot receive.
    done, _ = await asyncio.wait({future}, timeout=TIMEOUT)
    if not done:
        log.warning("Health check of %s took over %.1f s", name, TIMEOUT)
        return name, "down"
    return _outcome(name, future)


async def _async_check(name: str, check) -> tuple[str, str]:
    task = asyncio.ensure_future(check())
    done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
    if not done:
        task.cancel()
        log.warning("Health check of %s took over %.1f s", name, TIMEOUT)
        return name, "down"
    return _outcome(name, task)


def _outcome(name: str, future) -> tuple[str, str]:
    error = future.exception()
    if error is not None:
        log.warning("Health check of %s failed: %s", name, error)
        return name, "down"
    return name, "ok"


async def check_all() -> dict:
    global _cached
    now = time.monotonic()
    if _cached is not None and now - _cached[0] < CACHE_SECONDS:
        return _cached[1]
    results = dict(
        await asyncio.gather(
            _blocking_check("database", _database),
            _async_check("channel_layer", _channel_layer),
            _blocking_check("broker", _broker),
        )
    )
    _cached = (time.monotonic(), results)
    return results


def forget_cached() -> None:
    """Tests that change a dependency's state read it fresh."""
    global _cached
    _cached = None


async def healthz(request):
    results = await check_all()
    healthy = all(v == "ok" for v in results.values())
    body = {"status": "ok" if healthy else "down", **results}
    return JsonResponse(body, status=200 if healthy else 503)
