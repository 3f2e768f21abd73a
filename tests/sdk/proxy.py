"""A TCP proxy that loses the first answer: what a dropped connection looks like to a client.

The first connection's request reaches the server whole; the moment the server's answer
starts to come back, the proxy closes on the client instead of relaying it. Later
connections are relayed both ways untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class CuttingProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.lost_answer = b""  # the start of the answer the client never got
        self.cut = threading.Event()

    def __enter__(self) -> CuttingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._relay, args=(client, self.connections == 1), daemon=True).start()

    def _relay(self, client: socket.socket, lose_answer: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        with client, upstream:
            # Blocks until the server has read the whole request and begins to answer.
            first = upstream.recv(65536)
            if lose_answer:
                self.lost_answer = first
                self.cut.set()
                # shutdown, not just close: the other pipe thread is blocked reading this
                # socket, and a close alone would neither wake it nor tell the client.
                for sock in (client, upstream):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return
            with contextlib.suppress(OSError):
                client.sendall(first)
            _pipe(upstream, client)
