"""A feed socket closes within 5 s once its person signs out, is deactivated or loses the role."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.test import Client

from oversight.roles import OPERATORS
from tests.oversight.test_feed import open_feed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def signed_in(user) -> tuple[Client, str]:
    browser = Client()
    browser.force_login(user)
    return browser, f"sessionid={browser.cookies['sessionid'].value}"


async def feed_of(user):
    browser, cookie = await database_sync_to_async(signed_in)(user)
    feed, connected = await open_feed(cookie)
    assert connected
    return browser, feed


async def closed_with(feed, within: float) -> int | None:
    """The close code the server sends within `within` seconds (other messages skipped)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while (left := end - loop.time()) > 0:
        # receive_nothing, not receive_output: the latter's timeout would cancel the app.
        if await feed.receive_nothing(timeout=left, interval=0.05):
            return None
        message = await feed.receive_output(timeout=1)
        if message["type"] == "websocket.close":
            return message.get("code")
    return None


async def test_it_closes_with_4401_when_the_person_signs_out(operator):
    browser, feed = await feed_of(operator)
    assert await closed_with(feed, 2.5) is None  # nothing changed: the socket stays
    await database_sync_to_async(browser.post)("/logout/")
    assert await closed_with(feed, 5) == 4401


async def test_it_closes_with_4401_when_the_person_is_deactivated(operator):
    _, feed = await feed_of(operator)
    operator.is_active = False
    await database_sync_to_async(operator.save)()
    assert await closed_with(feed, 5) == 4401


async def test_it_closes_with_4403_when_the_person_loses_the_role(operator):
    _, feed = await feed_of(operator)
    group = await database_sync_to_async(Group.objects.get)(name=OPERATORS)
    await database_sync_to_async(operator.groups.remove)(group)
    assert await closed_with(feed, 5) == 4403


async def test_it_closes_with_4401_when_the_password_changes(operator):
    _, feed = await feed_of(operator)
    operator.set_password("a new long passphrase")
    await database_sync_to_async(operator.save)()
    assert await closed_with(feed, 5) == 4401


async def test_it_keeps_a_manager_who_signs_out_elsewhere_only_if_the_session_stays(manager):
    """Another session of the same person signing out leaves this socket open."""
    _, feed = await feed_of(manager)
    other, _ = await database_sync_to_async(signed_in)(manager)
    await database_sync_to_async(other.post)("/logout/")
    assert await closed_with(feed, 3) is None
