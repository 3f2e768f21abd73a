"""The ``oversight`` command: ``oversight ask`` for shell scripts and CI/CD, ``oversight mcp``.

Configured by ``OVERSIGHT_URL`` and ``OVERSIGHT_API_KEY``. ``oversight ask`` exits with
0 approved, 1 rejected or cancelled, 3 still pending when the wait ended, 2 any error
(bad arguments, unreachable server, authentication): it fails closed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from typing import Any

from ._protocol import MAX_WAIT
from .errors import OversightError
from .models import OversightRequest

APPROVED, REJECTED, ERROR, PENDING = 0, 1, 2, 3


class UsageError(Exception):
    """Arguments argparse accepts but the command can't use."""


def parse_metric(text: str) -> tuple[str, int | float | str]:
    """NAME=VALUE: a number, except `host`, the one metric that names something."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--metric takes NAME=VALUE, not {text!r}")
    if name.strip() == "host":
        if not value.strip():
            raise UsageError("--metric host: give the host's name")
        return "host", value.strip()
    try:
        number: int | float = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--metric {name}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise UsageError(f"--metric {name}: {value!r} is not a finite number") from None
    return name.strip(), number


def parse_payload(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError("--payload must be a JSON object")
    return payload


def exit_status(request: OversightRequest) -> int:
    if request.status == "approved":
        return APPROVED
    if request.status in ("rejected", "cancelled"):
        return REJECTED
    return PENDING


def emit(request: OversightRequest) -> None:
    print(json.dumps(request.raw, indent=2), flush=True)


def fail(message: str) -> int:
    print(f"oversight: {message}", file=sys.stderr, flush=True)
    return ERROR


def ask(args: argparse.Namespace) -> int:
    from .client import Client

    try:
        metrics = dict(parse_metric(m) for m in args.metric) if args.metric else None
        payload = parse_payload(args.payload)
        if args.wait is not None and args.wait < 0:
            raise UsageError("--wait must be 0 or more seconds")
        if args.timeout is not None and args.timeout < 1:
            raise UsageError("--timeout must be 1 or more seconds")
    except UsageError as exc:
        return fail(str(exc))
    try:
        client = Client()
    except ValueError as exc:
        return fail(str(exc))

    key = f"cli-{uuid.uuid4()}"
    started = time.monotonic()
    request: OversightRequest | None = None

    def hold() -> int:
        if args.wait is None:
            return MAX_WAIT
        return int(min(MAX_WAIT, max(0.0, args.wait - (time.monotonic() - started))))

    with client:
        try:
            try:
                request = client.submit(args.operation, args.summary, payload=payload,
                                        metrics=metrics, timeout_seconds=args.timeout,
                                        idempotency_key=key, wait=hold())
                # The long-poll, again and again: each read holds up to 55 s on the server.
                while not request.final and (wait := hold()) > 0:
                    request = client.get(request.id, wait=wait)
            except KeyboardInterrupt:
                return interrupted(client, request, args, payload, metrics, key)
        except OversightError as exc:
            return fail(str(exc))
    emit(request)
    return exit_status(request)


def interrupted(client: Any, request: OversightRequest | None, args: argparse.Namespace,
                payload: dict[str, Any] | None, metrics: dict[str, Any] | None,
                key: str) -> int:
    """Ctrl-C: withdraw the request this command made (nobody should approve it now)."""
    from .errors import AlreadyDecided

    try:
        if request is None:
            # Interrupted while submitting: the same idempotency key finds the request,
            # if the server stored it.
            request = client.submit(args.operation, args.summary, payload=payload,
                                    metrics=metrics, timeout_seconds=args.timeout,
                                    idempotency_key=key, wait=0)
        if not request.final:
            try:
                request = client.cancel(request.id)
            except AlreadyDecided as exc:
                request = exc.request or request
    except (OversightError, KeyboardInterrupt) as exc:
        return fail(f"interrupted; could not withdraw the request: {exc}")
    emit(request)
    print(f"oversight: interrupted; request {request.id} is {request.status}",
          file=sys.stderr, flush=True)
    # Whatever was decided meanwhile, an interrupted gate does not let the step run.
    return REJECTED if request.status in ("cancelled", "rejected") else ERROR


def mcp(args: argparse.Namespace) -> int:
    try:
        from .mcp_server import serve
    except ImportError as exc:
        return fail(f"the MCP server needs the mcp extra: pip install "
                    f"'oversight-client[mcp]' ({exc})")
    if not 0 <= args.wait <= MAX_WAIT:
        return fail(f"--wait must be between 0 and {MAX_WAIT} seconds")
    return serve(hold=args.wait)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Bad arguments are errors like any other: status 2, which argparse uses too.
        self.print_usage(sys.stderr)
        self.exit(ERROR, f"oversight: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="oversight", description="Ask Oversight for permission.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = commands.add_parser(
        "ask", help="submit a request and wait for the decision",
        description="Submit a request and wait for its decision. Exit status: 0 approved, "
                    "1 rejected or cancelled, 3 still pending when the wait ended, 2 error.")
    p.add_argument("operation")
    p.add_argument("--summary", required=True, help="what the operator reads (1-500 chars)")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE",
                   help="a figure such as memory_pressure=85, or host=NAME (repeatable)")
    p.add_argument("--payload", metavar="JSON", help="a JSON object with the operation's details")
    p.add_argument("--timeout", type=int, metavar="SECONDS",
                   help="the request's deadline, at most the policy's timeout")
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="how long to wait for the decision (default: until decided)")
    p.set_defaults(run=ask)
    m = commands.add_parser("mcp", help="run a Model Context Protocol server over stdio")
    m.add_argument("--wait", type=int, default=MAX_WAIT, metavar="SECONDS",
                   help=f"how long request_approval holds for a decision (default {MAX_WAIT})")
    m.set_defaults(run=mcp)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
