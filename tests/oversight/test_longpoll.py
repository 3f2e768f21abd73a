"""?wait=N against the real ASGI server: woken by the decision, by the timeout, or at its limit."""

import asyncio
import threading
import time

import httpx
import pytest

from oversight import actions
from oversight.models import Source, Status

pytestmark = pytest.mark.live


def _submit(live, agent, **fields):
    body = {"operation": "delegate", "summary": "s", "metrics": {"delegation_depth": 5}} | fields
    response = httpx.post(live.url + "/api/v1/requests", headers=agent.headers, json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _wait_in_thread(url, headers):
    result = {}

    def run():
        started = time.monotonic()
        result["response"] = httpx.get(url, headers=headers, timeout=60)
        result["returned_at"] = time.monotonic()
        result["took"] = result["returned_at"] - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_it_returns_the_moment_an_operator_decides(live, agent):
    created = _submit(live, agent)
    thread, result = _wait_in_thread(f"{live.url}/api/v1/requests/{created['id']}?wait=30", agent.headers)
    time.sleep(1.0)  # the agent is now waiting
    assert thread.is_alive()
    decided_at = time.monotonic()
    actions.do_decide(created["id"], outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="no")
    thread.join(35)
    body = result["response"].json()
    assert body["status"] == "rejected" and body["decision"]["by"] == "olivia"
    latency = result["returned_at"] - decided_at
    print(f"decision → long-poll answer: {latency * 1000:.1f} ms")
    assert latency < 5  # woken by the decision, not by the 30 s limit


def test_it_returns_the_timeout_decision_at_the_deadline(live, agent, short_timeouts):
    created = _submit(live, agent, timeout_seconds=2)
    response = httpx.get(f"{live.url}/api/v1/requests/{created['id']}?wait=20", headers=agent.headers, timeout=30)
    body = response.json()
    assert body["status"] == "approved" and body["decision"]["source"] == "timeout"
    assert body["decision"]["by"] is None


def test_it_answers_pending_when_the_wait_runs_out(live, agent):
    created = _submit(live, agent)
    started = time.monotonic()
    response = httpx.get(f"{live.url}/api/v1/requests/{created['id']}?wait=1", headers=agent.headers, timeout=30)
    took = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert took >= 0.9


def test_submit_with_wait_holds_a_critical_request_and_not_a_routine_one(live, agent):
    routine = httpx.post(
        f"{live.url}/api/v1/requests?wait=20", headers=agent.headers,
        json={"operation": "scrape", "summary": "s"}, timeout=30,
    )
    assert routine.status_code == 201 and routine.json()["status"] == "approved"
    held = httpx.post(
        f"{live.url}/api/v1/requests?wait=1", headers=agent.headers,
        json={"operation": "scrape", "summary": "s", "metrics": {"circular_refs": 4}}, timeout=30,
    )
    assert held.status_code == 201 and held.json()["status"] == "pending"


def test_many_waiting_agents_are_all_woken(live, agent):
    agent.agent.max_pending = 100  # one agent stands in for forty waiting ones
    agent.agent.save()
    created = [_submit(live, agent, summary=f"n{i}") for i in range(40)]

    async def wait_all():
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:
            tasks = [
                asyncio.create_task(client.get(f"{live.url}/api/v1/requests/{c['id']}?wait=30", headers=agent.headers))
                for c in created
            ]
            await asyncio.sleep(1.5)
            assert not any(t.done() for t in tasks)
            await asyncio.to_thread(
                lambda: [actions.do_decide(c["id"], outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia")
                         for c in created]
            )
            return await asyncio.wait_for(asyncio.gather(*tasks), 20)

    responses = asyncio.run(wait_all())
    assert [r.json()["status"] for r in responses] == ["approved"] * 40
