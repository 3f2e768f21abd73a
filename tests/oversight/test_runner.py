"""`make run`'s supervisor, run for real: everything up, then Ctrl-C leaves nothing behind."""

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from oversight.runner import BASE_DIR, free_port

pytestmark = pytest.mark.live


def _start(tmp_path, port):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {"OVERSIGHT_VAR_DIR": str(tmp_path), "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 — closed by the test
    process = subprocess.Popen([sys.executable, "-m", "oversight.runner"], cwd=BASE_DIR, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    return process, log


def _healthy(url, deadline):
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url + "/healthz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return None


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_it_runs_everything_and_stops_every_process(tmp_path, stop_with):
    port = free_port()
    process, log = _start(tmp_path, port)
    try:
        health = _healthy(f"http://127.0.0.1:{port}", time.monotonic() + 120)
        output = (tmp_path / "run.log").read_text()
        assert health == {"status": "ok", "database": "ok", "channel_layer": "ok", "broker": "ok", "clock": "ok"}, output
        assert f"http://127.0.0.1:{port}/" in output
        assert "operator  password:" in output and "manager   password:" in output
        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "uvicorn" in names and "worker" in names and "beat" in names and "redis-server" in names
        # Logs are streamed with a prefix per process.
        deadline = time.monotonic() + 30
        while "worker |" not in (tmp_path / "run.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "   web |" in (tmp_path / "run.log").read_text()

        process.send_signal(stop_with)
        assert process.wait(30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
        assert "Stopped every process." in (tmp_path / "run.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def test_a_second_run_starts_quickly_and_keeps_the_logins(tmp_path):
    """The second start finds everything in place (no re-install is part of this: that is make's)."""
    port = free_port()
    passwords = []
    for _ in range(2):
        process, log = _start(tmp_path, port)
        try:
            assert _healthy(f"http://127.0.0.1:{port}", time.monotonic() + 120)
            passwords.append((tmp_path / "local-logins.txt").read_text())
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(30)
            log.close()
    assert passwords[0] == passwords[1]
    assert oct((tmp_path / "local-logins.txt").stat().st_mode & 0o777) == "0o600"


def test_a_task_sent_like_the_web_process_does_runs_on_the_worker(live):
    from oversight.celery import ping

    assert ping.apply_async().get(timeout=30) == "pong"
