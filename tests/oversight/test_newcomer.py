"""What a newcomer meets first: the local logins `make run` creates, the login page's
hint, quiet logs for ordinary refusals and a favicon."""

from __future__ import annotations

import logging

import pytest
from django.core.management import call_command


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_it_creates_an_admin_who_can_open_the_admin_site(db, var_dir, client):
    call_command("bootstrap_local", verbosity=0)
    logins = dict(line.split(" ", 1) for line in (var_dir / "local-logins.txt").read_text().splitlines())
    assert set(logins) == {"operator", "manager", "admin"}
    assert client.login(username="admin", password=logins["admin"])
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/oversight/agent/").status_code == 200


def test_it_keeps_the_admin_password_on_a_second_run(db, var_dir):
    call_command("bootstrap_local", verbosity=0)
    first = (var_dir / "local-logins.txt").read_text()
    call_command("bootstrap_local", verbosity=0)
    assert (var_dir / "local-logins.txt").read_text() == first


def test_it_does_not_make_the_operator_or_manager_staff(db, var_dir, client):
    from django.contrib.auth.models import User

    call_command("bootstrap_local", verbosity=0)
    assert not User.objects.filter(username__in=["operator", "manager"], is_staff=True).exists()
    assert User.objects.get(username="admin").is_superuser


def test_it_tells_on_the_login_page_where_the_local_passwords_are(client, settings):
    settings.LOCAL_LOGINS_HINT = "var/local-logins.txt"
    page = client.get("/login/").content.decode()
    assert "var/local-logins.txt" in page and "make run" in page


def test_it_gives_no_password_hint_in_production(client, settings):
    settings.LOCAL_LOGINS_HINT = ""
    page = client.get("/login/").content.decode()
    assert "local-logins" not in page and "make run" not in page


def test_it_hints_only_on_the_embedded_defaults():
    import subprocess
    import sys

    from oversight.runner import BASE_DIR

    code = "from django.conf import settings; import django; django.setup(); print(repr(settings.LOCAL_LOGINS_HINT))"
    base = {"DJANGO_SETTINGS_MODULE": "oversight.settings", "PATH": "/usr/bin:/bin", "SECRET_KEY": "x" * 50}

    def hint(**env):
        out = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=base | env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert hint() == "'var/local-logins.txt'"
    assert hint(OVERSIGHT_PRODUCTION="1") == "''"
    assert hint(DATABASE_URL="postgres://u@127.0.0.1:5432/x") == "''"


def test_it_logs_an_ordinary_refusal_in_one_line(client, operator, caplog):
    client.force_login(operator)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client.get("/reports/").status_code == 403
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records, "the refusal is still logged"
    for record in records:
        line = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
        assert record.exc_info is None and "\n" not in line, line
        assert "/reports/" in line


def test_it_still_logs_the_traceback_of_a_server_error():
    from oversight.logfilters import OneLineClientErrors

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error", (), sys.exc_info())
    record.status_code = 500
    assert OneLineClientErrors().filter(record) and record.exc_info is not None


def test_it_serves_a_favicon(client):
    answer = client.get("/favicon.ico", follow=True)
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("image/")


def _submit(agent, **fields):
    from oversight import actions

    base = {"operation": "delegate", "summary": "Delegate the scrape", "payload": {}, "metrics": {"delegation_depth": 6}}
    req, _ = actions.do_submit(agent.agent, actions.Submission(**(base | fields)))
    return req


def test_it_shows_no_empty_decision_card_or_bare_payload_on_a_pending_request(client, operator, agent):
    client.force_login(operator)
    page = client.get(f"/requests/{_submit(agent).id}/").content.decode()
    assert 'id="decision"' not in page and "Not decided yet" not in page
    assert "<pre class=\"payload\">{}</pre>" not in page and "sent no payload" in page
    assert 'id="live-status"' in page


def test_it_shows_the_decision_and_no_live_status_once_decided(client, operator, agent):
    from oversight import actions
    from oversight.models import Source, Status

    client.force_login(operator)
    req = _submit(agent, payload={"url": "https://example.org"})
    actions.do_decide(str(req.id), outcome=Status.REJECTED, source=Source.OPERATOR, by="olivia", reason="No")
    page = client.get(f"/requests/{req.id}/").content.decode()
    assert 'id="decision"' in page and 'id="live-status"' not in page
    assert "https://example.org" in page and "sent no payload" not in page


def test_it_takes_screenshots_only_when_asked_and_never_into_tracked_files(monkeypatch):
    import subprocess

    from oversight.runner import BASE_DIR
    from tests.browser.conftest import screenshot, screenshot_dir

    class Page:
        taken: list = []

        def screenshot(self, path, **options):
            self.taken.append(path)

    monkeypatch.delenv("OVERSIGHT_SCREENSHOTS", raising=False)
    assert screenshot_dir() is None and screenshot(Page(), "queue.png") is None and Page.taken == []
    monkeypatch.setenv("OVERSIGHT_SCREENSHOTS", "1")
    folder = screenshot_dir()
    assert folder == BASE_DIR / "var" / "screenshots"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(folder / "queue.png")], cwd=BASE_DIR)
    assert ignored.returncode == 0, "var/screenshots/ must be ignored by git"
    monkeypatch.setenv("OVERSIGHT_SCREENSHOTS", "docs/img")
    assert screenshot_dir() == BASE_DIR / "docs" / "img"
    # Into docs/img/ only the documentation's own pictures, under their names.
    assert screenshot(Page(), "operator-history-phone.png") is None and Page.taken == []
    assert screenshot(Page(), "operator-queue.png", doc="queue.png") == BASE_DIR / "docs" / "img" / "queue.png"
    assert Page.taken == [str(BASE_DIR / "docs" / "img" / "queue.png")]


@pytest.mark.parametrize(("value", "shown"), [(0, "0 B"), (1023, "1023 B"), (300 << 20, "300.0 MiB"),
                                             (int(4.8 * (1 << 30)), "4.8 GiB"), (8 << 40, "8.0 TiB"), (None, "—")])
def test_it_shows_sizes_in_binary_units(value, shown):
    from oversight.templatetags.sizes import binarysize

    assert binarysize(value) == shown


def test_it_shows_memory_in_mib_on_every_page(client, operator, agent):
    from monitoring.models import AgentSample

    client.force_login(operator)
    req = _submit(agent)
    AgentSample.objects.create(agent=agent.agent, host="web-1", pid=42, process="scraper", rss_bytes=300 << 20,
                               vms_bytes=8 << 40)
    for path in (f"/requests/{req.id}/", "/monitoring/"):
        page = client.get(path).content.decode()
        assert "300.0 MiB" in page and " MB<" not in page and "300.0 MB" not in page, path
