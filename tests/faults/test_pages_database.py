"""§9.2 for the pages: with the database unreachable, every page that needs it answers
503 with Retry-After and a short page saying so (never a 500 or a traceback), and the
pages work again once the database is back.

A database of the test's own, on the tier the suite runs on: on PostgreSQL one that
refuses connections (`ALTER DATABASE … ALLOW_CONNECTIONS false`, its backends
terminated; never a restart of the shared server); on SQLite a file whose folder is
moved away, so the path cannot be opened.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from oversight.runner import BASE_DIR
from tests.conftest import start_stack

# The database mark has the suite create its test database, whose server (PostgreSQL) or
# tier (SQLite) the test follows.
pytestmark = [pytest.mark.live, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"
# Pages an operator opens, each needing the database (the session, the user, the rows).
PAGES = ["/", "/queue/", "/history/", "/monitoring/"]
# Far above the pool's wait (1.2 s) that a page spends finding the database gone; a
# page that hung on the database, or failed twice over, would not answer within it.
ANSWER_WITHIN = 5.0


def _manage(env: dict, *args: str) -> str:
    run = subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], env=env, capture_output=True,
                         text=True, cwd=BASE_DIR)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


class OwnDatabase:
    """Migrated, with the operator olivia; `refuse()` makes it unreachable, `allow()` undoes it."""

    def __init__(self, vendor: str, admin_url: str):
        self.vendor = vendor
        self.folder = Path(tempfile.mkdtemp(prefix="oversight-pages-db-"))
        if vendor == "postgresql":
            self.admin = admin_url
            self.name = f"ovs_pages_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            self.url = f"{admin_url.rpartition('/')[0]}/{self.name}"
            self._sql(f'CREATE DATABASE "{self.name}"')
        else:
            self.url = f"sqlite:///{self.folder / 'db' / 'oversight.sqlite3'}"
        self.env = dict(os.environ) | {"DATABASE_URL": self.url, "SECRET_KEY": "pages-fault-test",
                                       "OVERSIGHT_VAR_DIR": str(self.folder / "var")}
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        _manage(self.env, "migrate", "--noinput")
        _manage(self.env, "create_user", "olivia", "--role", "operator", "--password", PASSWORD)

    def _sql(self, *statements: str, params=None) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement, params)

    def refuse(self) -> None:
        if self.vendor == "postgresql":
            self._sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            self._sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", params=[self.name])
        else:
            (self.folder / "db").rename(self.folder / "db-away")

    def allow(self) -> None:
        if self.vendor == "postgresql":
            self._sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
        elif (self.folder / "db-away").exists():
            (self.folder / "db-away").rename(self.folder / "db")

    def drop(self) -> None:
        self.allow()
        if self.vendor == "postgresql":
            self._sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def own_database(django_db_setup, django_db_blocker):
    from tests.conftest import live_database_url

    with django_db_blocker.unblock():
        from django.db import connection

        vendor = connection.vendor
        admin = live_database_url()
    database = OwnDatabase(vendor, admin)
    try:
        yield database
    finally:
        database.drop()


def _sign_in(url: str) -> httpx.Client:
    browser = httpx.Client(base_url=url, timeout=ANSWER_WITHIN)
    token = browser.get("/login/").cookies["csrftoken"]
    signed_in = browser.post("/login/", data={"username": "olivia", "password": PASSWORD, "csrfmiddlewaretoken": token},
                             headers={"Referer": url + "/login/"})
    assert signed_in.status_code == 302, signed_in.text
    return browser


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.url, response.status_code, response.text[:2000])
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Oversight is unavailable" in response.text
    assert "Traceback" not in response.text and "Server Error" not in response.text


def test_pages_answer_503_with_retry_after_while_the_database_is_unreachable(own_database):
    stack = start_stack(worker=False, beat=False, extra_env={"DATABASE_URL": own_database.url})
    try:
        browser = _sign_in(stack.url)
        assert browser.get("/queue/").status_code == 200

        own_database.refuse()
        try:
            for page in PAGES:
                _assert_unavailable(browser.get(page))
            # A stranger's sign-in needs the database too.
            stranger = httpx.Client(base_url=stack.url, timeout=ANSWER_WITHIN)
            token = stranger.get("/login/").cookies["csrftoken"]
            _assert_unavailable(stranger.post(
                "/login/", data={"username": "olivia", "password": PASSWORD, "csrfmiddlewaretoken": token},
                headers={"Referer": stack.url + "/login/"}))
            # The API keeps its own JSON answer.
            api = httpx.post(stack.url + "/api/v1/requests", json={"operation": "x", "summary": "s"},
                             headers={"Authorization": "Bearer ovs_x"}, timeout=ANSWER_WITHIN)
            assert api.status_code == 503 and api.json()["error"]["code"] == "unavailable"
        finally:
            own_database.allow()

        assert browser.get("/queue/").status_code == 200, stack.tail()
    finally:
        stack.stop()
