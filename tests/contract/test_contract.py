"""The external contract (/work/shared/spec/api.md), checked black-box against the real
servers: HTTP with httpx, the feed with `websockets`, commands with `manage.py`.

Section by section; each test names the part of the spec it holds the server to.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets
from django.contrib.auth.models import User
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_agent, start_stack

pytestmark = pytest.mark.live

BASE_DIR = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EXAMPLE = {
    "operation": "delegate",
    "summary": "Delegate scraping of docs site to sub-agent #3",
    "payload": {"url": "https://example.org", "depth": 5},
    "metrics": {"memory_pressure": 83.5, "delegation_depth": 5, "circular_refs": 1},
    "timeout_seconds": 120,
    "callback_url": "https://agent.example/hooks/oversight",
    "idempotency_key": "run-42-step-7",
}
RESOURCE_FIELDS = {
    "id": str, "agent": str, "operation": str, "summary": str, "payload": dict, "metrics": dict,
    "status": str, "critical": bool, "triggers": list, "policy": dict, "created_at": str,
    "deadline": (str, type(None)), "timeout_action": str, "decision": (dict, type(None)), "poll_after_ms": (int, type(None)),
}
DECISION_FIELDS = {"outcome", "source", "by", "reason", "decided_at"}
# v1.1 (§9.7): a note with every decision, the payload approved with changes, a receipt.
DECISION_FIELDS_V1_1 = DECISION_FIELDS | {"note", "payload", "receipt"}
CRITICAL = {"memory_pressure": 95.0}
ROUTINE = {"memory_pressure": 5.0}


# --- Helpers ---------------------------------------------------------------------------


def api(live, agent, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {**agent.headers, **kwargs.pop("headers", {})}
    return httpx.request(method, live.url + "/api/v1" + path, headers=headers, timeout=70, **kwargs)


def submit(live, agent, summary: str = "Contract check", metrics=CRITICAL, query: str = "", **fields) -> dict:
    body = {"operation": "delegate", "summary": summary, "metrics": metrics, **fields}
    answer = api(live, agent, "POST", "/requests" + query, json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def assert_error(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


def assert_resource(resource: dict) -> None:
    for field, kind in RESOURCE_FIELDS.items():
        assert field in resource, field
        assert isinstance(resource[field], kind), (field, resource[field])
    uuid.UUID(resource["id"])
    assert resource["status"] in {"pending", "approved", "rejected", "cancelled"}
    assert resource["timeout_action"] in {"approve", "reject"}
    assert set(resource["policy"]) == {"operation", "version"} and isinstance(resource["policy"]["version"], int)
    for trigger in resource["triggers"]:
        # §9.1: memory_pressure also carries both values it was judged from.
        both = {"agent_value", "monitored_value"} if trigger["rule"] == "memory_pressure" else set()
        assert set(trigger) == {"rule", "threshold", "value", "fired", "source"} | both
    assert isinstance(resource["required_approvals"], int) and isinstance(resource["approvals"], list)
    assert ISO_MS.match(resource["created_at"])
    # A request the policy approved at once never had a deadline; every other one has.
    if resource["critical"]:
        assert ISO_MS.match(resource["deadline"])
    if resource["status"] == "pending":
        assert resource["decision"] is None
    else:
        assert_decision(resource["decision"], resource["status"])


def assert_decision(decision: dict, outcome: str, source: str | None = None) -> None:
    assert DECISION_FIELDS <= set(decision) <= DECISION_FIELDS_V1_1
    assert decision["outcome"] == outcome
    assert decision["source"] in {"policy", "operator", "timeout", "agent", "standing"}
    if source:
        assert decision["source"] == source
    if decision["source"] in {"policy", "timeout"}:
        assert decision["by"] is None
    assert isinstance(decision["reason"], str)
    assert ISO_MS.match(decision["decided_at"])


@contextlib.contextmanager
def browser(live, username: str, password: str = PASSWORD):
    """A signed-in browser: the login form's CSRF token, then the form POST."""
    with httpx.Client(base_url=live.url, timeout=30) as client:
        form = client.get("/login/")
        assert form.status_code == 200
        answer = client.post("/login/", data={
            "username": username, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"],
        })
        assert answer.status_code == 302, answer.text
        yield client


