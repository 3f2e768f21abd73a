"""The PostgreSQL passes of the review give exactly the portable queries' figures.

On PostgreSQL the review runs `oversight.reviews.reports_pg` (and the other report tests test
it); here both paths run on the same months and must agree figure for figure, in the
same order (the stored snapshot and the CSV keep the order). SQLite has only the
portable path, so these tests run where DATABASE_URL names PostgreSQL.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

import pytest
from django.db import connection

from oversight.models import Source, Status
from oversight.reviews import reports
from tests.conftest import make_agent
from tests.oversight.reviews.helpers import at, make_request

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL path needs PostgreSQL"),
]

NOV = date(2026, 11, 1)
OPERATIONS = ("web_scrape", "delegate", "shell", "deploy")
PEOPLE = ("olivia", "oscar", "Omar", "oona")
REASONS = ("Too deep", " too deep ", "Unknown site", "Looks like a loop", "x" * 400)
# Whole-second durations on the histogram's bounds, a fraction either side, and beyond the last.
DURATIONS = (10, 10.000001, 29.999999, 30, 3600, 3600.5, 5000, 0.25)


def as_json(data) -> str:
    """Order-sensitive: the two paths must list and key everything alike."""
    return json.dumps(data, default=str)


def make_month(seed: int, start, days: int, count: int) -> None:
    rng = random.Random(seed)
    agents = [make_agent(f"agent-{i}").agent for i in range(5)] + [make_agent("Zed").agent]
    for _ in range(count):
        metrics = {}
        if rng.random() < 0.6:
            metrics["memory_pressure"] = round(rng.uniform(50, 99), 1)
        if rng.random() < 0.6:
            metrics["delegation_depth"] = rng.randint(0, 8)
        if rng.random() < 0.4:
            metrics["circular_refs"] = rng.randint(0, 6)
        fate = rng.random()
        after = rng.choice(DURATIONS) if rng.random() < 0.3 else round(rng.uniform(1, 900), 6)
        outcome = {}
        if fate < 0.5:
            verdict = Status.APPROVED if rng.random() < 0.8 else Status.REJECTED
            outcome = {"outcome": verdict, "source": Source.OPERATOR, "by": rng.choice(PEOPLE), "after": after,
                       "reason": rng.choice(REASONS) if verdict == Status.REJECTED else ""}
        elif fate < 0.7:
            outcome = {"outcome": rng.choice([Status.APPROVED, Status.REJECTED]), "source": Source.TIMEOUT,
                       "after": 300}
        elif fate < 0.8:
            outcome = {"outcome": Status.CANCELLED, "source": Source.AGENT, "after": 12}
        make_request(
            rng.choice(agents), start + timedelta(minutes=rng.randrange(days * 24 * 60)),
            operation=rng.choice(OPERATIONS), metrics=metrics, trusted=rng.random() < 0.05,
            escalated_after=150 if rng.random() < 0.3 else None, always=rng.random() < 0.05, **outcome,
        )


def both_paths(start, end) -> tuple[dict, dict]:
    from oversight.reviews import reports_pg

    return reports.request_figures(start, end), reports_pg.request_figures(start, end)


def test_it_gives_the_portable_figures_on_a_busy_month():
    make_month(3, at("2026-11-01 00:00"), 30, 400)
    portable, passes = both_paths(*reports.month_bounds(NOV))
    assert portable["headline"]["requests"] == 400 and portable["headline"]["ttd_p99"] is not None
    assert as_json(passes) == as_json(portable)


def test_it_gives_the_portable_figures_where_ties_decide_the_order():
    # Every operation and agent with the same count: the order falls to the names.
    agents = [make_agent(name).agent for name in ("b-agent", "a-agent", "C-agent")]
    for operation in OPERATIONS:
        for agent in agents:
            make_request(agent, at("2026-11-03 10:00"), operation=operation, metrics={"delegation_depth": 5})
    portable, passes = both_paths(*reports.month_bounds(NOV))
    assert [row["name"] for row in portable["by_operation"]] == sorted(OPERATIONS)
    assert as_json(passes) == as_json(portable)


def test_it_gives_the_portable_figures_for_a_month_without_requests_or_decisions():
    make_month(5, at("2026-10-01 00:00"), 31, 30)  # October only
    portable, passes = both_paths(*reports.month_bounds(NOV))
    assert portable["headline"]["requests"] == 0 and as_json(passes) == as_json(portable)
    quiet = make_agent("quiet").agent
    for _ in range(3):
        make_request(quiet, at("2026-11-02 10:00"))  # approved by the policy
    portable, passes = both_paths(*reports.month_bounds(NOV))
    assert portable["headline"]["ttd_p50"] is None and portable["headline"]["requests"] == 3
    assert as_json(passes) == as_json(portable)


def test_the_month_befores_headline_is_the_portable_one():
    from oversight.reviews import reports_pg

    make_month(9, at("2026-10-01 00:00"), 31, 300)
    october = reports.month_bounds(date(2026, 10, 1))
    assert reports_pg.period_headline(*october) == reports.period_headline(*october)
    assert as_json(reports_pg.period_headline(*october)) == as_json(reports.period_headline(*october))
    empty = reports.month_bounds(date(2026, 9, 1))
    assert as_json(reports_pg.period_headline(*empty)) == as_json(reports.period_headline(*empty))
