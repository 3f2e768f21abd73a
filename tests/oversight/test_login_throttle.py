"""Sign-ins are throttled per username and address, and per address (contract §9.3)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from oversight.models import AuditEvent

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"
HERE, THERE = "198.51.100.1", "198.51.100.2"


def attempt(address: str, username: str, password: str = "wrong password"):  # noqa: S107
    return Client(REMOTE_ADDR=address).post("/login/", {"username": username, "password": password})


def test_it_answers_429_after_five_failures_for_a_username_without_checking_the_password(operator):
    for _ in range(5):
        assert attempt(HERE, "olivia").status_code == 200
    blocked = attempt(HERE, "olivia", PASSWORD)
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.content.decode()
    assert "_auth_user_id" not in blocked.wsgi_request.session
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_SUCCEEDED).exists()
    # Not counted as another failure: the password was never looked at.
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_FAILED).count() == 5


def test_it_lets_the_same_user_in_from_another_address(operator):
    for _ in range(5):
        attempt(THERE, "olivia")
    assert attempt(THERE, "olivia", PASSWORD).status_code == 429
    assert attempt(HERE, "olivia", PASSWORD).status_code == 302


def test_it_lets_another_user_in_from_the_same_address_until_twenty(operator):
    for _ in range(5):
        attempt(HERE, "mallory")
    assert attempt(HERE, "olivia", PASSWORD).status_code == 302


def test_it_answers_429_to_an_address_after_twenty_failures_of_any_usernames(operator):
    for i in range(20):
        assert attempt(HERE, f"guess-{i % 4}").status_code == 200
    assert attempt(HERE, "olivia", PASSWORD).status_code == 429
    assert attempt(THERE, "olivia", PASSWORD).status_code == 302


def test_it_lifts_the_throttle_after_fifteen_minutes(operator):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for _ in range(5):
            attempt(HERE, "olivia")
    with time_machine.travel(start + timedelta(minutes=14, seconds=59), tick=False):
        assert attempt(HERE, "olivia", PASSWORD).status_code == 429
    with time_machine.travel(start + timedelta(minutes=15, seconds=1), tick=False):
        assert attempt(HERE, "olivia", PASSWORD).status_code == 302


def test_it_throttles_the_admins_sign_in_form_too(db):
    User.objects.create_superuser("root", password=PASSWORD)
    client = Client(REMOTE_ADDR=HERE)
    for _ in range(5):
        assert client.post("/admin/login/", {"username": "root", "password": "nope nope nope"}).status_code == 200
    assert client.post("/admin/login/", {"username": "root", "password": PASSWORD}).status_code == 429
    assert attempt(HERE, "root", PASSWORD).status_code == 429  # one count for both forms


def test_it_needs_no_redis(operator, settings):
    """The count lives in the database: a cache that fails changes nothing."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}
    for _ in range(5):
        attempt(HERE, "olivia")
    assert attempt(HERE, "olivia", PASSWORD).status_code == 429
