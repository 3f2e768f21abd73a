"""The monitoring page's leak findings in a real headless Chromium against the real stack."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from monitoring import leaks
from monitoring.models import AgentSample, HostSample, LeakFinding
from tests.browser.conftest import chromium, open_page  # noqa: F401  (fixtures)
from tests.conftest import start_stack

pytestmark = [pytest.mark.browser, pytest.mark.live]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"  # ignored by git
MIB = 1 << 20


@pytest.fixture(scope="module")
def web_stack(django_db_setup, django_db_blocker):
    """The web server alone (no worker, no beat: nothing else writes or scans meanwhile)."""
    stack = start_stack(worker=False, beat=False)
    yield stack
    stack.supervisor.stop()


@pytest.fixture
def live(web_stack, transactional_db):
    """This module's server, with this test's rows committed so it sees them."""
    return web_stack


def leaking_process(agent):
    now = timezone.now().replace(microsecond=0)
    HostSample.objects.create(host="box-7", at=now, pressure=61, total_bytes=16384 * MIB, available_bytes=6000 * MIB,
                              used_bytes=10384 * MIB)
    start = now - timedelta(minutes=100)
    AgentSample.objects.bulk_create(
        AgentSample(agent=agent, host="box-7", pid=4242, process="<b>indexer</b>", at=start + timedelta(seconds=30 * i),
                    rss_bytes=int((700 + 24 * i / 120) * MIB + (i * 7919 % 5) * MIB), gc_uncollectable=0,
                    cycles_found=3 if i % 10 == 0 else 0,
                    tracemalloc_top=[{"where": "indexer/cache.py:88", "size_bytes": 200_000, "count": 40}])
        for i in range(200)
    )
    return LeakFinding.objects.create(
        agent=agent, host="box-7", pid=4242, process="<b>indexer</b>", slope_bytes_per_hour=24 * MIB,
        detected_at=now - timedelta(minutes=40), last_seen_at=now - timedelta(minutes=1), rss_bytes=740 * MIB,
        confidence=0.93, exhaustion_at=now + timedelta(hours=250),
    )


def test_the_page_shows_a_finding_with_its_chart_forecast_and_evidence(live, operator, agent, open_page):  # noqa: F811
    finding = leaking_process(agent.agent)
    page = open_page(live.url, operator.username, "/monitoring/")
    card = page.locator(f'.leak[data-id="{finding.id}"]')
    expect(card).to_be_visible()
    expect(card.locator("h3")).to_contain_text("<b>indexer</b> (pid 4242) on box-7")
    expect(card.locator(".leak-rate")).to_have_text("24.0\xa0MB/h")
    expect(card.locator(".leak-forecast time")).to_be_visible()
    expect(card.locator(".ev-growth")).to_contain_text("indexer/cache.py:88")
    # Cycles found over the judged span (the 45 minutes before detection, to the last scan).
    expect(card.locator(".ev-cycles")).to_have_text(str(leaks.evidence(finding)["cycles_found"]))
    assert leaks.evidence(finding)["cycles_found"] > 0
    # The chart: the samples and the fitted line, drawn.
    page.wait_for_function(
        "() => { const c = document.querySelector('.leak-chart'); const chart = c && Chart.getChart(c);"
        " return chart && chart.data.datasets[0].data.length > 100 && chart.data.datasets[1].data.length === 2; }"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    card.screenshot(path=str(SCREENSHOTS / "leak-finding.png"))

    card.get_by_label("Why is it a false positive?").fill("an index that grows by design")
    card.get_by_role("button", name="Mark false positive").click()
    expect(page.locator(f'.leak[data-id="{finding.id}"] .dismissed')).to_contain_text(
        f"Marked a false positive by {operator.username}: an index that grows by design")
    finding.refresh_from_db()
    assert finding.status == "dismissed"
