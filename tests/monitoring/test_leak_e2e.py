"""End to end: real Python processes report their memory with the SDK's reporter to the
real server, on a compressed schedule (each sample's `at` steps 60 s of simulated time:
a backfill), and `manage.py leakscan` judges them as of the end of that time."""

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.models import AgentSample
from tests.conftest import start_stack

pytestmark = pytest.mark.live

BASE_DIR = Path(__file__).resolve().parents[2]
# Three hours ago: recent enough that retention keeps the samples, all of them backfilled.
START = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
SAMPLES = 150  # 2.5 hours of simulated time
STEP = timedelta(seconds=60)

PROGRAM = textwrap.dedent("""
    import sys
    from datetime import datetime, timedelta

    import oversight_client.reporter as reporter_module
    from oversight_client import Client, MemoryReporter

    url, key, start, mode, samples = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    moment = [datetime.fromisoformat(start)]


    class Clock(datetime):
        # The simulated clock the reporter stamps its samples with (nothing else is faked).
        @classmethod
        def now(cls, tz=None):
            return moment[0]


    reporter_module.datetime = Clock
    client = Client(url, key, host="e2e-host", max_retries=5)
    reporter = MemoryReporter(client, interval=86400, max_batch=100, max_buffer=10000,
                              tracemalloc=mode == "leak", scan_cycles=True)
    reporter.start()
    kept = []
    for i in range(samples):
        if mode == "leak":
            kept.append(b"L" * (320 * 1024))  # the leak: a list that keeps growing
            loop = [i]
            loop.append(loop)  # and a reference cycle left to the collector
            del loop
        elif i < 12:
            kept.append(b"W" * (2 * 1024 * 1024))  # warm-up: caches fill, then stay
        scratch = [str(n) for n in range(2000)]  # work that comes and goes
        del scratch
        moment[0] += timedelta(seconds=60)
        reporter.sample()
        if i % 20 == 19:
            reporter.flush()
    reporter.flush()
    assert reporter.pending() == 0 and reporter.rejected == 0, (reporter.pending(), reporter.rejected)
    import os
    print(os.getpid(), reporter.sent)
""")


@pytest.fixture(scope="module")
def web_stack(django_db_setup, django_db_blocker):
    """The web server alone (no worker, no beat: nothing else writes or scans meanwhile)."""
    stack = start_stack(worker=False, beat=False)
    yield stack
    stack.supervisor.stop()


@pytest.fixture
def live(web_stack, transactional_db):
    """This module's server, with this test's rows committed so it sees them."""
    return web_stack


def run_reporter(live, key: str, mode: str, tmp_path: Path) -> int:
    program = tmp_path / f"{mode}.py"
    program.write_text(PROGRAM)
    env = dict(os.environ) | {"PYTHONPATH": str(BASE_DIR / "clients" / "python" / "src")}
    process = subprocess.Popen([sys.executable, str(program), live.url, key, START.isoformat(), mode, str(SAMPLES)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    pid, sent = map(int, out.strip().splitlines()[-1].split())
    assert sent == SAMPLES
    return pid  # as the process sees itself (the pid it reports)


def leakscan(live, at: datetime) -> list[dict]:
    done = subprocess.run([sys.executable, "manage.py", "leakscan", "--at", at.isoformat(), "--json"],
                          cwd=BASE_DIR, env=live.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_leakscan_finds_a_leaking_process_and_never_a_warm_up_that_plateaus(live, agent, tmp_path):
    leaker = run_reporter(live, agent.key, "leak", tmp_path)
    plateau = run_reporter(live, agent.key, "plateau", tmp_path)
    assert AgentSample.objects.filter(pid=leaker).count() == SAMPLES
    assert AgentSample.objects.filter(pid=plateau).count() == SAMPLES

    # Scanned along the simulated time: every 15 minutes (each new window), as of then.
    seen: dict[int, dict] = {}
    moment = START + timedelta(minutes=15)
    while moment <= START + SAMPLES * STEP:
        for finding in leakscan(live, moment):
            seen.setdefault(finding["pid"], finding)
        moment += timedelta(minutes=15)
    found = leakscan(live, START + SAMPLES * STEP)
    for finding in found:
        seen.setdefault(finding["pid"], finding)

    assert plateau not in seen, seen.get(plateau)
    leak = seen[leaker]
    assert (leak["agent"], leak["host"], leak["status"]) == (agent.name, "e2e-host", "suspected")
    # 320 KiB a simulated minute is 18.75 MiB/h.
    assert 10 * 2**20 < leak["slope_bytes_per_hour"] < 30 * 2**20
    detected = datetime.fromisoformat(leak["first_detected_at"].replace("Z", "+00:00"))
    assert detected - START <= timedelta(minutes=75)
    # The evidence the reporter sent along: tracemalloc's growth sites and the cycles.
    sites = [s["where"] for row in AgentSample.objects.filter(pid=leaker).values_list("tracemalloc_top", flat=True)
             for s in row or ()]
    line = next(n for n, text in enumerate(PROGRAM.splitlines(), 1) if 'b"L"' in text)
    assert any(where.endswith(f"leak.py:{line}") for where in sites), sites[:5]
    assert sum(AgentSample.objects.filter(pid=leaker).values_list("cycles_found", flat=True)) > 0
