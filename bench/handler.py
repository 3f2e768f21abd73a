"""What the ASGI handler costs per request, in process: no server, no client.

    .venv/bin/python bench/handler.py

Calls the ASGI application directly with GET /api/v1/openapi.json (no database work)
through the agent API's handler (oversight.asgi.AgentAPIHandler) and through Django's
own lean handler (as the API was served before), alternating, at 1 and 8 concurrent
requests, and prints the mean time per request of each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, django_here
from oversight.runner import Supervisor


def _scope(path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}


async def _one(app, path: str) -> None:
    received = False
    statuses = []

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(path), receive, send)
    assert statuses == [200], statuses


async def _run(app, path: str, n: int, concurrency: int) -> float:
    async def worker():
        for _ in range(n // concurrency):
            await _one(app, path)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - started) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=400, help="requests per measurement")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oversight-handler-"))
    supervisor = Supervisor(prefix_logs=False)
    try:
        django_here(bench_env(work))
        from oversight import asgi

        path = "/api/v1/openapi.json"

        async def measure():
            for app in (asgi.api_app, asgi.lean_app):
                await _run(app, path, 50, 1)  # warm up
            print(f"GET {path}, in process, ms per request (two rounds)")
            for concurrency in (1, 8):
                for _ in range(2):
                    ours = await _run(asgi.api_app, path, args.n, concurrency)
                    django = await _run(asgi.lean_app, path, args.n, concurrency)
                    print(f"  {concurrency} at once: AgentAPIHandler {ours * 1e3:.2f}, "
                          f"Django's handler {django * 1e3:.2f}")

        asyncio.run(measure())
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