def anonymous(live) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=30)


def decide(client: httpx.Client, request_id: str, outcome: str, reason: str = "", *, as_json=False, token=True):
    data = {"outcome": outcome, "reason": reason}
    if token:
        data["csrfmiddlewaretoken"] = client.cookies.get("csrftoken", "")
    headers = {"Accept": "application/json"} if as_json else {}
    return client.post(f"/requests/{request_id}/decide", data=data, headers=headers)


def to_login(answer: httpx.Response) -> bool:
    return answer.status_code == 302 and answer.headers["location"].startswith("/login/?next=")


def manage(live, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=live.env,
                          capture_output=True, text=True, timeout=60)


def session_cookie(client: httpx.Client) -> str:
    return f"sessionid={client.cookies['sessionid']}"


def ws_url(live) -> str:
    return live.url.replace("http://", "ws://") + "/ws/feed/"


async def feed_refused(live, *, cookie: str | None = None, origin: str | None = "same", headers=None) -> bool:
    """True when the server refuses the handshake or closes before sending anything."""
    extra = dict(headers or {})
    if cookie:
        extra["Cookie"] = cookie
    try:
        async with websockets.connect(ws_url(live), origin=live.url if origin == "same" else origin,
                                      additional_headers=extra, open_timeout=10) as socket:
            await asyncio.wait_for(socket.recv(), 10)
    except (websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed):
        return True
    return False


