"""Operators' and managers' pages, and the decide POSTs."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta

from django import forms
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from monitoring.hooks import firing_alerts
from oversight import actions, deciders, jsontext
from oversight.api.errors import error_response
from oversight.models import FINAL_STATUSES, REJECT_PRESETS, OversightRequest, Policy, Source, StandingGrant, Status
from oversight.roles import MANAGERS, OPERATORS, has_role, is_manager, is_operator, role_required
from oversight.serializers import grant_dict, iso, request_dict

OUTCOMES = {"approve": Status.APPROVED, "reject": Status.REJECTED}


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


# Preset reasons offered when rejecting; the operator may write their own instead.
HISTORY_PAGE_SIZE = 50
# Payloads longer than this (formatted) start collapsed on the request page.
PAYLOAD_COLLAPSE_CHARS = 2000
MEMORY_WINDOW = timedelta(minutes=10)


@require_GET
def home(request: HttpRequest):
    """`/` is the queue; a manager who is not also an operator lands on the reports. Right
    after signing in from a decision link, it shows that link's page."""
    from oversight.links import resume

    if (page := resume(request)) is not None:
        return page
    if request.user.is_authenticated and is_manager(request.user) and not is_operator(request.user):
        return redirect("/reports/")
    return redirect("/queue/")


@require_GET
@role_required(OPERATORS)
def queue(request: HttpRequest):
    actions.expire_overdue()
    pending = (
        OversightRequest.objects.select_related("agent")
        .filter(status=Status.PENDING, critical=True)
        .order_by("deadline")
    )
    resources = [request_dict(r) | _viewer_flags(request.user, r) for r in pending]
    return render(
        request,
        "queue.html",
        {
            "pending": resources,
            "viewer": _viewer(request.user),
            "grants": [grant_dict(g) for g in actions.grants_in_force()],
            "reject_reasons": REJECT_PRESETS,
            "alerts": firing_alerts(),
            "server_now": iso(timezone.now()),
        },
    )


@require_GET
@role_required(OPERATORS, MANAGERS)
def request_page(request: HttpRequest, request_id):
    try:
        req = OversightRequest.objects.select_related("agent", "policy").get(id=request_id)
    except OversightRequest.DoesNotExist:
        raise Http404("No such request.") from None
    req = actions.apply_timeout_if_due(req)
    payload = jsontext.shown(req.payload)
    decided_payload = jsontext.shown(req.decision_payload) if req.decision_payload is not None else ""
    return render(
        request,
        "request.html",
        {
            "req": req,
            "resource": request_dict(req),
            "payload_text": payload,
            "payload_collapsed": len(payload) > PAYLOAD_COLLAPSE_CHARS,
            "decided_payload_text": decided_payload,
            # The editor starts from the payload as it stands: under a quorum, the one an
            # earlier approval with changes left, which a plain approval approves.
            "editor_text": decided_payload or payload,
            "metrics": sorted(req.metrics.items()),
            "events": list(req.events.all()),
            "deliveries": _deliveries(req) if has_role(request.user, MANAGERS) else None,
            "memory": _agent_memory(req),
            "can_decide": req.status == Status.PENDING and deciders.may_decide(request.user, req),
            "decide_refusal": deciders.refusal(request.user, req) if req.status == Status.PENDING else "",
            "approved_by_me": deciders.has_approved(request.user, req),
            "approval_line": approval_line(req),
            "standing_choices": _standing_choices(req.policy.max_standing_seconds),
            "standing_uses_max": actions.STANDING_USES_MAX,
            "standing_uses_default": actions.STANDING_USES_DEFAULT,
            "reject_reasons": REJECT_PRESETS,
            "server_now": iso(timezone.now()),
        },
    )


def _deliveries(req: OversightRequest) -> list[dict]:
    """The request's callback and notifications, for managers: targets masked."""
    from oversight.notifications import mask

    return [
        {"kind": d.kind, "event": d.event or "decision", "target": mask(d.target), "state": d.state,
         "attempts": d.attempts, "last_error": d.last_error, "created_at": d.created_at, "finished_at": d.finished_at}
        for d in req.deliveries.order_by("created_at", "key")
    ]


