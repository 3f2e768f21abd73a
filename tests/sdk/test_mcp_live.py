"""`oversight mcp` driven by the `mcp` package's own stdio client against the real server."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from oversight import actions
from oversight.models import OversightRequest, Source, Status

pytestmark = pytest.mark.live

CALM = {"memory_pressure": 10, "delegation_depth": 0, "circular_refs": 0}
DEEP = {"memory_pressure": 10, "delegation_depth": 5, "circular_refs": 0}


def server_parameters(live, key: str, *extra: str) -> StdioServerParameters:
    script = Path(sys.executable).with_name("oversight")
    command, args = ((str(script), ["mcp", *extra]) if script.exists()
                     else (sys.executable, ["-m", "oversight_client.cli", "mcp", *extra]))
    env = {k: v for k, v in live.env.items() if k in ("PATH", "PYTHONPATH", "HOME")}
    return StdioServerParameters(command=command, args=args,
                                 env=env | {"OVERSIGHT_URL": live.url, "OVERSIGHT_API_KEY": key})


def session_run(live, key: str, steps, *extra: str):
    """Run ``steps(session)`` in a fresh MCP session with `oversight mcp` as the server."""

    async def main():
        async with (stdio_client(server_parameters(live, key, *extra)) as (read, write),
                    ClientSession(read, write) as session):
            await session.initialize()
            return await steps(session)

    return asyncio.run(main())


def text_of(result) -> dict:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


def decide_when_pending(agent, outcome: str, reason: str, after: float = 0.3) -> threading.Thread:
    def run():
        end = time.monotonic() + 30
        while time.monotonic() < end:
            found = OversightRequest.objects.filter(agent=agent.agent, status=Status.PENDING).first()
            if found:
                time.sleep(after)
                actions.do_decide(found.id, outcome=outcome, source=Source.OPERATOR, by="olivia",
                                  reason=reason)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_it_lists_both_tools_with_schemas_and_instructions(live, agent):
    async def steps(session):
        return await session.list_tools()

    tools = {t.name: t for t in session_run(live, agent.key, steps).tools}
    assert set(tools) == {"request_approval", "get_decision"}
    request = tools["request_approval"]
    assert "before any destructive or costly operation" in request.description
    assert "get_decision" in request.description
    schema = request.input_schema if hasattr(request, "input_schema") else request.inputSchema
    assert set(schema["required"]) == {"operation", "summary"}
    assert {"metrics", "payload", "timeout_seconds"} <= set(schema["properties"])
    get = tools["get_decision"]
    get_schema = get.input_schema if hasattr(get, "input_schema") else get.inputSchema
    assert get_schema["required"] == ["id"]
    assert "wait_seconds" in get_schema["properties"]


def test_a_calm_request_comes_back_approved(live, agent):
    async def steps(session):
        return await session.call_tool("request_approval", {
            "operation": "file_write", "summary": "Write notes.txt", "metrics": CALM,
            "payload": {"path": "notes.txt"}})

    resource = text_of(session_run(live, agent.key, steps))
    assert resource["status"] == "approved" and resource["payload"] == {"path": "notes.txt"}
    assert OversightRequest.objects.get(id=resource["id"]).status == Status.APPROVED


def test_a_rejection_is_a_normal_result_with_the_reason(live, agent):
    decide_when_pending(agent, Status.REJECTED, "Not during the freeze")

    async def steps(session):
        return await session.call_tool("request_approval", {
            "operation": "deploy", "summary": "Deploy v2", "metrics": DEEP})

    resource = text_of(session_run(live, agent.key, steps))
    assert resource["status"] == "rejected"
    assert resource["decision"]["reason"] == "Not during the freeze"


def test_a_pending_request_is_followed_up_with_get_decision(live, agent):
    async def steps(session):
        first = text_of(await session.call_tool("request_approval", {
            "operation": "deploy", "summary": "Deploy v2", "metrics": DEEP,
            "timeout_seconds": 120}))
        assert first["status"] == "pending" and first["id"]
        still = text_of(await session.call_tool("get_decision",
                                                {"id": first["id"], "wait_seconds": 0}))
        assert still["status"] == "pending"
        decide_when_pending(agent, Status.APPROVED, "go", after=0.5)
        return text_of(await session.call_tool("get_decision",
                                               {"id": first["id"], "wait_seconds": 30}))

    # request_approval holds 1 s here instead of 55, so the test sees it pending.
    resource = session_run(live, agent.key, steps, "--wait", "1")
    assert resource["status"] == "approved" and resource["decision"]["by"] == "olivia"


def test_bad_arguments_and_a_bad_key_are_tool_errors(live, agent):
    async def steps(session):
        bad_wait = await session.call_tool("get_decision", {"id": "x", "wait_seconds": 99})
        no_summary = await session.call_tool("request_approval", {"operation": "deploy"})
        return bad_wait, no_summary

    bad_wait, no_summary = session_run(live, agent.key, steps)
    assert bad_wait.is_error and no_summary.is_error

    async def wrong_key(session):
        return await session.call_tool("request_approval", {
            "operation": "deploy", "summary": "Deploy", "metrics": CALM})

    result = session_run(live, "ovs_not_a_key", wrong_key)
    assert result.is_error and "do not go ahead" in result.content[0].text


def test_a_host_metric_is_passed_to_the_api(live, agent):
    async def steps(session):
        return await session.call_tool("request_approval", {
            "operation": "file_write", "summary": "Write notes.txt",
            "metrics": CALM | {"host": "build-7", "queue_length": 3}})

    resource = text_of(session_run(live, agent.key, steps))
    assert resource["metrics"] == CALM | {"host": "build-7", "queue_length": 3}
    assert OversightRequest.objects.get(id=resource["id"]).metrics["host"] == "build-7"


def test_metrics_are_checked_by_the_api_not_converted(live, agent):
    """A boolean is not a number to the API; the tool must not turn it into 1."""

    async def steps(session):
        listed = {t.name: t for t in (await session.list_tools()).tools}
        flag = await session.call_tool("request_approval", {
            "operation": "file_write", "summary": "Write notes.txt", "metrics": {"delegation_depth": True}})
        return listed["request_approval"], flag

    tool, flag = session_run(live, agent.key, steps)
    schema = tool.input_schema if hasattr(tool, "input_schema") else tool.inputSchema
    metrics = json.dumps(schema["properties"]["metrics"])
    assert '"host"' in metrics and '"string"' in metrics
    assert flag.is_error and "delegation_depth" in flag.content[0].text
    assert not OversightRequest.objects.filter(agent=agent.agent).exists()
