"""`oversight ask` and the seed script against the real server (uvicorn, worker, beat)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oversight import actions
from oversight.models import OversightRequest, Source, Status
from tests.conftest import AgentPersona

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "clients" / "python" / "examples"
CALM = ["--metric", "memory_pressure=10", "--metric", "delegation_depth=0",
        "--metric", "circular_refs=0"]
DEEP = ["--metric", "memory_pressure=10", "--metric", "delegation_depth=5"]


def oversight_command() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = Path(sys.executable).with_name("oversight")
    return [str(script)] if script.exists() else [sys.executable, "-m", "oversight_client.cli"]


def env_for(live, agent: AgentPersona, url: str | None = None) -> dict[str, str]:
    return live.env | {"OVERSIGHT_URL": url or live.url, "OVERSIGHT_API_KEY": agent.key}


def ask(live, agent, *args: str, url: str | None = None) -> tuple[int, dict | None, str]:
    result = subprocess.run([*oversight_command(), "ask", *args], env=env_for(live, agent, url),
                            capture_output=True, text=True, timeout=90, check=False)
    return result.returncode, json.loads(result.stdout) if result.stdout else None, result.stderr


def pending_of(agent: AgentPersona) -> OversightRequest:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        found = OversightRequest.objects.filter(agent=agent.agent, status=Status.PENDING).first()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail("no pending request appeared")


def decide_soon(agent: AgentPersona, outcome: str, reason: str) -> None:
    """Decide the agent's pending request as an operator, once it shows up."""
    request = pending_of(agent)
    actions.do_decide(request.id, outcome=outcome, source=Source.OPERATOR, by="olivia", reason=reason)


def run_waiting(live, agent, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*oversight_command(), "ask", *args], env=env_for(live, agent),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_it_exits_0_when_the_policy_approves(live, agent):
    code, resource, _ = ask(live, agent, "file_write", "--summary", "Write notes", *CALM,
                            "--payload", '{"path": "notes.txt"}')
    assert code == 0
    assert resource["status"] == "approved" and resource["decision"]["source"] == "policy"
    assert resource["payload"] == {"path": "notes.txt"}
    assert resource["metrics"]["memory_pressure"] == 10
    assert resource["payload_sha256"] and resource["decision"]["receipt"].count(".") == 2


def test_it_exits_0_once_an_operator_approves(live, agent):
    process = run_waiting(live, agent, "deploy", "--summary", "Deploy v2", *DEEP)
    decide_soon(agent, Status.APPROVED, "ship it")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and json.loads(out)["decision"]["by"] == "olivia"


def test_it_exits_1_with_the_reason_when_an_operator_rejects(live, agent):
    process = run_waiting(live, agent, "deploy", "--summary", "Deploy v2", *DEEP)
    decide_soon(agent, Status.REJECTED, "freeze week")
    out, _ = process.communicate(timeout=60)
    resource = json.loads(out)
    assert process.returncode == 1
    assert resource["status"] == "rejected" and resource["decision"]["reason"] == "freeze week"


def test_it_exits_1_when_the_deadline_rejects(live, agent):
    actions.do_change_policy("deploy", {"always": True, "timeout_action": "reject", "min_timeout_seconds": 1},
                             by="maria")
    began = time.monotonic()
    code, resource, _ = ask(live, agent, "deploy", "--summary", "Deploy v2", *CALM, "--timeout", "1")
    assert code == 1
    assert resource["status"] == "rejected" and resource["decision"]["source"] == "timeout"
    assert time.monotonic() - began < 30


def test_it_exits_3_while_still_pending(live, agent):
    code, resource, _ = ask(live, agent, "deploy", "--summary", "Deploy v2", *DEEP, "--wait", "1")
    assert code == 3 and resource["status"] == "pending"


def test_it_exits_2_when_the_server_is_unreachable(live, agent):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, resource, err = ask(live, agent, "deploy", "--summary", "Deploy", *CALM, url=dead)
    assert code == 2 and resource is None and err


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_the_seed_script_routes_half_to_people_and_the_monthly_report_says_50_percent(live, agent):
    command = " ".join(oversight_command())
    manage = f"{sys.executable} {ROOT / 'manage.py'}"
    result = subprocess.run(
        ["sh", str(EXAMPLES / "seed_oversight_test.sh")],
        env=env_for(live, agent) | {"OVERSIGHT": command, "OVERSIGHT_MANAGE": manage,
                                    "PATH": os.environ["PATH"]},
        capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 approved by policy, 3 waiting for a human (coverage 50%)" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert "critical share" in last and "50" in last
    stored = OversightRequest.objects.filter(agent=agent.agent)
    assert stored.filter(status=Status.PENDING, critical=True).count() == 3
    assert stored.filter(status=Status.APPROVED, decision_source=Source.POLICY).count() == 3
