"""Benchmark of memory collection and of agents' sample ingestion.

    .venv/bin/python bench/collect.py                   # SQLite + a private Redis
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_bench REDIS_URL=redis://127.0.0.1:6379/8 \
        .venv/bin/python bench/collect.py

1. CPU time (user + system, this process) per host reading with the top-20 processes
   by RSS (`monitoring.collect.read_host`: what every worker does every 5 s; goal
   ≤ 2 ms), and per stored sample (`collect_one_sample`: reading, the row, the alert
   machine, the feed push), beside a bare `psutil.virtual_memory()` in the same run.
2. Agents' samples through `POST /api/v1/metrics` on the real ASGI server, in batches
   of 1 and 50, as requests/s and samples/s, beside the bare one-row insert endpoint
   (/api/bench/insert) on the same server and database, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.api import load  # noqa: E402
from bench.common import bench_env, django_here, migrated_agent_key  # noqa: E402
from oversight.runner import Supervisor, free_port, wait_for_port, web_argv  # noqa: E402


def cpu_per_call(func, n: int) -> float:
    """Median over 5 rounds of CPU seconds per call."""
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            func()
        rounds.append((time.process_time() - started) / n)
    return statistics.median(rounds)


def collection_table(n: int) -> None:
    import psutil

    from monitoring.collect import collect_one_sample, read_host

    host = f"bench-{os.getpid()}"
    processes = len(psutil.pids())
    read_host(host, top=20)  # warm caches (psutil's, the page cache of /proc)
    bare = cpu_per_call(psutil.virtual_memory, n)
    reading = cpu_per_call(lambda: read_host(host, top=20), n)
    stored = cpu_per_call(lambda: collect_one_sample(host), max(10, n // 10))
    print(f"\nHost collection: CPU per call, median of 5 rounds ({processes} processes on this machine)\n")
    print(f"{'what':<46} | {'CPU ms':>7} | {'× bare':>7}")
    print("-" * 66)
    for name, value in (
        ("psutil.virtual_memory() (bare baseline)", bare),
        ("read_host: pressure, swap, PSI, cgroup, top 20", reading),
        ("collect_one_sample: + row, alerts, feed push", stored),
    ):
        print(f"{name:<46} | {value * 1e3:>7.3f} | {value / bare:>7.1f}")
    print(f"\ngoal: read_host ≤ 2 ms → {'met' if reading <= 0.002 else 'NOT met'}")


def metrics_push(headers: dict, batch: int):
    async def send(client, n, i):
        samples = [{"pid": 1000 + n, "process": "bench", "rss_bytes": 50_000_000 + i, "vms_bytes": 90_000_000,
                    "gc": {"collected": 1, "uncollectable": 0}, "cycles_found": 0} for _ in range(batch)]
        return await client.post("/api/v1/metrics", headers=headers, json={"host": "bench-host", "samples": samples})

    return send


async def bare_insert(client, n, i):
    return await client.post("/api/bench/insert", json={})


def ingestion_table(url: str, headers: dict, seconds: float, concurrency: int) -> None:
    asyncio.run(load(url, bare_insert, 4, 1.0))
    asyncio.run(load(url, metrics_push(headers, 1), 4, 1.0))
    print(f"\nPOST /api/v1/metrics, {concurrency} clients, {seconds:.0f} s x 2 per cell, alternating with the baseline\n")
    print(f"{'batch':>5} | {'bare insert/s':>13} | {'pushes/s':>8} {'samples/s':>9} | {'ratio (requests)':>16} | errors")
    print("-" * 78)
    for batch in (1, 50):
        base, push, errors = [], [], 0
        for _ in range(2):
            rate, _, err = asyncio.run(load(url, bare_insert, concurrency, seconds))
            base.append(rate)
            errors += err
            rate, _, err = asyncio.run(load(url, metrics_push(headers, batch), concurrency, seconds))
            push.append(rate)
            errors += err
        b, p = statistics.mean(base), statistics.mean(push)
        print(f"{batch:>5} | {b:>13.0f} | {p:>8.0f} {p * batch:>9.0f} | {p / b:>16.2f} | {errors}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="host readings per round")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oversight-bench-"))
    supervisor = Supervisor(prefix_logs=False)
    try:
        env = bench_env(work, supervisor)
        key = migrated_agent_key(env)
        django_here(env)
        print(f"database: {env['DATABASE_URL'].split('://')[0]}")
        collection_table(args.calls)

        from monitoring.collect import collect_one_sample

        collect_one_sample("bench-host")  # so pushes feed the per-process alert machine too
        port = free_port()
        supervisor.start("web", web_argv(port, workers=2), env=env, log=work / "web.log")
        wait_for_port(port, what="uvicorn", timeout=60)
        ingestion_table(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}, args.seconds, args.concurrency)
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
