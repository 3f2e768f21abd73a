"""Standing grants on the live feed: in the snapshot, and pushed as they are made and revoked."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from oversight import actions
from oversight.events import flush_events
from oversight.models import Status
from tests.oversight.test_feed import next_event, opened

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def grant_one(agent):
    actions.do_change_policy("*", {"max_standing_seconds": 600}, by="mia")
    submission = actions.Submission(operation="delegate", summary="s", payload={}, metrics={"memory_pressure": 95.0})
    req = actions.do_submit(agent.agent, submission)[0]
    actions.do_decide(req.id, outcome=Status.APPROVED, source="operator", by="olivia",
                      grant=actions.GrantAsked(seconds=300, uses=3))
    flush_events()
    return req.grants_made.get()


async def test_grants_are_pushed_when_made_and_revoked(operator, agent):
    feed, snapshot = await opened(operator)
    assert set(snapshot) == {"type", "pending", "alerts"}  # the contract's snapshot, unchanged
    grant = await database_sync_to_async(grant_one)(agent)
    created = (await next_event(feed, "grant.created"))["grant"]
    assert (created["id"], created["by"], created["uses_left"], created["revoked_at"]) == (grant.id, "olivia", 3, None)
    await database_sync_to_async(actions.do_revoke_grant)(grant.id, by="oscar")
    await database_sync_to_async(flush_events)()
    revoked = (await next_event(feed, "grant.revoked"))["grant"]
    assert revoked["id"] == grant.id and revoked["revoked_by"] == "oscar"
    await feed.disconnect()