async def next_event(socket, wanted, timeout: float = 15) -> dict:
    """The first frame matching `wanted(event)`, skipping others (samples, alerts)."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        event = json.loads(await asyncio.wait_for(socket.recv(), left))
        assert isinstance(event.get("type"), str)
        if wanted(event):
            return event
    raise AssertionError("no such event before the deadline")


def about(request_id: str, event_type: str):
    return lambda e: e["type"] == event_type and e["request"]["id"] == request_id


# --- §4 Agent HTTP API: submit and the request resource ----------------------------------


def test_it_answers_the_example_submission_with_the_example_resource(live, agent):
    answer = api(live, agent, "POST", "/requests", json=EXAMPLE)
    assert answer.status_code == 201, answer.text
    resource = answer.json()
    assert_resource(resource)
    assert resource["agent"] == agent.name
    assert resource["operation"] == "delegate" and resource["summary"] == EXAMPLE["summary"]
    assert resource["payload"] == EXAMPLE["payload"] and resource["metrics"] == EXAMPLE["metrics"]
    assert resource["status"] == "pending" and resource["critical"] is True
    assert resource["triggers"] == [
        {"rule": "memory_pressure", "threshold": 80, "value": 83.5, "fired": True, "source": "agent",
         "agent_value": 83.5, "monitored_value": None},
        {"rule": "delegation_depth", "threshold": 4, "value": 5, "fired": True, "source": "agent"},
        {"rule": "circular_refs", "threshold": 3, "value": 1, "fired": False, "source": "agent"},
    ]
    assert resource["policy"]["operation"] == "*"
    assert resource["timeout_action"] == "approve" and resource["decision"] is None
    assert resource["poll_after_ms"] == 1000
    created = _parse(resource["created_at"])
    assert abs((_parse(resource["deadline"]) - created) - 120) < 0.002


def _parse(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_it_approves_a_routine_request_at_once_by_policy(live, agent):
    resource = submit(live, agent, metrics=ROUTINE)
    assert_resource(resource)
    assert resource["status"] == "approved" and resource["critical"] is False
    assert_decision(resource["decision"], "approved", "policy")


def test_it_returns_the_same_request_for_an_idempotent_retry_and_409_for_another_body(live, agent):
    first = api(live, agent, "POST", "/requests", json=EXAMPLE)
    again = api(live, agent, "POST", "/requests", json=EXAMPLE)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert_error(api(live, agent, "POST", "/requests", json=EXAMPLE | {"summary": "Something else"}),
                 409, "idempotency_conflict")

    body = {"operation": "delegate", "summary": "By header", "metrics": ROUTINE}
    header = {"Idempotency-Key": "run-42-step-8"}
    by_header = api(live, agent, "POST", "/requests", json=body, headers=header)
    assert by_header.status_code == 201
    repeat = api(live, agent, "POST", "/requests", json=body, headers=header)
    assert repeat.status_code == 200 and repeat.json()["id"] == by_header.json()["id"]
    assert_error(api(live, agent, "POST", "/requests", json=body | {"summary": "Other"}, headers=header),
                 409, "idempotency_conflict")


def test_it_counts_a_null_metric_as_absent_and_keeps_other_numbers(live, agent):
    metrics = {"memory_pressure": None, "delegation_depth": 5, "circular_refs": None, "host": "box-1", "threads": 12}
    resource = submit(live, agent, metrics=metrics)
    fired = {t["rule"]: t["fired"] for t in resource["triggers"]}
    assert fired["delegation_depth"] is True and fired["circular_refs"] is False
    assert resource["metrics"]["threads"] == 12 and resource["metrics"]["host"] == "box-1"


def test_it_refuses_a_timeout_longer_than_the_policys(live, agent):
    error = assert_error(api(live, agent, "POST", "/requests", json=EXAMPLE | {"timeout_seconds": 301,
                                                                              "idempotency_key": "long"}),
                         400, "validation_error")
    assert "timeout_seconds" in error["details"]


# --- §4 errors -------------------------------------------------------------------------


def test_it_answers_every_bad_input_with_the_one_error_shape(live, agent, other_agent):
    error = assert_error(api(live, agent, "POST", "/requests", json={"operation": "delegate"}), 400, "validation_error")
    assert "summary" in error["details"]
    assert_error(api(live, agent, "POST", "/requests", json={"operation": "Bad Op!", "summary": "x"}),
                 400, "validation_error")
    assert_error(api(live, agent, "POST", "/requests", json={"operation": "delegate", "summary": "x",
                                                             "metrics": {"memory_pressure": True}}),
                 400, "validation_error")
    assert_error(api(live, agent, "POST", "/requests", json={"operation": "delegate", "summary": "x", "payload": [1]}),
                 400, "validation_error")
    assert_error(api(live, agent, "POST", "/requests", json={"operation": "delegate", "summary": ""}),
                 400, "validation_error")
    assert_error(api(live, agent, "POST", "/requests", json=["not", "an", "object"]), 400, "validation_error")
    assert_error(api(live, agent, "GET", "/nothing-here"), 404, "not_found")
    assert_error(api(live, agent, "POST", "/requests", content=b'{"operation": ',
                     headers={"Content-Type": "application/json"}), 400, "malformed_json")
    assert_error(api(live, agent, "POST", "/requests", content=b"operation=delegate",
                     headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")

    for headers in ({}, {"Authorization": "Bearer not-a-key"}):
        answer = httpx.get(live.url + "/api/v1/requests", headers=headers, timeout=10)
        assert_error(answer, 401, "unauthenticated")

    theirs = submit(live, other_agent)
    assert_error(api(live, agent, "GET", f"/requests/{theirs['id']}"), 404, "not_found")
    assert_error(api(live, agent, "GET", f"/requests/{uuid.uuid4()}"), 404, "not_found")
    assert_error(api(live, agent, "GET", "/requests/not-a-uuid"), 404, "not_found")
    assert_error(api(live, agent, "POST", f"/requests/{theirs['id']}/cancel"), 404, "not_found")
    assert_error(api(live, agent, "DELETE", f"/requests/{theirs['id']}"), 405, "method_not_allowed")
    assert_error(api(live, agent, "GET", "/metrics"), 405, "method_not_allowed")

    big_body = {"operation": "delegate", "summary": "x", "payload": {"blob": "x" * (257 * 1024)}}
    assert_error(api(live, agent, "POST", "/requests", json=big_body), 413, "payload_too_large")
    big_payload = {"operation": "delegate", "summary": "x", "payload": {"blob": "x" * (65 * 1024)}}
    assert_error(api(live, agent, "POST", "/requests", json=big_payload), 413, "payload_too_large")


def test_it_limits_an_agents_rate_with_retry_after(live):
    throttled = make_agent("throttled")
    stack = start_stack(worker=False, beat=False, extra_env={"OVERSIGHT_RATE_LIMIT_PER_MINUTE": "3"})
    try:
        with httpx.Client(base_url=stack.url, headers=throttled.headers, timeout=10) as client:
            # Fixed one-minute windows: a window may turn over once mid-loop, so allow two.
            answers = [client.get("/api/v1/requests") for _ in range(8)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited, [a.status_code for a in answers]
        assert_error(limited[0], 429, "rate_limited")
        assert 1 <= int(limited[0].headers["Retry-After"]) <= 60
        assert all(a.status_code in (200, 429) for a in answers)
    finally:
        stack.stop()


# --- §4 other endpoints ---------------------------------------------------------------


def test_it_holds_a_wait_until_the_decision_and_bounds_it(live, agent, operator, short_timeouts):
    for wait in ("56", "-1", "soon"):
        assert_error(api(live, agent, "GET", f"/requests/{uuid.uuid4()}?wait={wait}"), 400, "validation_error")
        assert_error(api(live, agent, "POST", f"/requests?wait={wait}", json={"operation": "delegate", "summary": "x"}),
                     400, "validation_error")

    # The deadline holds inside a wait: a 1 s timeout comes back decided by the timeout.
    timed_out = submit(live, agent, timeout_seconds=1, query="?wait=10")
    assert timed_out["status"] == "approved"
    assert_decision(timed_out["decision"], "approved", "timeout")

    pending = submit(live, agent)
    assert api(live, agent, "GET", f"/requests/{pending['id']}?wait=0").json()["status"] == "pending"
    held = {}
    reader = threading.Thread(target=lambda: held.update(
        answer=api(live, agent, "GET", f"/requests/{pending['id']}?wait=30")))
    reader.start()
    with browser(live, operator.username) as olivia:
        # The reader may start after the decision; either way it must come back decided.
        assert decide(olivia, pending["id"], "approve", as_json=True).status_code == 200
    reader.join(40)
    assert held["answer"].status_code == 200
    assert held["answer"].json()["status"] == "approved"
    assert_decision(held["answer"].json()["decision"], "approved", "operator")
    assert held["answer"].json()["decision"]["by"] == operator.username


def test_it_lists_the_agents_own_requests_newest_first_by_cursor(live, agent, other_agent):
    ids = [submit(live, agent, f"Number {n}", metrics=ROUTINE if n == 1 else CRITICAL)["id"] for n in range(3)]
    submit(live, other_agent)
    first = api(live, agent, "GET", "/requests?limit=2")
    assert first.status_code == 200
    page = first.json()
    assert set(page) == {"results", "next_cursor"}
    assert [r["id"] for r in page["results"]] == ids[::-1][:2]
    for resource in page["results"]:
        assert_resource(resource)
    assert isinstance(page["next_cursor"], str)
    rest = api(live, agent, "GET", "/requests", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [r["id"] for r in rest["results"]] == [ids[0]] and rest["next_cursor"] is None
    everything = api(live, agent, "GET", "/requests").json()
    assert [r["id"] for r in everything["results"]] == ids[::-1] and everything["next_cursor"] is None
    approved = api(live, agent, "GET", "/requests?status=approved&operation=delegate").json()
    assert [r["id"] for r in approved["results"]] == [ids[1]]
    for limit in ("0", "101", "many"):
        assert_error(api(live, agent, "GET", f"/requests?limit={limit}"), 400, "validation_error")


def test_it_cancels_a_pending_request_once(live, agent):
    pending = submit(live, agent)
    answer = api(live, agent, "POST", f"/requests/{pending['id']}/cancel")
    assert answer.status_code == 200
    assert_resource(answer.json())
    assert answer.json()["status"] == "cancelled"
    assert_decision(answer.json()["decision"], "cancelled", "agent")
    assert_error(api(live, agent, "POST", f"/requests/{pending['id']}/cancel"), 409, "already_decided")
    routine = submit(live, agent, metrics=ROUTINE)
    assert_error(api(live, agent, "POST", f"/requests/{routine['id']}/cancel"), 409, "already_decided")


def test_it_accepts_metrics_and_describes_itself(live, agent):
    body = {"host": "agent-box", "samples": [{
        "at": "2026-11-25T10:00:00.000Z", "pid": 1, "process": "name", "rss_bytes": 1, "vms_bytes": 1,
        "gc": {"collected": 0, "uncollectable": 0}, "cycles_found": 0,
        "tracemalloc_top": [{"where": "file.py:12", "size_bytes": 1, "count": 1}],
    }]}
    assert api(live, agent, "POST", "/metrics", json=body).status_code == 202
    described = httpx.get(live.url + "/api/v1/openapi.json", timeout=10)
    assert described.status_code == 200
    document = described.json()
    assert document["openapi"].startswith("3.")
    for path in ("/api/v1/requests", "/api/v1/requests/{id}", "/api/v1/requests/{id}/cancel", "/api/v1/metrics"):
        assert path in document["paths"], path


# --- §3 states -------------------------------------------------------------------------


def test_it_never_leaves_a_final_state(live, agent, operator, second_operator):
    pending = submit(live, agent)
    with browser(live, operator.username) as olivia, browser(live, second_operator.username) as oscar:
        assert decide(olivia, pending["id"], "reject", "Too deep", as_json=True).status_code == 200
        assert decide(oscar, pending["id"], "approve", as_json=True).status_code == 409
    assert_error(api(live, agent, "POST", f"/requests/{pending['id']}/cancel"), 409, "already_decided")
    final = api(live, agent, "GET", f"/requests/{pending['id']}").json()
    assert final["status"] == "rejected"
    assert_decision(final["decision"], "rejected", "operator")
    assert final["decision"]["by"] == operator.username and final["decision"]["reason"] == "Too deep"


# --- §5 pages -------------------------------------------------------------------------


def test_it_opens_each_page_to_the_roles_of_the_table(live, agent, operator, manager, outsider):
    boss = User.objects.create_superuser("sue", "sue@example.org", PASSWORD)
    request_id = submit(live, agent)["id"]
    pages = {
        "/queue/": {"operator"},
        f"/requests/{request_id}/": {"operator", "manager"},
        "/history/": {"operator", "manager"},
        "/monitoring/": {"operator", "manager"},
        "/reports/": {"manager"},
        "/reports/2026-11/": {"manager"},
        "/reports/2026-11.csv": {"manager"},
        "/policies/": {"manager"},
        "/admin/": set(),
    }
    people = {"operator": operator.username, "manager": manager.username, "outsider": outsider.username,
              "superuser": boss.username}
    with anonymous(live) as nobody, httpx.Client(base_url=live.url, headers=agent.headers, timeout=30) as robot:
        for path in pages:
            for client in (nobody, robot):
                answer = client.get(path)
                assert answer.status_code == 302 and "login/" in answer.headers["location"], (path, answer.status_code)
        assert nobody.get("/login/").status_code == 200
    for role, username in people.items():
        with browser(live, username) as person:
            for path, roles in pages.items():
                status = person.get(path).status_code
                if role == "superuser" or role in roles:
                    assert status == 200, (role, path, status)
                else:
                    assert status in (302, 403), (role, path, status)
                    if path != "/admin/":
                        assert status == 403, (role, path, status)
            assert person.post("/logout/", data={"csrfmiddlewaretoken": person.cookies["csrftoken"]}).status_code in (
                200, 302)
            assert to_login(person.get("/history/"))


def test_it_sends_the_start_page_to_the_queue(live, operator):
    with anonymous(live) as nobody:
        answer = nobody.get("/")
        assert answer.status_code == 302 and answer.headers["location"] == "/queue/"
    with browser(live, operator.username) as olivia:
        answer = olivia.get("/")
        assert answer.status_code == 302 and answer.headers["location"] == "/queue/"


def test_it_decides_from_the_browser_by_the_rules(live, agent, operator, manager, outsider):
    pending = submit(live, agent)["id"]
    with browser(live, operator.username) as olivia:
        assert decide(olivia, pending, "maybe").status_code == 400
        assert decide(olivia, pending, "reject", "  ").status_code == 400
        assert decide(olivia, pending, "reject", as_json=True).status_code == 400
        assert api(live, agent, "GET", f"/requests/{pending}").json()["status"] == "pending"
        assert decide(olivia, pending, "approve", token=False).status_code == 403
        for person in (manager, outsider):
            with browser(live, person.username) as other:
                assert decide(other, pending, "approve").status_code == 403
        assert api(live, agent, "GET", f"/requests/{pending}").json()["status"] == "pending"

        done = decide(olivia, pending, "approve")
        assert done.status_code in (301, 302, 303) or 200 <= done.status_code < 300
        assert decide(olivia, pending, "reject", "late").status_code == 409
        late = decide(olivia, pending, "approve", as_json=True)
        assert late.status_code == 409 and late.headers["content-type"].startswith("application/json")
        assert isinstance(late.json(), dict)

        second = submit(live, agent)["id"]
        answer = decide(olivia, second, "reject", "Not now", as_json=True)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
        assert isinstance(answer.json(), dict)
    with anonymous(live) as nobody:
        nobody.get("/login/")
        answer = nobody.post(f"/requests/{second}/decide", data={
            "outcome": "approve", "csrfmiddlewaretoken": nobody.cookies["csrftoken"]})
        assert answer.status_code in (302, 403)
    final = api(live, agent, "GET", f"/requests/{second}").json()
    assert final["status"] == "rejected" and final["decision"]["reason"] == "Not now"


# --- §5 live feed ---------------------------------------------------------------------


def test_it_refuses_the_feed_to_anyone_but_operators_and_managers(live, agent, operator, outsider):
    with browser(live, operator.username) as olivia, browser(live, outsider.username) as otto:
        cookie, outsider_cookie = session_cookie(olivia), session_cookie(otto)

    async def check():
        assert await feed_refused(live)
        assert await feed_refused(live, cookie=outsider_cookie)
        assert await feed_refused(live, headers=agent.headers)
        assert await feed_refused(live, cookie=cookie, origin="http://evil.example")
        assert not await feed_refused(live, cookie=cookie)

    asyncio.run(check())


def test_it_feeds_a_snapshot_then_every_event(live, agent, operator, manager, short_timeouts):
    waiting = submit(live, agent, "Waiting before the feed opened")
    with browser(live, operator.username) as olivia, browser(live, manager.username) as maria:
        cookie = session_cookie(olivia)

        async def watch():
            async with websockets.connect(ws_url(live), origin=live.url, additional_headers={"Cookie": cookie},
                                          open_timeout=10) as socket:
                snapshot = json.loads(await asyncio.wait_for(socket.recv(), 10))
                assert set(snapshot) == {"type", "pending", "alerts"} and snapshot["type"] == "snapshot"
                assert [r["id"] for r in snapshot["pending"]] == [waiting["id"]]
                assert_resource(snapshot["pending"][0])
                assert isinstance(snapshot["alerts"], list)
                # Ignored, not acted on: the feed only pushes.
                await socket.send(json.dumps({"type": "request.decided", "request": {"id": waiting["id"]}}))
                await socket.send("not json at all")

                critical = await asyncio.to_thread(submit, live, agent, "Queued live")
                created = await next_event(socket, about(critical["id"], "request.created"))
                assert set(created) == {"type", "request"}
                assert_resource(created["request"])

                routine = await asyncio.to_thread(submit, live, agent, "Routine", ROUTINE)
                event = await next_event(socket, about(routine["id"], "request.decided"))
                assert_decision(event["request"]["decision"], "approved", "policy")

                await asyncio.to_thread(decide, olivia, critical["id"], "reject", "Too risky")
                event = await next_event(socket, about(critical["id"], "request.decided"))
                assert_decision(event["request"]["decision"], "rejected", "operator")
                assert event["request"]["decision"]["by"] == operator.username

                await asyncio.to_thread(api, live, agent, "POST", f"/requests/{waiting['id']}/cancel")
                event = await next_event(socket, about(waiting["id"], "request.decided"))
                assert_decision(event["request"]["decision"], "cancelled", "agent")

                # No read of the request: the workers' sweep applies the timeout. (Another
                # payload: the same one as the rejected request would be rejected at once.)
                short = await asyncio.to_thread(submit, live, agent, "Times out", CRITICAL, timeout_seconds=1,
                                                payload={"attempt": 2})
                event = await next_event(socket, about(short["id"], "request.decided"), timeout=20)
                assert event["request"]["status"] == "approved"
                assert_decision(event["request"]["decision"], "approved", "timeout")

        asyncio.run(watch())

        async def manager_snapshot():
            async with websockets.connect(ws_url(live), origin=live.url,
                                          additional_headers={"Cookie": session_cookie(maria)}) as socket:
                return json.loads(await asyncio.wait_for(socket.recv(), 10))

        assert asyncio.run(manager_snapshot())["pending"] == []


# --- §7 operations --------------------------------------------------------------------


def test_it_reports_health_and_prometheus_figures(live, agent, operator):
    health = httpx.get(live.url + "/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "channel_layer": "ok", "broker": "ok", "clock": "ok"}

    submit(live, agent, metrics=ROUTINE)
    submit(live, agent)
    answer = httpx.get(live.url + "/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    pending = [s.value for s in families["oversight_pending_requests"].samples]
    assert pending == [1.0]
    decisions = {(s.labels["source"], s.labels["outcome"]): s.value for s in families["oversight_decisions"].samples
                 if s.name.endswith("_total")}
    assert decisions[("policy", "approved")] == 1.0
    assert families["oversight_time_to_decision_seconds"].type == "histogram"
    for name in ("oversight_timeouts", "oversight_host_memory_pressure_percent", "oversight_alerts_firing"):
        assert name in families, name


# --- §8 commands ----------------------------------------------------------------------


def test_it_creates_and_revokes_agents_from_the_command_line(live):
    made = manage(live, "create_agent", "cli-bot")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1].strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(live.url + "/api/v1/requests", headers=headers, timeout=10).status_code == 200
    revoked = manage(live, "revoke_agent", "cli-bot")
    assert revoked.returncode == 0, revoked.stderr
    assert_error(httpx.get(live.url + "/api/v1/requests", headers=headers, timeout=10), 401, "unauthenticated")


def test_it_creates_people_with_a_role_from_the_command_line(live):
    for name, role, page in (("cli-op", "operator", "/queue/"), ("cli-boss", "manager", "/reports/")):
        made = manage(live, "create_user", name, "--role", role, "--password", PASSWORD)
        assert made.returncode == 0, made.stderr
        with browser(live, name) as person:
            assert person.get(page).status_code == 200
    generated = manage(live, "create_user", "cli-gen", "--role", "operator")
    assert generated.returncode == 0, generated.stderr
    assert manage(live, "create_user", "cli-bad", "--role", "admin").returncode != 0


def test_it_prints_the_monthly_review(live, agent):
    month = time.strftime("%Y-%m", time.gmtime())
    submit(live, agent, metrics=ROUTINE)
    table = manage(live, "report", month)
    assert table.returncode == 0, table.stderr
    assert month in table.stdout
    as_csv = manage(live, "report", month, "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert len(rows) > 1 and all(len(row) == len(rows[0]) for row in rows)
    assert manage(live, "report", "2026-13").returncode != 0
