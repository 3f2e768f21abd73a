"""Personas and real servers for the suite.

Personas: an operator, a manager, an outsider (signed in, no role), and an agent
with a known key. `live_server_stack` runs the real thing — uvicorn serving the
ASGI app, a Celery worker and beat — on the test database and the suite's Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import Group, User

from oversight.models import Agent
from oversight.policy import ensure_default_policy
from oversight.roles import MANAGERS, OPERATORS


def _flush_past_audit_triggers() -> None:
    """Let transactional tests' teardown empty the append-only audit table.

    pytest-django ends each transactional test with Django's `flush` (TRUNCATE on
    PostgreSQL, DELETE FROM on SQLite), which the audit triggers refuse by design.
    Only here, and only for that flush, are they lifted and then restored; the
    tests connect as the table's owner, which the service in production must not.
    """
    from django.core.management.commands import flush

    from oversight import audit_triggers

    original = flush.Command.handle
    if getattr(original, "_lifts_audit_triggers", False):
        return

    def handle(self, **options):
        from django.core.management.base import CommandError
        from django.db import OperationalError, connections

        with audit_triggers.suspended(connections[options["database"]]):
            # The session's live stack (a worker and beat on the same database) keeps
            # writing while a test ends; PostgreSQL may then pick the TRUNCATE as the
            # victim of a deadlock. The flush runs in one transaction, so a retry starts
            # clean; anything else (or a fourth deadlock) still fails the test.
            for attempt in range(4):
                try:
                    return original(self, **options)
                except CommandError as exc:
                    if attempt == 3 or not isinstance(exc.__cause__, OperationalError):
                        raise
                    print(f"flush retried after: {exc.__cause__}")
                    time.sleep(0.2 * (attempt + 1))

    handle._lifts_audit_triggers = True
    flush.Command.handle = handle


_flush_past_audit_triggers()


def _person(username: str, group: str | None) -> User:
    user = User.objects.create_user(username=username, password="correct horse battery")
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def operator(db) -> User:
    return _person("olivia", OPERATORS)


@pytest.fixture
def second_operator(db) -> User:
    return _person("oscar", OPERATORS)


@pytest.fixture
def manager(db) -> User:
    return _person("maria", MANAGERS)


@pytest.fixture
def outsider(db) -> User:
    return _person("otto", None)


@dataclass
class AgentPersona:
    agent: Agent
    key: str

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}


def make_agent(name: str) -> AgentPersona:
    agent = Agent.objects.create(name=name)
    _, key = agent.issue_key()
    return AgentPersona(agent, key)


@pytest.fixture
def agent(db) -> AgentPersona:
    ensure_default_policy()
    return make_agent("scraper-7")


@pytest.fixture
def other_agent(db) -> AgentPersona:
    return make_agent("writer-2")


def allow_short_timeouts(seconds: int = 1) -> None:
    """Let agents shorten deadlines below the default minute people get (tests of
    timeouts that should not wait a minute)."""
    from oversight.models import Policy

    ensure_default_policy()
    Policy.objects.filter(is_current=True).update(min_timeout_seconds=seconds)


@pytest.fixture
def short_timeouts(db) -> None:
    allow_short_timeouts()


def database_now():
    """The database's clock, read here (not through the code under test)."""
    from datetime import UTC, datetime

    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")
        return cursor.fetchone()[0]


def past_deadline(req, seconds: float = 1.0, *, escalation: bool = False):
    """Move `req`'s deadline `seconds` into the past by the database's clock, in the
    database (spec §9.1: the database's clock decides, so moving this process's clock
    proves nothing). Its escalation time too with `escalation`, else it is left as is.
    Returns `req` with the new deadline."""
    from datetime import timedelta

    from oversight.models import OversightRequest

    req.deadline = database_now() - timedelta(seconds=seconds)
    changes = {"deadline": req.deadline}
    if escalation:
        req.escalate_at = changes["escalate_at"] = req.deadline
    OversightRequest.objects.filter(pk=req.pk).update(**changes)
    return req


# --- Real servers ---------------------------------------------------------------------


def live_database_url() -> str:
    """The URL of the database pytest-django created, for server processes."""
    from django.db import connection

    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    user = config.get("USER") or ""
    password = f":{config['PASSWORD']}" if config.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{config.get('HOST') or '127.0.0.1'}:{config.get('PORT') or 5432}/{config['NAME']}"


@dataclass
class Stack:
    url: str
    env: dict
    logs: Path
    supervisor: object

    def wait_healthy(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                last = httpx.get(self.url + "/healthz", timeout=2)
                if last.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"The server did not become healthy: {last!r}\n{self.tail()}")

    def stop(self) -> None:
        """Stop every process and remove the stack's folder (logs, its var dir)."""
        self.supervisor.stop()
        shutil.rmtree(self.logs, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            out.append(f"--- {log.name}")
            out.extend(log.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)


# Stacks started in this session (their workers and beats share the test database).
RUNNING_STACKS: list[Stack] = []


@contextlib.contextmanager
def other_workers_paused():
    """Pause (SIGSTOP, by the pids this session recorded) the workers and beats of the
    session's stacks, so a test's own worker is the only one sending deliveries from the
    shared test database; resume them (SIGCONT) after."""
    groups = [child.process.pid for stack in RUNNING_STACKS for child in stack.supervisor.children
              if child.name in ("worker", "beat") and child.process.poll() is None]
    for pid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)


def start_stack(*, web_workers: int = 1, worker: bool = True, beat: bool = True, extra_env: dict | None = None) -> Stack:
    from django.conf import settings

    from oversight.runner import Supervisor, beat_argv, free_port, wait_for_port, web_argv, worker_argv

    logs = Path(tempfile.mkdtemp(prefix="oversight-stack-"))
    port = free_port()
    env = dict(os.environ) | {
        "DATABASE_URL": live_database_url(),
        "PORT": str(port),
        "OVERSIGHT_VAR_DIR": str(logs),
        # The test process's own: it decides too, and signs receipts with the same key.
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_POOL_MIN": "0",
        "DATABASE_POOL_MAX": "8",
        "PYTHONUNBUFFERED": "1",
    } | (extra_env or {})
    env.pop("DJANGO_SETTINGS_MODULE", None)
    supervisor = Supervisor(prefix_logs=False)
    supervisor.start("web", web_argv(port, workers=web_workers), env=env, log=logs / "web.log")
    if worker:
        supervisor.start("worker", worker_argv(concurrency=2), env=env, log=logs / "worker.log")
    if beat:
        supervisor.start("beat", beat_argv(logs), env=env, log=logs / "beat.log")
    stack = Stack(f"http://127.0.0.1:{port}", env, logs, supervisor)
    RUNNING_STACKS.append(stack)
    try:
        wait_for_port(port, what="uvicorn", timeout=60)
        stack.wait_healthy()
    except Exception:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker):
    """uvicorn + Celery worker + beat on the test database, for the whole session."""
    stack = start_stack()
    yield stack
    stack.stop()


@pytest.fixture
def live(live_stack, transactional_db):
    """The live stack, with this test's rows committed so the servers see them."""
    ensure_default_policy()
    return live_stack