def approval_line(req: OversightRequest) -> str:
    """"1 of 2 approved — by alice" for a request that needs several approvals."""
    if req.required_approvals < 2:
        return ""
    names = [a["by"] for a in req.approvals]
    line = f"{len(names)} of {req.required_approvals} approved"
    return f"{line} — by {', '.join(names)}" if names else line


def _viewer_flags(user, req: OversightRequest) -> dict:
    """What the signed-in person may do with one queued request (buttons shown or not)."""
    return {
        "may_decide": deciders.may_decide(user, req),
        "approved_by_me": deciders.has_approved(user, req),
        "approval_line": approval_line(req),
    }


def _viewer(user) -> dict:
    """Who is looking, for the queue's script to apply the same rules to live rows."""
    from oversight.models import Agent

    return {
        "username": user.get_username(),
        "groups": sorted(deciders.groups_of(user)),
        "owned_agents": list(Agent.objects.filter(owner=user).values_list("name", flat=True)),
    }


def _agent_memory(req: OversightRequest) -> list:
    """The agent's pushed process samples around the time of the request (newest first)."""
    from monitoring.models import AgentSample

    return list(
        AgentSample.objects.filter(
            agent=req.agent, at__gte=req.created_at - MEMORY_WINDOW, at__lte=req.created_at + MEMORY_WINDOW
        )
        .order_by("-at")
        .values("at", "host", "process", "pid", "rss_bytes", "cycles_found")[:20]
    )


# --- History -------------------------------------------------------------------------


class HistoryFilters(forms.Form):
    """The history page's filters; every field optional, bad values ignored with a message."""

    status = forms.ChoiceField(required=False, choices=[("", "Any"), *((s, s) for s in FINAL_STATUSES)])
    source = forms.ChoiceField(required=False, choices=[("", "Any"), *Source.choices])
    operation = forms.CharField(required=False, max_length=64)
    agent = forms.CharField(required=False, max_length=100)
    decided_by = forms.CharField(required=False, max_length=150, label="Decided by")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    q = forms.CharField(required=False, max_length=200, label="Summary contains")


@require_GET
@role_required(OPERATORS, MANAGERS)
def history(request: HttpRequest):
    form = HistoryFilters(request.GET)
    form.is_valid()  # an invalid field is dropped from cleaned_data and shown as an error
    rows = _decided(form.cleaned_data)
    # Keyset pagination on the (decided_at DESC, id DESC) index: each page costs the
    # same at row one million as at row one. `after` pages to older rows, `before`
    # back to newer ones.
    try:
        after = _decode_history_cursor(request.GET.get("after", ""))
        before = None if after else _decode_history_cursor(request.GET.get("before", ""))
    except ValueError:
        return render(
            request, "error.html", {"title": "Bad request", "message": "That page link is not valid."}, status=400
        )
    if before is not None:
        at, last_id = before
        newer = rows.filter(Q(decided_at__gt=at) | Q(decided_at=at, id__gt=last_id)).order_by("decided_at", "id")
        page = list(newer[: HISTORY_PAGE_SIZE + 1])
        has_newer, has_older = len(page) > HISTORY_PAGE_SIZE, True
        page = page[:HISTORY_PAGE_SIZE][::-1]
    else:
        if after is not None:
            at, last_id = after
            rows = rows.filter(Q(decided_at__lt=at) | Q(decided_at=at, id__lt=last_id))
        page = list(rows[: HISTORY_PAGE_SIZE + 1])
        has_older, has_newer = len(page) > HISTORY_PAGE_SIZE, after is not None
        page = page[:HISTORY_PAGE_SIZE]
    query = request.GET.copy()
    query.pop("after", None)
    query.pop("before", None)
    links = {"first_query": query.urlencode() if (after or before) else None, "next_query": None, "prev_query": None}
    if page and has_older:
        links["next_query"] = _with(query, after=_encode_history_cursor(page[-1]))
    if page and has_newer:
        links["prev_query"] = _with(query, before=_encode_history_cursor(page[0]))
    return render(request, "history.html", {"form": form, "requests": page, **links})


