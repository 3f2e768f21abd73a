"""Who may reach what: a role × endpoint matrix generated from the URL configuration.

Every URL pattern (the pages and their form POSTs, the JSON endpoints, the agent
API, the admin) and every websocket route must have a row in MATRIX below; a new
pattern without one fails `test_it_has_an_expectation_for_every_url_pattern`, so
no page can be forgotten. Each row gives the status each persona gets:

    anonymous   no session, no key
    agent       an agent's API key (Authorization: Bearer …), no session
    outsider    signed in, no role
    operator    in the operators group
    manager     in the managers group
    superuser   Django superuser

A persona that differs from another only on a few endpoints is one entry in
DERIVED (a base persona plus its exceptions): an operator outside the policy's
approver groups, and the operator who owns the asking agent. The requests of the
walk are of a policy whose approver group holds the operator, the owner and the
superuser (superusers are bound by it too). For websockets the "status" is
"accept" or the close code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from monitoring.models import Alert
from oversight import actions
from oversight.models import AuditEvent, Policy
from oversight.policy import current_policy, ensure_default_policy
from oversight.roles import OPERATORS
from tests.conftest import make_agent

PERSONAS = ("anonymous", "agent", "outsider", "operator", "manager", "superuser")


@dataclass(frozen=True)
class Derived:
    like: str
    exceptions: dict = field(default_factory=dict)  # {(route, method): status}


# Deciding a request of the walk's policy: what an operator may do and these two may not.
NOT_THEIRS_TO_DECIDE = {
    ("requests/<uuid:request_id>/decide", "POST"): 403,
    ("requests/decide", "POST"): 403,
    ("d/<str:token>/", "GET"): 200,   # made for the operator, not for them: the sign-in prompt
    ("d/<str:token>/", "POST"): 403,
}

# One entry per persona that behaves like a base persona except where listed (its
# client is made in `clients()` below).
DERIVED: dict[str, Derived] = {
    "operator_outside_group": Derived("operator", NOT_THEIRS_TO_DECIDE),
    "owner": Derived("operator", NOT_THEIRS_TO_DECIDE),
}

A = "api/v1/"
ADMIN_LOGIN = 302  # non-staff and strangers are sent to the admin's sign-in form

#  route (as in the URL configuration)                     method   anon agent outs  oper  mgr  super
MATRIX: dict[tuple[str, str], tuple] = {
    (f"^{A}requests/?$", "GET"):                                    (401, 200, 401, 401, 401, 401),
    (f"^{A}requests/?$", "POST"):                                   (401, 201, 401, 401, 401, 401),
    (f"^{A}requests/(?P<request_id>[^/]+)/?$", "GET"):              (401, 200, 401, 401, 401, 401),
    (f"^{A}requests/(?P<request_id>[^/]+)/cancel/?$", "POST"):      (401, 200, 401, 401, 401, 401),
    (f"^{A}metrics/?$", "POST"):                                    (401, 202, 401, 401, 401, 401),
    # 409: allowed in; the walk's requests are pending, so there is no receipt yet.
    (f"^{A}requests/(?P<request_id>[^/]+)/receipt/?$", "GET"):     (401, 409, 401, 401, 401, 401),
    (f"^{A}keys/?$", "GET"):                                        (200, 200, 200, 200, 200, 200),
    (f"^{A}openapi\\.json$", "GET"):                                (200, 200, 200, 200, 200, 200),
    ("healthz", "GET"):                                             (200, 200, 200, 200, 200, 200),
    ("metrics", "GET"):                                             (200, 200, 200, 200, 200, 200),
    # A redirect to the static icon, for browsers that ask for /favicon.ico.
    ("favicon.ico", "GET"):                                         (301, 301, 301, 301, 301, 301),
    ("login/", "GET"):                                              (200, 200, 302, 302, 302, 302),
    ("login/", "POST"):                                             (200, 200, 302, 302, 302, 302),
    ("logout/", "POST"):                                            (302, 302, 302, 302, 302, 302),
    ("", "GET"):                                                    (302, 302, 302, 302, 302, 302),
    ("queue/", "GET"):                                              (302, 302, 403, 200, 403, 200),
    ("requests/<uuid:request_id>/", "GET"):                         (302, 302, 403, 200, 200, 200),
    ("requests/<uuid:request_id>/decide", "POST"):                  (403, 403, 403, 302, 403, 302),
    ("requests/decide", "POST"):                                    (403, 403, 403, 302, 403, 302),
    ("history/", "GET"):                                            (302, 302, 403, 200, 200, 200),
    ("grants/", "GET"):                                             (302, 302, 403, 200, 403, 200),
    # 404: allowed in, and no such grant in force.
    ("grants/<int:grant_id>/revoke", "POST"):                       (403, 403, 403, 404, 403, 404),
    # A one-tap link made for the operator: anyone else, signed in or not, gets only the
    # sign-in prompt (200; a GET never decides) and a POST is refused.
    ("d/<str:token>/", "GET"):                                      (200, 200, 200, 200, 200, 200),
    ("d/<str:token>/", "POST"):                                     (403, 403, 403, 200, 403, 403),
    ("monitoring/", "GET"):                                         (302, 302, 403, 200, 200, 200),
    ("monitoring/series.json", "GET"):                              (302, 302, 403, 200, 200, 200),
    # 404: allowed in, and this agent has sent no samples of that process.
    ("monitoring/process.json", "GET"):                             (302, 302, 403, 404, 404, 404),
    ("monitoring/leaks.json", "GET"):                               (302, 302, 403, 200, 200, 200),
    ("monitoring/alerts/<int:alert_id>/acknowledge", "POST"):       (302, 302, 403, 302, 403, 302),
    ("monitoring/alerts/<int:alert_id>/false-positive", "POST"):    (302, 302, 403, 302, 403, 302),
    # 404: allowed in, and no such leak finding.
    ("monitoring/leaks/<int:finding_id>.json", "GET"):              (302, 302, 403, 404, 404, 404),
    ("monitoring/leaks/<int:finding_id>/dismiss", "POST"):          (302, 302, 403, 404, 403, 404),
    ("monitoring/leaks/weekly/", "GET"):                            (302, 302, 403, 200, 200, 200),
    ("reports/", "GET"):                                            (302, 302, 403, 403, 200, 200),
    ("^reports/(?P<month>\\d{4}-\\d{2})/$", "GET"):                 (302, 302, 403, 403, 200, 200),
    ("^reports/(?P<month>\\d{4}-\\d{2})\\.csv$", "GET"):            (302, 302, 403, 403, 200, 200),
    ("^reports/(?P<month>\\d{4}-\\d{2})/\\.?csv$", "GET"):          (302, 302, 403, 403, 200, 200),
    ("policies/", "GET"):                                           (302, 302, 403, 403, 200, 200),
    ("^policies/(?P<operation>[^/]+)/$", "GET"):                    (302, 302, 403, 403, 200, 200),
    ("^policies/(?P<operation>[^/]+)/$", "POST"):                   (302, 302, 403, 403, 302, 302),
    ("^policies/(?P<operation>[^/]+)/apply$", "POST"):              (302, 302, 403, 403, 302, 302),
    ("ws/feed/", "WEBSOCKET"):                                      (4403, 4403, 4403, "accept", "accept", "accept"),
    # The admin: staff only (superusers here); the audit trail and requests are read-only.
    ("admin/", "GET"):                                              (302, 302, 302, 302, 302, 200),
    ("admin/login/", "GET"):                                        (200, 200, 200, 200, 200, 302),
    ("admin/login/", "POST"):                                       (200, 200, 200, 200, 200, 200),
    ("admin/logout/", "POST"):                                      (302, 302, 302, 302, 302, 302),
    ("admin/password_change/", "GET"):                              (302, 302, 302, 302, 302, 200),
    ("admin/password_change/done/", "GET"):                         (302, 302, 302, 302, 302, 200),
    ("admin/autocomplete/", "GET"):                                 (302, 302, 302, 302, 302, 403),
    ("admin/jsi18n/", "GET"):                                       (302, 302, 302, 302, 302, 200),
    ("admin/r/<path:content_type_id>/<path:object_id>/", "GET"):    (302, 302, 302, 302, 302, 404),
    ("admin/^(?P<app_label>auth|oversight)/$", "GET"):              (302, 302, 302, 302, 302, 200),
    ("admin/(?P<url>.*)$", "GET"):                                  (302, 302, 302, 302, 302, 404),
    ("admin/auth/user/<id>/password/", "GET"):                      (302, 302, 302, 302, 302, 200),
}

# The admin's per-model pages: the superuser's status; everyone else is sent to sign in.
ADMIN_MODELS = {
    #                    changelist add  history delete change  <id>/
    "auth/group":             (200, 200, 200, 200, 200, 302),
    "auth/user":              (200, 200, 200, 200, 200, 302),
    "oversight/agent":        (200, 200, 200, 200, 200, 302),
    "oversight/apikey":       (200, 403, 200, 403, 200, 302),
    "oversight/policy":       (200, 200, 200, 403, 200, 302),
    "oversight/auditevent":   (200, 403, 200, 403, 200, 302),
    "oversight/oversightrequest": (200, 403, 200, 403, 200, 302),
}
ADMIN_MODEL_ROUTES = ("", "add/", "<path:object_id>/history/", "<path:object_id>/delete/",
                      "<path:object_id>/change/", "<path:object_id>/")
for _model, _statuses in ADMIN_MODELS.items():
    for _route, _status in zip(ADMIN_MODEL_ROUTES, _statuses, strict=True):
        MATRIX[(f"admin/{_model}/{_route}", "GET")] = (302, 302, 302, 302, 302, _status)


def expected(route: str, method: str, persona: str):
    if persona in DERIVED:
        derived = DERIVED[persona]
        return derived.exceptions.get((route, method), expected(route, method, derived.like))
    return MATRIX[(route, method)][PERSONAS.index(persona)]


# --- The URL configuration, walked -------------------------------------------------------


def http_routes() -> set[str]:
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                assert isinstance(pattern, URLPattern)
                yield prefix + str(pattern.pattern)

    return set(walk(get_resolver().url_patterns))


def websocket_routes() -> set[str]:
    """The routes of the ASGI application's websocket URLRouter, through its middleware."""
    from channels.routing import URLRouter

    from oversight.asgi import application

    app, seen = application.application_mapping["websocket"], 0
    while not isinstance(app, URLRouter):
        app = getattr(app, "application", None) or app.inner
        seen += 1
        assert seen < 10, "no URLRouter under the websocket application"
    return {str(route.pattern) for route in app.routes}


