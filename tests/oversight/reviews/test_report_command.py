"""`python manage.py report YYYY-MM [--csv]`."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.management import CommandError, call_command

from oversight.models import Source, Status
from tests.conftest import make_agent
from tests.oversight.reviews.helpers import at, make_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def month_of_requests(db):
    scraper = make_agent("scraper-7").agent
    make_request(scraper, at("2026-11-02 10:00"), operation="web_scrape")
    make_request(scraper, at("2026-11-02 10:00"), operation="delegate", metrics={"delegation_depth": 6},
                 outcome=Status.APPROVED, source=Source.OPERATOR, by="olivia", after=95)


def run(*args) -> str:
    out = io.StringIO()
    call_command("report", *args, stdout=out)
    return out.getvalue()


def test_it_prints_the_review_as_readable_tables(month_of_requests):
    out = run("2026-11")
    assert out.startswith("Oversight review 2026-11 (live figures)")
    lines = out.splitlines()
    assert any(line.split()[:2] == ["Requests", "2"] for line in lines)
    assert any("Needed a human (critical share)" in line and "50.0%" in line for line in lines)
    assert any(line.split()[:3] == ["olivia", "1", "1"] and line.rstrip().endswith("1m 35s") for line in lines)
    assert "delegation_depth" in out and "Per operation" in out and "Memory" in out


def test_it_prints_csv_with_the_same_figures(month_of_requests):
    rows = list(csv.reader(io.StringIO(run("2026-11", "--csv"))))
    assert rows[0] == ["section", "name", "metric", "value"]
    figures = {(r[0], r[1], r[2]): r[3] for r in rows[1:]}
    assert figures[("headline", "", "requests")] == "2"
    assert figures[("headline", "", "ttd_p50")] == "95.0"
    assert figures[("operation", "delegate", "critical")] == "1"


def test_an_empty_month_still_prints_its_tables(db):
    out = run("2026-02")
    assert "(none)" in out and any(line.split()[:2] == ["Requests", "0"] for line in out.splitlines())


@pytest.mark.parametrize("month", ["2026-13", "november", "2026/11", "26-1"])
def test_it_refuses_a_bad_month_with_a_clear_error(month):
    with pytest.raises(CommandError, match="Use YYYY-MM"):
        run(month)


@pytest.mark.parametrize("reason", ["=HYPERLINK(1)", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"])
def test_its_csv_neutralises_formulas_like_the_web_csv(db, reason):
    scraper = make_agent("scraper-7").agent
    make_request(scraper, at("2026-11-03 10:00"), operation="delegate", metrics={"delegation_depth": 5},
                 outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason=reason, after=30)
    rows = list(csv.reader(io.StringIO(run("2026-11", "--csv"))))
    names = [r[1] for r in rows if r[0] == "reject_reason"]
    assert names and all(name.startswith("'") for name in names), names
