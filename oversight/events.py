"""Live events, sent only after the transaction that caused them commits.

Two kinds of listener get them through the channel layer: browsers on
``/ws/feed/`` (group ``feed``) and agents long-polling one request (group
``request.<id>``). A rolled-back change sends nothing.

Sending never holds up the request or task that caused it: events go onto a
queue that one background thread per process drains in order, on an event loop
of its own, into the channel layer (a plain queue: handing an event over costs a
lock, not a wake-up of another thread's event loop). A push is a notification, not the record —
the database is — so a browser that missed one gets the truth from its next
snapshot, and a long-polling agent re-reads the request when its wait ends.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import queue
import threading

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

FEED_GROUP = "feed"
# Routine approvals by the policy: the bulk of the traffic, and never in an operator's
# queue. Sockets that ask for them (the contract's default) join this group too; the
# site's own pages open the feed with `?routine=0` and never receive them.
ROUTINE_GROUP = "feed.routine"


def request_group(request_id) -> str:
    return f"request.{request_id}"


async def forget_channel(layer, channel: str) -> None:
    """Let the channel layer drop a channel made with `new_channel()` that is no longer read.

    The pub/sub layer keeps a channel (and its Redis subscription) until a `receive` on
    it is cancelled: a receive that got its message leaves it behind. So start one
    more receive and cancel it once it waits; repeat if a message was still queued.
    Call it only for a channel whose last receive was not cancelled (a cancelled one is
    already released, and a new receive would subscribe it again).
    """
    for _ in range(10):
        task = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)  # let it reach its wait
        if task.done():
            continue  # it took a queued message; the channel is still there
        task.cancel()
        try:
            await task
        except BaseException:  # noqa: S110 — CancelledError is the expected end
            pass
        return


def send_event_on_commit(event_type: str, body: dict, *, groups: tuple[str, ...] = (FEED_GROUP,)) -> None:
    """Send `{"type": event_type, **body}` to `groups` once the current transaction commits."""
    message = feed_message(event_type, body)
    transaction.on_commit(lambda: _send(groups, message))


def send_event_now(event_type: str, body: dict, *, groups: tuple[str, ...] = (FEED_GROUP,)) -> None:
    """For events that follow no database write (e.g. a pressure sample already stored)."""
    _send(groups, feed_message(event_type, body))


def feed_message(event_type: str, body: dict) -> dict:
    """The channel-layer message: the event already encoded as the frame's text, once,
    rather than once per socket it fans out to."""
    text = json.dumps({"type": event_type, **body}, separators=(",", ":"))
    return {"type": "feed.event", "event_type": event_type, "text": text}


def _send(groups: tuple[str, ...], message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        # One process, no Redis (a shell, a command): the in-memory layer's queues
        # belong to the caller's loop, so deliver in line.
        try:
            async_to_sync(_group_send_all)(layer, groups, message)
        except Exception:
            log.exception("Could not send %s", message["event_type"])
        return
    _sender().put(layer, groups, message)


async def _group_send_all(layer, groups, message) -> None:
    for group in groups:
        await layer.group_send(group, message)


class _Sender:
    """A daemon thread that sends queued events one after another, in order.

    Callers hand events over through a plain thread-safe queue: putting one only
    releases a lock (waking an event loop from another thread would cost a write to
    its self-pipe on every submission). The thread takes whatever has queued up,
    sends it on an event loop of its own, and repeats.
    """

    def __init__(self):
        self.items: queue.SimpleQueue = queue.SimpleQueue()
        self.progress = threading.Condition()
        self.queued = 0
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="oversight-events", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        while True:
            batch = [self.items.get()]
            while True:
                try:
                    batch.append(self.items.get_nowait())
                except queue.Empty:
                    break
            loop.run_until_complete(self._send_batch(batch))
            with self.progress:
                self.sent += len(batch)
                self.progress.notify_all()

    async def _send_batch(self, batch: list) -> None:
        for layer, groups, message in batch:
            try:
                await _group_send_all(layer, groups, message)
            except Exception:  # a live push must never undo or fail a committed change
                log.exception("Could not send %s to %s", message["event_type"], groups)

    def put(self, layer, groups, message) -> None:
        with self.progress:
            self.queued += 1
        self.items.put((layer, groups, message))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is sent (tests, and at exit)."""
        if not self.thread.is_alive():
            return False
        with self.progress:
            target = self.queued
            return self.progress.wait_for(lambda: self.sent >= target, timeout)


_state: dict = {"sender": None, "pid": None}
_lock = threading.Lock()


def _sender() -> _Sender:
    # One per process: a Celery pool process forked after the parent made one
    # gets its own (threads do not survive fork).
    with _lock:
        if _state["sender"] is None or _state["pid"] != os.getpid():
            _state["sender"] = _Sender()
            _state["pid"] = os.getpid()
        return _state["sender"]


def flush_events(timeout: float = 5.0) -> bool:
    """Block until every event queued by this process so far has been handed to the channel layer."""
    sender = _state["sender"]
    if sender is None or _state["pid"] != os.getpid():
        return True
    return sender.flush(timeout)


atexit.register(flush_events, 2.0)
