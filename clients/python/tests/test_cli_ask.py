"""``oversight ask``: a real process against the fake server, exit status by outcome."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CALM = ["--metric", "memory_pressure=10", "--metric", "delegation_depth=0"]
DEEP = ["--metric", "delegation_depth=5"]  # over the default threshold of 4: a human decides


def env_for(url: str, key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIGHT_")}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["OVERSIGHT_URL"] = url
    if key is not None:
        env["OVERSIGHT_API_KEY"] = key
    return env


def start(fake, *args: str, url: str | None = None, key: str | None = "default"):
    return subprocess.Popen(
        [sys.executable, "-m", "oversight_client.cli", "ask", *args],
        env=env_for(url or fake.url, fake.api_key if key == "default" else key),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def ask(fake, *args: str, **options) -> tuple[int, str, str]:
    process = start(fake, *args, **options)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def test_it_exits_0_and_prints_the_resource_when_approved(fake):
    code, out, _ = ask(fake, "deploy.web", "--summary", "Deploy", *CALM,
                       "--metric", "ratio=2.5", "--payload", '{"tag": "v1"}')
    resource = json.loads(out)
    assert code == 0 and resource["status"] == "approved"
    sent = fake.submitted()[0]
    assert sent["metrics"] == {"memory_pressure": 10, "delegation_depth": 0, "ratio": 2.5}
    assert sent["payload"] == {"tag": "v1"}


def test_it_sends_the_host_metric_as_its_name(fake):
    code, _, _ = ask(fake, "deploy.web", "--summary", "Deploy", *CALM, "--metric", "host=build-7")
    assert code == 0
    sent = fake.submitted()[0]["metrics"]
    assert sent == {"memory_pressure": 10, "delegation_depth": 0, "host": "build-7"}


def test_it_exits_1_with_the_reason_when_rejected(fake):
    fake.decide_next("deploy.db", "rejected", "not on a Friday", after=0.3)
    code, out, _ = ask(fake, "deploy.db", "--summary", "Migrate", *DEEP)
    resource = json.loads(out)
    assert code == 1
    assert resource["status"] == "rejected"
    assert resource["decision"]["reason"] == "not on a Friday"


def test_it_waits_with_the_long_poll_until_an_operator_decides(fake):
    fake.decide_next("deploy.db", "approved", "go", after=1.5)
    code, out, _ = ask(fake, "deploy.db", "--summary", "Migrate", *DEEP)
    assert code == 0 and json.loads(out)["status"] == "approved"
    # Held by the server, not polled: one submit and at most a couple of reads, each
    # asking the server to hold 55 s.
    assert fake.calls_to("POST", "/api/v1/requests")[0].query["wait"] == "55"
    reads = [c for c in fake.calls if c.method == "GET"]
    assert len(reads) <= 2 and all(c.query["wait"] == "55" for c in reads)


def test_it_exits_3_when_still_pending_at_the_end_of_the_wait(fake):
    began = time.monotonic()
    code, out, _ = ask(fake, "deploy.db", "--summary", "Migrate", *DEEP, "--wait", "1.5")
    assert code == 3
    assert json.loads(out)["status"] == "pending"
    assert time.monotonic() - began < 15
    reads = [c for c in fake.calls if c.method == "GET"]
    assert len(reads) <= 2  # not a busy loop


def test_it_exits_3_at_once_with_wait_0(fake):
    code, out, _ = ask(fake, "deploy.db", "--summary", "Migrate", *DEEP, "--wait", "0")
    assert code == 3 and json.loads(out)["id"]
    assert fake.calls_to("POST", "/api/v1/requests")[0].query.get("wait", "0") == "0"


def test_it_sends_the_timeout(fake):
    code, _, _ = ask(fake, "deploy.db", "--summary", "Migrate", *DEEP, "--timeout", "60",
                     "--wait", "0")
    assert code == 3 and fake.submitted()[0]["timeout_seconds"] == 60


@pytest.mark.parametrize("args", [
    ["--metric", "memory_pressure=high"],
    ["--metric", "no-equals-sign"],
    ["--metric", "x=nan"],
    ["--metric", "host="],
    ["--payload", "[1, 2]"],
    ["--payload", "{not json"],
    ["--wait", "-1"],
    ["--wait", "soon"],
])
def test_it_exits_2_on_bad_arguments_without_asking(fake, args):
    code, out, err = ask(fake, "deploy.db", "--summary", "Migrate", *args)
    assert code == 2 and out == "" and err
    assert fake.calls == []


def test_it_exits_2_without_a_summary(fake):
    code, _, _ = ask(fake, "deploy.db")
    assert code == 2 and fake.calls == []


def test_it_exits_2_when_the_server_is_unreachable(fake, dead_url):
    code, out, err = ask(fake, "deploy.db", "--summary", "Migrate", *CALM, url=dead_url)
    assert code == 2 and out == "" and "reach" in err


def test_it_exits_2_with_a_wrong_key(fake):
    code, out, err = ask(fake, "deploy.db", "--summary", "Migrate", *CALM, key="ovs_wrong")
    assert code == 2 and out == "" and "unauthenticated" in err


def test_it_exits_2_with_no_key(fake):
    code, _, err = ask(fake, "deploy.db", "--summary", "Migrate", *CALM, key=None)
    assert code == 2 and "OVERSIGHT_API_KEY" in err


def test_it_exits_2_on_a_request_the_server_refuses(fake):
    code, out, err = ask(fake, "Not An Operation", "--summary", "x", *CALM)
    assert code == 2 and out == "" and "validation_error" in err


def test_it_cancels_its_request_on_ctrl_c(fake):
    process = start(fake, "deploy.db", "--summary", "Migrate", *DEEP)
    end = time.monotonic() + 20
    while not fake.requests and time.monotonic() < end:
        time.sleep(0.05)
    assert fake.requests, "the request never arrived"
    time.sleep(0.3)  # now inside the long-poll
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    (request,) = fake.requests.values()
    assert process.returncode == 1
    assert request["status"] == "cancelled"
    assert json.loads(out)["status"] == "cancelled"
