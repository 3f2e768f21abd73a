"""The agent SDK against the real server: uvicorn, a Celery worker and beat on the test database.

Operators decide from the test process through `actions.do_decide`, as the queue page
does; whatever blocks (a checkpoint, a long-poll) runs in a background thread meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import oversight_client
import oversight_client.client as client_module
import pytest
from django.utils import timezone
from oversight_client import (
    AlreadyDecided,
    AsyncClient,
    Client,
    IdempotencyConflict,
    MemoryReporter,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Rejected,
    TimedOut,
    Unauthenticated,
    Unavailable,
    ValidationError,
    current_depth,
    delegation,
    require_approval,
    verify_signature,
)

from monitoring.models import AgentSample
from oversight import actions
from oversight.models import Agent, AuditEvent, OversightRequest, Source, Status
from oversight.runner import free_port
from tests.conftest import AgentPersona, start_stack
from tests.receiver import Receiver
from tests.sdk.proxy import CuttingProxy

pytestmark = pytest.mark.live

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"

# Explicit figures, so neither this machine's memory nor the worker's host samples can
# change how the default policy routes a request.
CALM = {"memory_pressure": 10, "delegation_depth": 0, "circular_refs": 0}
DEEP = {"memory_pressure": 10, "delegation_depth": 5, "circular_refs": 0}  # 5 > 4: critical


def eventually(condition, timeout: float = 20.0, what: str = "the condition"):
    """Poll `condition` until it returns something truthy; fail at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.05)


class Background:
    """Runs `fn` in a daemon thread; `result()` returns its value or raises its exception."""

    def __init__(self, fn):
        self.done = threading.Event()
        self.value = self.error = None
        threading.Thread(target=self._run, args=(fn,), daemon=True).start()

    def _run(self, fn):
        try:
            self.value = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def result(self, timeout: float = 30.0):
        assert self.done.wait(timeout), "the background call is still blocked"
        if self.error is not None:
            raise self.error
        return self.value


def pending_request(agent: AgentPersona) -> OversightRequest:
    return eventually(
        lambda: OversightRequest.objects.filter(agent=agent.agent, status=Status.PENDING).first(),
        what="a pending request",
    )


def decide(request_id, outcome: str, reason: str = "") -> None:
    actions.do_decide(request_id, outcome=outcome, source=Source.OPERATOR, by="olivia", reason=reason)


@pytest.fixture
def sdk(live, agent):
    # A short backoff keeps the retry tests quick; nothing else differs from the defaults.
    with Client(live.url, agent.key, backoff=0.05, host="sdk-live-host") as client:
        yield client


# --- Requests and decisions ---------------------------------------------------------------


def test_it_submits_and_the_policy_approves_at_once(sdk, agent):
    request = sdk.submit("file_write", "Write notes.txt", payload={"path": "notes.txt"}, metrics=CALM)

    assert request.status == "approved" and request.approved and not request.critical
    assert request.decision.source == "policy" and request.decision.by is None
    assert request.agent == agent.name and request.payload == {"path": "notes.txt"}
    assert {t.rule for t in request.triggers} >= {"memory_pressure", "delegation_depth", "circular_refs"}
    assert not any(t.fired for t in request.triggers)
    assert request.created_at.utcoffset().total_seconds() == 0
    assert sdk.get(request.id) == request
    assert OversightRequest.objects.get(id=request.id).status == Status.APPROVED


def test_it_waits_for_an_operator_to_approve(sdk):
    request = sdk.submit("delegate", "Delegate to a sub-agent", metrics=DEEP)
    assert request.status == "pending" and request.critical
    assert [t.rule for t in request.triggers if t.fired] == ["delegation_depth"]
    waiting = Background(lambda: sdk.wait(request.id, timeout=30))

    decide(request.id, Status.APPROVED, "looks fine")

    decided = waiting.result()
    assert decided.status == "approved" and decided.final
    assert (decided.decision.source, decided.decision.by, decided.reason) == ("operator", "olivia", "looks fine")


