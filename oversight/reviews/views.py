"""Managers' pages: the monthly review (+ CSV) and policies (versions, diffs, edits).

Every view here is for managers (and superusers): anonymous people are sent to log
in, everyone else gets 403. Policy edits go through `actions.do_change_policy`,
which writes a new, audited version; nothing is ever changed in place.
"""

from __future__ import annotations

import csv
import re
from datetime import date

from django.contrib import messages
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from oversight import actions
from oversight.models import Policy, TimeoutAction
from oversight.policy import RULES, current_policy
from oversight.reviews import advice, reports
from oversight.roles import MANAGERS, role_required

OPERATION_RE = re.compile(r"^(\*|[a-z0-9][a-z0-9_.-]{0,63})$")
# Agent names are free text (1–100 characters) but for control characters; the list
# is one name a line (or comma separated).
AGENT_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f,]{1,100}$")
CONTACT_RE = re.compile(r"^\S{1,254}$")
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600


def _month(text: str) -> date:
    try:
        return reports.parse_month(text)
    except reports.BadMonth as error:
        raise Http404(str(error)) from None


# --- Reports ----------------------------------------------------------------------------------


@require_GET
@role_required(MANAGERS)
def report_list(request: HttpRequest):
    return render(request, "reports/list.html", {"months": reports.months_with_data()})


@require_GET
@role_required(MANAGERS)
def report_month(request: HttpRequest, month: str):
    month_date = _month(month)
    live = request.GET.get("live") == "1"
    data = reports.review(month_date, live=live)
    start, end = reports.month_bounds(month_date)
    charts = {
        "daily": data["daily"],
        "ttd_histogram": data["ttd_histogram"],
        "rules": data["by_rule"]["combinations"],
        "alerts_per_day": data["memory"].get("alerts_per_day") if data["memory"].get("alerts_measured") else None,
    }
    context = {
        "month": reports.label(month_date),
        "data": data,
        "cards": reports.cards(data),
        "tables": reports.tables(data),
        "charts": charts,
        "advice": advice.advice(start, end),
        "in_progress": end > timezone.now(),
        "live": live,
        "previous_month": reports.label(reports.previous_month(month_date)),
        "next_month": reports.label(reports.next_month(month_date)),
    }
    return render(request, "reports/month.html", context)


@require_GET
@role_required(MANAGERS)
def report_csv(request: HttpRequest, month: str):
    month_date = _month(month)
    data = reports.review(month_date, live=request.GET.get("live") == "1")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="oversight-review-{reports.label(month_date)}.csv"'
    writer = csv.writer(response)
    for row in reports.csv_rows(data):
        writer.writerow([reports.csv_safe(cell) for cell in row])
    return response


# --- Policies ----------------------------------------------------------------------------------


def _operation(text: str) -> str:
    if not OPERATION_RE.match(text):
        raise Http404("No such operation.")
    return text


@require_GET
@role_required(MANAGERS)
def policy_list(request: HttpRequest):
    wanted = request.GET.get("operation", "").strip()
    if wanted and OPERATION_RE.match(wanted):
        return redirect("policy", operation=wanted)
    versions = dict(Policy.objects.values_list("operation").annotate(n=Count("pk")).order_by())
    current = Policy.objects.filter(is_current=True).annotate(evaluated=Count("requests")).order_by("operation")
    rows = [{"policy": p, "versions": versions.get(p.operation, 0)} for p in current]
    error = "An operation name is 1–64 of a-z, 0-9, _ . - (starting with a letter or digit)." if wanted else ""
    return render(request, "policies/list.html", {"rows": rows, "operation_error": error}, status=400 if wanted else 200)


def _diff(newer: Policy, older: Policy | None) -> list[dict]:
    if older is None:
        return []
    return [
        {"field": name, "old": _shown(getattr(older, name)), "new": _shown(getattr(newer, name))}
        for name in Policy.SETTING_FIELDS
        if getattr(older, name) != getattr(newer, name)
    ]


def _shown(value) -> str:
    if value is None:
        return "off"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _versions(operation: str) -> list[dict]:
    versions = list(Policy.objects.filter(operation=operation).annotate(evaluated=Count("requests")).order_by("version"))
    out = [{"policy": p, "diff": _diff(p, versions[i - 1] if i else None), "first": i == 0}
           for i, p in enumerate(versions)]
    return out[::-1]


def _form_values(policy: Policy) -> dict:
    def text(value):
        return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    return {
        "memory_pressure": text(policy.memory_pressure),
        "delegation_depth": text(policy.delegation_depth),
        "circular_refs": text(policy.circular_refs),
        "always": policy.always,
        "timeout_seconds": str(policy.timeout_seconds),
        "timeout_action": policy.timeout_action,
        "escalate_after": text(policy.escalate_after),
        "escalation_contacts": "\n".join(policy.escalation_contacts or []),
        "trusted_agents": "\n".join(policy.trusted_agents or []),
        "note": "",
    }


