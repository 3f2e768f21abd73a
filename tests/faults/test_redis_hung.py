"""§9.2 with Redis hung rather than dead: a Redis process that is stopped (SIGSTOP)
still accepts connections in the kernel but never answers. The cache, the broker
publish and the channel layer give up after a short socket timeout, so a submission
is answered and kept (its callback waiting in the database's outbox) instead of
waiting on Redis for seconds per call."""

import os
import shutil
import signal
import tempfile
from pathlib import Path

import httpx
import pytest

from oversight.models import Delivery, OversightRequest, Status
from oversight.runner import Supervisor, free_port, start_redis
from tests.conftest import make_agent, start_stack

pytestmark = [pytest.mark.live, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

CRITICAL = {"operation": "delegate", "summary": "s", "metrics": {"delegation_depth": 5}}
# Far above the few hundred milliseconds each Redis client now waits, far below the
# seconds a call took when every Redis client waited on the stopped server.
ANSWER_WITHIN = 3.0


@pytest.fixture
def stack_with_own_redis():
    folder = Path(tempfile.mkdtemp(prefix="oversight-redis-hung-"))
    redis = Supervisor(prefix_logs=False)
    url = start_redis(redis, folder, port=free_port())
    stack = start_stack(worker=False, beat=False, extra_env={"REDIS_URL": url})
    pid = redis.child("redis").process.pid
    try:
        yield stack, pid
    finally:
        os.kill(pid, signal.SIGCONT)
        stack.stop()
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_it_answers_and_keeps_a_submission_while_redis_hangs(stack_with_own_redis):
    stack, redis_pid = stack_with_own_redis
    agent = make_agent("scraper-7")
    api = httpx.Client(base_url=stack.url, headers=agent.headers, timeout=ANSWER_WITHIN)
    # Warm the server's connections to Redis first: a hung peer of an open connection
    # is the case that waits for ever without a socket timeout.
    assert api.post("/api/v1/requests", json=CRITICAL | {"payload": {"step": "warm"}}).status_code == 201

    os.kill(redis_pid, signal.SIGSTOP)
    callback = f"http://127.0.0.1:{free_port()}/hook"
    try:
        submitted = api.post("/api/v1/requests", json=CRITICAL | {"payload": {"step": "hung"}, "callback_url": callback})
        assert submitted.status_code == 201, stack.tail()
        request_id = submitted.json()["id"]
        assert api.get(f"/api/v1/requests/{request_id}").json()["status"] == "pending"
        cancelled = api.post(f"/api/v1/requests/{request_id}/cancel")
        assert cancelled.status_code == 200, stack.tail()
    finally:
        os.kill(redis_pid, signal.SIGCONT)

    kept = OversightRequest.objects.get(id=request_id)
    assert kept.status == Status.CANCELLED
    # The callback of the cancel waits in the outbox for a worker.
    assert Delivery.objects.filter(request=kept).exists()
