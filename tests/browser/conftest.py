"""One headless Chromium for the browser tests, driven by Playwright.

The browser is Debian's /usr/bin/chromium (installed by scripts/ensure-browser,
which `make test` runs); Playwright never downloads one of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
PASSWORD = "correct horse battery"

@pytest.fixture(scope="module")
def chromium():
    """One browser per module. Playwright's sync API keeps an event loop running in
    this thread while it is open, so the ORM's async-safety check is relaxed for the
    module only, and the loop is gone before other tests (async views under the test
    client need a thread with no running loop)."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (run scripts/ensure-browser)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def sign_in(site: str, username: str) -> str:
    """A session id from the live server's own login form (its sessions use its own key)."""
    with httpx.Client(base_url=site, timeout=10) as client:
        token = client.get("/login/").cookies["csrftoken"]
        answer = client.post(
            "/login/",
            data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": site + "/login/"},
        )
        assert answer.status_code == 302, answer.text
        return client.cookies["sessionid"]


@pytest.fixture
def open_page(chromium):
    """open_page(site, username=None, path="/queue/") -> a page in a fresh browser context."""
    contexts = []
    # Every page is held to the Content-Security-Policy: a refused script, style or
    # connection shows as a console error and fails the test.
    violations = []

    def opener(site: str, username: str | None = None, path: str = "/queue/", **options):
        context = chromium.new_context(viewport={"width": 1280, "height": 860}, **options)
        contexts.append(context)
        if username:
            context.add_cookies([{"name": "sessionid", "value": sign_in(site, username), "url": site}])
        page = context.new_page()
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.set_default_timeout(8000)
        page.goto(site + path)
        return page

    yield opener
    for context in contexts:
        context.close()
    assert violations == []