def test_a_submit_with_wait_returns_the_rejection(sdk, agent):
    answer = Background(lambda: sdk.submit("delegate", "Delegate deeper", metrics=DEEP, wait=30))
    row = pending_request(agent)

    decide(row.id, Status.REJECTED, "Depth 5 is too deep")

    rejected = answer.result()
    assert rejected.id == str(row.id) and rejected.status == "rejected"
    assert rejected.reason == "Depth 5 is too deep" and rejected.decision.by == "olivia"


def test_it_cancels_a_pending_request_and_cancelling_again_returns_it(sdk):
    request = sdk.submit("delegate", "Delegate, then think better of it", metrics=DEEP)

    cancelled = sdk.cancel(request.id)
    again = sdk.cancel(request.id)

    assert cancelled.status == again.status == "cancelled"
    assert cancelled.decision.source == "agent"
    assert OversightRequest.objects.get(id=request.id).status == Status.CANCELLED
    assert AuditEvent.objects.filter(request_id=request.id, kind="cancelled").count() == 1


def test_cancelling_a_decided_request_says_who_decided(sdk):
    request = sdk.submit("delegate", "Delegate", metrics=DEEP)
    decide(request.id, Status.APPROVED)

    with pytest.raises(AlreadyDecided) as raised:
        sdk.cancel(request.id)

    assert raised.value.status == 409
    assert raised.value.request.status == "approved" and raised.value.request.decision.by == "olivia"


def test_waiting_gets_the_timeout_decision_at_the_deadline(sdk, short_timeouts):
    request = sdk.submit("delegate", "Delegate with a short deadline", metrics=DEEP, timeout_seconds=1)

    decided = sdk.wait(request.id)

    assert decided.status == "approved"  # the default policy's timeout action
    assert decided.decision.source == "timeout" and decided.decision.by is None
    assert decided.decision.decided_at >= request.deadline


def test_waiting_gives_up_while_the_request_stays_pending(sdk):
    request = sdk.submit("delegate", "Nobody looks at this", metrics=DEEP)

    with pytest.raises(TimedOut) as raised:
        sdk.wait(request.id, timeout=1)

    assert raised.value.request.id == request.id and raised.value.request.status == "pending"
    assert OversightRequest.objects.get(id=request.id).status == Status.PENDING


def test_the_servers_errors_become_the_sdks_exceptions(sdk, live, other_agent):
    with Client(live.url, other_agent.key) as them:
        theirs = them.submit("delegate", "Not yours", metrics=DEEP)
    with pytest.raises(NotFound):
        sdk.get(theirs.id)
    with pytest.raises(ValidationError) as invalid:
        sdk.submit("Not An Operation!", "s", metrics=CALM)
    assert "operation" in invalid.value.details
    with pytest.raises(ValidationError) as too_long:
        sdk.submit("delegate", "s", metrics=CALM, timeout_seconds=100_000)
    assert "timeout_seconds" in too_long.value.details
    sdk.submit("delegate", "first", metrics=CALM, idempotency_key="step-7")
    with pytest.raises(IdempotencyConflict):
        sdk.submit("delegate", "a different body", metrics=CALM, idempotency_key="step-7")
    with pytest.raises(Unauthenticated), Client(live.url, "ovs_not-a-key") as stranger:
        stranger.get(theirs.id)


def test_text_and_sizes_survive_the_round_trip(sdk):
    request = sdk.submit("file_write", "Écrire « notes » ✓ 日本", payload={"note": "naïve ☃"}, metrics=CALM)
    assert sdk.get(request.id).summary == "Écrire « notes » ✓ 日本"
    assert request.payload == {"note": "naïve ☃"}

    with pytest.raises(PayloadTooLarge) as raised:
        sdk.submit("file_write", "Too big", payload={"blob": "x" * 70_000}, metrics=CALM)
    assert raised.value.status == 413
    with pytest.raises(NotFound):
        sdk.get("not-a-request-id")


