"""Sign-ins are throttled per username and address, and per address (contract §9.3)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests
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


def test_five_failures_for_one_username_block_the_address_for_every_username(operator, second_operator):
    for _ in range(5):
        attempt(HERE, "mallory")
    assert attempt(HERE, "olivia", PASSWORD).status_code == 429
    assert attempt(HERE, "oscar", PASSWORD).status_code == 429
    assert attempt(THERE, "olivia", PASSWORD).status_code == 302


def test_failures_spread_over_usernames_block_only_at_twenty(operator):
    for i in range(19):
        assert attempt(HERE, f"guess-{i % 5}").status_code == 200  # at most 4 per username
    assert attempt(HERE, "olivia", PASSWORD).status_code == 302


def test_it_answers_429_to_an_address_after_twenty_failures_of_any_usernames(operator):
    for i in range(20):
        assert attempt(HERE, f"guess-{i % 5}").status_code == 200  # 4 per username
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


def _sign_in_page(session, base: str, username: str, password: str):
    """What a browser does: load the sign-in page, then post its form (with its CSRF token)."""
    page = session.get(f"{base}/login/", timeout=10)
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return session.post(f"{base}/login/", data={"csrfmiddlewaretoken": token, "username": username,
                                                "password": password}, headers={"Referer": f"{base}/login/"},
                        allow_redirects=False, timeout=10)


@pytest.mark.django_db(transaction=True)
def test_through_the_sign_in_page_the_block_lasts_fifteen_minutes_from_the_fifth_failure(live_server):
    """Failures at 0, 1, 2, 3 and 10 minutes: the address is blocked from minute 10 to 25,
    for every username, and each refusal is a 429 with the message, the password unchecked."""
    User.objects.create_user("olivia", password=PASSWORD)
    User.objects.create_user("oscar", password=PASSWORD)
    base = live_server.url
    start = timezone.now().replace(microsecond=0)
    browser = requests.Session()
    for minute in (0, 1, 2, 3, 10):
        with time_machine.travel(start + timedelta(minutes=minute), tick=False):
            assert _sign_in_page(browser, base, "olivia", "wrong password").status_code == 200
    # Past 15 minutes from the first failure, still within 15 of the fifth: blocked.
    for minute, second in ((10, 1), (16, 0), (24, 59)):
        with time_machine.travel(start + timedelta(minutes=minute, seconds=second), tick=False):
            for username in ("olivia", "oscar"):
                blocked = _sign_in_page(requests.Session(), base, username, PASSWORD)
                assert blocked.status_code == 429
                assert "Too many failed sign-ins" in blocked.text
                assert 0 < int(blocked.headers["Retry-After"]) <= 15 * 60
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_SUCCEEDED).exists()
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.LOGIN_FAILED).count() == 5
    with time_machine.travel(start + timedelta(minutes=25, seconds=1), tick=False):
        signed = _sign_in_page(requests.Session(), base, "oscar", PASSWORD)
        assert signed.status_code == 302