def test_it_has_an_expectation_for_every_url_pattern():
    routes = {(r, "WEBSOCKET") for r in websocket_routes()} | {(r, None) for r in http_routes()}
    covered = {route for route, _ in MATRIX}
    missing = sorted(r for r, _ in routes if r not in covered)
    assert missing == [], f"URL patterns with no row in the access matrix: {missing}"
    stale = sorted(r for r in covered if r not in {r for r, _ in routes})
    assert stale == [], f"rows for URL patterns that no longer exist: {stale}"


# --- The world the matrix runs in ------------------------------------------------------------


class World:
    def __init__(self):
        ensure_default_policy()
        self.agent = make_agent("matrix-bot")
        self.superuser = User.objects.create_superuser("root", password="correct horse battery")
        deciders = Group.objects.create(name="deciders")
        operators = Group.objects.get(name=OPERATORS)
        self.outside = User.objects.create_user("ursula", password="correct horse battery")
        self.outside.groups.add(operators)
        self.owner = User.objects.create_user("owen", password="correct horse battery")
        self.owner.groups.add(operators, deciders)
        for user in (User.objects.get(username="olivia"), self.superuser):
            user.groups.add(deciders)
        self.agent.agent.owner = self.owner
        self.agent.agent.max_pending = 10_000  # the walk leaves many requests pending
        self.agent.agent.save(update_fields=["owner", "max_pending"])
        actions.do_change_policy("delegate", current_policy("delegate").settings_dict() | {
            "approver_groups": ["deciders"], "timeout_action": "reject"}, by="matrix")
        self.month = timezone.now().strftime("%Y-%m")

    def bad_sign_in(self) -> dict:
        """A failed sign-in under a fresh name, so the walk never trips the login throttle."""
        self.sign_ins = getattr(self, "sign_ins", 0) + 1
        return {"username": f"nobody-{self.sign_ins}", "password": "not a password"}

    def request(self):
        submission = actions.Submission("delegate", "Delegate", {}, {"memory_pressure": 99.0})
        return actions.do_submit(self.agent.agent, submission)[0]

    def decision_link(self) -> str:
        """A fresh one-tap approve link made for the operator."""
        from django.test import override_settings

        from oversight.links import links_for

        with override_settings(OVERSIGHT_DECISION_LINKS=True):
            url = links_for(self.request(), User.objects.get(username="olivia"))["approve"]
        return url[url.index("/d/"):]

    def alert(self):
        now = timezone.now()
        return Alert.objects.create(host="box-1", severity="warning", value=85, threshold=80, peak=88,
                                    started_at=now, raised_at=now)

    def admin_object(self, model: str) -> str:
        if model == "auth/group":
            return str(Group.objects.first().pk)
        if model == "auth/user":
            return str(self.superuser.pk)
        if model == "oversight/agent":
            return str(self.agent.agent.pk)
        if model == "oversight/apikey":
            return str(self.agent.agent.keys.first().pk)
        if model == "oversight/policy":
            return str(Policy.objects.get(operation="*", is_current=True).pk)
        if model == "oversight/auditevent":
            return str(AuditEvent.objects.first().pk)
        return str(self.request().pk)


