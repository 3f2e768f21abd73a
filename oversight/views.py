"""Operators' and managers' pages, and the decide POSTs."""

from __future__ import annotations

import uuid

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from oversight import actions
from oversight.models import OversightRequest, Source, Status
from oversight.roles import MANAGERS, OPERATORS, has_role, role_required
from oversight.serializers import request_dict

OUTCOMES = {"approve": Status.APPROVED, "reject": Status.REJECTED}


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@require_GET
@role_required(OPERATORS)
def queue(request: HttpRequest):
    pending = (
        OversightRequest.objects.select_related("agent")
        .filter(status=Status.PENDING, critical=True)
        .order_by("deadline")
    )
    return render(request, "queue.html", {"pending": [request_dict(r) for r in pending]})


@require_GET
@role_required(OPERATORS, MANAGERS)
def request_page(request: HttpRequest, request_id):
    try:
        req = OversightRequest.objects.select_related("agent", "policy").get(id=request_id)
    except OversightRequest.DoesNotExist:
        raise Http404("No such request.") from None
    req = actions.apply_timeout_if_due(req)
    return render(
        request,
        "request.html",
        {"req": req, "resource": request_dict(req), "events": list(req.events.all())},
    )


@require_GET
@role_required(OPERATORS, MANAGERS)
def history(request: HttpRequest):
    decided = (
        OversightRequest.objects.select_related("agent")
        .exclude(status=Status.PENDING)
        .order_by("-decided_at", "-id")[:50]
    )
    return render(request, "history.html", {"requests": decided})


class DecideError(Exception):
    def __init__(self, status: int, message: str, req: OversightRequest | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.req = req


def decide_one(request: HttpRequest, request_id, outcome_name: str, reason: str) -> OversightRequest:
    """One operator decision by the signed-in user; raises DecideError with the status to answer."""
    try:
        request_id = uuid.UUID(str(request_id))
    except ValueError:
        raise DecideError(404, "No such request.") from None
    outcome = OUTCOMES.get(outcome_name)
    if outcome is None:
        raise DecideError(400, "Choose approve or reject.")
    reason = reason.strip()
    if outcome == Status.REJECTED and not reason:
        raise DecideError(400, "A reason is required to reject.")
    try:
        return actions.do_decide(
            request_id, outcome=outcome, source=Source.OPERATOR, by=request.user.get_username(), reason=reason[:2000]
        )
    except OversightRequest.DoesNotExist:
        raise DecideError(404, "No such request.") from None
    except actions.AlreadyDecided as lost:
        req = lost.request
        who = req.decided_by or req.decision_source
        raise DecideError(409, f"Already {req.status} by {who}.", req) from None


def _check_operator(request: HttpRequest) -> None:
    if not has_role(request.user, OPERATORS):
        raise PermissionDenied("Only operators decide requests.")


@require_POST
def decide(request: HttpRequest, request_id):
    _check_operator(request)
    try:
        req = decide_one(request, request_id, request.POST.get("outcome", ""), request.POST.get("reason", ""))
    except DecideError as error:
        if _wants_json(request):
            body = {"error": {"code": _code(error.status), "message": error.message}}
            if error.req is not None:
                body["request"] = request_dict(error.req)
            return JsonResponse(body, status=error.status)
        return render(request, "decide_error.html", {"message": error.message, "req": error.req}, status=error.status)
    if _wants_json(request):
        return JsonResponse({"request": request_dict(req)})
    return redirect(_next_url(request))


@require_POST
def decide_bulk(request: HttpRequest):
    """Several ids at once; each follows the rules of a single decision."""
    _check_operator(request)
    outcome = request.POST.get("outcome", "")
    reason = request.POST.get("reason", "")
    ids = request.POST.getlist("ids")
    results = []
    for request_id in ids:
        try:
            req = decide_one(request, request_id, outcome, reason)
            results.append({"id": request_id, "status": 200, "request": request_dict(req)})
        except DecideError as error:
            results.append({"id": request_id, "status": error.status, "message": error.message})
    if not ids:
        status = 400
    else:
        statuses = {r["status"] for r in results}
        status = statuses.pop() if len(statuses) == 1 else 207
    if _wants_json(request):
        return JsonResponse({"results": results}, status=status if status != 207 else 200)
    if status == 200:
        return redirect(_next_url(request))
    return render(request, "decide_error.html", {"results": results}, status=status if status != 207 else 200)


def _code(status: int) -> str:
    return {400: "validation_error", 403: "forbidden", 404: "not_found", 409: "already_decided"}.get(status, "error")


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or "/queue/"
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return "/queue/"


# --- Error pages: JSON under /api/, pages elsewhere ---------------------------------------


def _api_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": {}}}, status=status)


def not_found(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _api_error(404, "not_found", "No such endpoint.")
    return render(request, "error.html", {"title": "Not found", "message": "There is nothing at this address."}, status=404)


def forbidden(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _api_error(403, "forbidden", "Not allowed.")
    if _wants_json(request):
        return JsonResponse({"error": {"code": "forbidden", "message": str(exception or "Not allowed.")}}, status=403)
    return render(request, "error.html", {"title": "Not allowed", "message": str(exception or "")}, status=403)


def bad_request(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _api_error(400, "validation_error", "Bad request.")
    return render(request, "error.html", {"title": "Bad request", "message": ""}, status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _api_error(503, "unavailable", "The request could not be completed; retry shortly.")
    return render(request, "error.html", {"title": "Something went wrong", "message": "Please retry."}, status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": {"code": "forbidden", "message": "CSRF check failed; reload the page."}}, status=403)
    return render(request, "error.html", {"title": "Form expired", "message": "Reload the page and try again."}, status=403)
