"""Clearing the cache leaves the broker's queued tasks and the channel layer alone."""

import asyncio
import uuid

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache

from oversight.celery import app


@pytest.fixture
def broker():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


def test_it_clears_its_own_keys_and_leaves_a_queued_task_and_the_channel_layer(broker):
    queue = f"probe-{uuid.uuid4().hex}"  # a queue no worker consumes: the message stays queued
    group = f"probe{uuid.uuid4().hex}"

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            await sync_to_async(app.send_task)("oversight.ping", queue=queue)
            await sync_to_async(cache.set)("a-cached-thing", 1)
            assert broker.llen(queue) == 1

            await sync_to_async(cache.clear)()

            assert await sync_to_async(cache.get)("a-cached-thing") is None
            assert broker.llen(queue) == 1  # FLUSHDB would have dropped it
            await layer.group_send(group, {"type": "probe", "n": 1})
            return await asyncio.wait_for(layer.receive(channel), 5)
        finally:
            await layer.group_discard(group, channel)
            await layer.flush()

    try:
        assert async_to_sync(scenario)() == {"type": "probe", "n": 1}
    finally:
        broker.delete(queue)


def test_it_escapes_glob_characters_in_its_prefix():
    from oversight.cache import _glob_escape

    assert _glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


def test_every_request_context_shares_one_redis_connection_pool():
    """Under ASGI each request has its own cache object; they must not each open a
    connection to Redis. The shared client keeps REDIS_TIMEOUT's socket timeouts."""
    import contextvars

    from django.core.cache import caches

    def pool_in_a_fresh_context():
        def look():
            backend = caches["default"]
            backend.set("pool-probe", 1)
            return backend, backend._cache.get_client(write=True).connection_pool

        return contextvars.Context().run(look)

    first_cache, first_pool = pool_in_a_fresh_context()
    second_cache, second_pool = pool_in_a_fresh_context()

    assert first_cache is not second_cache  # one cache object per request context …
    assert first_pool is second_pool  # … but one pool for the process
    assert first_pool.connection_kwargs["socket_timeout"] == settings.REDIS_TIMEOUT
    assert first_pool.connection_kwargs["socket_connect_timeout"] == settings.REDIS_TIMEOUT


def test_the_rate_limit_counts_on_one_pipeline_per_thread_across_request_contexts():
    """Each request context has its own cache object; the rate limit's pipeline is made
    once per thread all the same (making one copies ~170 response callbacks), and it
    counts every request."""
    import contextvars

    from oversight.api import views

    key = f"rl:probe:{uuid.uuid4().hex}"

    def count_in_a_fresh_context():
        def count():
            return views._count_this_minute(key), views._pipelines.pipe

        return contextvars.Context().run(count)

    first, first_pipe = count_in_a_fresh_context()
    second, second_pipe = count_in_a_fresh_context()
    try:
        assert (first, second) == (1, 2)
        assert first_pipe is second_pipe
        assert len(first_pipe) == 0  # emptied by execute: nothing carried to the next request
    finally:
        cache.delete(key)
