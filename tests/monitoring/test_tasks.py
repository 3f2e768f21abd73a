"""The collection broadcast against real Redis and real worker processes; the beat schedule."""

import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from monitoring.models import HostSample
from monitoring.tasks import BROADCAST_QUEUE, broadcast_options


def _schedule():
    from oversight.celery import app

    app.finalize()
    return app.conf.beat_schedule


def test_it_schedules_collection_on_the_broadcast_expiring_after_one_interval(settings):
    entry = _schedule()["monitoring collect"]
    assert entry["task"] == "monitoring.collect"
    assert entry["options"]["queue"] == BROADCAST_QUEUE
    assert [e.type for e in entry["options"]["declare"]] == ["fanout"]
    assert entry["options"]["expires"] == entry["schedule"] == settings.MONITORING_SAMPLE_SECONDS
    rollup = _schedule()["monitoring rollup"]
    assert rollup["options"]["expires"] == rollup["schedule"]


def test_the_worker_command_consumes_the_broadcast():
    from oversight.runner import worker_argv

    argv = worker_argv()
    assert BROADCAST_QUEUE in argv[argv.index("-Q") + 1].split(",")


def _start_workers(names):
    """Workers on a Redis of their own: a live stack's beat broadcasting on the suite's
    Redis at the same time must not add ticks to the ones this test counts."""
    from oversight.runner import Supervisor, start_redis, worker_argv
    from tests.conftest import live_database_url

    logs = Path(tempfile.mkdtemp(prefix="oversight-workers-"))
    supervisor = Supervisor(prefix_logs=False)
    broker = start_redis(supervisor, logs)
    env = dict(os.environ) | {"DATABASE_URL": live_database_url(), "OVERSIGHT_VAR_DIR": str(logs),
                              "SECRET_KEY": "test-secret", "DATABASE_POOL_MIN": "0", "REDIS_URL": broker}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for name in names:
        argv = worker_argv(concurrency=1)
        argv[argv.index("--hostname") + 1] = name
        supervisor.start(name, argv, env=env, log=logs / f"{name}.log")
    return supervisor, logs, broker


def _wait_for_nodes(app, names, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        replies = app.control.ping(timeout=0.5) or []
        if set(names) <= {node for reply in replies for node in reply}:
            return
    raise AssertionError(f"workers {names} did not answer")


def _counts():
    return {host: HostSample.objects.filter(host=host).count() for host in ("host-a", "host-b")}


def _wait_for(predicate, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.live
def test_it_reaches_every_host_once_per_tick(transactional_db):
    from celery import Celery

    from oversight.celery import app as suite_app

    # Two machines, one of which runs two workers: each machine files one sample per tick.
    names = ["w1@host-a", "w2@host-a", "w1@host-b"]
    supervisor, logs, broker = _start_workers(names)
    try:
        # A client of the workers' own broker (the suite's app would publish on the suite's).
        with Celery("tick-sender", broker=broker, set_as_current=False) as app:
            app.conf.task_queues = suite_app.conf.task_queues
            _wait_for_nodes(app, names)

            def tick(**options):
                app.send_task("monitoring.collect", **broadcast_options(), **options)

            for _ in range(3):
                tick(expires=30)
            assert _wait_for(lambda: _counts() == {"host-a": 3, "host-b": 3}), _counts()
            # A tick that expired before a worker got it is never replayed.
            tick(expires=timezone.now() - timedelta(seconds=1))
            tick(expires=30)
            assert _wait_for(lambda: _counts() == {"host-a": 4, "host-b": 4}), _counts()
            time.sleep(1)
            assert _counts() == {"host-a": 4, "host-b": 4}
    finally:
        supervisor.stop()
        shutil.rmtree(logs, ignore_errors=True)
    sample = HostSample.objects.filter(host="host-a").latest("at")
    assert 0 <= sample.pressure <= 100 and sample.total_bytes > 0
