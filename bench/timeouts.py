"""How late are timeouts applied? 10,000 pending requests with spread deadlines.

    .venv/bin/python bench/timeouts.py                  # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_bench .venv/bin/python bench/timeouts.py

Starts the web server, a worker and beat like `make run` (always on a private Redis:
one phase stops it). Three phases, in one run:

The pending requests are one ordinary submission and bulk-inserted copies of it (the
scheduler is what is measured); deadlines are set on the database's clock, which judges
them (spec §9.1), and the loop is woken through Redis as a submission would wake it.

1. deadline loop (the default): N pending requests, deadlines spread evenly over
   `--spread` seconds; lateness = decided_at − deadline for each, and the arrival of
   the decision at agents long-polling a sample of them (arrival − deadline; the web
   process holding a wait applies the timeout itself at the deadline unless the loop
   has already claimed it);
2. sweep only (OVERSIGHT_DEADLINE_LOOP=0, the beat's 1-second sweep through the
   broker, as before the loop): the baseline, on `--small` requests;
3. the backstop with Redis stopped (loop on, the broker gone): `--small` requests.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, django_here, migrated_agent_key, percentile
from oversight.runner import Supervisor, beat_argv, free_port, wait_for_port, web_argv, worker_argv


def create_pending(agent_name: str, count: int, lead: float, spread: float) -> tuple[list[str], dict]:
    """`count` pending critical requests whose deadlines fall evenly over `spread` s from
    `lead` s on (by the database's clock). One is submitted the ordinary way; the rest are
    bulk-inserted copies of it (what is measured is the scheduler, not submission), and the
    deadline loop is told of the new due times as a submission would tell it."""
    import uuid

    from oversight import actions, deadlines
    from oversight.dbclock import db_now
    from oversight.models import Agent, OversightRequest

    agent = Agent.objects.get(name=agent_name)
    agent.max_pending = 1_000_000
    agent.save(update_fields=["max_pending"])
    submission = actions.Submission(operation="delegate", summary="bench", payload={},
                                    metrics={"delegation_depth": 5})
    template = actions.do_submit(agent, submission)[0]  # stays pending, outside what is measured
    start = db_now() + timedelta(seconds=lead)
    requests = []
    for i in range(count):
        template.pk = uuid.uuid4()
        template.deadline = start + timedelta(seconds=spread * i / count)
        template.escalate_at = None  # timeouts only: escalations are not what is measured
        template._state.adding = True
        requests.append(copy.copy(template))
    OversightRequest.objects.bulk_create(requests, batch_size=1000)
    deadlines.announce()
    return [str(r.id) for r in requests], {str(r.id): r.deadline for r in requests}


def lateness_ms(ids: list[str]) -> tuple[list[float], int]:
    from oversight.models import OversightRequest, Status

    rows = OversightRequest.objects.filter(id__in=ids).values_list("status", "decided_at", "deadline")
    pending = sum(1 for status, _, _ in rows if status == Status.PENDING)
    return sorted((d - dl).total_seconds() * 1000 for s, d, dl in rows if d is not None), pending


def wait_decided(ids: list[str], timeout: float) -> None:
    from oversight.models import OversightRequest, Status

    end = time.monotonic() + timeout
    while time.monotonic() < end and OversightRequest.objects.filter(id__in=ids, status=Status.PENDING).exists():
        time.sleep(0.5)


async def long_polls(url: str, key: str, sample: list[tuple[str, float]]) -> list[float]:
    """Each (id, deadline epoch) waited on by an agent; returns arrival − deadline in ms."""
    arrivals = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=70) as client:

        async def one(request_id: str, deadline: float) -> None:
            while True:
                response = await client.get(f"/api/v1/requests/{request_id}?wait=50")
                if response.json()["status"] != "pending":
                    arrivals.append((time.time() - deadline) * 1000)
                    return

        await asyncio.gather(*(one(rid, dl) for rid, dl in sample))
    return sorted(arrivals)


def line(name: str, values: list[float], pending: int = 0) -> str:
    if not values:
        return f"| {name} | 0 | – | – | – | {pending} |"
    return (f"| {name} | {len(values)} | {percentile(values, 50):.0f} | {percentile(values, 99):.0f} | "
            f"{values[-1]:.0f} | {pending} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--spread", type=float, default=100.0)
    parser.add_argument("--polls", type=int, default=100)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oversight-bench-timeouts-"))
    redis = Supervisor(prefix_logs=False)
    servers = Supervisor(prefix_logs=False)
    try:
        from oversight.runner import start_redis

        redis_port = free_port()
        env = bench_env(work) | {"REDIS_URL": start_redis(redis, work, port=redis_port, persist=True)}
        key = migrated_agent_key(env)
        django_here(env)
        from oversight.models import Agent

        agent_name = Agent.objects.latest("created_at").name
        port = free_port()
        url = f"http://127.0.0.1:{port}"

        def start_servers(extra: dict) -> None:
            servers.start("web", web_argv(port), env=env | extra, log=work / "web.log")
            servers.start("worker", worker_argv(), env=env | extra, log=work / "worker.log")
            servers.start("beat", beat_argv(work), env=env | extra, log=work / "beat.log")
            wait_for_port(port, what="uvicorn", timeout=60)
            time.sleep(3)  # beat and the worker up

        rows = []
        print(f"Database: {env['DATABASE_URL'].split(':', 1)[0]}", flush=True)

        # 1. The deadline loop, N pending, with long-polling agents on a sample.
        start_servers({})
        started = time.monotonic()
        ids, deadlines = create_pending(agent_name, args.pending, lead=8.0, spread=args.spread)
        created_in = time.monotonic() - started
        step = max(1, len(ids) // args.polls)
        sample = [(rid, deadlines[rid].timestamp()) for rid in sorted(deadlines)[::step][: args.polls]]
        arrivals = asyncio.run(long_polls(url, key, sample))
        wait_decided(ids, 90)
        lateness, pending = lateness_ms(ids)
        rows.append(line(f"deadline loop, {args.pending:,} pending: decided_at − deadline", lateness, pending))
        rows.append(line(f"deadline loop: long-poll answer − deadline ({len(sample)} agents)", arrivals))
        print(f"(created {args.pending:,} pending in {created_in:.0f} s)", flush=True)

        # 2. Baseline: the sweep alone.
        servers.stop()
        start_servers({"OVERSIGHT_DEADLINE_LOOP": "0"})
        ids, _ = create_pending(agent_name, args.small, lead=5.0, spread=args.spread / 2)
        wait_decided(ids, args.spread + 30)
        lateness, pending = lateness_ms(ids)
        rows.append(line(f"sweep only (baseline), {args.small:,} pending", lateness, pending))

        # 3. The backstop: Redis stopped, the loop works from the database.
        servers.stop()
        start_servers({})
        ids, _ = create_pending(agent_name, args.small, lead=5.0, spread=args.spread / 2)
        redis.stop(timeout=0)
        wait_decided(ids, args.spread + 30)
        lateness, pending = lateness_ms(ids)
        rows.append(line(f"deadline loop with Redis stopped, {args.small:,} pending", lateness, pending))

        print("\n| timeouts | n | p50 ms | p99 ms | max ms | left pending |\n|---|---|---|---|---|---|")
        print("\n".join(rows))
        return 0
    finally:
        servers.stop()
        redis.stop()


if __name__ == "__main__":
    raise SystemExit(main())
