"""``oversight mcp``: a Model Context Protocol server over stdio, for LLM agents.

Two tools, ``request_approval`` and ``get_decision``, backed by the agent API with the
agent's key from ``OVERSIGHT_API_KEY`` (and ``OVERSIGHT_URL``). Both return the request
resource as JSON text; a rejection is a normal result whose ``status`` says
``rejected`` and whose ``decision.reason`` says why, so the model can read it. Errors
(a bad argument, an unreachable server) are tool errors: the operation must not go ahead.

Needs the ``mcp`` extra: ``pip install 'oversight-client[mcp]'``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, WithJsonSchema

from ._protocol import MAX_WAIT
from .client import AsyncClient
from .errors import OversightError

INSTRUCTIONS = (
    "Oversight is where people approve or reject an agent's risky operations. Call "
    "request_approval before any destructive or costly operation (deleting or overwriting "
    "data, deploying, spending money, sending messages on someone's behalf) and go ahead "
    "only if its status is approved. If the status is pending, call get_decision with the "
    "id until it is final. If it is rejected or cancelled, do not perform the operation; "
    "read decision.reason and tell the user or change your plan."
)

REQUEST_APPROVAL = (
    "Ask a person for permission. Call this before any destructive or costly operation "
    "and wait for the answer. Returns the request as JSON: status approved means go "
    "ahead; rejected or cancelled means do not (decision.reason says why); pending means "
    "nobody decided within 55 seconds: call get_decision with the id."
)

GET_DECISION = (
    "Look up (and wait up to wait_seconds for) the decision on a request made with "
    "request_approval. Returns the request as JSON with its status: approved, rejected "
    "(see decision.reason), cancelled, or still pending (call get_decision again with "
    "the id)."
)


# The metrics the API takes (§4): the three the policies check, the agent's host, and
# other numeric keys it keeps and shows. The tool passes them on unchanged and lets the
# API judge them (a boolean is not a number there, so it must not become 1 here).
METRICS_SCHEMA = {
    "type": "object",
    "properties": {
        "memory_pressure": {"type": ["number", "null"], "minimum": 0, "maximum": 100,
                            "description": "Percent of memory in use, 0-100."},
        "delegation_depth": {"type": ["integer", "null"], "minimum": 0,
                             "description": "How many agents deep this delegation is."},
        "circular_refs": {"type": ["integer", "null"], "minimum": 0,
                          "description": "Circular references seen in the delegation chain."},
        "host": {"type": ["string", "null"], "minLength": 1, "maxLength": 255,
                 "description": "The machine you run on."},
    },
    "additionalProperties": {"type": ["number", "null"]},
}


def as_text(resource: dict[str, Any]) -> str:
    return json.dumps(resource, indent=2)


def explain(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return f"{exc} {json.dumps(details)}" if details else str(exc)


def build_server(client: AsyncClient | None = None, hold: int = MAX_WAIT) -> MCPServer:
    """The server with its two tools; ``client`` defaults to one from the environment.

    ``request_approval`` holds up to ``hold`` seconds (at most 55) for the decision.
    """
    server: MCPServer = MCPServer(name="oversight", instructions=INSTRUCTIONS)
    shared: dict[str, AsyncClient] = {}

    def agent_client() -> AsyncClient:
        if client is not None:
            return client
        if "client" not in shared:
            shared["client"] = AsyncClient()
        return shared["client"]

    @server.tool(name="request_approval", description=REQUEST_APPROVAL, structured_output=False)
    async def request_approval(
        operation: Annotated[str, Field(
            description="What you are about to do, as a short lower-case name such as "
                        "file_delete or deploy.production ([a-z0-9][a-z0-9_.-]{0,63}).")],
        summary: Annotated[str, Field(
            min_length=1, max_length=500,
            description="One or two sentences a person reads to decide: what, where, why.")],
        metrics: Annotated[dict[str, Any] | None, WithJsonSchema(METRICS_SCHEMA), Field(
            description="Optional figures the policy checks, e.g. {\"memory_pressure\": 85, "
                        "\"delegation_depth\": 2, \"circular_refs\": 0, \"host\": \"build-7\"}; "
                        "other numeric keys are kept and shown.")] = None,
        payload: Annotated[dict[str, Any] | None, Field(
            description="Optional details of the operation (paths, commands, amounts) as a "
                        "JSON object, shown to the person deciding.")] = None,
        timeout_seconds: Annotated[int | None, Field(
            ge=1, description="Optional: how long people have to decide, at most the "
                              "policy's timeout.")] = None,
    ) -> str:
        try:
            request = await agent_client().submit(
                operation, summary, payload=payload, metrics=metrics,
                timeout_seconds=timeout_seconds, wait=hold)
        except (OversightError, ValueError) as exc:
            raise ToolError(f"request_approval failed, do not go ahead: {explain(exc)}") from exc
        return as_text(request.raw)

    @server.tool(name="get_decision", description=GET_DECISION, structured_output=False)
    async def get_decision(
        id: Annotated[str, Field(description="The id returned by request_approval.")],
        wait_seconds: Annotated[int | None, Field(
            ge=0, le=MAX_WAIT,
            description=f"How long to wait for a decision, 0 to {MAX_WAIT} seconds "
                        f"(default {MAX_WAIT}).")] = None,
    ) -> str:
        try:
            request = await agent_client().get(
                id, wait=MAX_WAIT if wait_seconds is None else wait_seconds)
        except (OversightError, ValueError) as exc:
            raise ToolError(f"get_decision failed: {explain(exc)}") from exc
        return as_text(request.raw)

    return server


def serve(hold: int = MAX_WAIT) -> int:
    """Run over stdio until the client closes the connection."""
    if not os.environ.get("OVERSIGHT_API_KEY"):
        # Fail at start, where the person configuring the client sees it.
        print("oversight: no API key: set OVERSIGHT_API_KEY", file=sys.stderr)
        return 2
    build_server(hold=hold).run("stdio")
    return 0