def _with(query, **extra) -> str:
    query = query.copy()
    for name, value in extra.items():
        query[name] = value
    return query.urlencode()


def _decided(filters: dict):
    rows = (
        OversightRequest.objects.select_related("agent")
        .filter(status__in=FINAL_STATUSES, decided_at__isnull=False)
        .order_by("-decided_at", "-id")
    )
    exact = {
        "status": "status",
        "source": "decision_source",
        "operation": "operation",
        "agent": "agent__name",
        "decided_by": "decided_by",
    }
    for field, lookup in exact.items():
        if filters.get(field):
            rows = rows.filter(**{lookup: filters[field]})
    if filters.get("since"):
        rows = rows.filter(decided_at__gte=_day_start(filters["since"]))
    if filters.get("until"):
        rows = rows.filter(decided_at__lt=_day_start(filters["until"]) + timedelta(days=1))
    if filters.get("q"):
        rows = rows.filter(summary__icontains=filters["q"])
    return rows


def _day_start(day) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _encode_history_cursor(req: OversightRequest) -> str:
    # Full precision: a cursor rounded to milliseconds would skip rows decided within
    # the same millisecond as the page's last one.
    return f"{req.decided_at.isoformat()}_{req.id}"


def _decode_history_cursor(raw: str):
    """`<decided_at>_<id>`, None when absent; ValueError for one this page never gave out."""
    if not raw:
        return None
    at_text, _, id_text = raw.partition("_")
    try:
        at = parse_datetime(at_text)
        last_id = uuid.UUID(id_text)
    except (ValueError, OverflowError):
        raise ValueError("not a history cursor") from None
    if at is None or at.tzinfo is None:
        raise ValueError("not a history cursor")
    return at, last_id


