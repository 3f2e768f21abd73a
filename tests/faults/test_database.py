"""§9.2: the database refusing connections for ~20 s under traffic against a real server.

A database of the test's own on the shared PostgreSQL (never a restart of the server):
`ALTER DATABASE … ALLOW_CONNECTIONS false` and every backend terminated, then allowed
again. Asserts: each answer meanwhile is a 503 with Retry-After within 2 s, nothing
acknowledged (201) is lost, and service resumes at once.
"""

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from oversight.runner import BASE_DIR
from tests.conftest import start_stack

pytestmark = pytest.mark.live

OUTAGE_SECONDS = float(os.environ.get("OVERSIGHT_FAULT_OUTAGE_SECONDS", "20"))
# Routine requests (approved by the policy at once): the agent never reaches its cap on pending ones.
ROUTINE = {"operation": "delegate", "summary": "under fault", "metrics": {"memory_pressure": 10, "delegation_depth": 0}}


def _admin_url() -> str:
    from tests.conftest import live_database_url

    return live_database_url()


@pytest.fixture
def own_database(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.skip("the database fault test needs PostgreSQL (set DATABASE_URL)")
        admin = _admin_url()
    import psycopg

    name = f"ovs_fault_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    base, _, _ = admin.rpartition("/")
    url = f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = dict(os.environ) | {"DATABASE_URL": url, "SECRET_KEY": "fault-test"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    try:
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True, cwd=BASE_DIR)
        out = subprocess.run([*manage, "create_agent", "fault-agent"], env=env, check=True, capture_output=True,
                             text=True, cwd=BASE_DIR).stdout
        yield name, url, out.strip().splitlines()[-1], admin
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _refuse(admin: str, name: str, refuse: bool) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if refuse else "true"}')
        if refuse:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])


def test_it_answers_503_fast_loses_nothing_and_resumes_at_once(own_database):
    name, url, key, admin = own_database
    stack = start_stack(worker=False, beat=False, extra_env={"DATABASE_URL": url})
    answers: list[tuple[float, int, float, str | None, str | None]] = []  # at, status, took, retry-after, id
    stop = threading.Event()

    def traffic():
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            while not stop.is_set():
                began = time.monotonic()
                response = api.post("/api/v1/requests", json=ROUTINE)
                body = response.json()
                answers.append((began, response.status_code, time.monotonic() - began,
                                response.headers.get("Retry-After"), body.get("id")))
                if response.status_code == 503:
                    time.sleep(0.05)

    clients = [threading.Thread(target=traffic) for _ in range(4)]
    try:
        for client in clients:
            client.start()
        time.sleep(2)
        down_at = time.monotonic()
        _refuse(admin, name, True)
        time.sleep(OUTAGE_SECONDS)
        _refuse(admin, name, False)
        up_at = time.monotonic()
        time.sleep(3)
    finally:
        stop.set()
        for client in clients:
            client.join(60)
        stack.stop()

    statuses = {status for _, status, *_ in answers}
    assert statuses <= {201, 503}, statuses
    refused = [a for a in answers if a[1] == 503]
    assert refused, "no request met the outage"
    assert all(retry_after and int(retry_after) >= 1 for *_, retry_after, _ in refused)
    slowest_503 = max(took for _, _, took, _, _ in refused)
    assert slowest_503 < 2.0, slowest_503

    # Nothing acknowledged is lost.
    import psycopg

    acknowledged = {request_id for _, status, _, _, request_id in answers if status == 201}
    with psycopg.connect(url) as conn:
        stored = {str(row[0]) for row in conn.execute("SELECT id FROM oversight_oversightrequest")}
    assert acknowledged <= stored, len(acknowledged - stored)

    # Service resumes at once: the first request started after the database is back succeeds.
    after = sorted(a for a in answers if a[0] >= up_at)
    assert after and after[0][1] == 201, after[:3]
    first_ok = min(at + took for at, status, took, _, _ in after if status == 201)
    served_during = [a for a in answers if down_at + 1 <= a[0] <= up_at - 1 and a[1] == 201]
    print(
        f"\nFAULT database refused {OUTAGE_SECONDS:.0f} s: {len(answers)} requests, {len(acknowledged)} acknowledged "
        f"(all stored), {len(refused)} × 503 (median {statistics.median(t for _, _, t, _, _ in refused):.2f} s, "
        f"slowest {slowest_503:.2f} s, all with Retry-After), served while refused: {len(served_during)}, "
        f"first success {first_ok - up_at:.2f} s after connections were allowed again"
    )
