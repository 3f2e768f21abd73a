"""A decision link from a notification, tapped on a phone-sized screen (390 px)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD
from tests.browser.test_queue import read, submit

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_one_tap_after_signing_in_decides_on_a_phone(live, chromium, operator, agent, settings):
    from oversight.links import links_for
    from oversight.models import OversightRequest

    settings.OVERSIGHT_DECISION_LINKS = True
    settings.SITE_URL = live.url
    settings.SECRET_KEY = live.env["SECRET_KEY"]  # the server checks the signature with its own key
    asked = submit(live.url, agent, "Restart the crawler fleet")
    approve = links_for(OversightRequest.objects.get(id=asked["id"]), operator)["approve"]

    phone = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        page.set_default_timeout(8000)
        page.goto(approve)  # what a tap on the link in a mail does
        expect(page.get_by_role("heading", name="Sign in to decide")).to_be_visible()
        assert read(live.url, agent, asked["id"])["status"] == "pending"
        page.get_by_role("link", name="Sign in").click()
        assert "/d/" not in page.url
        page.locator("#id_username").fill("olivia")
        page.locator("#id_password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        button = page.get_by_role("button", name="Approve this request")
        expect(button).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert read(live.url, agent, asked["id"])["status"] == "pending"
        # The page asks for no referrer, so this POST carries `Origin: null` (oversight/csrf.py).
        button.tap()
        expect(page.locator(".notice")).to_contain_text("Done: approved")
        assert read(live.url, agent, asked["id"])["decision"]["by"] == "olivia"
        page.goto(approve)
        expect(page.locator(".notice")).to_contain_text("has been used")
    finally:
        phone.close()