def http_call(world: World, route: str, method: str) -> tuple[str, dict | str | None]:
    """The concrete URL (and body) that exercises `route` with `method`."""
    if route == "admin/auth/user/<id>/password/":
        return f"/admin/auth/user/{world.superuser.pk}/password/", None
    if route.startswith("admin/"):
        for model in ADMIN_MODELS:
            prefix = f"admin/{model}/"
            if route.startswith(prefix):
                rest = route[len(prefix):].replace("<path:object_id>", world.admin_object(model))
                return f"/{prefix}{rest}", None
        fixed = {
            "admin/^(?P<app_label>auth|oversight)/$": "/admin/oversight/",
            "admin/(?P<url>.*)$": "/admin/no-such-page/",
            "admin/r/<path:content_type_id>/<path:object_id>/": "/admin/r/1/1/",
            "admin/login/": "/admin/login/",
        }
        body = world.bad_sign_in() if method == "POST" else None
        return fixed.get(route, "/" + route), body
    if route.startswith(f"^{A}"):
        if "receipt" in route:
            return f"/{A}requests/{world.request().id}/receipt", None
        if "keys" in route:
            return f"/{A}keys", None
        if "cancel" in route:
            return f"/{A}requests/{world.request().id}/cancel", {}
        if "request_id" in route:
            return f"/{A}requests/{world.request().id}", None
        if "metrics" in route:
            sample = {"at": timezone.now().isoformat(), "pid": 1, "process": "bot", "rss_bytes": 1, "vms_bytes": 1}
            return f"/{A}metrics", {"host": "box-1", "samples": [sample]}
        if "openapi" in route:
            return f"/{A}openapi.json", None
        if method == "POST":
            return f"/{A}requests", {"operation": "delegate", "summary": "s", "metrics": {"memory_pressure": 1}}
        return f"/{A}requests", None
    if route == "d/<str:token>/":
        return world.decision_link(), {}
    if route == "monitoring/alerts/<int:alert_id>/false-positive":
        return f"/monitoring/alerts/{world.alert().id}/false-positive", {"reason": "a backup, not a leak"}
    if route == "monitoring/leaks/<int:finding_id>.json":
        return "/monitoring/leaks/999999.json", None
    if route == "monitoring/leaks/<int:finding_id>/dismiss":
        return "/monitoring/leaks/999999/dismiss", {"reason": "expected growth"}
    if route == "grants/<int:grant_id>/revoke":
        return "/grants/999999/revoke", {}
    request_id = world.request().id if "request_id" in route else None
    forms = {
        ("login/", "POST"): ("/login/", world.bad_sign_in()),
        ("logout/", "POST"): ("/logout/", {}),
        ("requests/<uuid:request_id>/decide", "POST"): (f"/requests/{request_id}/decide", {"outcome": "approve"}),
        ("requests/decide", "POST"): ("/requests/decide", {"outcome": "approve", "ids": [str(world.request().id)]}),
        ("monitoring/alerts/<int:alert_id>/acknowledge", "POST"): (
            f"/monitoring/alerts/{world.alert().id if method == 'POST' else 0}/acknowledge", {}),
        # Policy edits go to another operation: the walk's requests keep their policy.
        ("^policies/(?P<operation>[^/]+)/$", "POST"): ("/policies/matrix_edit/", {
            "memory_pressure": "85", "delegation_depth": "5", "circular_refs": "", "timeout_seconds": "300",
            "timeout_action": "reject", "escalate_after": "", "trusted_agents": "", "escalation_contacts": "",
            "note": "from the matrix"}),
        ("^policies/(?P<operation>[^/]+)/apply$", "POST"): (
            "/policies/matrix_edit/apply", {"rule": "memory_pressure", "threshold": "85"}),
    }
    if (route, method) in forms:
        return forms[(route, method)]
    paths = {
        "requests/<uuid:request_id>/": f"/requests/{request_id}/",
        "monitoring/series.json": "/monitoring/series.json?host=box-1",
        "monitoring/process.json": f"/monitoring/process.json?agent={world.agent.name}&pid=1",
        "^reports/(?P<month>\\d{4}-\\d{2})/$": f"/reports/{world.month}/",
        "^reports/(?P<month>\\d{4}-\\d{2})\\.csv$": f"/reports/{world.month}.csv",
        "^reports/(?P<month>\\d{4}-\\d{2})/\\.?csv$": f"/reports/{world.month}/csv",
        "^policies/(?P<operation>[^/]+)/$": "/policies/delegate/",
    }
    return paths.get(route, "/" + route), None


