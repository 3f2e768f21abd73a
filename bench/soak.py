"""A soak: the whole system under mixed load for ten minutes, watching its own memory.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_soak REDIS_URL=redis://127.0.0.1:6379/7 \
        .venv/bin/python bench/soak.py                       # the figure: PostgreSQL + Redis
    .venv/bin/python bench/soak.py --minutes 2 --sockets 50  # a short look, embedded defaults

Started like production: two web processes (uvicorn, one worker each, on two ports), a
Celery worker and beat, on the database and Redis named. Meanwhile:
  - agents submit routine requests (--rate per second each), alternating the two ports;
  - other agents submit critical requests and long-poll them (?wait=55) until decided;
  - an operator decides about half of the critical requests from the browser's form
    POST, and the rest time out (the policy's minimum of 60 s);
  - agents push memory samples (POST /api/v1/metrics);
  - --sockets operators' websockets listen to the feed (as the pages open it) and
    every critical request must reach every one of them (or a snapshot that holds it).
Every 10 s it samples the RSS of every web and worker process (the worker's pool too)
and pushes those samples to the system under test as agent `soak-watch`, so that at the
end the project's own leak scan runs over them (our monitoring watching us).

Reported: requests per second by kind, errors by status (no 5xx allowed), events lost,
and each process's RSS at the end of warm-up, at the end, and its growth (goal < 20 MB
after warm-up); with --chart, an SVG of the RSS series.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, manage, migrated_agent_key
from oversight.runner import Supervisor, beat_argv, free_port, wait_for_port, web_argv, worker_argv

PASSWORD = "soak password 1234"
MiB = 1024 * 1024


class Tally:
    def __init__(self):
        self.done = Counter()
        self.statuses = Counter()
        self.created: set[str] = set()

    def note(self, kind: str, response: httpx.Response | None) -> None:
        self.done[kind] += 1
        self.statuses[response.status_code if response is not None else "network"] += 1


async def routine_agent(url: str, key: str, rate: float, tally: Tally, end: float) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        i = 0
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                response = await http.post("/api/v1/requests", json={
                    "operation": "scrape", "summary": f"routine {i}", "metrics": {"memory_pressure": 20}})
            except httpx.HTTPError:
                response = None
            tally.note("routine submit", response)
            i += 1
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))


async def critical_agent(url: str, key: str, every: float, tally: Tally, end: float) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=70) as http:
        i = 0
        while time.monotonic() < end:
            try:
                response = await http.post("/api/v1/requests?wait=5", json={
                    "operation": "delegate", "summary": f"critical {i}", "timeout_seconds": 60,
                    "metrics": {"memory_pressure": 95, "delegation_depth": 6}})
            except httpx.HTTPError:
                response = None
            tally.note("critical submit", response)
            i += 1
            if response is None or response.status_code != 201:
                await asyncio.sleep(every)
                continue
            resource = response.json()
            tally.created.add(resource["id"])
            while resource["status"] == "pending" and time.monotonic() < end + 70:
                try:
                    polled = await http.get(f"/api/v1/requests/{resource['id']}?wait=55")
                except httpx.HTTPError:
                    polled = None
                tally.note("long-poll", polled)
                if polled is None or polled.status_code != 200:
                    await asyncio.sleep(1)
                    continue
                resource = polled.json()
            await asyncio.sleep(every)


async def metrics_agent(url: str, key: str, tally: Tally, end: float) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        me = psutil.Process()
        while time.monotonic() < end:
            memory = me.memory_info()
            sample = {"at": datetime.now(UTC).isoformat(), "pid": me.pid, "process": "soak-agent",
                      "rss_bytes": memory.rss, "vms_bytes": memory.vms}
            try:
                response = await http.post("/api/v1/metrics", json={"host": "soak-host", "samples": [sample]})
            except httpx.HTTPError:
                response = None
            tally.note("metrics push", response)
            await asyncio.sleep(5)


async def operator(url: str, tally: Tally, end: float) -> None:
    """Decides every other critical request it sees in the queue, from the form POST."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        token = (await http.get("/login/")).cookies["csrftoken"]
        await http.post("/login/", data={"username": "soak-operator", "password": PASSWORD,
                                         "csrfmiddlewaretoken": token}, headers={"Referer": url + "/login/"})
        seen: set[str] = set()
        while time.monotonic() < end:
            for request_id in sorted(tally.created - seen):
                seen.add(request_id)
                if len(seen) % 2:
                    continue  # left to its timeout
                try:
                    response = await http.post(
                        f"/requests/{request_id}/decide", data={"outcome": "approve", "reason": ""},
                        headers={"X-CSRFToken": http.cookies["csrftoken"], "Referer": url + "/queue/",
                                 "Accept": "application/json"})
                except httpx.HTTPError:
                    response = None
                tally.note("decision", response)
            await asyncio.sleep(2)


