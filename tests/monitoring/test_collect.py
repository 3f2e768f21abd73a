from pathlib import Path

import psutil
import pytest

from monitoring import collect
from monitoring.models import HostSample

PSI = """some avg10=1.50 avg60=0.75 avg300=0.10 total=123456
full avg10=0.25 avg60=0.05 avg300=0.00 total=6543
"""


def _cgroup(tmp_path: Path, *, current: int, limit: str, inactive_file: int) -> Path:
    directory = tmp_path / "sys" / "fs" / "cgroup" / "app.slice"
    directory.mkdir(parents=True)
    (directory / "memory.current").write_text(f"{current}\n")
    (directory / "memory.max").write_text(f"{limit}\n")
    (directory / "memory.stat").write_text(f"anon 1000\nfile 5000\ninactive_file {inactive_file}\nactive_file 7\n")
    return directory


def test_it_parses_psi_some_and_full():
    assert collect.parse_psi(PSI) == {"some_avg10": 1.5, "some_avg60": 0.75, "full_avg10": 0.25, "full_avg60": 0.05}


def test_it_reads_no_psi_where_the_kernel_has_none(tmp_path):
    assert collect.read_psi(tmp_path / "no-such-file") == {}
    assert collect.parse_psi("garbage\nsome avg10=x avg60=2\n") == {"some_avg60": 2.0}


def test_it_computes_cgroup_pressure_without_inactive_file(tmp_path):
    directory = _cgroup(tmp_path, current=900, limit="1000", inactive_file=300)
    assert collect.cgroup_pressure(directory) == pytest.approx(60.0)


def test_it_ignores_an_unlimited_cgroup(tmp_path):
    assert collect.cgroup_pressure(_cgroup(tmp_path, current=900, limit="max", inactive_file=0)) is None


def test_it_finds_the_cgroup_v2_directory_and_not_v1(tmp_path):
    _cgroup(tmp_path, current=1, limit="10", inactive_file=0)
    root = tmp_path / "sys" / "fs" / "cgroup"
    v2 = tmp_path / "cgroup-v2"
    v2.write_text("0::/app.slice\n")
    v1 = tmp_path / "cgroup-v1"
    v1.write_text("4:memory:/app.slice\n1:cpu:/\n")
    assert collect.cgroup_dir(v2, root) == root / "app.slice"
    assert collect.cgroup_dir(v1, root) is None
    assert collect.cgroup_dir(tmp_path / "missing", root) is None


def test_it_takes_the_larger_of_host_and_cgroup_pressure(tmp_path):
    tight = _cgroup(tmp_path, current=950, limit="1000", inactive_file=0)
    reading = collect.read_host("box", top=0, cgroup=tight)
    assert reading.cgroup_pressure == pytest.approx(95.0)
    assert reading.pressure == pytest.approx(95.0)
    loose = collect.read_host("box", top=0, cgroup=None)
    assert loose.cgroup_pressure is None
    assert loose.pressure == pytest.approx(100 * (1 - loose.available_bytes / loose.total_bytes), abs=0.5)


def test_it_reads_this_machine_with_sane_numbers():
    # How fast is bench/collect.py's question (no timed assertions here).
    reading = collect.read_host("here", top=20)
    memory = psutil.virtual_memory()
    assert reading.total_bytes == memory.total
    assert 0 < reading.available_bytes <= reading.total_bytes
    assert 0 <= reading.pressure <= 100
    assert 0 < len(reading.top_processes) <= 20
    rss = [p["rss_bytes"] for p in reading.top_processes]
    assert rss == sorted(rss, reverse=True)
    assert reading.top_processes[0]["rss_bytes"] < memory.total


def test_it_names_the_host_after_the_worker_node():
    assert collect.this_host("worker@box-1") == "box-1"
    assert collect.this_host(None)


@pytest.mark.django_db
def test_it_stores_a_sample_and_claims_each_tick_once_per_host():
    assert collect.claim_tick("box", "tick-1")
    assert not collect.claim_tick("box", "tick-1")
    assert collect.claim_tick("other-box", "tick-1")
    sample = collect.collect_one_sample("box")
    stored = HostSample.objects.get(pk=sample.pk)
    assert stored.host == "box"
    assert stored.pressure == sample.pressure
    assert isinstance(stored.top_processes, list)


def test_it_reads_the_same_top_processes_as_psutil():
    fast = collect.top_processes(200)
    slow = collect._top_processes_psutil(200)
    me = psutil.Process()
    mine = next(p for p in fast if p["pid"] == me.pid)
    assert mine["name"] == collect.describe_process(me.name(), me.cmdline())
    assert {p["pid"]: p["name"] for p in slow}.get(me.pid) in (None, mine["name"])
    assert abs(mine["rss_bytes"] - me.memory_info().rss) < 8 << 20
    # Processes come and go between the two walks; the big ones are the same.
    assert {p["pid"] for p in fast[:5]} & {p["pid"] for p in slow[:5]}


@pytest.mark.parametrize(("comm", "argv", "name"), [
    ("oversight web", ["oversight web", "", ""], "oversight web"),
    ("python", ["/x/.venv/bin/python", "-m", "uvicorn", "oversight.asgi:application"], "oversight web"),
    ("python", ["/x/python", "-m", "celery", "-A", "oversight", "worker", "--loglevel", "INFO"], "oversight worker"),
    ("celery", ["/x/celery", "-A", "oversight", "beat"], "oversight beat"),
    ("python3.11", ["python3.11", "-u", "-m", "http.server"], "python3.11 http.server"),
    ("python", ["python", "/srv/jobs/scrape.py", "--fast"], "python scrape.py"),
    ("postgres", ["postgres: checkpointer"], "postgres"),
    ("python", [], "python"),
])
def test_it_names_processes_from_their_command_line(comm, argv, name):
    assert collect.describe_process(comm, argv) == name
