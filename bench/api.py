"""Benchmark of the agent API against the real ASGI server.

    .venv/bin/python bench/api.py                       # embedded: SQLite + a private Redis
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_bench REDIS_URL=redis://127.0.0.1:6379/8 \
        .venv/bin/python bench/api.py

Measures, at 1, 8 and 32 concurrent clients, submissions per second and p50/p99 latency
of POST /api/v1/requests, beside a bare endpoint that inserts one row on the same server
and database, in the same run, alternating the two (the ratio is the figure; goal ≥ 0.7). With
--django-reference, also the bare insert served by Django's own ASGI handler (how the API
was served before oversight.asgi.AgentAPIHandler), alternating with the other two.
Then the latency from an operator's decision committing to a long-polling agent getting
its answer, p50/p99 (goal p99 ≤ 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, django_here, migrated_agent_key, percentile
from oversight.runner import Supervisor, free_port, wait_for_port, web_argv


async def load(url: str, make_request, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    """Closed-loop load: `concurrency` clients send back to back for `seconds`."""
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one_client(n: int):
            nonlocal errors
            i = 0
            while time.perf_counter() < end:
                started = time.perf_counter()
                response = await make_request(client, n, i)
                if response.status_code >= 300:
                    errors += 1
                latencies.append(time.perf_counter() - started)
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, errors


def api_submit(headers):
    async def send(client, n, i):
        # A routine request (approved by the policy) — what most asks are.
        return await client.post(
            "/api/v1/requests",
            headers=headers,
            json={"operation": "scrape", "summary": f"client {n} step {i}",
                  "metrics": {"memory_pressure": 41.5, "delegation_depth": 1, "circular_refs": 0}},
        )

    return send


async def bare_insert(client, n, i):
    return await client.post("/api/bench/insert", json={})


async def bare_insert_django(client, n, i):
    # The same insert on Django's own ASGI handler, as the API was served before
    # oversight.asgi.AgentAPIHandler.
    return await client.post("/api/bench/insert-django", json={})


async def decision_latency(url: str, headers: dict, rounds: int, parallel: int) -> list[float]:
    """Agents long-poll pending requests; this process decides them; time to each answer."""
    from asgiref.sync import sync_to_async

    from oversight import actions
    from oversight.models import Source, Status

    decide = sync_to_async(
        lambda rid: actions.do_decide(rid, outcome=Status.APPROVED, source=Source.OPERATOR, by="bench"),
        thread_sensitive=False,
    )
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=parallel + 4)) as client:
        for _ in range(rounds):
            ids = []
            for _ in range(parallel):
                created = await client.post(
                    "/api/v1/requests", headers=headers,
                    json={"operation": "delegate", "summary": "bench", "metrics": {"delegation_depth": 9}},
                )
                ids.append(created.json()["id"])
            arrived: dict[str, float] = {}

            async def wait(rid, arrived=arrived):
                response = await client.get(f"/api/v1/requests/{rid}?wait=30", headers=headers)
                arrived[rid] = time.perf_counter()
                assert response.json()["status"] == "approved", response.text

            waiters = [asyncio.create_task(wait(rid)) for rid in ids]
            await asyncio.sleep(0.3)  # every agent is now waiting
            committed = {}
            for rid in ids:
                await decide(rid)
                committed[rid] = time.perf_counter()
            await asyncio.gather(*waiters)
            latencies += [arrived[rid] - committed[rid] for rid in ids]
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement (each runs twice)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--django-reference", action="store_true",
                        help="also the bare insert on Django's own ASGI handler (a third, alternating column)")
    parser.add_argument("--rounds", type=int, default=20, help="decision-latency rounds (0: skip them)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oversight-bench-"))
    supervisor = Supervisor(prefix_logs=False)
    try:
        env = bench_env(work, supervisor)
        database = env["DATABASE_URL"].split("://")[0]
        key = migrated_agent_key(env)
        headers = {"Authorization": f"Bearer {key}"}
        port = free_port()
        supervisor.start("web", web_argv(port, workers=args.web_workers), env=env, log=work / "web.log")
        wait_for_port(port, what="uvicorn", timeout=60)
        url = f"http://127.0.0.1:{port}"
        asyncio.run(load(url, bare_insert, 4, 1.0))  # warm up every path
        asyncio.run(load(url, bare_insert_django, 4, 1.0))
        asyncio.run(load(url, api_submit(headers), 4, 1.0))

        print(f"\nAgent API on uvicorn ({args.web_workers} workers), {database}, Redis; "
              f"{args.seconds:.0f} s x 2 per cell, alternating\n")
        reference = " | bare on Django's handler/s  submit ÷ it" if args.django_reference else ""
        print(f"{'clients':>7} | {'bare insert/s':>13} {'p50 ms':>7} {'p99 ms':>7} | "
              f"{'submit/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5} | errors{reference}")
        print("-" * (92 + len(reference)))
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            base_rates, api_rates, base_lat, api_lat, errors = [], [], [], [], 0
            django_rates = []
            for _ in range(2):
                if args.django_reference:
                    rate, _, err = asyncio.run(load(url, bare_insert_django, concurrency, args.seconds))
                    django_rates.append(rate)
                    errors += err
                rate, lat, err = asyncio.run(load(url, bare_insert, concurrency, args.seconds))
                base_rates.append(rate)
                base_lat += lat
                errors += err
                rate, lat, err = asyncio.run(load(url, api_submit(headers), concurrency, args.seconds))
                api_rates.append(rate)
                api_lat += lat
                errors += err
            base, api = statistics.mean(base_rates), statistics.mean(api_rates)
            print(f"{concurrency:>7} | {base:>13.0f} {percentile(base_lat, 50) * 1e3:>7.1f} "
                  f"{percentile(base_lat, 99) * 1e3:>7.1f} | {api:>9.0f} {percentile(api_lat, 50) * 1e3:>7.1f} "
                  f"{percentile(api_lat, 99) * 1e3:>7.1f} | {api / base:>5.2f} | {errors:>6}", end="")
            if django_rates:
                django = statistics.mean(django_rates)
                print(f" | {django:>26.0f} {api / django:>11.2f}", end="")
            print()

        if args.rounds <= 0:
            return 0
        django_here(env)
        for parallel, rounds in ((1, args.rounds), (8, args.rounds), (200, 2)):
            latencies = asyncio.run(decision_latency(url, headers, rounds, parallel))
            print(f"\nDecision → long-polling agent ({parallel} waiting at once, {len(latencies)} decisions): "
                  f"p50 {percentile(latencies, 50) * 1e3:.1f} ms, p99 {percentile(latencies, 99) * 1e3:.1f} ms, "
                  f"max {max(latencies) * 1e3:.1f} ms")
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
