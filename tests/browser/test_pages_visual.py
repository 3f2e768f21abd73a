"""Every page, for each role, at a desktop (1280 px) and a phone (390 px) width, with
realistic data (a busy month, an empty month, pending and decided requests, memory
samples): no horizontal overflow, tables that fit at 1280 px, no clipped chart
labels, unique time labels, no console error and no failed request.

With OVERSIGHT_SCREENSHOTS set (see conftest.screenshot_dir) each page is saved;
`OVERSIGHT_SCREENSHOTS=docs/img` refreshes the documentation's pictures only.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from monitoring.models import AgentSample, HostSample
from oversight import actions
from oversight.models import Source, Status
from tests.browser.conftest import screenshot
from tests.conftest import _person
from tests.oversight.reviews.helpers import make_request

pytestmark = [pytest.mark.browser, pytest.mark.live]

WIDTHS = {"desktop": 1280, "phone": 390}
PEOPLE = ("olivia", "oscar", "oona")
# The pictures in docs/img/ this test refreshes (with OVERSIGHT_SCREENSHOTS=docs/img).
DOC_PICTURES = {("operator", "monitoring", "desktop"): "monitoring.png", ("manager", "review-busy", "desktop"): "review.png"}
REASONS = ("Delegation too deep for this site", "Unknown destination", "Looks like a loop")


def month_start(when, back: int):
    first = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(back):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def seed(agent) -> dict:
    """A busy last month, an empty month before it, this month's queue and memory."""
    rng = random.Random(7)
    now = timezone.now()
    busy = month_start(now, 1)
    empty = month_start(now, 2)
    operations = ("web_scrape", "delegate", "shell", "deploy", "file_write")
    for _ in range(240):
        metrics = {}
        if rng.random() < 0.6:
            metrics["memory_pressure"] = round(rng.uniform(50, 99), 1)
        if rng.random() < 0.6:
            metrics["delegation_depth"] = rng.randint(0, 8)
        if rng.random() < 0.4:
            metrics["circular_refs"] = rng.randint(0, 6)
        fate = rng.random()
        outcome = {}
        if fate < 0.55:
            verdict = Status.APPROVED if rng.random() < 0.8 else Status.REJECTED
            outcome = {"outcome": verdict, "source": Source.OPERATOR, "by": rng.choice(PEOPLE),
                       "after": round(rng.uniform(3, 600), 1),
                       "reason": rng.choice(REASONS) if verdict == Status.REJECTED else ""}
        elif fate < 0.75:
            outcome = {"outcome": Status.APPROVED, "source": Source.TIMEOUT, "after": 300}
        make_request(agent.agent, busy + timedelta(minutes=rng.randrange(27 * 24 * 60)),
                     operation=rng.choice(operations), metrics=metrics, **outcome)
    pending = []
    for summary, operation, metrics in (
        ("Delegate scraping of the docs site to sub-agent #3", "delegate",
         {"memory_pressure": 91.5, "delegation_depth": 6, "circular_refs": 4}),
        ("Rewrite the cache layer of the billing service and redeploy it to every region", "deploy",
         {"memory_pressure": 84.2}),
        ("Summarise the quarterly logs", "web_scrape", {"delegation_depth": 5}),
    ):
        req, _ = actions.do_submit(agent.agent, actions.Submission(
            operation=operation, summary=summary, metrics=metrics,
            payload={"url": "https://example.org/docs/a/very/long/path/that/should/wrap/nicely", "depth": 6}
            if operation == "delegate" else {}))
        pending.append(req)
    decided, _ = actions.do_submit(agent.agent, actions.Submission(
        operation="shell", summary="Delete the staging bucket", payload={}, metrics={"memory_pressure": 95.0}))
    actions.do_decide(str(decided.id), outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia",
                      reason="Not during the release freeze")
    HostSample.objects.bulk_create([
        HostSample(host="web-1", at=now - timedelta(minutes=m), pressure=55 + 30 * rng.random(), total_bytes=16 << 30,
                   available_bytes=(4 << 30) + rng.randrange(1 << 30), used_bytes=12 << 30, swap_total_bytes=2 << 30,
                   top_processes=[{"pid": 4100 + i, "name": name, "rss_bytes": (900 - 100 * i) << 20,
                                   "vms_bytes": 8 << 40} for i, name in enumerate(("oversight web", "oversight worker"))])
        for m in range(0, 60, 2)
    ])
    AgentSample.objects.bulk_create([
        AgentSample(agent=agent.agent, host="web-1", pid=4242, process="scraper", at=now - timedelta(minutes=m),
                    rss_bytes=(300 + 3 * (60 - m)) << 20, vms_bytes=900 << 20, gc_collected=12, gc_uncollectable=0,
                    cycles_found=3)
        for m in range(0, 60, 5)
    ])
    return {"busy": busy.strftime("%Y-%m"), "empty": empty.strftime("%Y-%m"), "pending": str(pending[0].id),
            "decided": str(decided.id)}


