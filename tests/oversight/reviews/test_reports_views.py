"""/reports/, /reports/<yyyy-mm>/ and /reports/<yyyy-mm>.csv."""

from __future__ import annotations

import csv
import io

import pytest
import time_machine
from django.contrib.auth.models import User

from oversight.models import Source, Status
from oversight.reviews import reports
from tests.conftest import make_agent
from tests.oversight.reviews.helpers import at, make_request

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"
PAGES = ("/reports/", "/reports/2026-11/", "/reports/2026-11.csv", "/reports/2026-11/.csv", "/reports/2026-11/csv")


@pytest.fixture
def scraper(db):
    return make_agent("scraper-7").agent


def signed_in(client, user):
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_it_sends_anonymous_people_to_log_in(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("path", PAGES)
def test_operators_and_outsiders_are_refused(client, operator, outsider, path):
    for user in (operator, outsider):
        assert signed_in(client, user).get(path).status_code == 403


@pytest.mark.parametrize("path", PAGES)
def test_managers_and_superusers_see_reports(client, manager, path):
    assert signed_in(client, manager).get(path).status_code == 200
    boss = User.objects.create_superuser("root", "root@example.org", PASSWORD)
    assert signed_in(client, boss).get(path).status_code == 200


@pytest.mark.parametrize("path", ["/reports/2026-13/", "/reports/0000-01/", "/reports/2026-00.csv", "/reports/x/"])
def test_a_month_that_does_not_exist_is_a_404(client, manager, path):
    assert signed_in(client, manager).get(path).status_code == 404


@time_machine.travel(at("2026-12-10 12:00"), tick=False)
def test_the_month_page_shows_cards_tables_charts_and_advice(client, manager, scraper):
    make_request(scraper, at("2026-11-03 10:00"))
    make_request(scraper, at("2026-11-03 11:00"), metrics={"delegation_depth": 5}, outcome=Status.REJECTED,
                 source=Source.OPERATOR, by="olivia", reason="<script>alert(1)</script>", after=75)
    page = signed_in(client, manager).get("/reports/2026-11/").content.decode()
    assert "Review of 2026-11" in page and "Live figures" in page
    assert 'data-key="critical_share"' in page and "50.0%" in page
    assert "1m 15s" in page  # the one human decision
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert 'id="report-data"' in page and "chart.umd.min.js" in page and "js/report.js" in page
    assert 'href="/reports/2026-11.csv"' in page
    assert "Not measured" in page or 'id="chart-alerts"' in page


@time_machine.travel(at("2026-12-10 12:00"), tick=False)
def test_the_page_says_when_it_shows_a_stored_snapshot(client, manager, scraper):
    make_request(scraper, at("2026-11-03 10:00"))
    reports.store_snapshot(reports.parse_month("2026-11"))
    make_request(scraper, at("2026-11-04 10:00"))
    page = signed_in(client, manager).get("/reports/2026-11/").content.decode()
    assert "Stored snapshot" in page and "?live=1" in page
    live = client.get("/reports/2026-11/?live=1").content.decode()
    assert "Live figures" in live


@time_machine.travel(at("2026-12-10 12:00"), tick=False)
def test_the_csv_has_the_same_figures_one_per_line(client, manager, scraper):
    make_request(scraper, at("2026-11-03 10:00"), operation="web_scrape")
    make_request(scraper, at("2026-11-03 10:00"), operation="delegate", metrics={"delegation_depth": 5},
                 outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="=HYPERLINK(1)", after=30)
    response = signed_in(client, manager).get("/reports/2026-11.csv")
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="oversight-review-2026-11.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["section", "name", "metric", "value"]
    figures = {(r[0], r[1], r[2]): r[3] for r in rows[1:]}
    assert figures[("headline", "", "requests")] == "2"
    assert figures[("headline", "", "critical_share")] == "0.5"
    assert figures[("headline", "", "ttd_p50")] == "30.0"
    assert figures[("operation", "delegate", "operator_rejected")] == "1"
    assert figures[("operator", "olivia", "decisions")] == "1"
    assert ("reject_reason", "'=hyperlink(1)", "count") in figures  # never a live spreadsheet formula
    memory = [r for r in rows if r[0] == "memory"]
    assert memory and all(r[3] != "" for r in memory)


def test_the_list_shows_months_with_data_and_links_them(client, manager, scraper):
    make_request(scraper, at("2026-09-03 10:00"))
    page = signed_in(client, manager).get("/reports/").content.decode()
    assert 'href="/reports/2026-09/"' in page and 'href="/reports/2026-09.csv"' in page


def test_the_csv_answers_at_each_spelling_of_its_address(client, manager, scraper):
    make_request(scraper, at("2026-11-03 10:00"), operation="web_scrape")
    signed_in(client, manager)
    bodies = {path: client.get(path).content for path in ("/reports/2026-11.csv", "/reports/2026-11/.csv",
                                                          "/reports/2026-11/csv")}
    assert len(set(bodies.values())) == 1
    assert next(iter(bodies.values())).startswith(b"section,name,metric,value")


def test_it_links_no_month_that_has_not_started(client, manager):
    client.force_login(manager)
    with time_machine.travel(at("2026-11-20 10:00"), tick=False):
        current = client.get("/reports/2026-11/").content.decode()
        past = client.get("/reports/2026-10/").content.decode()
    assert 'href="/reports/2026-12/"' not in current and 'href="/reports/2026-10/"' in current
    assert 'href="/reports/2026-11/"' in past
