"""Long-polls and health checks release their channel-layer channels (no subscription leak)."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from oversight import actions
from oversight.api.views import _wait_for_decision
from oversight.health import _channel_layer
from oversight.models import Source, Status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _held_channels() -> set:
    """The channels this process's pub/sub layer still holds for this event loop."""
    return set(get_channel_layer()._get_layer().channels)


def _critical(agent):
    req, _ = actions.do_submit(agent.agent, actions.Submission("delegate", "s", {}, {"delegation_depth": 5}))
    return req


async def test_a_long_poll_woken_by_a_decision_releases_its_channel(agent):
    req = await sync_to_async(_critical)(agent)
    before = _held_channels()
    waiting = asyncio.create_task(_wait_for_decision(str(req.id), req.deadline, 10))
    await asyncio.sleep(0.3)
    await sync_to_async(actions.do_decide)(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
    resource = await asyncio.wait_for(waiting, 10)
    assert resource["status"] == "approved"
    assert _held_channels() == before


async def test_a_long_poll_that_runs_out_releases_its_channel(agent):
    req = await sync_to_async(_critical)(agent)
    before = _held_channels()
    resource = await _wait_for_decision(str(req.id), req.deadline, 1)
    assert resource["status"] == "pending"
    assert _held_channels() == before


async def test_health_checks_release_their_channels(db):
    await _channel_layer()  # the layer for this loop exists from here on
    before = _held_channels()
    for _ in range(5):
        await _channel_layer()
    assert _held_channels() == before


async def test_a_long_poll_waits_by_the_databases_clock_not_this_nodes(agent):
    """A node whose clock runs an hour ahead still holds the wait: the deadline (five
    minutes off by the database's clock) has not passed, so the operator's decision
    made while it waits is the answer, not an early `pending`."""
    import time_machine
    from django.utils import timezone

    req = await sync_to_async(_critical)(agent)
    with time_machine.travel(timezone.now() + timedelta(hours=1), tick=True):
        waiting = asyncio.create_task(_wait_for_decision(str(req.id), req.deadline, 10))
        await asyncio.sleep(0.5)
        await sync_to_async(actions.do_decide)(req.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
        resource = await asyncio.wait_for(waiting, 10)
    assert (resource["status"], resource["decision"]["source"]) == ("approved", "operator")