def test_it_lists_every_request_a_page_at_a_time(sdk, agent, other_agent, live):
    for n in range(5):
        sdk.submit("page.test", f"request {n}", metrics=CALM)
    sdk.submit("delegate", "a pending one", metrics=DEEP)
    with Client(live.url, other_agent.key) as them:
        them.submit("page.test", "someone else's", metrics=CALM)

    first_page, cursor = sdk.run(sdk.protocol.page(status=None, operation="page.test", limit=2, cursor=None))
    listed = [r.id for r in sdk.list(operation="page.test", limit=2)]

    newest_first = OversightRequest.objects.filter(agent=agent.agent, operation="page.test").order_by("-created_at", "-id")
    assert listed == [str(r.id) for r in newest_first] and len(listed) == 5
    assert [r.id for r in first_page] == listed[:2] and cursor
    assert [r.summary for r in sdk.list(status="pending")] == ["a pending one"]


def test_the_async_client_asks_and_waits_too(live, agent):
    async def run():
        async with AsyncClient(live.url, agent.key) as client:

            @require_approval("file_write", client=client, summary=lambda path: f"Write {path}", metrics=CALM)
            async def write(path):
                return f"wrote {path}"

            wrote = await write("a.txt")
            requests = [r async for r in client.list(limit=1)]
            return wrote, requests

    wrote, requests = asyncio.run(run())

    assert wrote == "wrote a.txt"
    assert [(r.summary, r.status) for r in requests] == [("Write a.txt", "approved")]


def test_an_async_checkpoint_waits_for_the_operator(live, agent):
    async def guarded():
        async with AsyncClient(live.url, agent.key) as client, client.checkpoint(
                "delegate", "Delegate from a coroutine", metrics=DEEP, timeout=30) as request:
            return request

    gate = Background(lambda: asyncio.run(guarded()))
    row = pending_request(agent)

    decide(row.id, Status.APPROVED)

    assert gate.result().id == str(row.id)


# --- Checkpoints ------------------------------------------------------------------------------


def test_a_checkpoint_blocks_until_an_operator_approves(sdk, agent):
    ran = []

    def guarded():
        with sdk.checkpoint("delegate", "Delegate scraping", metrics=DEEP, timeout=30) as request:
            ran.append(request.id)
        return request

    gate = Background(guarded)
    row = pending_request(agent)
    assert not gate.done.is_set() and ran == []

    decide(row.id, Status.APPROVED)

    assert gate.result().decision.by == "olivia"
    assert ran == [str(row.id)]


def test_a_checkpoint_hands_over_the_payload_approved_with_changes_and_the_note(sdk, agent):
    def guarded():
        with sdk.checkpoint("delegate", "Delegate scraping", payload={"depth": 6}, metrics=DEEP, timeout=30) as approval:
            return approval

    gate = Background(guarded)
    row = pending_request(agent)
    actions.do_decide(row.id, outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia",
                      payload={"depth": 2}, note="Two levels are enough")

    approval = gate.result()
    assert approval.payload == {"depth": 2} and approval.submitted_payload == {"depth": 6}
    assert approval.changed and approval.note == "Two levels are enough"


def test_a_checkpoint_raises_rejected_with_the_reason(sdk, agent):
    ran = []

    def guarded():
        with sdk.checkpoint("delegate", "Delegate scraping", metrics=DEEP, timeout=30):
            ran.append(True)

    gate = Background(guarded)
    decide(pending_request(agent).id, Status.REJECTED, "Not during the freeze")

    with pytest.raises(Rejected) as raised:
        gate.result()
    assert raised.value.reason == "Not during the freeze"
    assert raised.value.request.decision.by == "olivia"
    assert ran == []


