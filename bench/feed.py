"""Benchmark of the live feed: how fast a queued request reaches every operator's socket.

    .venv/bin/python bench/feed.py                      # SQLite + a private Redis
    .venv/bin/python bench/feed.py --clients 50,200 --rounds 40

For 50 and 200 operators' websockets, while 8 agents submit (non-critical) requests
back to back, it measures the time from a critical submission's commit to each socket
receiving `request.created`, and beside it, in the same run and alternating with it, a
bare `group_send` of a message of the same size to the same sockets. Both with the
in-process channel layer (one uvicorn worker) and the Redis layer (two workers).
Reported: p50 / p99 per delivery, the ratio to the bare fan-out, and lost messages.

The server runs this module's `application`: the real ASGI app, plus
`POST /bench/fanout` (the bare group_send) and a hook that notes when each event
leaves the commit (written to BENCH_STAMPS). Nothing of it is in the product.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

PASSWORD = "bench password 1234"
CRITICAL = {"memory_pressure": 97.0, "delegation_depth": 6}


# --- The server side (imported by uvicorn as bench.feed:application) -------------------------

_inner = {}


async def application(scope, receive, send):
    if not _inner:
        _inner["app"] = _server_app()
    if scope["type"] == "http" and scope["path"] == "/bench/fanout":
        return await _fanout(receive, send)
    return await _inner["app"](scope, receive, send)


def _server_app():
    from oversight import events
    from oversight.asgi import application as real

    stamps = open(os.environ["BENCH_STAMPS"], "a", buffering=1)  # noqa: SIM115 — lives as long as the server
    original = events._send

    def stamped(groups, message):
        if message["event_type"] == "request.created":
            stamps.write(f"{json.loads(message['text'])['request']['id']} {time.time()}\n")
        original(groups, message)

    events._send = stamped
    return real


async def _fanout(receive, send):
    from channels.layers import get_channel_layer

    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    asked = json.loads(body)
    event = {"type": "bench.fanout", "bench_id": asked["bench_id"], "t0": time.time(), "request": asked["request"]}
    await get_channel_layer().group_send("feed", {"type": "feed.event", "text": json.dumps(event, separators=(",", ":"))})
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


# --- The driver ---------------------------------------------------------------------------


from bench.common import manage, migrated_agent_key, percentile  # noqa: E402


class Sockets:
    """N operators' sockets; records when each got each awaited message."""

    def __init__(self):
        self.received: dict[str, list[float]] = {}
        self.sent_at: dict[str, float] = {}
        self.resyncs = 0  # snapshots sent to a socket that fell behind
        self.tasks = []

    async def open(self, url: str, cookie: str, count: int, query: str = "") -> None:
        import websockets

        ws_url = url.replace("http://", "ws://") + "/ws/feed/" + (f"?{query}" if query else "")
        ready = []
        for _ in range(count):
            socket = await websockets.connect(ws_url, origin=url, additional_headers={"Cookie": cookie},
                                              max_queue=None, open_timeout=30)
            assert json.loads(await socket.recv())["type"] == "snapshot"
            ready.append(socket)
        self.sockets = ready
        self.tasks = [asyncio.create_task(self._listen(s)) for s in ready]

    async def _listen(self, socket) -> None:
        async for text in socket:
            now = time.time()
            # The agents' load floods every socket with request.decided; the type is the
            # first key, so those are skipped without parsing (the client is not what we measure).
            head = text[:40]
            if '"request.created"' not in head and '"bench.fanout"' not in head and '"snapshot"' not in head:
                continue
            event = json.loads(text)
            if event["type"] == "snapshot":
                # A socket that fell behind is sent the state instead of the events it
                # missed: what it holds counts as received (late), not lost.
                self.resyncs += 1
                for pending in event["pending"]:
                    self.received.setdefault(pending["id"], []).append(now)
            elif event["type"] == "bench.fanout":
                self.received.setdefault(event["bench_id"], []).append(now)
                self.sent_at[event["bench_id"]] = event["t0"]
            else:
                self.received.setdefault(event["request"]["id"], []).append(now)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(s.close() for s in self.sockets), return_exceptions=True)

    async def wait_for(self, key: str, count: int, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while len(self.received.get(key, ())) < count and time.monotonic() < end:
            await asyncio.sleep(0.005)


def agent_load(url: str, key: str, clients: int, rate: float) -> None:
    """`clients` agents submitting non-critical requests (back to back, or `rate` per second
    each); every one is approved by the policy at once and broadcast as request.decided to
    every socket. Runs in a process of its own until killed."""

    def one(n: int):
        import httpx

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            i = 0
            while True:
                started = time.monotonic()
                client.post("/api/v1/requests", json={
                    "operation": "load", "summary": f"load {n}-{i}", "metrics": {"memory_pressure": 5}})
                i += 1
                if rate:
                    time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    threads[0].join()


async def measure(url: str, key: str, cookie: str, clients: int, rounds: int, stamps: Path, query: str) -> dict:
    import httpx

    sockets = Sockets()
    await sockets.open(url, cookie, clients, query)
    real, bare, lost = [], [], {"real": 0, "bare": 0}
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        sample = None
        for _ in range(rounds):
            # The real path: a critical submission, committed, pushed to every socket.
            answer = await http.post("/api/v1/requests", json={"operation": "delegate", "summary": "bench",
                                                               "metrics": CRITICAL})
            sample = answer.json()
            await sockets.wait_for(sample["id"], clients)
            got = sockets.received.get(sample["id"], [])
            lost["real"] += max(0, clients - len(got))
            committed = _stamp(stamps, sample["id"])
            real += [t - committed for t in got]
            # The baseline: a bare group_send of a message of the same size.
            bench_id = uuid.uuid4().hex
            await http.post("/bench/fanout", json={"bench_id": bench_id, "request": sample})
            await sockets.wait_for(bench_id, clients)
            got = sockets.received.get(bench_id, [])
            lost["bare"] += max(0, clients - len(got))
            bare += [t - sockets.sent_at.get(bench_id, 0) for t in got]
            await asyncio.sleep(0.05)
    await sockets.close()
    return {"real": real, "bare": bare, "lost": lost, "resyncs": sockets.resyncs}


def _stamp(stamps: Path, request_id: str) -> float:
    for _ in range(200):
        for line in stamps.read_text().splitlines():
            found, _, at = line.partition(" ")
            if found == request_id:
                return float(at)
        time.sleep(0.01)
    raise RuntimeError(f"No commit stamp for {request_id}")


def run_layer(name: str, env: dict, workers: int, args, work: Path, key: str) -> list[tuple]:
    from oversight.runner import Supervisor, free_port, wait_for_port

    port = free_port()
    stamps = work / f"stamps-{name}.txt"
    stamps.write_text("")
    server_env = env | {"BENCH_STAMPS": str(stamps)}
    supervisor = Supervisor(prefix_logs=False)
    argv = [sys.executable, "-m", "uvicorn", "bench.feed:application", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--lifespan", "off", "--ws", "websockets-sansio", "--no-access-log"]
    supervisor.start("web", argv, env=server_env, log=work / f"web-{name}.log")
    rows = []
    try:
        wait_for_port(port, what="uvicorn", timeout=60)
        url = f"http://127.0.0.1:{port}"
        cookie = sign_in(url)
        if args.agents:
            supervisor.start("agents", [sys.executable, __file__, "--agent-load", url, key, str(args.agents),
                                        str(args.agent_rate)], env=env, log=work / "agents.log")
        for clients in [int(c) for c in args.clients.split(",")]:
            result = asyncio.run(measure(url, key, cookie, clients, args.rounds, stamps, args.feed_query))
            rows.append((name, workers, clients, result))
    finally:
        supervisor.stop()
    return rows


def sign_in(url: str) -> str:
    import httpx

    with httpx.Client(base_url=url, timeout=10) as client:
        token = client.get("/login/").cookies["csrftoken"]
        client.post("/login/", data={"username": "bench-operator", "password": PASSWORD,
                                     "csrfmiddlewaretoken": token}, headers={"Referer": url + "/login/"})
        return f"sessionid={client.cookies['sessionid']}"


def main() -> int:
    from oversight.runner import Supervisor, start_redis

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="50,200")
    parser.add_argument("--rounds", type=int, default=40, help="messages of each kind per cell")
    parser.add_argument("--agents", type=int, default=8, help="agents submitting in the background")
    parser.add_argument("--agent-rate", type=float, default=0, help="submissions per second per agent (0: back to back)")
    parser.add_argument("--layers", default="memory,redis")
    parser.add_argument("--feed-query", default="routine=0",
                        help="query string of each socket: the pages' (default) or '' for every event, as a raw client")
    parser.add_argument("--agent-load", nargs=4, metavar=("URL", "KEY", "AGENTS", "RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent_load:
        url, key, agents, rate = args.agent_load
        agent_load(url, key, int(agents), float(rate))
        return 0

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="oversight-bench-feed-"))
    redis = Supervisor(prefix_logs=False)
    env = dict(os.environ) | {
        "OVERSIGHT_VAR_DIR": str(work), "SECRET_KEY": "bench", "LOG_LEVEL": "WARNING",
        "OVERSIGHT_RATE_LIMIT_PER_MINUTE": "100000000", "PYTHONPATH": str(BASE_DIR),
    }
    env.setdefault("DATABASE_URL", f"sqlite:///{work / 'bench.sqlite3'}")
    try:
        key = migrated_agent_key(env)
        manage(env, "create_user", "bench-operator", "--role", "operator", "--password", PASSWORD)
        rows = []
        for layer in args.layers.split(","):
            if layer == "memory":
                rows += run_layer("in-process", {k: v for k, v in env.items() if k != "REDIS_URL"}, 1, args, work, key)
            else:
                redis_url = os.environ.get("REDIS_URL") or start_redis(redis, work)
                rows += run_layer("redis", env | {"REDIS_URL": redis_url}, 2, args, work, key)
        report(rows, args)
        return 0
    finally:
        redis.stop()


def report(rows: list[tuple], args) -> None:
    pace = f"{args.agent_rate:g}/s each" if args.agent_rate else "back to back"
    print(f"\nLive feed fan-out, {args.agents} agents submitting meanwhile ({pace}), "
          f"{args.rounds} messages of each kind per row, sockets opened with ?{args.feed_query}")
    print("latency: commit → each socket (request.created)  vs  bare group_send → each socket, same size\n")
    print(f"{'layer':>10} {'workers':>7} {'sockets':>7} | {'bare p50':>8} {'p99':>7} | {'feed p50':>8} {'p99':>7} | "
          f"{'ratio p50':>9} {'p99':>5} | lost | resyncs")
    print("-" * 96)
    for name, workers, clients, result in rows:
        b50, b99 = percentile(result["bare"], 50) * 1e3, percentile(result["bare"], 99) * 1e3
        r50, r99 = percentile(result["real"], 50) * 1e3, percentile(result["real"], 99) * 1e3
        lost = result["lost"]["real"] + result["lost"]["bare"]
        print(f"{name:>10} {workers:>7} {clients:>7} | {b50:>7.1f}ms {b99:>5.1f}ms | {r50:>7.1f}ms {r99:>5.1f}ms | "
              f"{r50 / b50:>9.2f} {r99 / b99:>5.2f} | {lost:>4} | {result['resyncs']}")


if __name__ == "__main__":
    sys.exit(main())