def clients(world: World, operator, manager, outsider) -> dict[str, Client]:
    def signed(user):
        client = Client()
        client.force_login(user)
        return client

    return {
        "anonymous": Client(),
        "agent": Client(headers={"Authorization": f"Bearer {world.agent.key}"}),
        "outsider": signed(outsider),
        "operator": signed(operator),
        "manager": signed(manager),
        "superuser": signed(world.superuser),
        "operator_outside_group": signed(world.outside),
        "owner": signed(world.owner),
    }


def answer(client: Client, method: str, url: str, body) -> int:
    if method == "GET":
        return client.get(url).status_code
    if url.startswith(f"/{A}"):
        return client.post(url, data=json.dumps(body or {}), content_type="application/json").status_code
    return client.post(url, data=body or {}).status_code


# Committed rows: the agent API's async views read through another connection.
@pytest.mark.django_db(transaction=True)
def test_it_answers_every_url_pattern_as_the_matrix_says(operator, manager, outsider):
    world = World()
    people = clients(world, operator, manager, outsider)
    wrong = []
    for (route, method) in sorted(MATRIX, key=str):
        if method == "WEBSOCKET":
            continue
        for persona in (*PERSONAS, *DERIVED):
            url, body = http_call(world, route, method)
            got = answer(people[persona], method, url, body)
            if got != expected(route, method, persona):
                wrong.append(f"{method} {url} as {persona}: {got}, expected {expected(route, method, persona)}")
            if route == "logout/" or route == "admin/logout/":
                people = clients(world, operator, manager, outsider)  # signed out: sign in again
    assert wrong == [], "\n".join(wrong)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_opens_the_feed_only_to_the_matrix_personas(operator, manager, outsider):
    from tests.oversight.test_feed import Feed

    world = await database_sync_to_async(World)()
    people = await database_sync_to_async(clients)(world, operator, manager, outsider)
    for route in websocket_routes():
        for persona in (*PERSONAS, *DERIVED):
            headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
            cookie = people[persona].cookies.get("sessionid")
            if cookie:
                headers.append((b"cookie", f"sessionid={cookie.value}".encode()))
            if persona == "agent":
                headers.append((b"authorization", f"Bearer {world.agent.key}".encode()))
            feed = Feed(headers)
            feed.scope["path"] = "/" + route
            await feed.send_input({"type": "websocket.connect"})
            first = await feed.receive_output(5)
            got = "accept" if first["type"] == "websocket.accept" else first.get("code")
            assert got == expected(route, "WEBSOCKET", persona), persona
            if got == "accept":
                await feed.disconnect()
