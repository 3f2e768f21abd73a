"""§9.2: a body over the limit is refused with 413 before the server has read more
than the limit — against a real uvicorn server, with a client still sending."""

import os
import select
import shutil
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import start_stack

LIMIT = 256 * 1024
CHUNK = 64 * 1024
TOTAL = 64 * 1024 * 1024  # what the client would send if nobody stopped it


@pytest.fixture
def server(transactional_db):
    tmp = Path(tempfile.mkdtemp(prefix="oversight-bodylimit-tmp-"))
    stack = start_stack(worker=False, beat=False, extra_env={"TMPDIR": str(tmp)})
    web = stack.supervisor.children[0].process
    yield stack, web.pid, tmp
    stack.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    sock.settimeout(5)
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and len(data) > 200:
                break
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def _largest_spooled_file(pid: int, tmp: Path) -> int:
    """The largest file the server holds open in its temporary directory (Django's
    spooled upload files are unlinked at once, so look through /proc)."""
    largest = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(str(tmp)):
                largest = max(largest, os.stat(fd).st_size)
        except OSError:
            continue
    return largest


def stream(url: str, path: str, headers: str, pid: int, tmp: Path, chunked: bool) -> tuple[bytes, int, int]:
    """Send up to TOTAL bytes, stopping when the server answers. Returns the answer,
    the bytes sent before it came, and the largest spooled file seen meanwhile."""
    sock = _connect(url)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    sent, spooled = 0, 0
    piece = b"x" * CHUNK
    frame = f"{CHUNK:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    try:
        while sent < TOTAL:
            if select.select([sock], [], [], 0.005)[0]:
                break  # the server has answered
            sock.sendall(frame)
            sent += CHUNK
            spooled = max(spooled, _largest_spooled_file(pid, tmp))
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _answer(sock)
    sock.close()
    return answer, sent, spooled


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/api/v1/requests", "/login/"])
def test_it_refuses_a_large_body_before_the_client_has_finished_sending(server, path, chunked):
    stack, pid, tmp = server
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {TOTAL}"
    headers = f"Content-Type: application/json\r\nAuthorization: Bearer nobody\r\n{length}\r\n"
    started = time.monotonic()
    answer, sent, spooled = stream(stack.url, path, headers, pid, tmp, chunked)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Answered while the client was still sending: far from the whole body.
    assert sent < TOTAL / 4, sent
    assert spooled <= LIMIT, spooled
    assert time.monotonic() - started < 10
    if path.startswith("/api/"):
        assert b'"payload_too_large"' in answer
    else:
        assert b"text/html" in answer.lower()


def test_it_still_serves_a_body_under_the_limit(server):
    import httpx

    stack, _, _ = server
    response = httpx.post(stack.url + "/api/v1/requests", content=b"{" + b" " * (LIMIT - 10) + b"}",
                          headers={"Content-Type": "application/json", "Authorization": "Bearer nobody"})
    # Read in full, then refused for the key, not the size.
    assert response.status_code == 401, stack.tail()
