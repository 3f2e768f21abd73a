"""Benchmark of the monthly review and the threshold advice on a million requests.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_bench_reports .venv/bin/python bench/report.py
    .venv/bin/python bench/report.py --requests 100000     # same on a smaller load

The database named in DATABASE_URL is a scratch database: it is created if missing,
migrated, and its bench rows are replaced on every run (or kept with --no-load). The
requests are generated inside PostgreSQL (INSERT … SELECT over generate_series: the
fast bulk load), spread over three months (September–November 2026), with realistic
mixes of rules, outcomes and decision times; then VACUUM ANALYZE leaves the table as
autovacuum would (statistics, and the visibility map that index-only scans need).

Then, for November (a third of the rows), it times, best of --repeat runs:
  - the baseline: one plain scan counting the month's requests (the cheapest query
    that reads the month), measured in the same run;
  - the month's review, live (every figure, percentiles included, plus the month before);
  - its request figures (and the month before's headline) both ways: the portable
    queries (the SQLite path) and the PostgreSQL passes (oversight/reviews/reports_pg.py);
  - the threshold advice (what-ifs for every operation and rule, suggestions);
  - the review once a snapshot is stored (what old months cost).
Each is printed in seconds and as a ratio to the baseline. Goal: review ≤ 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/oversight_bench_reports"
AGENTS = 50
OPERATIONS = 12

# One INSERT … SELECT: metrics drawn at random, rules evaluated with the default
# thresholds (80 / 4 / 3), outcomes and decision times drawn for critical requests.
GENERATE = """
WITH g AS (
  SELECT i,
         round((40 + random() * 60)::numeric, 1)::float AS p,
         floor(random() * 8)::int AS d,
         floor(random() * 6)::int AS c,
         random() AS fate, random() AS verdict, (5 + 600 * random() ^ 3) AS ttd,
         random() < 0.02 AS trusted,
         %(start)s::timestamptz + (i::float / %(n)s) * (%(end)s::timestamptz - %(start)s::timestamptz) AS at
  FROM generate_series(1, %(n)s) AS i
), e AS (
  SELECT *, (p > 80 OR d > 4 OR c > 3) AS fired,
         concat_ws('+', CASE WHEN p > 80 THEN 'memory_pressure' END, CASE WHEN d > 4 THEN 'delegation_depth' END,
                   CASE WHEN c > 3 THEN 'circular_refs' END) AS rules
  FROM g
), o AS (
  SELECT *, fired AND NOT trusted AS critical,
         CASE WHEN NOT (fired AND NOT trusted) THEN 'policy' WHEN fate < 0.72 THEN 'operator'
              WHEN fate < 0.95 THEN 'timeout' ELSE 'agent' END AS source
  FROM e
)
INSERT INTO oversight_oversightrequest (
  id, agent_id, operation, summary, payload, metrics, status, critical, trusted_bypass, triggers, fired_rules,
  policy_id, policy_operation, policy_version, created_at, deadline, escalate_at, escalated_at, timeout_action,
  callback_url, body_digest, decision_source, decided_by, decision_reason, decided_at)
SELECT
  gen_random_uuid(), (%(agents)s::bigint[])[1 + i %% %(agent_count)s], 'op_' || (i %% %(ops)s), 'bench request', '{}'::jsonb,
  jsonb_build_object('memory_pressure', p, 'delegation_depth', d, 'circular_refs', c),
  CASE source WHEN 'policy' THEN 'approved' WHEN 'agent' THEN 'cancelled' WHEN 'timeout' THEN 'approved'
       ELSE CASE WHEN verdict < 0.85 + 0.14 * (rules = 'delegation_depth' AND d = 5)::int THEN 'approved' ELSE 'rejected' END END,
  critical, fired AND trusted,
  jsonb_build_array(
    jsonb_build_object('rule', 'memory_pressure', 'threshold', 80, 'value', p, 'fired', p > 80, 'source', 'agent'),
    jsonb_build_object('rule', 'delegation_depth', 'threshold', 4, 'value', d, 'fired', d > 4, 'source', 'agent'),
    jsonb_build_object('rule', 'circular_refs', 'threshold', 3, 'value', c, 'fired', c > 3, 'source', 'agent')),
  rules, %(policy)s, '*', 1, at,
  CASE WHEN critical THEN at + interval '300 seconds' END,
  CASE WHEN critical THEN at + interval '150 seconds' END,
  CASE WHEN critical AND (source = 'timeout' OR (source = 'operator' AND ttd > 150)) THEN at + interval '150 seconds' END,
  'approve', '', '', source,
  CASE WHEN source = 'operator' THEN 'op' || (i %% 7) ELSE '' END,
  CASE WHEN source = 'operator' AND verdict >= 0.85 THEN (ARRAY['Too deep', 'Unknown site', 'Looks like a loop',
       'Memory too high', 'Not now'])[1 + (i %% 5)] ELSE '' END,
  CASE source WHEN 'policy' THEN at WHEN 'timeout' THEN at + interval '300 seconds' WHEN 'agent' THEN at + interval '20 seconds'
       ELSE at + ttd * interval '1 second' END
