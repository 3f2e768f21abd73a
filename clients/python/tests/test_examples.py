import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"


def run_example(name, fake, *args):
    env = {**os.environ, "OVERSIGHT_URL": fake.url, "OVERSIGHT_API_KEY": fake.api_key,
           "PYTHONPATH": str(HERE.parent / "src")}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_it_seeds_three_requests_for_humans_and_three_for_the_policy(fake):
    result = run_example("seed_oversight_test.py", fake)

    assert result.returncode == 0, result.stderr
    assert "3 approved by policy, 3 waiting for a human (coverage 50%)" in result.stdout
    assert sorted(r["critical"] for r in fake.requests.values()) == [False] * 3 + [True] * 3


def test_it_fails_the_seed_check_when_the_policy_routes_differently(fake):
    fake.thresholds["memory_pressure"] = 90

    result = run_example("seed_oversight_test.py", fake, "--cancel")

    assert result.returncode == 1
    assert "UNEXPECTED seed.memory" in result.stderr
    assert all(r["status"] != "pending" for r in fake.requests.values())


def test_it_runs_the_example_agent(fake, tmp_path):
    for operation in ("delegate", "scrape", "file_write"):
        fake.auto_decide[operation] = ("approved", "fine")
    out = tmp_path / "notes.txt"

    result = run_example("agent.py", fake, "--depth", "3", "--soft", "1", "--hard", "2",
                         "--wait", "5", "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith(f"{fake.url}/healthz: HTTP ")
    operations = [(b["operation"], b["metrics"]["delegation_depth"]) for b in fake.submitted()]
    assert ("delegate", 2) in operations and ("file_write", 2) not in operations
    assert ("scrape", 2) in operations and ("file_write", 0) in operations
    assert "not splitting further" in result.stderr
    assert fake.pushes, "the memory reporter flushes on the way out"
