"""Decision links (spec §9.7): one tap from a notification to a decision, never on a GET.

A person who is notified about a request they may decide gets an approve link and a
reject link: `/d/<token>/`, where the token is the link's id signed with Django's
signing framework (salted for this use). The link row binds the request, the outcome
and the person, expires at the request's deadline (judged by the database's clock) and
is burnt, with its twin, by the one POST that uses it.

- GET never decides (mail scanners prefetch links) and answers 200. Without that
  person's session (signed out, or signed in as someone else) it shows only a sign-in
  prompt, nothing about the request; signed out, the token is kept in the session, never
  in a `next` parameter, and after signing in `/` brings them back to it. With the
  session it shows the request and one button (a form POST with CSRF; a reject asks for
  the reason), or, where the link decides nothing any more, the request's current state.
- POST by anyone else decides nothing (403, the same prompt). A used or expired link,
  a request decided already and a repeat approval by the same person answer POST 409,
  with the request's current state; a person who may no longer decide it (approver
  groups, owner, role), 403.
- The pages send `Referrer-Policy: no-referrer` and `Cache-Control: no-store`; the
  `django.request` and `django.security` loggers see `/d/…/`, never the token.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from oversight import actions, deciders
from oversight.dbclock import DatabaseNow
from oversight.models import DecisionLink, OversightRequest, Source, Status
from oversight.roles import OPERATORS, has_role
from oversight.serializers import request_dict

SALT = "oversight.decision-link"
SESSION_KEY = "oversight_decision_link"


def links_for(req: OversightRequest, user) -> dict[str, str] | None:
    """{"approve": url, "reject": url} for `user` about `req`, or None where links are off,
    the request is no longer pending, or the person may not decide it."""
    if not settings.OVERSIGHT_DECISION_LINKS or req.status != Status.PENDING or req.deadline is None:
        return None
    if not may_decide(user, req):
        return None
    pair = uuid.uuid4()
    urls = {}
    for outcome in DecisionLink.Outcome.values:
        link = DecisionLink.objects.create(pair=pair, request=req, user=user, outcome=outcome, expires_at=req.deadline)
        urls[outcome] = f"{settings.SITE_URL.rstrip('/')}/d/{signing.dumps(str(link.id), salt=SALT)}/"
    return urls


def people_for_addresses(addresses: list[str]):
    """The active operators whose e-mail address is among `addresses` (the notify targets)."""
    wanted = {a.strip().lower() for a in addresses if "@" in a}
    if not wanted:
        return []
    people = get_user_model().objects.filter(is_active=True).exclude(email="")
    return [p for p in people if p.email.lower() in wanted and has_role(p, OPERATORS)]


def may_decide(user, req: OversightRequest) -> bool:
    """Whether `user` may decide `req` (the decide endpoint's rule: operators, in the
    policy's approver groups, never the agent's owner; and not after approving already)."""
    return bool(user.is_active) and deciders.may_decide(user, req) and not deciders.has_approved(user, req)


def _link(token: str) -> DecisionLink:
    try:
        link_id = signing.loads(token, salt=SALT)
        return DecisionLink.objects.select_related("request__agent", "user").get(id=uuid.UUID(link_id))
    except (signing.BadSignature, ValueError, DecisionLink.DoesNotExist):
        raise Http404("This link is not valid.") from None


def _usable(link: DecisionLink) -> bool:
    return (
        link.used_at is None
        and DecisionLink.objects.filter(id=link.id, used_at__isnull=True, expires_at__gt=DatabaseNow()).exists()
    )


def _private(response: HttpResponse) -> HttpResponse:
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response


def _page(request: HttpRequest, link: DecisionLink, token: str, *, status: int = 200, state: str,
          message: str = "") -> HttpResponse:
    req = actions.apply_timeout_if_due(link.request)
    context = {"link": link, "req": req, "resource": request_dict(req), "state": state, "message": message,
               "action": f"/d/{token}/"}
    return _private(render(request, "decision_link.html", context, status=status))


def _prompt(request: HttpRequest, *, status: int = 200) -> HttpResponse:
    """The sign-in prompt, and nothing about the request: for anyone but the link's person."""
    return _private(render(request, "decision_link.html", {"state": "sign-in"}, status=status))


@never_cache
@require_http_methods(["GET", "POST"])
def decision_link(request: HttpRequest, token: str) -> HttpResponse:
    """A GET answers 200 whatever the link's state (and decides nothing); a POST answers
    403 for anyone but the link's person or a person who may not decide any more, 409 for a
    used or expired link, a decided request or a repeat approval, else decides."""
    try:
        link = _link(token)
    except Http404 as missing:
        # Still a link page: its address holds what may be a token (or most of one).
        page = render(request, "error.html", {"title": "Not found", "message": str(missing)}, status=404)
        return _private(page)
    post = request.method == "POST"
    if not request.user.is_authenticated or request.user.pk != link.user_id:
        # Without that person's session: only the sign-in prompt (a POST decides nothing).
        if not post and not request.user.is_authenticated:
            # Kept on the server across the sign-in: `/` brings the person back here.
            request.session[SESSION_KEY] = token
        return _prompt(request, status=403 if post else 200)
    request.session.pop(SESSION_KEY, None)
    if not _usable(link):
        return _page(request, link, token, status=409 if post else 200, state="used")
    if link.request.status != Status.PENDING:
        return _page(request, link, token, status=409 if post else 200, state="decided")
    if not deciders.may_decide(request.user, link.request):
        return _page(request, link, token, status=403 if post else 200, state="not-allowed")
    if deciders.has_approved(request.user, link.request):
        return _page(request, link, token, status=409 if post else 200, state="approved-already")
    if not post:
        return _page(request, link, token, state="ask")
    return _decide(request, link, token)


def _decide(request: HttpRequest, link: DecisionLink, token: str) -> HttpResponse:
    reason = request.POST.get("reason", "").strip()
    if link.outcome == DecisionLink.Outcome.REJECT and not reason:
        return _page(request, link, token, status=400, state="ask", message="A reason is required to reject.")
    outcome = Status.APPROVED if link.outcome == DecisionLink.Outcome.APPROVE else Status.REJECTED
    try:
        with transaction.atomic():
            # Burn the pair first: of two taps racing, one burns it and decides.
            burnt = DecisionLink.objects.filter(pair=link.pair, used_at__isnull=True, expires_at__gt=DatabaseNow())
            if burnt.update(used_at=timezone.now()) == 0:
                return _page(request, link, token, status=409, state="used")
            actions.do_decide(link.request_id, outcome=outcome, source=Source.OPERATOR,
                              by=request.user.get_username(), reason=reason[:2000])
    except actions.AlreadyApproved:
        return _page(request, link, token, status=409, state="approved-already")
    except actions.AlreadyDecided:
        return _page(request, link, token, status=409, state="decided")
    link.request.refresh_from_db()
    return _page(request, link, token, state="done")


def resume(request: HttpRequest) -> HttpResponse | None:
    """After signing in, `/` shows the link that sent the person to sign in, if any."""
    token = request.session.get(SESSION_KEY)
    if not token or not request.user.is_authenticated or request.method != "GET":
        return None
    try:
        return decision_link(request, token)
    except Http404:
        request.session.pop(SESSION_KEY, None)
        return None