FROM o
"""


def ensure_database(url: str) -> None:
    import psycopg

    name = urlparse(url).path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def load(n: int) -> float:
    from django.db import connection

    from oversight.models import Agent, AuditEvent, MonthlyReview, OversightRequest
    from oversight.policy import ensure_default_policy

    started = time.perf_counter()
    # TRUNCATE, not DELETE: deleted rows would stay behind as dead space in the table
    # and its indexes (twice the pages for the next run to read). The audit trail goes
    # with the requests it points at: this is a scratch database.
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {OversightRequest._meta.db_table}, {AuditEvent._meta.db_table}")
    MonthlyReview.objects.all().delete()
    policy = ensure_default_policy()
    agents = [Agent.objects.get_or_create(name=f"bench-{i:02d}")[0].pk for i in range(AGENTS)]
    with connection.cursor() as cursor:
        cursor.execute(GENERATE, {
            "n": n, "start": "2026-09-01T00:00:00Z", "end": "2026-12-01T00:00:00Z", "agents": agents,
            "agent_count": AGENTS, "ops": OPERATIONS, "policy": policy.pk,
        })
        # Outside a transaction (autocommit): VACUUM cannot run inside one.
        cursor.execute("VACUUM ANALYZE oversight_oversightrequest")
    return time.perf_counter() - started


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-load", action="store_true", help="Reuse the rows of the previous run.")
    args = parser.parse_args()

    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/report.py needs PostgreSQL: set DATABASE_URL to a scratch database.")
    ensure_database(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oversight.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from oversight.models import MonthlyReview, OversightRequest
    from oversight.reviews import advice, reports, reports_pg

    if not args.no_load:
        seconds = load(args.requests)
        print(f"loaded {args.requests:,} requests in {seconds:.1f} s")
    # Snapshots of a previous run would spare the live review its month before.
    MonthlyReview.objects.all().delete()
    month = reports.parse_month("2026-11")
    start, end = reports.month_bounds(month)
    before = reports.month_bounds(reports.previous_month(month))
    in_month = OversightRequest.objects.filter(created_at__gte=start, created_at__lt=end)
    print(f"November: {in_month.count():,} requests, {in_month.filter(critical=True).count():,} critical")

    baseline = best_of(args.repeat, lambda: in_month.count())
    review = best_of(args.repeat, lambda: reports.review(month, live=True))
    portable = best_of(args.repeat, lambda: (reports.request_figures(start, end), reports.period_headline(*before)))
    passes = best_of(args.repeat, lambda: (reports_pg.request_figures(start, end), reports_pg.period_headline(*before)))
    suggestions = advice.advice(start, end)
    advising = best_of(args.repeat, lambda: advice.advice(start, end))
    reports.store_snapshot(reports.previous_month(month))
    reports.store_snapshot(month)
    stored = best_of(args.repeat, lambda: reports.review(month))

    print()
    print(f"{'what':<44}{'seconds':>10}{'× baseline':>12}")
    for what, seconds in (
        ("baseline: count the month's requests", baseline),
        ("review of the month, live (goal ≤ 2 s)", review),
        ("  request figures, portable queries", portable),
        ("  request figures, PostgreSQL passes", passes),
        ("threshold advice for the month", advising),
        ("review of the month, stored snapshot", stored),
    ):
        print(f"{what:<44}{seconds:>10.3f}{seconds / baseline:>12.1f}")
    print()
    for s in suggestions["suggestions"][:3]:
        print("suggestion:", s["text"])


if __name__ == "__main__":
    main()