def test_a_checkpoint_raises_rejected_when_the_deadline_applies_a_reject_policy(sdk):
    actions.do_change_policy("deploy", {"always": True, "timeout_action": "reject", "min_timeout_seconds": 1}, by="maria")

    with pytest.raises(Rejected) as raised, sdk.checkpoint("deploy", "Deploy", metrics=CALM, timeout_seconds=1):
        pytest.fail("the block must not run")

    assert raised.value.request.decision.source == "timeout"


def test_a_checkpoint_that_stops_waiting_withdraws_its_request(sdk, agent):
    with pytest.raises(TimedOut), sdk.checkpoint("delegate", "Delegate", metrics=DEEP, timeout=1):
        pytest.fail("the block must not run")

    row = OversightRequest.objects.get(agent=agent.agent)
    assert (row.status, row.decision_source) == (Status.CANCELLED, Source.AGENT)


def test_a_checkpoint_fills_in_the_figures_it_can_take_itself(sdk, agent):
    with sdk.checkpoint("file_write", "Write", metrics={"memory_pressure": 10}) as request:
        assert request.approved

    row = OversightRequest.objects.get(agent=agent.agent)
    assert row.metrics["delegation_depth"] == 0 and row.metrics["host"] == "sdk-live-host"


def test_the_decorator_runs_the_call_only_once_approved(sdk, agent):
    @sdk.require_approval("file_write", summary=lambda path, text: f"Write {len(text)} chars to {path}",
                          payload=lambda path, text: {"path": path}, metrics=CALM)
    def write(path, text):
        return f"wrote {path}"

    @sdk.require_approval("file_delete", metrics=DEEP, timeout=30)
    def delete(path):
        pytest.fail("a rejected call must not run")

    assert write("notes.txt", "hello") == "wrote notes.txt"
    row = OversightRequest.objects.get(agent=agent.agent)
    assert (row.summary, row.payload, row.status) == ("Write 5 chars to notes.txt", {"path": "notes.txt"}, Status.APPROVED)

    call = Background(lambda: delete("notes.txt"))
    decide(pending_request(agent).id, Status.REJECTED, "keep it")
    with pytest.raises(Rejected, match="keep it"):
        call.result()


def test_the_delegation_breaker_asks_an_operator_past_the_soft_limit(sdk, agent):
    def delegate(levels, depths):
        # One breaker object per `with`, as each level of a real agent would make its own.
        with delegation(soft_limit=4, hard_limit=8, client=sdk, metrics={"memory_pressure": 10}, timeout=30,
                        summary=lambda depth: f"Sub-agent at depth {depth}") as depth:
            depths.append(depth)
            if levels > 1:
                delegate(levels - 1, depths)
        return depths, current_depth()

    nested = Background(lambda: delegate(5, []))
    row = pending_request(agent)
    assert row.critical and row.summary == "Sub-agent at depth 5"
    assert row.metrics["delegation_depth"] == 5
    assert OversightRequest.objects.filter(agent=agent.agent).count() == 1  # depths 1-4 never asked

    decide(row.id, Status.APPROVED)

    assert nested.result() == ([1, 2, 3, 4, 5], 0)


def test_a_rejected_delegation_keeps_the_depth_where_it_was(sdk, agent):
    actions.do_change_policy("spawn", {"always": True}, by="maria")

    def delegate_twice():
        with delegation(client=sdk, operation="spawn"):
            try:
                with delegation(soft_limit=1, client=sdk, operation="spawn", metrics=CALM, timeout=30):
                    pytest.fail("a rejected delegation must not enter")
            except Rejected:
                return current_depth()

    nested = Background(delegate_twice)
    row = pending_request(agent)
    assert row.metrics["delegation_depth"] == 2

    decide(row.id, Status.REJECTED, "deep enough")

    assert nested.result() == 1


# --- Memory samples --------------------------------------------------------------------------


