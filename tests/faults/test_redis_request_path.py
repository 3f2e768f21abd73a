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
from tests.conftest import make_agent, start_stack

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
    ensure_default_policy()
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
    assert health.json() | {"status": None} == {
        "status": None, "database": "ok", "channel_layer": "down", "broker": "down"}

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
    short = api.post("/api/v1/requests", json=CRITICAL | {"timeout_seconds": 1}).json()
    began = time.monotonic()
    decided = api.get(f"/api/v1/requests/{short['id']}?wait=10").json()
    assert decided["status"] == "approved" and decided["decision"]["source"] == "timeout"
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
        assert api.post("/api/v1/requests", json=CRITICAL).status_code == 201
    finally:
        again.stop()
    assert OversightRequest.objects.filter(status=Status.PENDING).count() == 1