@require_http_methods(["GET", "POST"])
@role_required(MANAGERS)
def policy_detail(request: HttpRequest, operation: str):
    operation = _operation(operation)
    effective = current_policy(operation)
    own = effective.operation == operation
    errors: dict[str, str] = {}
    values = _form_values(effective)
    status = 200
    if request.method == "POST":
        values = {key: request.POST.get(key, "") for key in values} | {"always": request.POST.get("always") == "on"}
        settings, errors = parse_policy_form(request.POST)
        if not errors:
            return _save_edit(request, operation, effective, settings)
        status = 400
    context = {
        "operation": operation, "effective": effective, "own": own, "versions": _versions(operation) if own else [],
        "values": values, "errors": errors, "actions": TimeoutAction.values,
    }
    return render(request, "policies/detail.html", context, status=status)


def _save_edit(request: HttpRequest, operation: str, effective: Policy, settings: dict) -> HttpResponse:
    note = settings.pop("note")
    base = effective.settings_dict()
    if effective.operation == operation and all(base[k] == v for k, v in settings.items()):
        messages.info(request, "Nothing changed: no new version written.")
        return redirect("policy", operation=operation)
    # A new operation's first version starts from what governed it until now (the
    # default policy), not from the model's defaults.
    policy = actions.do_change_policy(operation, base | settings, by=request.user.get_username(), note=note)
    messages.success(request, f"Saved {policy}.")
    return redirect("policy", operation=operation)


@require_POST
@role_required(MANAGERS)
def policy_apply(request: HttpRequest, operation: str):
    """Apply one threshold suggestion from a review: a new, audited policy version."""
    operation = _operation(operation)
    rule = request.POST.get("rule", "")
    if rule not in RULES:
        return _apply_error(request, operation, "Unknown rule.")
    value, error = _threshold(rule, request.POST.get("threshold", ""))
    if error or value is None:
        return _apply_error(request, operation, error or "A threshold is required.")
    effective = current_policy(operation)
    note = f"Applied a review suggestion: {rule} {getattr(effective, rule)} → {value:g}."
    extra = request.POST.get("month", "")
    if reports.MONTH_RE.match(extra):
        note += f" (review {extra})"
    policy = actions.do_change_policy(
        operation, effective.settings_dict() | {rule: value}, by=request.user.get_username(), note=note
    )
    messages.success(request, f"Saved {policy}: {rule} is now {value:g}.")
    return redirect("policy", operation=operation)


def _apply_error(request: HttpRequest, operation: str, message: str) -> HttpResponse:
    return render(request, "policies/apply_error.html", {"operation": operation, "message": message}, status=400)


# --- Validation ---------------------------------------------------------------------------------


def _threshold(rule: str, text: str):
    """(value or None for 'off', error or '')."""
    text = text.strip()
    if not text:
        return None, ""
    try:
        value = float(text) if rule == "memory_pressure" else int(text)
    except ValueError:
        return None, "Must be a number." if rule == "memory_pressure" else "Must be a whole number."
    if value != value or value < 0:  # NaN or negative
        return None, "Must be 0 or more."
    if rule == "memory_pressure" and value > 100:
        return None, "A pressure is between 0 and 100."
    if value > 10**9:
        return None, "Too large."
    return value, ""


def _names(text: str, pattern: re.Pattern, what: str) -> tuple[list[str], str]:
    names = [n.strip() for n in re.split(r"[\r\n,]+", text) if n.strip()]
    bad = [n for n in names if not pattern.match(n)]
    if bad:
        return [], f"Not a valid {what}: {bad[0][:40]}"
    if len(names) > 200:
        return [], f"At most 200 {what}s."
    return list(dict.fromkeys(names)), ""


def parse_policy_form(data) -> tuple[dict, dict]:
    """The settings a policy form asks for, and errors per field."""
    settings: dict = {}
    errors: dict[str, str] = {}
    for rule in RULES:
        settings[rule], error = _threshold(rule, data.get(rule, ""))
        if error:
            errors[rule] = error
    settings["always"] = data.get("always") == "on"
    try:
        settings["timeout_seconds"] = int(data.get("timeout_seconds", "").strip())
        if not 1 <= settings["timeout_seconds"] <= MAX_TIMEOUT_SECONDS:
            errors["timeout_seconds"] = f"Between 1 and {MAX_TIMEOUT_SECONDS} seconds."
    except ValueError:
        errors["timeout_seconds"] = "Must be a whole number of seconds."
    settings["timeout_action"] = data.get("timeout_action", "")
    if settings["timeout_action"] not in TimeoutAction.values:
        errors["timeout_action"] = "Choose approve or reject."
    settings["escalate_after"], error = _escalate_after(data.get("escalate_after", ""))
    if error:
        errors["escalate_after"] = error
    settings["trusted_agents"], error = _names(data.get("trusted_agents", ""), AGENT_NAME_RE, "agent name")
    if error:
        errors["trusted_agents"] = error
    settings["escalation_contacts"], error = _names(data.get("escalation_contacts", ""), CONTACT_RE, "contact")
    if error:
        errors["escalation_contacts"] = error
    settings["note"] = data.get("note", "").strip()
    if len(settings["note"]) > 300:
        errors["note"] = "At most 300 characters."
    return settings, errors


def _escalate_after(text: str):
    text = text.strip()
    if not text:
        return None, ""
    try:
        value = float(text)
    except ValueError:
        return None, "Must be a fraction such as 0.5."
    if not 0 < value < 1:
        return None, "Strictly between 0 and 1 (a fraction of the timeout), or empty for no escalation."
    return value, ""
