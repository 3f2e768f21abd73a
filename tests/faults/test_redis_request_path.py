"""§9.2, on the request path: with Redis stopped, a real server keeps taking
submissions, answering reads, applying timeouts and holding long-polls (watching the
database); when Redis is back, health says so without a restart."""

import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import Group, User

from oversight.models import OversightRequest, Status
from oversight.policy import ensure_default_policy
from oversight.roles import OPERATORS
from oversight.runner import Supervisor, free_port, start_redis
from tests.conftest import allow_short_timeouts, make_agent, start_stack

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CRITICAL = {"operation": "delegate", "summary": "s", "metrics": {"delegation_depth": 5}}


@pytest.fixture
def stack_with_own_redis():
    folder = Path(tempfile.mkdtemp(prefix="oversight-redis-fault-"))
    redis = Supervisor(prefix_logs=False)
    port = free_port()
    url = start_redis(redis, folder, port=port)
    stack = start_stack(worker=False, beat=False, extra_env={"REDIS_URL": url})
    try:
        yield stack, redis, folder, port
    finally:
        stack.stop()
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_request_path_works_from_the_database_while_redis_is_down(stack_with_own_redis):
    stack, redis, folder, port = stack_with_own_redis
    allow_short_timeouts()
    agent = make_agent("scraper-7")
    api = httpx.Client(base_url=stack.url, headers=agent.headers, timeout=30)
    User.objects.create_user("olivia", password="correct horse battery").groups.add(
        Group.objects.get_or_create(name=OPERATORS)[0])
    browser = httpx.Client(base_url=stack.url, timeout=30)
    token = browser.get("/login/").cookies["csrftoken"]
    signed_in = browser.post("/login/", data={"username": "olivia", "password": "correct horse battery",
                                              "csrfmiddlewaretoken": token}, headers={"Referer": stack.url + "/login/"})
    assert signed_in.status_code == 302

    redis.stop()  # Redis is gone; the web server is not told
    time.sleep(1.1)  # past the health cache
    health = httpx.get(stack.url + "/healthz", timeout=10)
    assert health.status_code == 503
    assert health.json() | {"status": None, "clock": None} == {
        "status": None, "clock": None, "database": "ok", "channel_layer": "down", "broker": "down"}

    # Submissions and reads.
    submitted = api.post("/api/v1/requests", json=CRITICAL)
    assert submitted.status_code == 201, stack.tail()
    request_id = submitted.json()["id"]
    assert api.get(f"/api/v1/requests/{request_id}").json()["status"] == "pending"
    assert [r["id"] for r in api.get("/api/v1/requests?status=pending").json()["results"]] == [request_id]

    # A long-poll holds its wait rather than answering at once...
    began = time.monotonic()
    held = api.get(f"/api/v1/requests/{request_id}?wait=3")
    assert held.json()["status"] == "pending"
    assert 2.9 <= time.monotonic() - began < 5

    # ...and sees a decision made meanwhile, from the database.
    answer = {}

    def wait():
        started = time.monotonic()
        answer["response"] = api.get(f"/api/v1/requests/{request_id}?wait=20")
        answer["took"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(1.5)
    # The operator's queue page and decision, through the real server.
    assert request_id in browser.get("/queue/").text
    decided = browser.post(
        f"/requests/{request_id}/decide", data={"outcome": "reject", "reason": "no"},
        headers={"X-CSRFToken": browser.cookies["csrftoken"], "Referer": stack.url + "/queue/",
                 "Accept": "application/json"},
    )
    assert decided.status_code == 200, decided.text
    waiter.join(30)
    assert answer["response"].json()["status"] == "rejected"
    assert 1.5 <= answer["took"] < 3.5

    # A timeout with no worker, no beat and no Redis: the deadline holds on the next read.
    short = api.post("/api/v1/requests", json=CRITICAL | {"payload": {"step": "short"}, "timeout_seconds": 1}).json()
    began = time.monotonic()
    decided = api.get(f"/api/v1/requests/{short['id']}?wait=10").json()
    assert decided["decision"]["source"] == "timeout", decided["decision"]
    assert decided["status"] == {"approve": "approved", "reject": "rejected"}[decided["timeout_action"]]
    assert time.monotonic() - began < 2.5

    # Redis back on the same port: health recovers without restarting the server.
    again = Supervisor(prefix_logs=False)
    try:
        start_redis(again, folder, port=port)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if httpx.get(stack.url + "/healthz", timeout=10).status_code == 200:
                break
            time.sleep(0.5)
        assert httpx.get(stack.url + "/healthz", timeout=10).json()["status"] == "ok"
        assert api.post("/api/v1/requests", json=CRITICAL | {"payload": {"step": "after"}}).status_code == 201
    finally:
        again.stop()
    assert OversightRequest.objects.filter(status=Status.PENDING).count() == 1


async def _next_event(state, event_type: str, timeout: float) -> dict:
    """Like the browser's feed: read events, reconnecting (with a fresh snapshot) whenever
    the socket drops, until `event_type` arrives."""
    import asyncio
    import json

    import websockets

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if state.get("socket") is None:
                state["socket"] = await websockets.connect(
                    state["url"], origin=state["origin"], additional_headers={"Cookie": state["cookie"]}, open_timeout=3)
            event = json.loads(await asyncio.wait_for(state["socket"].recv(), max(0.1, end - time.monotonic())))
            if event["type"] == event_type:
                return event
        except (OSError, TimeoutError, websockets.ConnectionClosed, websockets.InvalidStatus):
            state["socket"] = None
            await asyncio.sleep(0.5)
    raise AssertionError(f"no {event_type} within {timeout} s")


def test_the_feed_catches_up_when_redis_is_back(stack_with_own_redis):
    import asyncio

    from tests.oversight.test_feed import sign_in

    stack, redis, folder, port = stack_with_own_redis
    ensure_default_policy()
    agent = make_agent("scraper-7")
    User.objects.create_user("olivia", password="correct horse battery").groups.add(
        Group.objects.get_or_create(name=OPERATORS)[0])
    state = {"url": stack.url.replace("http://", "ws://") + "/ws/feed/", "origin": stack.url,
             "cookie": sign_in(stack.url, "olivia")}
    api = httpx.Client(base_url=stack.url, headers=agent.headers, timeout=30)

    async def scenario():
        await _next_event(state, "snapshot", 10)
        redis.stop()
        during = api.post("/api/v1/requests", json=CRITICAL | {"summary": "while Redis was down"})
        assert during.status_code == 201
        again = Supervisor(prefix_logs=False)
        try:
            await asyncio.sleep(2)
            start_redis(again, folder, port=port)
            # What was submitted while Redis was down arrives with the next snapshot...
            snap = await _next_event(state, "snapshot", 30)
            assert during.json()["id"] in [r["id"] for r in snap["pending"]]
            # ...and live events flow again.
            after = api.post("/api/v1/requests", json=CRITICAL | {"summary": "after Redis came back"}).json()
            created = await _next_event(state, "request.created", 15)
            assert created["request"]["id"] == after["id"]
        finally:
            if state.get("socket") is not None:
                await state["socket"].close()
            again.stop()

    try:
        asyncio.run(scenario())
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{stack.tail(80)}") from None
