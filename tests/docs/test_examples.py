"""The documentation runs as written: every fenced shell and Python block of the
README, docs/api.md and the SDK's README is executed, in order, against a real
`make run` (the supervisor in oversight/runner.py on a fresh var/ folder).

A block preceded by `<!-- not run: why -->` is not meant to run (Docker, the test
suite itself, a reference signature); it is reported as skipped with that reason.
Shell blocks run in bash with `set -eu` and share their variables, like one
terminal; a block's output may not contain an API error. While a Python block runs,
an operator approves what it asks for (a checkpoint blocks until a person decides).
The only edit to the text is the port: the stack listens on a free one, not 8000.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from oversight.runner import BASE_DIR, free_port

pytestmark = pytest.mark.live

DOCUMENTS = ("README.md", "docs/api.md", "clients/python/README.md")
LANGUAGES = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python"}
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
API_ERROR = re.compile(r'\{\s*"error"\s*:\s*\{\s*"code"')
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def extract(document: str, text: str) -> list[Block]:
    """The fenced shell and Python blocks of a Markdown text, in order."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        language = LANGUAGES.get(opening.group(1).lower())
        if language:
            before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
            marker = NOT_RUN.match(before.strip())
            code = "\n".join(lines[index + 1:end]) + "\n"
            blocks.append(Block(document, index + 1, language, code, marker.group(1) if marker else None))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for document in DOCUMENTS for block in extract(document, (BASE_DIR / document).read_text())]


def test_it_finds_blocks_and_markers():
    text = "Intro\n\n```sh\necho hi\n```\n\n<!-- not run: needs Docker -->\n```sh\ndocker compose up\n```\n" \
           "```json\n{}\n```\n```python\nprint(1)\n```\n"
    blocks = extract("x.md", text)
    assert [(b.line, b.language, b.not_run) for b in blocks] == [
        (3, "shell", None), (8, "shell", "needs Docker"), (14, "python", None)]
    assert blocks[0].code == "echo hi\n"


def test_it_finds_the_examples_of_every_document():
    for document in DOCUMENTS:
        runnable = [b for b in ALL_BLOCKS if b.document == document and b.not_run is None]
        assert runnable, f"{document} has no runnable example"


# --- The stack ---------------------------------------------------------------------------


@dataclass
class RunningStack:
    url: str
    port: int
    var_dir: Path
    logins: dict
    process: subprocess.Popen

    def output(self) -> str:
        return (self.var_dir / "run.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def make_run():
    """`make run` for real: the supervisor with its own var/ folder and a free port."""
    var_dir = Path(tempfile.mkdtemp(prefix="oversight-docs-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env |= {"OVERSIGHT_VAR_DIR": str(var_dir), "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with open(var_dir / "run.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "oversight.runner"], cwd=BASE_DIR, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.25)
        else:
            pytest.fail("make run did not become healthy:\n" + (var_dir / "run.log").read_text())
        assert process.poll() is None, (var_dir / "run.log").read_text()
        logins = dict(line.split(" ", 1) for line in (var_dir / "local-logins.txt").read_text().splitlines())
        yield RunningStack(url, port, var_dir, logins, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Operator:
    """Approves, as the `operator` login, every pending request made while it runs."""

    def __init__(self, stack: RunningStack, key: str | None):
        self.stack, self.key = stack, key
        self.approved: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.key:
            self._before = self._pending()
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _pending(self) -> set[str]:
        answer = httpx.get(self.stack.url + "/api/v1/requests?status=pending&limit=100",
                           headers={"Authorization": f"Bearer {self.key}"}, timeout=10)
        return {r["id"] for r in answer.json().get("results", [])} if answer.status_code == 200 else set()

    def _run(self):
        with httpx.Client(base_url=self.stack.url, timeout=10) as web:
            token = web.get("/login/").cookies["csrftoken"]
            web.post("/login/", data={"username": "operator", "password": self.stack.logins["operator"],
                                      "csrfmiddlewaretoken": token}, headers={"Referer": self.stack.url + "/login/"})
            while not self._stop.wait(0.3):
                for request_id in self._pending() - self._before - set(self.approved):
                    answer = web.post(f"/requests/{request_id}/decide", data={"outcome": "approve"},
                                      headers={"X-CSRFToken": web.cookies["csrftoken"], "Accept": "application/json",
                                               "Referer": self.stack.url + "/queue/"})
                    if answer.status_code == 200:
                        self.approved.append(request_id)


class Terminal:
    """One document's shell: variables set by a block are there for the next ones."""

    def __init__(self, stack: RunningStack):
        self.stack = stack
        base = {k: v for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "OVERSIGHT_API_KEY", "KEY")}
        self.env = base | {"OVERSIGHT_VAR_DIR": str(stack.var_dir), "OVERSIGHT_URL": stack.url}
        self.done: set[int] = set()

    def localise(self, code: str) -> str:
        return code.replace("127.0.0.1:8000", f"127.0.0.1:{self.stack.port}")

    def run(self, block: Block) -> str:
        code = self.localise(block.code)
        if block.language == "shell":
            with tempfile.NamedTemporaryFile("rb", suffix=".env") as saved:
                script = f"set -eu -o pipefail\nset -a\n{code}\nenv -0 > {saved.name}\n"
                result = subprocess.run(["bash", "-c", script], cwd=BASE_DIR, env=self.env, capture_output=True,
                                        text=True, timeout=180)
                if result.returncode == 0:
                    pairs = (item.split(b"=", 1) for item in saved.read().split(b"\0") if b"=" in item)
                    self.env = {k.decode(): v.decode() for k, v in pairs}
        else:
            key = self.env.get("OVERSIGHT_API_KEY") or self.env.get("KEY")
            with Operator(self.stack, key):
                result = subprocess.run([str(BASE_DIR / ".venv/bin/python"), "-"], input=code, cwd=BASE_DIR,
                                        env=self.env, capture_output=True, text=True, timeout=180)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{block.id} failed ({result.returncode}):\n{code}\n---\n{output[-3000:]}"
        error = API_ERROR.search(result.stdout)
        assert error is None, f"{block.id} got an API error: {result.stdout[error.start():error.start() + 300]}\n{code}"
        self.done.add(block.line)
        return output


@pytest.fixture(scope="module")
def terminals(make_run):
    return {document: Terminal(make_run) for document in DOCUMENTS}


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_the_documented_example_runs(block, terminals):
    if block.not_run:
        pytest.skip(f"not run, as marked: {block.not_run}")
    terminal = terminals[block.document]
    # Earlier blocks of the same document first (when selected alone with -k).
    for earlier in ALL_BLOCKS:
        if earlier.document == block.document and earlier.line < block.line and earlier.not_run is None \
                and earlier.line not in terminal.done:
            terminal.run(earlier)
    terminal.run(block)


def test_the_welcome_block_names_every_login(make_run):
    output = make_run.output()
    block = output[output.index("Oversight is running"):]
    assert f"open http://127.0.0.1:{make_run.port}/" in block
    for name, password in make_run.logins.items():
        assert name in block and password in block
