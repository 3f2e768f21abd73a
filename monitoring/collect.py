"""Sampling this host: pressure (cgroup v2 aware), swap, PSI and the top processes by RSS.

`read_host()` does the measuring and touches no database, so it is cheap to test
and to benchmark; `collect_one_sample()` stores what it read and feeds alerts and
the live feed. The Celery task in tasks.py is a thin loop around the latter.
"""

from __future__ import annotations

import heapq
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

PROC = Path("/proc")
PROC_PSI = PROC / "pressure" / "memory"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# memory.max reads "max" when the cgroup has no limit; a limit this large is none either.
NO_LIMIT = 1 << 60


@dataclass
class Reading:
    """What one look at the host found (no database, no time zone games: `at` is aware UTC)."""

    host: str
    at: datetime
    pressure: float
    total_bytes: int
    available_bytes: int
    used_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    cgroup_pressure: float | None = None
    cgroup_limit_bytes: int | None = None
    psi: dict[str, float] = field(default_factory=dict)
    top_processes: list[dict] = field(default_factory=list)


def parse_psi(text: str) -> dict[str, float]:
    """`/proc/pressure/memory` → {"some_avg10": …, "some_avg60": …, "full_avg10": …, "full_avg60": …}."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        for item in rest.split():
            name, _, value = item.partition("=")
            if name in ("avg10", "avg60"):
                try:
                    found[f"{kind}_{name}"] = float(value)
                except ValueError:
                    continue
    return found


def read_psi(path: Path = PROC_PSI) -> dict[str, float]:
    """PSI where the kernel has it; {} on kernels without it (or with it switched off)."""
    try:
        return parse_psi(path.read_text())
    except OSError:
        return {}


def cgroup_dir(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> Path | None:
    """This process's cgroup v2 directory, or None on cgroup v1 / no cgroup filesystem."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # v2 is the one line "0::/path"; v1 lines name their controllers.
        if line.startswith("0::"):
            directory = root / line[3:].lstrip("/")
            if (directory / "memory.max").exists():
                return directory
    return None


