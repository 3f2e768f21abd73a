"""Processes that die, Redis that goes away, two beats by mistake: deadlines still hold.

Real processes: the web server, Celery worker and beat started and restarted by
`make run`'s supervisor (oversight/runner.py), a Redis server of the test's own
on a free port (persisting, as under `make run`), and the tier's database.
Each scenario prints what it measured: time to recover, decisions delayed,
nothing lost.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from oversight import actions
from oversight.models import AuditEvent, OversightRequest, Source, Status
from oversight.runner import Supervisor, beat_argv, free_port, start_redis, wait_for_port, web_argv, worker_argv
from tests.conftest import live_database_url

pytestmark = [pytest.mark.faults, pytest.mark.live]

CRITICAL = {"operation": "delegate", "summary": "fault suite", "metrics": {"delegation_depth": 5}}
ROUTINE = {"operation": "scrape", "summary": "fault suite"}


@dataclass
class FaultStack:
    url: str
    env: dict
    logs: Path
    supervisor: Supervisor
    redis_url: str
    redis_port: int
    redis_supervisor: Supervisor
    watcher: threading.Thread | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def pid(self, name: str) -> int:
        return self.supervisor.child(name).process.pid

    def kill(self, name: str) -> None:
        os.kill(self.pid(name), signal.SIGKILL)

    def stop_redis(self) -> None:
        """SIGKILL, not a clean shutdown: whatever was not yet written is gone."""
        self.redis_supervisor.stop(timeout=0)

    def start_redis(self) -> None:
        start_redis(self.redis_supervisor, self.logs, port=self.redis_port, persist=True)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.healthy():
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"Not healthy within {timeout} s\n{self.tail()}")

    def worker_answers(self, timeout: float) -> float:
        """Seconds until a worker runs a task sent through this stack's broker."""
        from celery import Celery

        app = Celery("fault-probe", broker=self.redis_url, backend=self.redis_url)
        started = time.monotonic()
        try:
            while time.monotonic() - started < timeout:
                try:
                    if app.send_task("oversight.ping").get(timeout=2) == "pong":
                        return time.monotonic() - started
                except Exception:  # not yet: the worker is still starting
                    time.sleep(0.2)
        finally:
            app.close()
        raise AssertionError(f"No worker answered within {timeout} s\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        out = [*self.supervisor.notes]
        for log in sorted(self.logs.glob("*.log")):
            out.append(f"--- {log.name}")
            out.extend(log.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)


@pytest.fixture
def fault_stack(transactional_db):
    """Start with `fault_stack(beats=1)`: web, worker and beat(s) under the supervisor
    (restarted with a 0.5 s backoff when they die), on a Redis of the test's own."""
    stacks = []

    def start(*, beats: int = 1) -> FaultStack:
        logs = Path(tempfile.mkdtemp(prefix="oversight-faults-"))
        redis_supervisor = Supervisor(prefix_logs=False)
        redis_port = free_port()
        redis_url = start_redis(redis_supervisor, logs, port=redis_port, persist=True)
        port = free_port()
        env = dict(os.environ) | {
            "DATABASE_URL": live_database_url(),
            "REDIS_URL": redis_url,
            "PORT": str(port),
            "OVERSIGHT_VAR_DIR": str(logs),
            "SECRET_KEY": "test-secret-key-for-live-servers",
            "DATABASE_POOL_MIN": "0",
            "DATABASE_POOL_MAX": "8",
            "PYTHONUNBUFFERED": "1",
            "CHANNEL_PREFIX": f"oversight-faults-{port}",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        supervisor = Supervisor(prefix_logs=False, backoff=0.5)
        stack = FaultStack(f"http://127.0.0.1:{port}", env, logs, supervisor, redis_url, redis_port, redis_supervisor)
        stacks.append(stack)
        supervisor.start("web", web_argv(port), env=env, log=logs / "web.log", restart=True)
        supervisor.start("worker", worker_argv(concurrency=2), env=env, log=logs / "worker.log", restart=True)
        for n in range(beats):
            beat_dir = logs / f"beat{n}"
            beat_dir.mkdir()
            supervisor.start(f"beat{n}", beat_argv(beat_dir), env=env, log=logs / f"beat{n}.log", restart=True)
        stack.watcher = threading.Thread(target=supervisor.watch, kwargs={"until": stack.stopped.is_set}, daemon=True)
        stack.watcher.start()
        wait_for_port(port, what="uvicorn", timeout=60)
        stack.wait_healthy(60)
        return stack

    yield start
    for stack in stacks:
        stack.stopped.set()
        stack.watcher.join(5)
        stack.supervisor.stop()
        stack.redis_supervisor.stop()


@pytest.fixture(autouse=True)
def short_timeouts(agent):
    """These requests time out in seconds (the default policy grants people at least 60 s)."""
    actions.do_change_policy("*", {"min_timeout_seconds": 1}, by="maria")
    agent.agent.max_pending = 10_000  # many pending at once is the point here
    agent.agent.save(update_fields=["max_pending"])


def _submit(client: httpx.Client, url: str, body: dict) -> httpx.Response:
    return client.post(url + "/api/v1/requests", json=body, timeout=10)


def _decisions(ids) -> Counter:
    """Decision audit entries per request: exactly one each is 'decided exactly once'."""
    return Counter(
        str(request_id)
        for request_id in AuditEvent.objects.filter(
            request_id__in=ids, kind__in=(AuditEvent.Kind.DECIDED, AuditEvent.Kind.CANCELLED)
        ).values_list("request_id", flat=True)
    )


def _wait_all_decided(ids, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not OversightRequest.objects.filter(id__in=ids, status=Status.PENDING).exists():
            return
        time.sleep(0.1)


def _lateness(ids) -> list[float]:
    rows = OversightRequest.objects.filter(id__in=ids).values_list("decided_at", "deadline")
    return sorted((decided - deadline).total_seconds() for decided, deadline in rows)


def _summary(values: list[float]) -> str:
    if not values:
        return "none"
    return f"min {values[0]:.2f} s, median {values[len(values) // 2]:.2f} s, max {values[-1]:.2f} s"


def test_it_keeps_every_deadline_when_the_worker_and_beat_are_killed(fault_stack, agent):
    stack = fault_stack()
    with httpx.Client(headers=agent.headers) as client:
        created = [_submit(client, stack.url, CRITICAL | {"timeout_seconds": 3}) for _ in range(30)]
        assert [r.status_code for r in created] == [201] * 30
        ids = [r.json()["id"] for r in created]
        deadlines = {r.json()["id"]: parse_datetime(r.json()["deadline"]) for r in created}

        killed_at = time.monotonic()
        old = {name: stack.pid(name) for name in ("worker", "beat0")}
        stack.kill("worker")
        stack.kill("beat0")

        # A third are read by their agent as soon as the deadline passes: the read applies it.
        read = ids[:10]
        last_deadline = max(deadlines.values())
        time.sleep(max(0.0, (last_deadline - timezone.now()).total_seconds()) + 0.05)
        for request_id in read:
            body = client.get(f"{stack.url}/api/v1/requests/{request_id}", timeout=10).json()
            assert body["status"] == "approved" and body["decision"]["source"] == Source.TIMEOUT, body

        # The rest wait for the restarted worker and beat's sweep.
        stack.worker_answers(60)
        recovered_at = time.monotonic()
        _wait_all_decided(ids, 30)
    restarted = {name: stack.pid(name) for name in ("worker", "beat0")}
    assert all(restarted[name] != old[name] for name in old)
    assert any("The worker process stopped (killed by SIGKILL)" in note for note in stack.supervisor.notes)

    statuses = Counter(OversightRequest.objects.filter(id__in=ids).values_list("status", "decision_source"))
    assert statuses == {(Status.APPROVED, Source.TIMEOUT): 30}
    assert _decisions(ids) == Counter({i: 1 for i in ids})
    swept = _lateness(ids[10:])
    print(
        f"\n[faults] worker+beat SIGKILLed, 30 requests due: worker running tasks again "
        f"{recovered_at - killed_at:.1f} s after the kill; read by their agent once every deadline had passed: 10 (lateness {_summary(_lateness(read))}); "
        f"decided by the restarted beat: 20 (lateness {_summary(swept)}); lost 0; decided twice 0"
    )


def test_it_loses_nothing_acknowledged_while_redis_is_down_for_20_seconds(fault_stack, agent):
    stack = fault_stack()
    outage = {"start": None, "end": None}
    sent: list[tuple[float, int, dict | None, str]] = []  # (monotonic, status, body, kind)
    stop = threading.Event()
    errors: list[str] = []

    def traffic() -> None:
        n = 0
        with httpx.Client(headers=agent.headers) as client:
            while not stop.is_set():
                kind = "critical" if n % 2 else "routine"
                body = CRITICAL | {"timeout_seconds": 2} if kind == "critical" else ROUTINE
                try:
                    response = _submit(client, stack.url, body | {"summary": f"fault suite {n}"})
                    sent.append((time.monotonic(), response.status_code, response.json(), kind))
                except (httpx.HTTPError, ValueError) as exc:
                    errors.append(repr(exc))
                n += 1
                time.sleep(0.1)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        time.sleep(2)
        outage["start"] = time.monotonic()
        stack.stop_redis()
        time.sleep(20)
        # Reads during the outage: an overdue request shows its timeout (from the database).
        with httpx.Client(headers=agent.headers) as client:
            overdue = [b["id"] for t, s, b, k in sent if s == 201 and k == "critical" and t < outage["start"] + 15]
            for request_id in overdue[:10]:
                response = client.get(f"{stack.url}/api/v1/requests/{request_id}", timeout=10)
                assert response.status_code == 200, response.text
                assert response.json()["status"] != "pending", response.json()
        stack.start_redis()
        outage["end"] = time.monotonic()
        recovered = stack.wait_healthy(60)
        worker_back = stack.worker_answers(60)
        time.sleep(1)
    finally:
        stop.set()
        thread.join(15)

    during = [(s, b) for t, s, b, k in sent if outage["start"] <= t <= outage["end"]]
    codes = Counter(s for _, s, _, _ in sent)
    assert not errors, errors[:3]
    assert set(codes) <= {201, 503}, codes  # never a 500; a 503 is "not taken, retry"
    acknowledged = [b["id"] for _, s, b, _ in sent if s == 201]
    assert acknowledged and during, (codes, len(during))
    # Every acknowledged submission is in the database.
    assert OversightRequest.objects.filter(id__in=acknowledged).count() == len(acknowledged)
    # Every deadline kept, each decided once, once the system is back.
    critical = [b["id"] for _, s, b, k in sent if s == 201 and k == "critical"]
    _wait_all_decided(critical, 15)
    assert not OversightRequest.objects.filter(id__in=acknowledged, status=Status.PENDING).exists()
    assert _decisions(acknowledged) == Counter({i: 1 for i in acknowledged})
    late = _lateness(critical)
    delayed = sum(1 for lateness in late if lateness > 2.0)
    # Timeouts kept applying from the database while Redis was down (beat's deadline
    # loop), not 20 s late when the broker came back. A bound for "working", not a speed.
    assert late[-1] < 5.0, _summary(late)
    print(
        f"\n[faults] Redis down 20 s under traffic: {len(sent)} submissions ({dict(codes)}), "
        f"{sum(1 for s, _ in during if s == 201)} of them acknowledged during the outage; lost 0; "
        f"healthy {recovered:.1f} s after Redis was back, worker running tasks after {worker_back:.1f} s more; "
        f"timeouts: {len(critical)} (lateness {_summary(late)}; {delayed} later than 2 s)"
    )


def test_it_applies_each_timeout_and_escalation_once_with_two_beats(fault_stack, agent):
    stack = fault_stack(beats=2)
    with httpx.Client(headers=agent.headers) as client:
        created = [_submit(client, stack.url, CRITICAL | {"timeout_seconds": 4}) for _ in range(30)]
    assert [r.status_code for r in created] == [201] * 30
    ids = [r.json()["id"] for r in created]
    _wait_all_decided(ids, 30)

    assert Counter(OversightRequest.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        Status.APPROVED: 30
    }
    assert _decisions(ids) == Counter({i: 1 for i in ids})
    escalations = Counter(
        str(r) for r in AuditEvent.objects.filter(request_id__in=ids, kind=AuditEvent.Kind.ESCALATED)
        .values_list("request_id", flat=True)
    )
    assert escalations == Counter({i: 1 for i in ids})
    assert OversightRequest.objects.filter(id__in=ids, escalated_at__isnull=True).count() == 0
    beats = Counter(note.split()[2] for note in stack.supervisor.notes if "stopped" in note)
    assert not beats, stack.supervisor.notes  # both beats ran throughout
    since = timezone.now() - timedelta(minutes=5)
    assert AuditEvent.objects.filter(request_id__in=ids, at__gte=since).exists()
    print(f"\n[faults] two beats, 30 requests: timeouts once each, escalations once each; "
          f"lateness {_summary(_lateness(ids))}")
