"""Every page a person uses, in a real Chromium under the Content-Security-Policy:
no script, style or connection refused (the open_page fixture fails on any)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD
from tests.browser.test_queue import push_memory, submit

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_it_runs_every_page_without_a_csp_violation(live, open_page, agent):
    User.objects.create_superuser("root", password=PASSWORD)
    push_memory(live.url, agent)
    request = submit(live.url, agent, "Delegate scraping of the docs site")
    paths = ["/queue/", f"/requests/{request['id']}/", "/history/", "/monitoring/", "/reports/", "/policies/",
             "/policies/delegate/", "/admin/", "/admin/oversight/auditevent/"]
    page = open_page(live.url, "root", path="/queue/")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    for path in paths:
        answer = page.goto(live.url + path)
        assert answer.status == 200, path
        page.wait_for_load_state("networkidle")
