"""Small things a person notices in the browser: the bulk reason box, the history
filter's dates, the policies form's message, the login page's hint and the favicon."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.test_queue import row, submit, wait_live

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_it_empties_the_reason_after_a_bulk_reject(live, open_page, operator, agent):
    page = open_page(live.url, "olivia")
    wait_live(page)
    requests = [submit(live.url, agent, f"Batch job {n}") for n in (1, 2)]
    for request in requests:
        row(page, request["id"]).locator(".pick").check()
    page.locator("#bulk-reason").fill("Not during the freeze")
    page.get_by_role("button", name="Reject selected").click()
    expect(page.locator("#bulk-result")).to_have_text("2 of 2 rejected.")
    expect(page.locator("#bulk-reason")).to_have_value("")


@pytest.mark.parametrize("width", [1280, 390])
def test_it_keeps_from_and_to_together_in_the_history_filter(live, open_page, operator, width):
    page = open_page(live.url, "olivia", "/history/", viewport={"width": width, "height": 800})
    since = page.get_by_label("From").bounding_box()
    until = page.get_by_label("To").bounding_box()
    assert abs(since["y"] - until["y"]) < 2, (since, until)
    assert until["x"] > since["x"]
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_it_says_in_words_what_an_operation_name_may_be(live, open_page, manager):
    page = open_page(live.url, "maria", "/policies/")
    field = page.locator("#new-operation")
    field.fill("Web Scrape!")
    message = field.evaluate("(input) => { input.checkValidity(); return input.validationMessage; }")
    assert "lowercase letters, digits" in message, message
    expect(page.locator("#operation-rule")).to_contain_text("Lowercase letters, digits")


def test_it_serves_the_favicon_and_tells_where_the_local_passwords_are(live, open_page):
    page = open_page(live.url, None, "/login/")
    icon = page.locator('link[rel="icon"]').get_attribute("href")
    assert httpx.get(live.url + icon, timeout=10).status_code == 200
    assert httpx.get(live.url + "/favicon.ico", timeout=10, follow_redirects=True).status_code == 200
    from django.db import connection

    if connection.vendor == "sqlite":  # the embedded defaults, as under `make run`
        expect(page.locator("#local-logins")).to_contain_text("local-logins.txt")
    else:  # a shared database: no hint about local files
        expect(page.locator("#local-logins")).to_have_count(0)


CHART_STATE = """() => {
  const chart = Chart.getChart(document.querySelector(".host-chart"));
  const x = chart.scales.x;
  return {span: x.max - x.min, labels: x.ticks.map((t) => String(t.label)),
          legend: chart.legend.legendItems.map((i) => ({text: i.text, hidden: i.hidden}))};
}"""


def test_it_draws_monitoring_axes_over_the_whole_range_with_unique_labels(live, open_page, operator):
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.models import HostSample

    now = timezone.now()
    HostSample.objects.bulk_create([
        HostSample(host="web-1", at=now - timedelta(minutes=m), pressure=60 + m % 7, total_bytes=16 << 30,
                   available_bytes=5 << 30, used_bytes=11 << 30) for m in range(0, 12, 2)])
    page = open_page(live.url, "olivia", "/monitoring/")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=20000)
    for button, hours in (("Last hour", 1), ("24 hours", 24), ("7 days", 24 * 7)):
        page.get_by_role("button", name=button).click()
        page.wait_for_timeout(400)
        state = page.evaluate(CHART_STATE)
        assert abs(state["span"] - hours * 3600_000) < 60_000, (button, state["span"])
        assert len(set(state["labels"])) == len(state["labels"]) >= 4, (button, state["labels"])
        # Nothing starts struck through: a series with no data is left out of the legend.
        assert not any(item["hidden"] for item in state["legend"]), state["legend"]
