"""A LangGraph agent whose tool node asks Oversight before a risky tool.

The graph is the usual loop: the model proposes tool calls, the tool node runs them, the
results go back to the model. Tools named in RISKY pass an SDK checkpoint first; a
rejection does not raise out of the graph but comes back to the model as the tool's
result, with the person's reason, so the model can change its plan.

    pip install 'oversight-client' langgraph
    export OVERSIGHT_URL=http://127.0.0.1:8000
    export OVERSIGHT_API_KEY=...   # python manage.py create_agent langgraph-demo
    python clients/python/examples/langgraph_agent.py /tmp/old-report.csv

Without a real model at hand this runs a scripted one (langchain_core's
GenericFakeChatModel): it asks to delete the file, reads the answer, and reports. Put
any chat model with tool calling in its place (``model=...`` of ``build_graph``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from oversight_client import Cancelled, Client, OversightError, Rejected, TimedOut


def delete_file(path: str) -> str:
    Path(path).unlink()
    return f"deleted {path}"


def file_size(path: str) -> str:
    return f"{path} is {Path(path).stat().st_size} bytes"


TOOLS: dict[str, Callable[..., str]] = {"delete_file": delete_file, "file_size": file_size}
RISKY = {"delete_file"}  # these wait for a person's approval


def run_tool_call(client: Client, call: dict[str, Any]) -> ToolMessage:
    """One tool call: through a checkpoint when risky; a refusal becomes the result."""
    name, args = call["name"], call["args"]
    tool = TOOLS.get(name)
    if tool is None:
        return ToolMessage(f"no tool named {name}", tool_call_id=call["id"], status="error")
    if name not in RISKY:
        return ToolMessage(tool(**args), tool_call_id=call["id"])
    try:
        with client.checkpoint(name, f"{name}({json.dumps(args)})", payload=args) as approval:
            # Run what was approved: the approved request's payload.
            approved_args = approval.payload if approval is not None else args
            return ToolMessage(tool(**approved_args), tool_call_id=call["id"])
    except Rejected as exc:
        reason = exc.reason or "no reason given"
        return ToolMessage(f"REJECTED by a person: {reason}. Do not try this again as it is.",
                           tool_call_id=call["id"], status="error")
    except (Cancelled, TimedOut):
        return ToolMessage("Nobody approved this in time; it was not done.",
                           tool_call_id=call["id"], status="error")
    except OversightError as exc:
        # Oversight can't be asked: fail closed, the tool does not run.
        return ToolMessage(f"Could not get approval ({exc.code}); it was not done.",
                           tool_call_id=call["id"], status="error")


def build_graph(model: Any, client: Client):
    def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    def call_tools(state: MessagesState) -> dict[str, list[BaseMessage]]:
        last = state["messages"][-1]
        return {"messages": [run_tool_call(client, call) for call in last.tool_calls]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", call_tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, ["tools", END])
    graph.add_edge("tools", "model")
    return graph.compile()


class ScriptedModel(GenericFakeChatModel):
    """Proposes the deletion, then answers from what the tool said (no network, no weights)."""

    def invoke(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> AIMessage:  # type: ignore[override]
        last = messages[-1]
        if isinstance(last, ToolMessage):
            if last.status == "error":
                return AIMessage(content=f"I did not delete the file. {last.content}")
            return AIMessage(content=f"Done: {last.content}.")
        return super().invoke(messages, *args, **kwargs)


def scripted_model(path: str) -> ScriptedModel:
    return ScriptedModel(messages=iter([AIMessage(content="", tool_calls=[
        {"name": "delete_file", "args": {"path": path}, "id": "call-1"}])]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the file the scripted model asks to delete")
    args = parser.parse_args(argv)
    with Client() as client:
        graph = build_graph(scripted_model(args.path), client)
        state = graph.invoke({"messages": [HumanMessage(f"Clean up {args.path}")]})
    for message in state["messages"]:
        print(f"{message.type}: {message.content or message.tool_calls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