class Sockets:
    def __init__(self):
        self.seen: list[set[str]] = []
        self.tasks: list[asyncio.Task] = []

    async def open(self, urls: list[str], cookie: str, count: int) -> None:
        import websockets

        for n in range(count):
            url = urls[n % len(urls)]
            socket = await websockets.connect(url.replace("http://", "ws://") + "/ws/feed/?routine=0", origin=url,
                                              additional_headers={"Cookie": cookie}, max_queue=None, open_timeout=30)
            seen: set[str] = set()
            self.seen.append(seen)
            self.tasks.append(asyncio.create_task(self._listen(socket, seen)))

    async def _listen(self, socket, seen: set[str]) -> None:
        try:
            async for text in socket:
                event = json.loads(text)
                if event["type"] == "snapshot":
                    seen.update(r["id"] for r in event["pending"])
                elif event["type"] == "request.created":
                    seen.add(event["request"]["id"])
        finally:
            await socket.close()

    def lost(self, created: set[str]) -> int:
        return sum(len(created - seen) for seen in self.seen)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def our_processes(supervisor: Supervisor) -> dict[str, psutil.Process]:
    """Every web and worker process by a name: the worker's pool processes too."""
    found = {}
    for child in supervisor.children:
        if child.name == "redis":
            continue
        try:
            process = psutil.Process(child.process.pid)
            subs = process.children(recursive=True)
        except psutil.Error:
            continue
        found[child.name] = process
        for n, sub in enumerate(subs):
            found[f"{child.name} pool {n + 1}"] = sub
    return found


async def watch(supervisor: Supervisor, url: str, key: str, series: dict, end: float, every: float) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        while time.monotonic() < end:
            at = datetime.now(UTC)
            samples = []
            for name, process in our_processes(supervisor).items():
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                series.setdefault(name, []).append((time.monotonic(), rss))
                samples.append({"at": at.isoformat(), "pid": process.pid, "process": f"oversight {name}",
                                "rss_bytes": rss})
            try:
                await http.post("/api/v1/metrics", json={"host": "soak-host", "samples": samples})
            except httpx.HTTPError:
                pass
            await asyncio.sleep(every)


async def drive(urls: list[str], keys: dict, cookie: str, args, supervisor: Supervisor) -> tuple:
    tally = Tally()
    sockets = Sockets()
    await sockets.open(urls, cookie, args.sockets)
    series: dict[str, list] = {}
    started = time.monotonic()
    end = started + args.minutes * 60
    jobs = [watch(supervisor, urls[0], keys["watch"], series, end, args.sample_seconds),
            operator(urls[1 % len(urls)], tally, end + 65)]
    jobs += [routine_agent(urls[n % len(urls)], keys["routine"], args.rate, tally, end) for n in range(args.agents)]
    jobs += [critical_agent(urls[n % len(urls)], keys["critical"], args.critical_every, tally, end) for n in range(4)]
    jobs += [metrics_agent(urls[n % len(urls)], keys["metrics"], tally, end) for n in range(2)]
    await asyncio.gather(*jobs)
    await asyncio.sleep(2)  # the last pushes
    elapsed = time.monotonic() - started
    lost = sockets.lost(tally.created)
    await sockets.close()
    return tally, lost, series, elapsed


def growth(points: list[tuple[float, int]], warm_up: float) -> tuple[float, float, float]:
    """RSS (MiB) at the end of warm-up and at the end (medians of a minute), and the growth."""
    t0 = points[0][0]
    after = [(t - t0, rss) for t, rss in points if t - t0 >= warm_up]
    if len(after) < 2:
        return float("nan"), float("nan"), float("nan")
    first = statistics.median(rss for t, rss in after if t < after[0][0] + 60) / MiB
    last = statistics.median(rss for t, rss in after if t > after[-1][0] - 60) / MiB
    return first, last, last - first


