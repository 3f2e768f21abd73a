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
from datetime import UTC, datetime

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

from oversight.events import forget_channel

log = logging.getLogger(__name__)
# Each check's limit: below the 2 s promised for the whole answer, leaving room for the
# request itself on a busy machine.
TIMEOUT = 1.5
CACHE_SECONDS = 1.0

_checks_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="healthz")
_running: dict[str, Future] = {}
_running_lock = threading.Lock()
_cached: tuple[float, tuple[dict, dict]] | None = None


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


def _in_own_thread(name: str, check) -> Future:
    """The running check of this name, or a new one: never two at once."""
    with _running_lock:
        future = _running.get(name)
        if future is None or future.done():
            future = _checks_pool.submit(check)
            _running[name] = future
        return future


async def _blocking_check(name: str, check) -> tuple[str, str, object]:
    future = asyncio.wrap_future(_in_own_thread(name, check))
    # asyncio.wait, not wait_for: on a timeout it leaves the thread alone instead of
    # waiting for it to notice a cancellation it cannot receive.
    done, _ = await asyncio.wait({future}, timeout=TIMEOUT)
    if not done:
        log.warning("Health check of %s took over %.1f s", name, TIMEOUT)
        return name, "down", None
    return _outcome(name, future)


async def _async_check(name: str, check) -> tuple[str, str, object]:
    task = asyncio.ensure_future(check())
    done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
    if not done:
        task.cancel()
        log.warning("Health check of %s took over %.1f s", name, TIMEOUT)
        return name, "down", None
    return _outcome(name, task)


def _outcome(name: str, future) -> tuple[str, str, object]:
    error = future.exception()
    if error is not None:
        log.warning("Health check of %s failed: %s", name, error)
        return name, "down", None
    return name, "ok", future.result()


async def check_all() -> tuple[dict, dict]:
    """Each part's state, and the clock comparison the database check made (when it
    answered)."""
    global _cached
    now = time.monotonic()
    if _cached is not None and now - _cached[0] < CACHE_SECONDS:
        return _cached[1]
    checks = await asyncio.gather(
        _blocking_check("database", _database),
        _async_check("channel_layer", _channel_layer),
        _blocking_check("broker", _broker),
    )
    results = {name: state for name, state, _ in checks}
    _, database_state, database_clock = checks[0]
    clock = {"clock": database_clock} if database_state == "ok" else {}
    _cached = (time.monotonic(), (results, clock))
    return results, clock


def forget_cached() -> None:
    """Tests that change a dependency's state read it fresh."""
    global _cached
    _cached = None


async def healthz(request):
    results, clock = await check_all()
    healthy = all(v == "ok" for v in results.values())
    # A skewed clock is reported, not a failure: the node still serves.
    body = {"status": "ok" if healthy else "down", **results, **clock}
    return JsonResponse(body, status=200 if healthy else 503)
