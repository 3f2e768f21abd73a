"""A small agent that delegates, scrapes and writes, asking Oversight before each risk.

    export OVERSIGHT_URL=http://127.0.0.1:8000
    export OVERSIGHT_API_KEY=...   # python manage.py create_agent demo-agent
    python clients/python/examples/agent.py --depth 6 --out /tmp/agent-notes.txt

What it shows:
- a MemoryReporter pushing this process's memory while the agent works;
- delegation to sub-agents under the circuit breaker: past the soft limit each deeper
  level asks an operator first, past the hard limit it stops;
- a checkpoint around scraping that fails open (reading is low risk) and a decorated
  file write that fails closed (the default);
- agent contexts kept in a ContextRegistry and closed explicitly, with find_cycles()
  and leak_check() proving nothing is left behind;
- with --callback-port, a decision callback whose signature is verified.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from oversight_client import (
    Cancelled,
    Client,
    ContextRegistry,
    DelegationLimitExceeded,
    MemoryReporter,
    Rejected,
    TimedOut,
    Unavailable,
    current_depth,
    delegation,
    find_cycles,
    leak_check,
    verify_signature,
)

log = logging.getLogger("agent")


class AgentContext:
    """A sub-agent's working state. Parent and children point at each other (a cycle),
    so it is closed explicitly rather than left to the garbage collector."""

    def __init__(self, task: str, parent: AgentContext | None = None) -> None:
        self.task = task
        self.parent = parent
        self.children: list[AgentContext] = []
        self.notes: list[str] = []
        if parent is not None:
            parent.children.append(self)

    def close(self) -> None:
        for child in self.children:
            child.close()
        self.children.clear()
        self.parent = None


class Agent:
    def __init__(self, client: Client, registry: ContextRegistry, args: argparse.Namespace):
        self.client = client
        self.registry = registry
        self.args = args
        self.write = client.require_approval(
            "file_write",
            summary=lambda path, text: f"Write {len(text)} characters to {path}",
            payload=lambda path, text: {"path": str(path), "characters": len(text)},
            callback_url=args.callback_url,
            timeout=args.wait,
        )(self._write)

    def delegate(self, context: AgentContext, levels: int) -> None:
        """Split the task into a sub-agent, which may split again."""
        if levels == 0:
            context.notes.append(self.scrape(self.args.url))
            return
        sub = self.registry.register(AgentContext(f"{context.task}/sub", context))
        try:
            with delegation(
                self.args.soft, self.args.hard, client=self.client,
                summary=lambda depth: f"Sub-agent for {sub.task!r} at depth {depth}",
                timeout=self.args.wait,
            ):
                log.info("depth %d: %s", current_depth(), sub.task)
                self.delegate(sub, levels - 1)
        except DelegationLimitExceeded as exc:
            log.warning("not splitting further: %s", exc)
            context.notes.append(self.scrape(self.args.url))
        except (Rejected, Cancelled, TimedOut) as exc:
            log.warning("operator said no to going deeper (%s); working at this depth", exc)
            context.notes.append(self.scrape(self.args.url))
        context.notes.extend(sub.notes)

    def scrape(self, url: str) -> str:
        # Reading is low risk: if Oversight itself is down, go ahead (and say so loudly).
        try:
            with self.client.checkpoint("scrape", summary=f"Fetch {url}", payload={"url": url},
                                        timeout=self.args.wait, on_unavailable="allow"):
                response = httpx.get(url, timeout=5)
                return f"{url}: HTTP {response.status_code}, {len(response.content)} bytes"
        except (Rejected, Cancelled, TimedOut) as exc:
            return f"{url}: not fetched ({exc})"
        except httpx.HTTPError as exc:
            return f"{url}: failed ({exc})"

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)


class CallbackHandler(BaseHTTPRequestHandler):
    api_key = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        signature = self.headers.get("X-Oversight-Signature", "")
        if not verify_signature(body, signature, self.api_key):
            log.warning("callback with a bad signature ignored")
            self.send_response(401)
        else:
            request = json.loads(body)
            log.info("callback: %s is %s", request["id"], request["status"])
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A small agent under oversight.")
    parser.add_argument("--depth", type=int, default=3, help="how many levels to delegate")
    parser.add_argument("--soft", type=int, default=4, help="ask an operator past this depth")
    parser.add_argument("--hard", type=int, default=8, help="never go past this depth")
    parser.add_argument("--url", default=None, help="what to scrape (default: the server's "
                        "/healthz)")
    parser.add_argument("--out", type=Path, default=Path("agent-notes.txt"))
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for an operator before giving up")
    parser.add_argument("--callback-port", type=int, default=None,
                        help="receive decision callbacks on this local port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    client = Client()
    args.url = args.url or f"{client.url}/healthz"
    args.callback_url = None
    if args.callback_port is not None:
        CallbackHandler.api_key = os.environ["OVERSIGHT_API_KEY"]
        server = ThreadingHTTPServer(("127.0.0.1", args.callback_port), CallbackHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        args.callback_url = f"http://127.0.0.1:{server.server_address[1]}/"

    with client, MemoryReporter(client, interval=5.0) as reporter:
        # The registry closes every context on the way out; leak_check then proves
        # none of them is still reachable.
        with leak_check(AgentContext), ContextRegistry() as registry:
            agent = Agent(client, registry, args)
            root = registry.register(AgentContext("root"))
            agent.delegate(root, args.depth)
            try:
                agent.write(args.out, "\n".join(root.notes) + "\n")
                print(f"wrote {len(root.notes)} note(s) to {args.out}")
            except (Rejected, Cancelled, TimedOut) as exc:
                print(f"not written: {exc}")
            except Unavailable as exc:
                print(f"not written, Oversight is unreachable (writes fail closed): {exc}")
            print(f"{len(registry)} agent contexts open; closing them")
            del root, agent
        report = find_cycles()
        print(f"cycle scan: {report.total} objects only cycles kept alive {report.top(3)}")
    print(f"memory samples sent: {reporter.sent}, dropped: {reporter.dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
