import pytest
from django.test import override_settings


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


def test_it_reports_the_database_down(client, settings):
    from django.db import connections

    original = dict(connections["default"].settings_dict)
    try:
        connections["default"].close()
        if original["ENGINE"].endswith("sqlite3"):
            connections["default"].settings_dict["NAME"] = "/nonexistent-dir/none.sqlite3"
        else:
            connections["default"].settings_dict["PORT"] = 1
        response = client.get("/healthz")
    finally:
        connections["default"].close()
        connections["default"].settings_dict.update(original)
    assert response.status_code == 503
    assert response.json()["database"] == "down"