def svg_chart(series: dict, path: Path) -> None:
    """A small line chart of each process's RSS (MiB) over minutes, no dependencies."""
    width, height, left, bottom = 760, 320, 60, 40
    t0 = min(p[0][0] for p in series.values())
    t1 = max(p[-1][0] for p in series.values())
    top = max(rss for p in series.values() for _, rss in p) / MiB * 1.1
    colours = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"]

    def x(t):
        return left + (t - t0) / max(1.0, t1 - t0) * (width - left - 20)

    def y(mib):
        return height - bottom - mib / top * (height - bottom - 20)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    for step in range(0, 5):
        mib = top / 4 * step
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(mib):.1f}" y2="{y(mib):.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 6}" y="{y(mib) + 4:.1f}" text-anchor="end">{mib:.0f} MiB</text>')
    minutes = int((t1 - t0) // 60)
    for m in range(0, minutes + 1, max(1, minutes // 10)):
        parts.append(f'<text x="{x(t0 + m * 60):.1f}" y="{height - bottom + 16}" text-anchor="middle">{m} min</text>')
    for n, (name, points) in enumerate(sorted(series.items())):
        colour = colours[n % len(colours)]
        line = " ".join(f"{x(t):.1f},{y(rss / MiB):.1f}" for t, rss in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
        parts.append(f'<text x="{left + 10 + (n % 4) * 170}" y="{14 + (n // 4) * 14}" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warm-up", type=float, default=120, help="seconds before growth is measured")
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--agents", type=int, default=8, help="agents submitting routine requests")
    parser.add_argument("--rate", type=float, default=5, help="routine submissions per second per agent")
    parser.add_argument("--critical-every", type=float, default=4, help="seconds between critical asks per agent")
    parser.add_argument("--sample-seconds", type=float, default=10)
    parser.add_argument("--chart", type=Path, help="write an SVG chart of the RSS series here")
    args = parser.parse_args()

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="oversight-soak-"))
    supervisor = Supervisor(prefix_logs=False)
    try:
        env = bench_env(work, supervisor) | {"OVERSIGHT_SWEEP_SECONDS": "1"}
        migrated_agent_key(env)
        keys = {name: manage(env, "create_agent", f"soak-{name}").strip().splitlines()[-1]
                for name in ("routine", "critical", "metrics", "watch")}
        manage(env, "create_user", "soak-operator", "--role", "operator", "--password", PASSWORD)
        ports = [free_port(), free_port()]
        for n, port in enumerate(ports):
            supervisor.start(f"web {n + 1}", web_argv(port), env=env, log=work / f"web-{n + 1}.log")
        supervisor.start("worker", worker_argv(), env=env, log=work / "worker.log")
        supervisor.start("beat", beat_argv(work), env=env, log=work / "beat.log")
        for port in ports:
            wait_for_port(port, what="uvicorn", timeout=60)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        with httpx.Client(base_url=urls[0], timeout=10) as client:
            token = client.get("/login/").cookies["csrftoken"]
            client.post("/login/", data={"username": "soak-operator", "password": PASSWORD,
                                         "csrfmiddlewaretoken": token}, headers={"Referer": urls[0] + "/login/"})
            cookie = f"sessionid={client.cookies['sessionid']}"
        print(f"Soaking for {args.minutes:g} min: {args.agents} agents × {args.rate:g}/s routine, 4 critical "
              f"agents long-polling, {args.sockets} sockets, database {env['DATABASE_URL'].split('@')[-1]}", flush=True)
        tally, lost, series, elapsed = asyncio.run(drive(urls, keys, cookie, args, supervisor))
        scan = manage(env, "shell", "-c", "from monitoring import leaks; print(leaks.scan())").strip().splitlines()[-1]
        scan = f"{scan} finding(s)"
    finally:
        supervisor.stop()

    errors_5xx = sum(n for status, n in tally.statuses.items() if isinstance(status, int) and status >= 500)
    print(f"\n{sum(tally.done.values()) / elapsed:.1f} requests/s over {elapsed / 60:.1f} min")
    for kind, n in sorted(tally.done.items()):
        print(f"  {kind:<16} {n:>8}  ({n / elapsed:.1f}/s)")
    print(f"statuses: {dict(sorted(tally.statuses.items(), key=str))}   5xx: {errors_5xx}   "
          f"critical requests: {len(tally.created)}   events lost: {lost}")
    print(f"\n{'process':<16}{'after warm-up':>14}{'at the end':>12}{'growth':>10}")
    worst = 0.0
    for name, points in sorted(series.items()):
        first, last, grew = growth(points, args.warm_up)
        worst = max(worst, grew) if grew == grew else worst
        print(f"{name:<16}{first:>11.1f} MiB{last:>8.1f} MiB{grew:>+7.1f} MiB")
    print(f"largest growth after warm-up: {worst:+.1f} MiB (goal < 20 MiB); leak scan over those samples: {scan}")
    if args.chart:
        svg_chart(series, args.chart)
        print(f"chart: {args.chart}")
    return 0 if errors_5xx == 0 and lost == 0 and worst < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
