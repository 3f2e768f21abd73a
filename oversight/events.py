"""Live events, sent only after the transaction that caused them commits.

Two kinds of listener get them through the channel layer: browsers on
``/ws/feed/`` (group ``feed``) and agents long-polling one request (group
``request.<id>``). A rolled-back change sends nothing.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

FEED_GROUP = "feed"


def request_group(request_id) -> str:
    return f"request.{request_id}"


def send_event_on_commit(event_type: str, body: dict, *, groups: tuple[str, ...] = (FEED_GROUP,)) -> None:
    """Send `{"type": event_type, **body}` to `groups` once the current transaction commits."""
    message = {"type": "feed.event", "event": {"type": event_type, **body}}
    transaction.on_commit(lambda: _send(groups, message))


def send_event_now(event_type: str, body: dict, *, groups: tuple[str, ...] = (FEED_GROUP,)) -> None:
    """For events that follow no database write (e.g. a pressure sample already stored)."""
    _send(groups, {"type": "feed.event", "event": {"type": event_type, **body}})


def _send(groups: tuple[str, ...], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_group_send_all)(layer, groups, message)
    except Exception:  # a live push must never undo or fail a committed change
        log.exception("Could not send %s to %s", message["event"]["type"], groups)


async def _group_send_all(layer, groups, message) -> None:
    for group in groups:
        await layer.group_send(group, message)
