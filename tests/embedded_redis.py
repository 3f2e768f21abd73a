"""Pytest plugin: a private Redis for the suite when REDIS_URL is not given, and a
SQLite test database of the run's own.

It must run before pytest-django sets Django up (the settings read REDIS_URL),
hence a plugin loaded with `-p` whose hook wraps the initial set-up. Each run
also gets its own channel-layer prefix so it never hears another run's events.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_supervisor = None
_scratch: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _supervisor
    if not os.environ.get("REDIS_URL"):
        from oversight.runner import Supervisor, start_redis

        _supervisor = Supervisor(prefix_logs=False)
        _scratch.append(tempfile.mkdtemp(prefix="oversight-redis-"))
        os.environ["REDIS_URL"] = start_redis(_supervisor, Path(_scratch[-1]))
    os.environ.setdefault("CHANNEL_PREFIX", f"oversight-test-{os.getpid()}")
    if not os.environ.get("OVERSIGHT_TEST_SQLITE"):
        _scratch.append(tempfile.mkdtemp(prefix="oversight-db-"))
        os.environ["OVERSIGHT_TEST_SQLITE"] = str(Path(_scratch[-1]) / "test.sqlite3")
    return (yield)


def pytest_unconfigure(config):
    if _supervisor is not None:
        _supervisor.stop()
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)
