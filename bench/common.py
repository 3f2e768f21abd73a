"""What the benchmarks share: a throwaway environment, a database with an agent, figures."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def bench_env(work: Path, supervisor=None) -> dict:
    """The environment for servers and commands: the caller's DATABASE_URL and REDIS_URL, or
    a SQLite file in `work` and (given a supervisor) a private Redis; no rate limit."""
    from oversight.runner import start_redis

    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{work / 'bench.sqlite3'}")
    if supervisor is not None and not env.get("REDIS_URL"):
        env["REDIS_URL"] = start_redis(supervisor, work)
    return env | {
        "OVERSIGHT_VAR_DIR": str(work), "OVERSIGHT_BENCH": "1", "SECRET_KEY": "bench",
        "OVERSIGHT_RATE_LIMIT_PER_MINUTE": "100000000", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(BASE_DIR),
    }


def manage(env: dict, *args: str) -> str:
    """Run `manage.py args` in `env`; returns its output."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True, capture_output=True, text=True
    ).stdout


def migrated_agent_key(env: dict) -> str:
    """Migrate the database and create an agent; returns its API key.

    The agent may keep as many requests pending as the benchmarks queue at once (the
    default of 20 would answer the 200-waiter rounds with 429)."""
    manage(env, "migrate", "-v", "0")
    created = manage(env, "create_agent", f"bench-{os.getpid()}", "--max-pending", "100000")
    return created.strip().splitlines()[-1]


def django_here(env: dict) -> None:
    """Set Django up in this process on the same database and Redis as the servers."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "OVERSIGHT_VAR_DIR", "SECRET_KEY", "LOG_LEVEL")
                       if k in env})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
