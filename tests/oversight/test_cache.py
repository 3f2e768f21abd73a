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
