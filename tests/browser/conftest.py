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

# Playwright's sync API keeps an event loop on the main thread; Django would then
# refuse the ORM calls our fixtures make between browser steps. They are plain
# blocking calls made between steps, never from inside the loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (run scripts/ensure-browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


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

    def opener(site: str, username: str | None = None, path: str = "/queue/", **options):
        context = chromium.new_context(viewport={"width": 1280, "height": 860}, **options)
        contexts.append(context)
        if username:
            context.add_cookies([{"name": "sessionid", "value": sign_in(site, username), "url": site}])
        page = context.new_page()
        page.set_default_timeout(8000)
        page.goto(site + path)
        return page

    yield opener
    for context in contexts:
        context.close()