def test_pushed_metrics_are_stored(sdk, agent):
    # Within the raw-sample retention (an older `at` is a 400, §9.2).
    at = (timezone.now() - timedelta(hours=1)).replace(microsecond=0)
    sample = {"at": at.isoformat().replace("+00:00", "Z"), "pid": 4242, "process": "agent.py", "rss_bytes": 50_000_000,
              "vms_bytes": 90_000_000, "gc": {"collected": 12, "uncollectable": 1}, "gc_counts": [700, 3, 1],
              "cycles_found": 12, "tracemalloc_top": [{"where": "agent.py:12", "size_bytes": 4096, "count": 8}]}

    sdk.push_metrics("sdk-live-host", [sample])

    stored = AgentSample.objects.get(agent=agent.agent)
    assert (stored.host, stored.pid, stored.process, stored.rss_bytes) == ("sdk-live-host", 4242, "agent.py", 50_000_000)
    assert (stored.gc_collected, stored.gc_uncollectable, stored.gc_counts) == (12, 1, [700, 3, 1])
    assert stored.cycles_found == 12 and stored.tracemalloc_top == sample["tracemalloc_top"]
    assert stored.at == at


def test_the_memory_reporter_pushes_real_samples(sdk, agent):
    reporter = MemoryReporter(sdk, interval=0.1, tracemalloc=True).start()
    try:
        eventually(lambda: AgentSample.objects.filter(agent=agent.agent).count() >= 2, what="two pushed samples")
        grow = [bytearray(1024) for _ in range(2000)]  # something for tracemalloc to see
        eventually(lambda: AgentSample.objects.filter(agent=agent.agent).exclude(tracemalloc_top=[]).exists(),
                   what="a sample with allocation sites")
    finally:
        reporter.stop()
    del grow

    stored = AgentSample.objects.filter(agent=agent.agent)
    assert stored.count() == reporter.sent and reporter.pending() == 0
    assert reporter.dropped == reporter.rejected == 0
    assert {(s.host, s.pid) for s in stored} == {("sdk-live-host", reporter.last_sample.pid)}
    assert all(s.rss_bytes > 0 and len(s.gc_counts) == 3 for s in stored)
    assert Agent.objects.get(pk=agent.agent.pk).last_host == "sdk-live-host"


def blocks(n: int, size: int) -> list[bytearray]:
    return [bytearray(size) for _ in range(n)]


def test_a_line_that_grew_into_fewer_blocks_is_stored_not_refused(sdk, agent):
    reporter = MemoryReporter(sdk, interval=3600, tracemalloc=True).start()
    try:
        kept = blocks(200, 16)
        reporter.sample()
        kept = blocks(2, 200_000)  # more bytes, fewer blocks, same line
        reporter.sample()
    finally:
        reporter.stop()
    del kept

    assert reporter.rejected == 0
    sites = [site for s in AgentSample.objects.filter(agent=agent.agent) for site in s.tracemalloc_top]
    assert any(site["where"].startswith(__file__) and site["size_bytes"] > 300_000 for site in sites)


