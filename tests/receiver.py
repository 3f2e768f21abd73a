"""A real HTTP server for tests that receive callbacks: answers with scripted statuses."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """`trickle`: seconds between the bytes of a slow answer (0: answer at once);
    `location`: sent with every answer (to test that redirects are not followed)."""

    def __init__(self, statuses=(200,), *, trickle: float = 0.0, location: str | None = None, port: int = 0):
        self.statuses = list(statuses)
        self.posted = threading.Event()
        self.trickle = trickle
        self.location = location
        self.received: list[tuple[dict, bytes]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.posted.set()
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                if receiver.trickle:
                    import time

                    try:
                        for byte in f"HTTP/1.1 {status} OK\r\nContent-Length: 0\r\n\r\n".encode():
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(receiver.trickle)
                    except OSError:
                        return
                    return
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status < 300:
                    receiver.arrived.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
