"""Benchmark of a /metrics scrape with a million requests stored.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_bench_reports .venv/bin/python bench/metrics.py
    .venv/bin/python bench/metrics.py --requests 100000 --no-load

Loads the same scratch rows as bench/report.py (a million requests over three months,
generated inside PostgreSQL), then times, best of --repeat, in the same run:
  - before: every counter aggregated over the whole table, as each scrape used to;
  - after: a scrape's counters once the checkpoint holds the history (the steady state:
    the checkpoint row plus the rows decided since its watermark);
  - the whole GET /metrics answer, after (gauges and text encoding included);
  - the first scrape after an upgrade, which folds the whole history once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.report import DEFAULT_URL, best_of, ensure_database, load  # noqa: E402

# The generated rows end on 2026-12-01: scrape as of an hour after, so that the whole
# load is history and the recent range holds what an hour of traffic would.
AS_OF = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-load", action="store_true", help="Reuse the rows of the previous run.")
    args = parser.parse_args()

    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/metrics.py needs PostgreSQL: set DATABASE_URL to a scratch database.")
    ensure_database(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import time_machine
    from django.test import Client

    from monitoring.metrics import BEGINNING, counted_figures, period_figures
    from monitoring.models import MetricsCheckpoint
    from oversight.models import OversightRequest

    if not args.no_load:
        print(f"loaded {args.requests:,} requests in {load(args.requests):.1f} s")
    print(f"{OversightRequest.objects.count():,} requests stored")

    MetricsCheckpoint.objects.all().delete()
    started = time.perf_counter()
    counted_figures(AS_OF)
    first = time.perf_counter() - started
    before = best_of(args.repeat, lambda: period_figures(BEGINNING, None))
    after = best_of(args.repeat, lambda: counted_figures(AS_OF))
    assert _normalised(counted_figures(AS_OF)) == _normalised(period_figures(BEGINNING, None)), "the two disagree"
    client = Client()
    with time_machine.travel(AS_OF, tick=True):
        page = best_of(args.repeat, lambda: _ok(client.get("/metrics", HTTP_HOST="127.0.0.1")))

    print()
    print(f"{'what':<52}{'seconds':>10}{'× after':>10}")
    for what, seconds in (
        ("before: counters over the whole table", before),
        ("after: checkpoint + rows since its watermark", after),
        ("after: the whole GET /metrics answer", page),
        ("once, the first scrape: folds the history", first),
    ):
        print(f"{what:<52}{seconds:>10.4f}{seconds / after:>10.1f}")


def _ok(response):
    assert response.status_code == 200, response.status_code
    return response


def _normalised(figures: dict) -> dict:
    """Seconds are summed in a different order: compare them rounded."""
    for row in figures["took"].values():
        row["seconds"] = round(row["seconds"], 3)
    return figures


if __name__ == "__main__":
    main()