def pages_for(role: str, world: dict) -> dict[str, str]:
    shared = {"history": "/history/", "monitoring": "/monitoring/", "request": f"/requests/{world['pending']}/",
              "decided": f"/requests/{world['decided']}/"}
    if role == "operator":
        return {"queue": "/queue/", **shared}
    return {**shared, "reports": "/reports/", "review-busy": f"/reports/{world['busy']}/",
            "review-empty": f"/reports/{world['empty']}/", "policies": "/policies/",
            "policy": "/policies/delegate/"}


# Run in the page: what a person would notice as broken layout.
LAYOUT = """() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth + 1) {
    const wide = [...document.querySelectorAll("body *")].filter((e) => e.getBoundingClientRect().right > doc.clientWidth + 1)
      .slice(0, 3).map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + "." + [...e.classList].join("."));
    problems.push(`page is ${doc.scrollWidth}px wide for ${doc.clientWidth}px: ${wide.join(", ")}`);
  }
  if (window.innerWidth >= 1000) {
    for (const table of document.querySelectorAll("table")) {
      const box = table.parentElement;
      if (table.offsetParent && table.scrollWidth > box.clientWidth + 1) {
        problems.push(`a table is ${table.scrollWidth}px wide in a ${box.clientWidth}px box: ${table.querySelector("th")?.textContent}`);
      }
    }
  }
  if (typeof Chart !== "undefined") {
    for (const canvas of document.querySelectorAll("canvas")) {
      const chart = Chart.getChart(canvas);
      if (!chart || !canvas.offsetParent) continue;
      for (const scale of Object.values(chart.scales)) {
        const widest = scale._labelSizes?.widest?.width || 0;
        if (scale.left < -1 || scale.right > chart.width + 1) problems.push(`${canvas.id || canvas.className}: axis ${scale.id} outside its chart`);
        if (!scale.isHorizontal() && scale.options.display !== false && widest > scale.width + 1) {
          problems.push(`${canvas.id || canvas.className}: labels of axis ${scale.id} clipped (${widest}px in ${scale.width}px)`);
        }
        const labels = scale.ticks.map((t) => t.label).filter((l) => l !== undefined && l !== "").map(String);
        if (scale.id === "x" && canvas.dataset.timeAxis !== undefined && new Set(labels).size !== labels.length) {
          problems.push(`${canvas.id || canvas.className}: time labels repeat: ${labels.join(", ")}`);
        }
      }
    }
  }
  return problems;
}"""


@pytest.mark.parametrize("width", list(WIDTHS), ids=list(WIDTHS))
@pytest.mark.parametrize("role", ["operator", "manager"])
def test_it_lays_out_every_page_cleanly(live, chromium, agent, role, width):
    from tests.browser.conftest import sign_in

    _person("olivia" if role == "operator" else "maria", "operators" if role == "operator" else "managers")
    world = seed(agent)
    context = chromium.new_context(viewport={"width": WIDTHS[width], "height": 900})
    try:
        context.add_cookies([{"name": "sessionid", "value": sign_in(live.url, "olivia" if role == "operator" else "maria"),
                              "url": live.url}])
        page = context.new_page()
        page.set_default_timeout(8000)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        # A fetch cancelled by the next navigation (the monitoring page's refresh in flight
        # when the test moves on) is the browser's ERR_ABORTED, not a failure on this page.
        page.on("requestfailed", lambda r: errors.append(f"failed {r.url}: {r.failure}")
                if "/ws/" not in r.url and r.failure != "net::ERR_ABORTED" else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        found = {}
        for name, path in pages_for(role, world).items():
            page.goto(live.url + path)
            page.wait_for_load_state("networkidle")
            if page.locator("#live-status").count():
                # Every live page shows its status dot, and it turns live.
                expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=20000)
            problems = page.evaluate(LAYOUT)
            if problems or errors:
                found[name] = problems + errors
            errors.clear()
            screenshot(page, f"{role}-{name}-{width}.png", doc=DOC_PICTURES.get((role, name, width)), full_page=True)
        assert not found, found
    finally:
        context.close()