def cgroup_pressure(directory: Path) -> float | None:
    """`(memory.current − inactive_file) / memory.max` in percent; None when unlimited or unreadable.

    inactive_file is page cache the kernel reclaims first: counting it would call a
    container that merely read big files "under pressure"."""
    try:
        limit_text = (directory / "memory.max").read_text().strip()
        if limit_text == "max":
            return None
        limit = int(limit_text)
        current = int((directory / "memory.current").read_text().strip())
        inactive_file = 0
        for line in (directory / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "inactive_file":
                inactive_file = int(value)
                break
    except (OSError, ValueError):
        return None
    if limit <= 0 or limit >= NO_LIMIT:
        return None
    return max(0.0, min(100.0, 100.0 * (current - inactive_file) / limit))


def top_processes(n: int, proc: Path = PROC) -> list[dict]:
    """The n largest processes by RSS (never USS/PSS: those walk every mapping).

    On Linux this reads /proc/<pid>/statm, the one small file psutil's `memory_info`
    reads, without building a Process object per pid (which also reads `stat` for
    the creation time), and names only the n winners, from `comm`: half the CPU of
    `memory_info` under `oneshot()` for every process, and a third with names.
    Elsewhere, psutil."""
    if n <= 0:
        return []
    if not (proc / "self" / "statm").exists():
        return _top_processes_psutil(n)
    base = str(proc)  # plain strings: pathlib's joins cost more than the reads here
    rows = []
    for name in os.listdir(base):
        if not name.isdigit():
            continue
        try:
            fields = _read_small(f"{base}/{name}/statm").split()
            rows.append((int(fields[1]) * PAGE_SIZE, int(name), int(fields[0]) * PAGE_SIZE))
        except (OSError, ValueError, IndexError):
            continue  # gone between listing and reading, or not ours to read
    top = []
    for rss, pid, vms in heapq.nlargest(n, rows):
        try:
            comm = _read_small(f"{base}/{pid}/comm").decode(errors="replace").strip()
        except OSError:
            continue
        top.append({"pid": pid, "name": comm, "rss_bytes": rss, "vms_bytes": vms})
    return top


def _read_small(path: str) -> bytes:
    """One read of a small /proc file: no buffered file object (a third of the cost per pid)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _top_processes_psutil(n: int) -> list[dict]:
    rows = []
    for process in psutil.process_iter():
        try:
            with process.oneshot():
                info = process.memory_info()
                rows.append((info.rss, process.pid, process.name(), info.vms))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [
        {"pid": pid, "name": name, "rss_bytes": rss, "vms_bytes": vms}
        for rss, pid, name, vms in heapq.nlargest(n, rows)
    ]


def cgroup_limit(directory: Path) -> int | None:
    """The cgroup's memory.max in bytes; None when unlimited or unreadable."""
    try:
        text = (directory / "memory.max").read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def read_host(host: str, *, top: int | None = None, cgroup: Path | bool | None = True) -> Reading:
    """Measure this machine now. `cgroup=True` finds our cgroup; a Path uses that one (tests)."""
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    directory = cgroup_dir() if cgroup is True else (cgroup or None)
    in_cgroup = cgroup_pressure(directory) if directory else None
    pressure = 100.0 * (1 - memory.available / memory.total) if memory.total else 0.0
    return Reading(
        host=host,
        at=timezone.now(),
        pressure=round(max(pressure, in_cgroup or 0.0), 2),
        total_bytes=memory.total,
        available_bytes=memory.available,
        used_bytes=memory.total - memory.available,
        swap_total_bytes=swap.total,
        swap_used_bytes=swap.used,
        cgroup_pressure=None if in_cgroup is None else round(in_cgroup, 2),
        cgroup_limit_bytes=cgroup_limit(directory) if directory else None,
        psi=read_psi(),
        top_processes=top_processes(settings.MONITORING_TOP_PROCESSES if top is None else top),
    )


def this_host(worker_hostname: str | None = None) -> str:
    """The host a sample is filed under: the part after "@" of the Celery node name
    (`worker@%h`, so the machine's name unless an operator names it), else the machine's."""
    if worker_hostname and "@" in worker_hostname:
        return worker_hostname.split("@", 1)[1]
    return worker_hostname or socket.gethostname()


def claim_tick(host: str, tick_id: str) -> bool:
    """True for the first worker of `host` to see this broadcast tick.

    Every worker gets each broadcast; two workers on one machine would otherwise
    file two samples for it. The claim lives a few intervals in the shared cache."""
    if not tick_id:
        return True
    ttl = max(5, int(settings.MONITORING_SAMPLE_SECONDS * 3))
    return cache.add(f"monitoring:tick:{host}:{tick_id}", os.getpid(), ttl)


def collect_one_sample(host: str, *, reading: Reading | None = None):
    """Read (unless given), store, evaluate alerts and push `pressure.sample`. Returns the row."""
    from monitoring import alerts, events
    from monitoring.ingest import count_ingested
    from monitoring.models import HostSample

    reading = reading or read_host(host)
    sample = HostSample.objects.create(
        host=reading.host,
        at=reading.at,
        pressure=reading.pressure,
        total_bytes=reading.total_bytes,
        available_bytes=reading.available_bytes,
        used_bytes=reading.used_bytes,
        swap_total_bytes=reading.swap_total_bytes,
        swap_used_bytes=reading.swap_used_bytes,
        cgroup_pressure=reading.cgroup_pressure,
        cgroup_limit_bytes=reading.cgroup_limit_bytes,
        psi_some_avg10=reading.psi.get("some_avg10"),
        psi_some_avg60=reading.psi.get("some_avg60"),
        psi_full_avg10=reading.psi.get("full_avg10"),
        psi_full_avg60=reading.psi.get("full_avg60"),
        top_processes=reading.top_processes,
    )
    count_ingested("host", 1)
    alerts.observe(reading.host, "", reading.pressure, reading.at)
    events.pressure_sample(sample)
    return sample
