"""Deliveries under faults, with real processes: a Celery worker and beat on a Redis this
test starts (and stops, by the pid it recorded), a receiver thread on 127.0.0.1 that is
down, slow, then back. Every delivery is made; duplicates only with the same
X-Oversight-Delivery id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from oversight import actions
from oversight.models import AuditEvent, Delivery, Source, Status
from oversight.runner import Supervisor, beat_argv, free_port, start_redis, worker_argv
from tests.conftest import live_database_url, other_workers_paused
from tests.receiver import Receiver

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


class Rig:
    """A private Redis, and a worker and beat on it, each startable and killable alone."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="oversight-faults-"))
        self.redis_port = free_port()
        self.redis = Supervisor(prefix_logs=False)
        self.processes = Supervisor(prefix_logs=False)
        self.env = dict(os.environ) | {
            "DATABASE_URL": live_database_url(),
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "OVERSIGHT_VAR_DIR": str(self.dir),
            "SECRET_KEY": "test-secret-key-for-live-servers",
            "DATABASE_POOL_MIN": "0",
            "OVERSIGHT_CALLBACK_TIMEOUT": "1",
            "OVERSIGHT_DELIVERY_LEASE_SECONDS": "2",
            "OVERSIGHT_SWEEP_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)

    def start_redis(self):
        start_redis(self.redis, self.dir, port=self.redis_port)

    def stop_redis(self):
        self.redis.stop(timeout=5)

    def start_worker(self):
        return self.processes.start("worker", worker_argv(concurrency=1), env=self.env, log=self.dir / "worker.log")

    def start_beat(self):
        return self.processes.start("beat", beat_argv(self.dir), env=self.env, log=self.dir / "beat.log")

    def tail(self) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            for log in sorted(self.dir.glob("*.log"))
        )

    def close(self):
        self.processes.stop(timeout=5)
        self.redis.stop(timeout=5)


@pytest.fixture
def rig(agent, monkeypatch):
    # This process's broker is the suite's Redis, not the rig's: its kicks are dropped
    # (as if lost), so the rig's beat sweep is what sends (the other workers of the
    # session never see these deliveries' kicks).
    from oversight import deliveries

    monkeypatch.setattr(deliveries, "kick", lambda ids: None)
    rig = Rig()
    rig.start_redis()
    with other_workers_paused():
        yield rig
        rig.close()


def _decided(agent, url, outcome=Status.APPROVED):
    req, _ = actions.do_submit(
        agent.agent,
        actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, callback_url=url),
        api_key=agent.agent.keys.get(),
    )
    return actions.do_decide(req.id, outcome=outcome, source=Source.OPERATOR, by="olivia")


def _wait(condition, timeout, rig):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"Timed out waiting.\n{rig.tail()}")


def _assert_delivered_once_per_id(receiver, delivery):
    ids = {headers["x-oversight-delivery"] for headers, _ in receiver.received}
    assert ids == {str(delivery.pk)}


def test_it_delivers_through_a_receiver_down_then_slow_then_back(rig, agent):
    port = free_port()
    rig.start_worker()
    rig.start_beat()
    req = _decided(agent, f"http://127.0.0.1:{port}/hook")
    delivery = Delivery.objects.get(key=f"callback:{req.id}")
    _wait(lambda: AuditEvent.objects.filter(request=req, kind="callback_failed").count() >= 2, 20, rig)
    assert {e.data["error"] for e in AuditEvent.objects.filter(request=req)
            if e.kind == "callback_failed"} == {"connection refused"}
    with Receiver([200], trickle=0.6, port=port) as receiver:
        _wait(lambda: AuditEvent.objects.filter(request=req, kind="callback_failed", data__error="timed out").exists(),
              20, rig)
        receiver.trickle = 0
        _wait(lambda: AuditEvent.objects.filter(request=req, kind="callback_delivered").exists(), 30, rig)
    _assert_delivered_once_per_id(receiver, delivery)
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts >= 4


def test_a_worker_killed_mid_delivery_means_a_retry_with_the_same_id(rig, agent):
    with Receiver([200], trickle=0.5) as receiver:
        worker = rig.start_worker()
        rig.start_beat()
        req = _decided(agent, receiver.url)
        delivery = Delivery.objects.get(key=f"callback:{req.id}")
        assert receiver.posted.wait(30), rig.tail()
        os.killpg(worker.process.pid, signal.SIGKILL)  # the worker and its pool, by the pid we recorded
        worker.process.wait(10)
        rig.processes.children.remove(worker)
        receiver.trickle = 0
        assert not AuditEvent.objects.filter(request=req, kind__startswith="callback").exists()
        rig.start_worker()
        _wait(lambda: AuditEvent.objects.filter(request=req, kind="callback_delivered").exists(), 30, rig)
    assert len(receiver.received) >= 2
    _assert_delivered_once_per_id(receiver, delivery)


def test_a_decision_made_with_the_broker_down_is_delivered_once_it_is_back(rig, agent):
    with Receiver([200]) as receiver:
        req, _ = actions.do_submit(
            agent.agent,
            actions.Submission("delegate", "s", {}, {"delegation_depth": 5}, callback_url=receiver.url),
            api_key=agent.agent.keys.get(),
        )
        rig.stop_redis()
        # The decision is made by a process whose broker is the stopped Redis: its kick fails.
        started = time.monotonic()
        decided = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from oversight import actions; from oversight.models import Source, Status; "
             f"actions.do_decide('{req.id}', outcome=Status.REJECTED, source=Source.OPERATOR, by='olivia')"],
            env=rig.env, capture_output=True, text=True, timeout=60,
        )
        assert decided.returncode == 0, decided.stderr[-2000:]
        assert time.monotonic() - started < 30
        delivery = Delivery.objects.get(key=f"callback:{req.id}")
        assert delivery.state == "pending" and delivery.attempts == 0
        rig.start_redis()
        rig.start_worker()
        rig.start_beat()
        _wait(lambda: AuditEvent.objects.filter(request=req, kind="callback_delivered").exists(), 30, rig)
    _assert_delivered_once_per_id(receiver, delivery)
    assert len(receiver.received) == 1
