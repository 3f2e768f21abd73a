"""Profile of a submission's work in its thread hop (cProfile, in-process).

    .venv/bin/python bench/profile_submit.py                   # SQLite + a private Redis
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_bench REDIS_URL=redis://127.0.0.1:6379/8 \
        .venv/bin/python bench/profile_submit.py -n 2000

Drives what POST /api/v1/requests runs in its worker thread (body parsing, then
`_submit`: authentication, rate limit, validation, policy, insert, audit, receipt)
N times with a routine body, each call in a fresh context as under ASGI (so
per-request objects, such as the cache's client, are made as often as they are in
the server), and prints the functions with the highest cumulative time, beside the
same N bare inserts of the bench endpoint.
"""

from __future__ import annotations

import argparse
import contextvars
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_env, django_here, migrated_agent_key
from oversight.runner import Supervisor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1000, help="submissions to profile")
    parser.add_argument("--top", type=int, default=25, help="lines of the profile to print")
    parser.add_argument("--sort", default="cumulative", help="pstats sort keys, comma-separated (e.g. tottime)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oversight-profile-"))
    supervisor = Supervisor(prefix_logs=False)
    try:
        env = bench_env(work, supervisor)
        key = migrated_agent_key(env)
        django_here(env)
        from django.db import close_old_connections
        from django.test import RequestFactory

        from oversight.api import views
        from oversight.api.bench import _insert

        factory = RequestFactory()

        def one(i: int) -> None:
            request = factory.post(
                "/api/v1/requests", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}",
                data=json.dumps({"operation": "scrape", "summary": f"profile step {i}",
                                 "metrics": {"memory_pressure": 41.5, "delegation_depth": 1, "circular_refs": 0}}),
            )
            parsed = views._read_json(request, strict=True)
            status, _ = hop(views._submit, request, parsed, request.headers.get("Idempotency-Key"))
            assert status == 201, status

        def hop(func, *args):
            # What `_in_thread` does around the work, for both paths alike.
            close_old_connections()
            try:
                return func(*args)
            finally:
                close_old_connections()

        def submit_all(start: int) -> None:
            for i in range(start, start + args.n):
                contextvars.Context().run(one, i)

        def insert_all() -> None:
            for _ in range(args.n):
                contextvars.Context().run(hop, _insert)

        submit_all(0)  # warm up: imports, connections, caches
        insert_all()
        started = time.perf_counter()
        insert_all()
        bare = (time.perf_counter() - started) / args.n
        started = time.perf_counter()
        submit_all(args.n)
        plain = (time.perf_counter() - started) / args.n
        profile = cProfile.Profile()
        profile.enable()
        submit_all(2 * args.n)
        profile.disable()

        database = env["DATABASE_URL"].split("://")[0]
        print(f"{database}: bare insert {bare * 1e3:.2f} ms, submission {plain * 1e3:.2f} ms "
              f"(unprofiled, {args.n} each; ratio {bare / plain:.2f})\n")
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats(*args.sort.split(",")).print_stats(args.top)
        print(out.getvalue())
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
