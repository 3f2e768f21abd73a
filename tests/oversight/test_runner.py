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
        logins = dict(line.split(" ", 1) for line in (tmp_path / "local-logins.txt").read_text().splitlines())
        assert set(logins) == {"operator", "manager", "admin"}
        # One block says where to click and how to sign in, with each login and password.
        block = output[output.index("Oversight is running"):]
        assert f"open http://127.0.0.1:{port}/" in block
        for name, password in logins.items():
            assert f"{name:<9} {password}" in block
        assert output.count(logins["admin"]) == 1  # printed once, in the block
        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        # Each process says what it is, in `ps` and on the monitoring page.
        assert "oversight web" in names and "oversight worker" in names and "oversight beat" in names, names
        assert "redis-server" in names
        from monitoring.collect import top_processes

        ours = {p["pid"]: p["name"] for p in top_processes(10_000)}
        assert {ours.get(c.pid) for c in children} >= {"oversight web", "oversight worker", "oversight beat"}
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


def _children_by_role(process):
    roles = {}
    for child in psutil.Process(process.pid).children():
        try:
            line = " ".join(child.cmdline())
        except psutil.Error:  # just died, not yet reaped
            continue
        # The children retitle themselves (`oversight web`, …); before that, their argv.
        markers = (("web", ("oversight web", "uvicorn")), ("worker", ("oversight worker", " worker ")),
                   ("beat", ("oversight beat", " beat ")), ("redis", ("redis-server",)))
        for role, names in markers:
            if any(name in f" {line} " for name in names):
                roles[role] = child
    return roles


def _wait_for(predicate, timeout, what):
    """Poll `predicate` until it returns something true. A process that dies or a port
    that closes while it looks (the very thing being waited out) counts as not yet."""
    import redis

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except (psutil.Error, redis.ConnectionError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"Timed out waiting for {what}")


def _web_other_than(process, pid):
    web = _children_by_role(process).get("web")
    return web if web is not None and web.pid != pid else None


def test_it_restarts_a_dead_worker_beat_and_redis_and_never_stops_the_web_server(tmp_path):
    import redis

    port = free_port()
    process, log = _start(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        assert _healthy(url, time.monotonic() + 120), (tmp_path / "run.log").read_text()
        before = _children_by_role(process)
        assert set(before) == {"web", "worker", "beat", "redis"}
        redis_port = next(c.laddr.port for c in before["redis"].net_connections("tcp") if c.status == "LISTEN")
        queued = redis.Redis(port=redis_port)
        queued.rpush("queued-work", "survives")

        for role in ("worker", "beat", "redis"):
            before[role].send_signal(signal.SIGKILL)

        def restarted():
            now = _children_by_role(process)
            fresh = all(role in now and now[role].pid != before[role].pid for role in ("worker", "beat", "redis"))
            return fresh and now

        after = _wait_for(restarted, 30, "the worker, beat and Redis to be restarted")
        output = (tmp_path / "run.log").read_text()
        for role in ("worker", "beat", "redis"):
            assert f"The {role} process stopped (killed by SIGKILL)" in output, output
            assert f"Restarted the {role} process" in output
        assert "stopping the others" not in output
        assert after["web"].pid == before["web"].pid  # never stopped for another process
        assert process.poll() is None

        # Redis came back on the same port, with what was queued in it.
        assert _wait_for(lambda: queued.lrange("queued-work", 0, -1), 10, "Redis") == [b"survives"]
        # And the whole system is healthy again, a worker answering tasks.
        health = _wait_for(lambda: _healthy(url, time.monotonic() + 2), 60, "health")
        assert health["broker"] == "ok"

        # A dead web server is restarted too.
        after["web"].send_signal(signal.SIGKILL)
        _wait_for(lambda: _web_other_than(process, after["web"].pid), 30, "the web server to be restarted")
        assert _wait_for(lambda: _healthy(url, time.monotonic() + 2), 60, "health after the web restart")

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert "Stopped every process." in (tmp_path / "run.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def test_it_backs_off_between_restarts_of_a_process_that_keeps_dying(tmp_path):
    from oversight.runner import Supervisor

    supervisor = Supervisor(prefix_logs=False, backoff=0.2, max_backoff=0.8)
    marker = tmp_path / "starts"
    child = supervisor.start("flaky", [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); exit(3)"],
                             log=tmp_path / "flaky.log", restart=True)
    try:
        supervisor.watch(until=lambda: child.restarts >= 4, interval=0.01)
    finally:
        supervisor.stop()
    stopped = [note for note in supervisor.notes if "stopped" in note]
    assert "The flaky process stopped (exit status 3)" in stopped[0]
    delays = [float(note.rsplit("restarting it in ", 1)[1].split(" ")[0]) for note in stopped]
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8]  # doubling, capped
    assert marker.read_text().count("x") >= 4


def test_it_stops_a_child_that_is_not_to_be_restarted_and_says_which(tmp_path):
    from oversight.runner import Supervisor

    supervisor = Supervisor(prefix_logs=False)
    supervisor.start("once", [sys.executable, "-c", "exit(0)"], log=tmp_path / "once.log")
    supervisor.start("long", [sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "long.log")
    try:
        assert supervisor.watch() == "once"
    finally:
        supervisor.stop()