def test_stopping_the_reporter_sends_what_is_buffered_and_a_last_sample(sdk, agent):
    reporter = MemoryReporter(sdk, interval=3600, max_batch=2).start()  # never ticks by itself
    taken = [reporter.sample() for _ in range(3)]
    assert not AgentSample.objects.filter(agent=agent.agent).exists()

    reporter.stop()

    stored = list(AgentSample.objects.filter(agent=agent.agent).order_by("at"))
    assert len(stored) == 4 and reporter.sent == 4
    assert [s.at for s in stored[:3]] == [t.at.replace(microsecond=t.at.microsecond // 1000 * 1000) for t in taken]
    assert [s.gc_counts for s in stored[:3]] == [list(t.gc_counts) for t in taken]


# --- Callbacks, dropped connections, outages ----------------------------------------------------


def test_a_real_signed_callback_verifies(sdk, agent):
    with Receiver([200]) as receiver:
        request = sdk.submit("delegate", "Tell me when", metrics=DEEP, callback_url=receiver.url)
        decide(request.id, Status.APPROVED)
        assert receiver.arrived.wait(20), "no callback arrived"

    headers, body = receiver.received[-1]
    signature = headers["x-oversight-signature"]
    assert verify_signature(body, signature, agent.key)
    assert not verify_signature(body, signature, agent.key + "x")
    assert not verify_signature(body.replace(b"approved", b"rejected"), signature, agent.key)
    delivered = oversight_client.OversightRequest.from_dict(json.loads(body))
    assert (delivered.id, delivered.status, delivered.decision.by) == (request.id, "approved", "olivia")


def test_a_submit_whose_answer_is_lost_is_retried_into_the_same_request(live, agent, caplog):
    caplog.set_level(logging.INFO, logger="oversight_client")
    port = int(live.url.rsplit(":", 1)[1])
    with CuttingProxy(port) as proxy, Client(proxy.url, agent.key, backoff=0.05) as client:
        request = client.submit("file_write", "Write once", metrics=CALM)

    assert proxy.cut.is_set() and proxy.lost_answer.startswith(b"HTTP/1.1 201")
    assert proxy.connections == 2
    retries = [r.getMessage() for r in caplog.records if r.name == "oversight_client"]
    assert len(retries) == 1 and "POST /api/v1/requests failed" in retries[0]
    rows = list(OversightRequest.objects.filter(agent=agent.agent))
    assert [str(r.id) for r in rows] == [request.id] and request.status == "approved"
    assert AuditEvent.objects.filter(request=rows[0], kind="submitted").count() == 1


@pytest.fixture
def dead_url():
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_a_checkpoint_fails_closed_when_the_server_is_down(dead_url, agent):
    client = Client(dead_url, agent.key, max_retries=1, backoff=0.01)
    with pytest.raises(Unavailable), client.checkpoint("file_write", "Write", metrics=CALM):
        pytest.fail("the block must not run")


def test_a_checkpoint_fails_open_only_when_told_to(dead_url, agent, caplog):
    caplog.set_level(logging.WARNING, logger="oversight_client")
    reads_only = lambda operation, exc: operation.startswith("read")  # noqa: E731
    with Client(dead_url, agent.key, max_retries=1, backoff=0.01, on_unavailable="allow") as client:
        with client.checkpoint("file_read", "Read", metrics=CALM) as request:
            ran = request is None
        with pytest.raises(Unavailable), client.checkpoint("file_write", "Write", on_unavailable=reads_only):
            pytest.fail("the block must not run")
        with client.checkpoint("read_config", "Read", on_unavailable=reads_only) as request:
            assert request is None

    assert ran
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("WITHOUT APPROVAL" in w for w in warnings)


def test_failing_open_never_hides_a_bad_key(live, agent):
    client = Client(live.url, "ovs_revoked-or-never-issued", on_unavailable="allow")
    with pytest.raises(Unauthenticated), client.checkpoint("file_read", "Read", metrics=CALM):
        pytest.fail("the block must not run")


# --- Rate limiting (a stack of its own, at 3 requests a minute) ---------------------------------

RATE_LIMIT = 3


@pytest.fixture(scope="module")
def limited_stack(django_db_setup, django_db_blocker):
    stack = start_stack(extra_env={"OVERSIGHT_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT)}, worker=False, beat=False)
    yield stack
    stack.stop()


@pytest.fixture
def limited(limited_stack, transactional_db):
    """The rate-limited stack and a fresh agent, at the start of a minute with room to spare."""
    from oversight.policy import ensure_default_policy

    ensure_default_policy()
    # The limiter counts per agent id per clock minute in Redis, which may outlive this
    # database (a rerun within the minute, a shared Redis): an unused random id can't
    # inherit someone's count.
    agent = Agent.objects.create(id=random.randrange(10**6, 2**31), name="limited")
    _, key = agent.issue_key()
    # A fixed window: make sure the test's few requests fall in one minute.
    if time.time() % 60 > 55:
        time.sleep(60.5 - time.time() % 60)
    return limited_stack, AgentPersona(agent, key)


def test_it_raises_rate_limited_with_the_servers_retry_after(limited):
    stack, agent = limited
    with Client(stack.url, agent.key, max_retries=0) as client:
        for n in range(RATE_LIMIT):
            client.submit("file_write", f"allowed {n}", metrics=CALM)
        with pytest.raises(RateLimited) as raised:
            client.submit("file_write", "one too many", metrics=CALM)

    assert raised.value.status == 429 and raised.value.code == "rate_limited"
    assert 1 <= raised.value.retry_after <= 60
    assert OversightRequest.objects.filter(agent=agent.agent).count() == RATE_LIMIT


def test_it_waits_as_long_as_retry_after_says_between_retries(limited, monkeypatch):
    stack, agent = limited
    slept = []
    # The clock is the one thing mocked: waiting out a real minute would be the test.
    monkeypatch.setattr(client_module, "time", type("Clock", (), {"sleep": staticmethod(slept.append)}))
    with Client(stack.url, agent.key, max_retries=2, backoff=0.05) as client:
        for n in range(RATE_LIMIT):
            client.submit("file_write", f"allowed {n}", metrics=CALM)
        with pytest.raises(RateLimited) as raised:
            client.submit("file_write", "still too many", metrics=CALM)

    assert len(slept) == 2
    assert all(s == int(s) and 1 <= s <= 60 for s in slept)  # Retry-After, not the 0.05 s backoff
    assert slept[0] >= slept[1] >= raised.value.retry_after


def test_it_does_not_wait_longer_than_max_retry_after(limited, monkeypatch):
    stack, agent = limited
    slept = []
    monkeypatch.setattr(client_module, "time", type("Clock", (), {"sleep": staticmethod(slept.append)}))
    with Client(stack.url, agent.key, max_retries=5, max_retry_after=0.5) as client:
        for n in range(RATE_LIMIT):
            client.submit("file_write", f"allowed {n}", metrics=CALM)
        with pytest.raises(RateLimited):
            client.submit("file_write", "one too many", metrics=CALM)

    assert slept == []


def test_a_rate_limited_checkpoint_does_not_fail_open(limited):
    stack, agent = limited
    with Client(stack.url, agent.key, max_retries=0, on_unavailable="allow") as client:
        for n in range(RATE_LIMIT):
            client.submit("file_write", f"allowed {n}", metrics=CALM)
        with pytest.raises(RateLimited), client.checkpoint("file_write", "Write", metrics=CALM):
            pytest.fail("the block must not run")


# --- The seed example --------------------------------------------------------------------------


def table_rows(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    assert set(lines[1].replace(" ", "")) == {"-"}
    rows = []
    for line in lines[2:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)))
    return rows


def test_the_seed_example_routes_half_to_people(live, agent):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "seed_oversight_test.py")],
        env=live.env | {"OVERSIGHT_URL": live.url, "OVERSIGHT_API_KEY": agent.key},
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == 6
    by_policy = [r["operation"] for r in rows if (r["status"], r["decided by"]) == ("approved", "policy")]
    waiting = [r["operation"] for r in rows if (r["status"], r["decided by"]) == ("pending", "(a human)")]
    assert sorted(by_policy) == ["seed.boundary", "seed.calm", "seed.idle"]
    assert sorted(waiting) == ["seed.cycles", "seed.delegation", "seed.memory"]
    assert "3 approved by policy, 3 waiting for a human (coverage 50%)" in result.stdout
    stored = OversightRequest.objects.filter(agent=agent.agent)
    assert sorted(stored.filter(status=Status.PENDING, critical=True).values_list("operation", flat=True)) == sorted(waiting)
    assert stored.filter(status=Status.APPROVED, decision_source=Source.POLICY).count() == 3