class DecideError(Exception):
    def __init__(
        self, status: int, message: str, req: OversightRequest | None = None, code: str = "",
        details: dict[str, list[str]] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.req = req
        self.code = code or _code(status)
        self.details = details or {}

    def body(self) -> dict:
        """The JSON error, in the API's one shape."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


NOTE_MAX_CHARS = 2000


def decide_one(
    request: HttpRequest, request_id, outcome_name: str, reason: str, *, payload_text: str = "", note: str = "",
    standing: dict | None = None, bulk: bool = False,
) -> OversightRequest:
    """One operator decision by the signed-in user; raises DecideError with the status to answer.

    `payload_text`, when given, is the edited payload (a JSON object) the approval lets
    the agent run; `note` is a message to the agent with either outcome; `standing`, the
    form's standing_seconds / standing_uses / standing_scope, asks for a standing grant.
    """
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
    snapshot = OversightRequest.objects.filter(id=request_id).only("owner_username", "approver_groups").first()
    if snapshot is None:
        raise DecideError(404, "No such request.")
    refused = deciders.refusal(request.user, snapshot)
    if refused:
        raise DecideError(403, refused)
    note = note.strip()
    if len(note) > NOTE_MAX_CHARS:
        raise DecideError(400, f"A note is at most {NOTE_MAX_CHARS:,} characters.")
    payload = None
    if payload_text.strip():
        if outcome != Status.APPROVED:
            raise DecideError(400, "Only an approval can change the payload.")
        payload = _edited_payload(payload_text)
    grant = _grant_asked(request_id, outcome, standing or {})
    try:
        return actions.do_decide(
            request_id, outcome=outcome, source=Source.OPERATOR, by=request.user.get_username(), reason=reason[:2000],
            payload=payload, note=note, grant=grant, bulk=bulk,
        )
    except OversightRequest.DoesNotExist:
        raise DecideError(404, "No such request.") from None
    except actions.AlreadyApproved as repeat:
        raise DecideError(409, str(repeat), repeat.request, code="already_approved") from None
    except actions.BulkRefused as refused:
        raise DecideError(403, str(refused), refused.request) from None
    except actions.AlreadyDecided as lost:
        req = lost.request
        who = req.decided_by or req.decision_source
        raise DecideError(409, f"Already {req.status} by {who}.", req) from None


STANDING_FIELDS = ("standing_seconds", "standing_uses", "standing_scope")


def _standing_fields(post) -> dict:
    return {name: post.get(name, "").strip() for name in STANDING_FIELDS if post.get(name, "").strip()}


def _grant_asked(request_id, outcome: str, fields: dict) -> actions.GrantAsked | None:
    """The standing grant the form asks for, checked against the request's policy version."""
    seconds = fields.get("standing_seconds", "")
    if not seconds or seconds == "0":
        return None
    if outcome != Status.APPROVED:
        raise DecideError(400, "Only an approval can stand for later requests.")
    policy = Policy.objects.filter(requests__id=request_id).first()
    if policy is None:
        raise DecideError(404, "No such request.")
    most = policy.max_standing_seconds
    if not seconds.isdigit() or not 0 < int(seconds) <= most:
        if most == 0:
            raise DecideError(400, f"The policy of {policy.operation} allows no standing approvals.")
        raise DecideError(400, f"A standing approval lasts 1 to {most:,} seconds under this policy.")
    uses = fields.get("standing_uses", str(actions.STANDING_USES_DEFAULT))
    if not uses.isdigit() or not 0 < int(uses) <= actions.STANDING_USES_MAX:
        raise DecideError(400, f"A standing approval is for 1 to {actions.STANDING_USES_MAX} uses.")
    scope = fields.get("standing_scope", "payload")
    if scope not in ("payload", "any"):
        raise DecideError(400, "The scope of a standing approval is payload or any.")
    if scope == "any" and policy.always:
        raise DecideError(400, "Under a policy that always asks a person, a standing approval covers one payload only.")
    return actions.GrantAsked(seconds=int(seconds), uses=int(uses), any_payload=scope == "any")


def _edited_payload(text: str) -> dict:
    """The payload the approver sent, parsed and checked (whether it changes the payload
    as it stands is judged by the approval itself, `actions.do_approve`, on the row it
    claims).

    Parsed exactly as a submission's payload is (oversight.jsontext): no duplicate
    member, NaN, Infinity or non-finite number, unpaired surrogate, NUL, or integer
    beyond ±2^53, at most 64 KiB serialized; each refused naming the field."""
    if len(text.encode("utf-8", "surrogatepass")) > jsontext.MAX_TEXT_BYTES:
        raise _payload_error({"payload": [f"is over {jsontext.MAX_PAYLOAD_BYTES // 1024} KiB serialized"]})
    try:
        edited = jsontext.loads(text, strict=True, field="payload")
    except jsontext.Malformed as exc:
        raise _payload_error({"payload": [f"is not valid JSON: {exc}"]}) from None
    except jsontext.Invalid as invalid:
        raise _payload_error(invalid.details) from None
    if not isinstance(edited, dict):
        raise _payload_error({"payload": ["must be a JSON object"]})
    if problems := jsontext.payload_problems(edited, "payload"):
        raise _payload_error(problems)
    return edited


def _payload_error(details: dict[str, list[str]]) -> DecideError:
    why = "; ".join(f"{field} {', '.join(reasons)}" for field, reasons in details.items())
    return DecideError(400, f"The edited payload cannot be used: {why}.", details=details)


def _standing_choices(most: int) -> list[tuple[int, str]]:
    """The durations offered beside Approve, up to the policy's maximum."""
    steps = [(300, "5 minutes"), (900, "15 minutes"), (3600, "1 hour"), (4 * 3600, "4 hours"), (86400, "1 day")]
    choices = [(seconds, label) for seconds, label in steps if seconds <= most]
    if most and (not choices or choices[-1][0] != most):
        choices.append((most, f"{most:,} seconds (the most allowed)"))
    return choices


@require_GET
@role_required(OPERATORS)
def grants(request: HttpRequest):
    """The standing grants in force, as JSON: the queue reloads them on every (re)connection."""
    return JsonResponse({"grants": [grant_dict(g) for g in actions.grants_in_force()]})


@require_POST
def revoke_grant(request: HttpRequest, grant_id: int):
    _check_operator(request)
    try:
        grant = actions.do_revoke_grant(grant_id, by=request.user.get_username())
    except StandingGrant.DoesNotExist:
        message = "That standing approval is not in force (unknown, or already revoked)."
        if _wants_json(request):
            return JsonResponse({"error": {"code": "not_found", "message": message, "details": {}}}, status=404)
        return render(request, "decide_error.html", {"message": message}, status=404)
    if _wants_json(request):
        return JsonResponse({"grant": grant_dict(grant)})
    return redirect(_next_url(request))


def _check_operator(request: HttpRequest) -> None:
    if not has_role(request.user, OPERATORS):
        raise PermissionDenied("Only operators decide requests.")


@require_POST
def decide(request: HttpRequest, request_id):
    _check_operator(request)
    try:
        req = decide_one(
            request, request_id, request.POST.get("outcome", ""), request.POST.get("reason", ""),
            payload_text=request.POST.get("payload", ""), note=request.POST.get("note", ""),
            standing=_standing_fields(request.POST),
        )
    except DecideError as error:
        if _wants_json(request):
            body = error.body()
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
    note = request.POST.get("note", "")
    ids = request.POST.getlist("ids")
    if request.POST.get("payload", "").strip() or _standing_fields(request.POST):
        message = "A payload is edited, and a standing approval granted, on the request's own page, not in bulk."
        if _wants_json(request):
            return JsonResponse({"error": {"code": "validation_error", "message": message, "details": {}}}, status=400)
        return render(request, "decide_error.html", {"message": message}, status=400)
    results = []
    for request_id in ids:
        try:
            req = decide_one(request, request_id, outcome, reason, note=note, bulk=True)
            results.append({"id": request_id, "status": 200, "request": request_dict(req)})
        except DecideError as error:
            item = {"id": request_id, "status": error.status, "code": error.code, "message": error.message}
            if error.req is not None:
                item["request"] = request_dict(error.req)
            results.append(item)
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


def not_found(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(404, "not_found", "No such endpoint.")
    return render(request, "error.html", {"title": "Not found", "message": "There is nothing at this address."}, status=404)


def forbidden(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(403, "forbidden", "Not allowed.")
    if _wants_json(request):
        return JsonResponse({"error": {"code": "forbidden", "message": str(exception or "Not allowed."), "details": {}}}, status=403)
    return render(request, "error.html", {"title": "Not allowed", "message": str(exception or "")}, status=403)


def bad_request(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(400, "validation_error", "Bad request.")
    return render(request, "error.html", {"title": "Bad request", "message": ""}, status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    """The last resort. A database that cannot be reached is a 503 with Retry-After
    (only this thread can tell: under ASGI Django may call this from another thread
    than the one that failed, and pages' views are covered by
    oversight.unavailable.DatabaseUnavailableMiddleware). The page is rendered without
    the request, so it never needs the database itself."""
    from oversight.api.errors import internal_error, unavailable
    from oversight.unavailable import UNREACHABLE, unavailable_page

    database_down = isinstance(sys.exc_info()[1], UNREACHABLE)
    if request.path.startswith("/api/"):
        return unavailable() if database_down else internal_error()
    if database_down:
        return unavailable_page()
    page = render_to_string("error.html", {"title": "Something went wrong", "message": "Please retry."})
    return HttpResponse(page, status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": {"code": "forbidden", "message": "CSRF check failed; reload the page.", "details": {}}}, status=403)
    return render(request, "error.html", {"title": "Form expired", "message": "Reload the page and try again."}, status=403)
