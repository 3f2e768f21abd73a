"""The LangGraph example against the real server, with its scripted model (no network)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("langgraph")

from oversight import actions
from oversight.models import OversightRequest, Source, Status

pytestmark = pytest.mark.live

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "langgraph_agent.py"


def run_example(live, agent, path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(EXAMPLE), str(path)],
                            env=live.env | {"OVERSIGHT_URL": live.url, "OVERSIGHT_API_KEY": agent.key},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def decide_pending(agent, outcome: str, reason: str) -> OversightRequest:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        found = OversightRequest.objects.filter(agent=agent.agent, status=Status.PENDING).first()
        if found:
            actions.do_decide(found.id, outcome=outcome, source=Source.OPERATOR, by="olivia", reason=reason)
            return found
        time.sleep(0.05)
    pytest.fail("the example never asked")


@pytest.fixture
def doomed(tmp_path) -> Path:
    path = tmp_path / "old-report.csv"
    path.write_text("a,b\n")
    return path


def test_a_rejection_goes_back_to_the_model_with_the_reason(live, agent, doomed):
    actions.do_change_policy("delete_file", {"always": True}, by="maria")
    process = run_example(live, agent, doomed)
    request = decide_pending(agent, Status.REJECTED, "That report is still needed")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert doomed.exists()  # the tool never ran
    assert request.operation == "delete_file" and request.payload == {"path": str(doomed)}
    tool_line = next(line for line in out.splitlines() if line.startswith("tool:"))
    assert "REJECTED" in tool_line and "That report is still needed" in tool_line
    assert out.strip().splitlines()[-1].startswith("ai: I did not delete the file.")


def test_an_approval_runs_the_tool(live, agent, doomed):
    actions.do_change_policy("delete_file", {"always": True}, by="maria")
    process = run_example(live, agent, doomed)
    decide_pending(agent, Status.APPROVED, "")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert not doomed.exists()
    assert out.strip().splitlines()[-1] == f"ai: Done: deleted {doomed}."
