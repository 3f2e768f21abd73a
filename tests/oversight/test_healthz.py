import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from django.test import override_settings

from oversight import health
from oversight.runner import Supervisor, free_port, wait_for_port, web_argv


@pytest.fixture(autouse=True)
def fresh_checks():
    health.forget_cached()
    yield
    health.forget_cached()


@pytest.mark.django_db
def test_it_reports_every_part_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "channel_layer": "ok", "broker": "ok", "clock": "ok"}


@pytest.mark.django_db
def test_it_says_skewed_when_this_nodes_clock_is_off_the_databases(client, time_machine):
    from datetime import timedelta

    from django.utils import timezone

    time_machine.move_to(timezone.now() + timedelta(seconds=5), tick=True)
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["clock"] == "skewed"
    time_machine.move_to(timezone.now() - timedelta(seconds=5), tick=True)
    health.forget_cached()
    assert client.get("/healthz").json()["clock"] == "ok"


DEAD = "redis://127.0.0.1:1/0"


@pytest.mark.django_db
def test_it_names_the_broker_and_channel_layer_when_redis_is_down(client):
    from channels.layers import channel_layers

    layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [DEAD]}}}
    with override_settings(REDIS_URL=DEAD, CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        try:
            response = client.get("/healthz")
        finally:
            channel_layers.backends.clear()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"] == "ok"
    assert body["broker"] == "down"
    assert body["channel_layer"] == "down"


@pytest.mark.django_db
def test_it_answers_a_probe_storm_from_one_round_of_checks(client, monkeypatch):
    calls = []
    real = health._broker
    monkeypatch.setattr(health, "_broker", lambda: (calls.append(1), real())[1])
    for _ in range(30):
        assert client.get("/healthz").status_code == 200
    assert len(calls) == 1
    time.sleep(health.CACHE_SECONDS + 0.05)
    assert client.get("/healthz").status_code == 200
    assert len(calls) == 2


@pytest.mark.django_db
def test_it_answers_within_its_timeout_while_a_check_hangs_and_runs_it_once(client, monkeypatch):
    started = []

    def hung():
        started.append(1)
        time.sleep(5)

    monkeypatch.setattr(health, "_database", hung)
    began = time.monotonic()
    response = client.get("/healthz")
    took = time.monotonic() - began
    assert took < 2.0, took
    assert response.status_code == 503
    assert response.json() == {"status": "down", "database": "down", "channel_layer": "ok", "broker": "ok"}
    # The next probe, while the hung check still runs, reuses it instead of piling up threads.
    health.forget_cached()
    assert client.get("/healthz").json()["database"] == "down"
    assert len(started) == 1


def dead_database_url(tmp: Path) -> str:
    """A database that cannot be reached, on the tier under test."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    # A directory where the database file should be: SQLite cannot open it, even as root.
    (tmp / "db").mkdir()
    return f"sqlite:///{tmp / 'db'}"


@pytest.fixture
def server_without_database(db):
    tmp = Path(tempfile.mkdtemp(prefix="oversight-healthz-"))
    port = free_port()
    env = {
        **__import__("os").environ,
        "DATABASE_URL": dead_database_url(tmp),
        "PORT": str(port),
        "OVERSIGHT_VAR_DIR": str(tmp),
        "SECRET_KEY": "test-secret-key-for-live-servers",
        "DATABASE_POOL_MIN": "0",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    supervisor = Supervisor(prefix_logs=False)
    supervisor.start("web", web_argv(port), env=env, log=tmp / "web.log")
    try:
        wait_for_port(port, what="uvicorn", timeout=60)
        # A first request that needs no database: the process's one-time set-up (URLs,
        # middleware) is not what these tests time.
        httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=30)
        yield f"http://127.0.0.1:{port}", tmp / "web.log"
    finally:
        supervisor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_it_reports_the_database_down_fast_and_the_rest_up(server_without_database):
    url, log = server_without_database
    for _ in range(3):
        began = time.monotonic()
        response = httpx.get(url + "/healthz", timeout=10)
        assert time.monotonic() - began < 2.0
        assert response.status_code == 503, log.read_text()
        assert response.json() == {"status": "down", "database": "down", "channel_layer": "ok", "broker": "ok"}
        time.sleep(health.CACHE_SECONDS)


def test_the_api_answers_503_with_retry_after_fast_when_the_database_is_down(server_without_database):
    url, log = server_without_database
    for _ in range(3):
        began = time.monotonic()
        response = httpx.post(url + "/api/v1/requests", json={"operation": "x", "summary": "s"},
                              headers={"Authorization": "Bearer some-key"}, timeout=10)
        assert time.monotonic() - began < 2.0
        assert response.status_code == 503, log.read_text()
        assert response.json()["error"]["code"] == "unavailable"
        assert int(response.headers["Retry-After"]) >= 1
