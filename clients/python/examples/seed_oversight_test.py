"""Check a running Oversight server's default policy end to end.

Submits six requests: three with one figure over a default threshold (memory pressure
85 > 80, delegation depth 5 > 4, circular references 4 > 3) and three under (one of them
exactly at every threshold: the rules compare strictly). The first three should wait in
the operators' queue, the others come back approved by the policy.

    export OVERSIGHT_URL=http://127.0.0.1:8000
    export OVERSIGHT_API_KEY=...   # python manage.py create_agent seed-check
    python clients/python/examples/seed_oversight_test.py [--cancel]

Exits 0 when the server routed every request as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from oversight_client import Client, OversightError

# (operation, summary, metrics, should a human decide?)
CASES = [
    ("seed.memory", "Memory pressure over the threshold",
     {"memory_pressure": 85, "delegation_depth": 1, "circular_refs": 0}, True),
    ("seed.delegation", "Delegation deeper than the threshold",
     {"memory_pressure": 40, "delegation_depth": 5, "circular_refs": 0}, True),
    ("seed.cycles", "More circular references than the threshold",
     {"memory_pressure": 40, "delegation_depth": 1, "circular_refs": 4}, True),
    ("seed.calm", "Everything well under the thresholds",
     {"memory_pressure": 20, "delegation_depth": 1, "circular_refs": 0}, False),
    ("seed.boundary", "Exactly at every threshold",
     {"memory_pressure": 80, "delegation_depth": 4, "circular_refs": 3}, False),
    ("seed.idle", "An idle agent",
     {"memory_pressure": 5, "delegation_depth": 0, "circular_refs": 0}, False),
]

COLUMNS = ("operation", "memory", "depth", "cycles", "fired", "status", "decided by")


def row(request, metrics) -> tuple[str, ...]:
    fired = ",".join(t.rule for t in request.triggers if t.fired) or "-"
    decided = request.decision.source if request.decision else "(a human)"
    return (request.operation, str(metrics["memory_pressure"]), str(metrics["delegation_depth"]),
            str(metrics["circular_refs"]), fired, request.status, decided)


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    for r in [COLUMNS, tuple("-" * w for w in widths), *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True))
        print(line.rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="server URL (default: $OVERSIGHT_URL)")
    parser.add_argument("--api-key", help="agent key (default: $OVERSIGHT_API_KEY)")
    parser.add_argument("--cancel", action="store_true",
                        help="withdraw the waiting requests afterwards")
    args = parser.parse_args(argv)

    run = uuid.uuid4().hex[:8]  # fresh idempotency keys on every run
    rows, problems, waiting = [], [], []
    with Client(args.url, args.api_key) as client:
        for n, (operation, summary, metrics, needs_human) in enumerate(CASES):
            try:
                request = client.submit(operation, f"{summary} (seed run {run})",
                                        metrics=metrics, idempotency_key=f"seed-{run}-{n}")
            except OversightError as exc:
                print(f"{operation}: {exc}", file=sys.stderr)
                return 1
            rows.append(row(request, metrics))
            if request.critical:
                waiting.append(request)
            expected = "pending" if needs_human else "approved"
            if request.status != expected or request.critical != needs_human:
                problems.append(f"{operation}: expected {expected}, got {request.status} "
                                f"(critical={request.critical})")
        if args.cancel:
            for request in waiting:
                client.cancel(request.id)

    print_table(rows)
    approved = sum(1 for r in rows if r[5] == "approved")
    print(f"\n{approved} approved by policy, {len(waiting)} waiting for a human "
          f"(coverage {round(100 * len(waiting) / len(rows))}%)")
    if args.cancel and waiting:
        print(f"withdrew the {len(waiting)} waiting requests")
    for problem in problems:
        print(f"UNEXPECTED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
