"""Pages carry a Content-Security-Policy without inline scripts and X-Frame-Options: DENY;
with OVERSIGHT_PRODUCTION=1, HSTS, secure cookies and a clean `check --deploy`."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def directives(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/queue/", "/history/", "/monitoring/"])
def test_it_sends_a_csp_without_inline_scripts_and_denies_framing(client, operator, path):
    if path != "/login/":
        client.force_login(operator)
    response = client.get(path)
    assert response.status_code == 200
    policy = directives(response)
    assert policy["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["default-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_it_sends_the_headers_on_error_pages_too(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert directives(response)["script-src"] == ["'self'"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_it_keeps_templates_free_of_inline_scripts_and_handlers():
    """An inline script would be blocked by the policy: keep it in static/js/ instead."""
    offenders = []
    for template in sorted((ROOT / "templates").rglob("*.html")):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text, flags=re.IGNORECASE):
            if "src=" not in tag and 'type="application/json"' not in tag:
                offenders.append(f"{template.name}: {tag}")
        offenders += [f"{template.name}: {m}" for m in re.findall(r"\son[a-z]+\s*=", text, flags=re.IGNORECASE)]
        offenders += [f"{template.name}: javascript: URL" for _ in re.findall(r"javascript:", text, flags=re.IGNORECASE)]
    assert offenders == []


def _production_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECURE_COOKIES", "SECURE_SSL_REDIRECT")}
    return env | {
        "OVERSIGHT_PRODUCTION": "1",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "oversight.example.org",
        "DJANGO_SETTINGS_MODULE": "oversight.settings",
    } | extra


def test_it_passes_check_deploy_with_production_settings(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=_production_env(OVERSIGHT_VAR_DIR=str(tmp_path)), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    # Silenced (see settings.py): HSTS preload, and "no CsrfViewMiddleware" (ours subclasses it).
    assert "(2 silenced)" in done.stdout


def test_it_protects_pages_against_csrf_with_a_subclass_of_djangos_middleware():
    from django.middleware.csrf import CsrfViewMiddleware
    from django.utils.module_loading import import_string

    assert any(issubclass(import_string(path), CsrfViewMiddleware) for path in settings.MIDDLEWARE)


def test_it_turns_on_hsts_and_secure_cookies_in_production(tmp_path):
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.X_FRAME_OPTIONS]))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_production_env(OVERSIGHT_VAR_DIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [31536000, True, True, True, True, "DENY"]


def test_it_leaves_them_off_on_one_machine():
    assert settings.SECURE_HSTS_SECONDS == 0 or settings.PRODUCTION
    assert not settings.SESSION_COOKIE_SECURE or settings.PRODUCTION


@pytest.mark.django_db
def test_it_sends_hsts_over_https_in_production(client, operator, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get("/login/", secure=True)
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
