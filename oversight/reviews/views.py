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
from django.contrib.auth.models import Group
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from oversight import actions, policy_keys
from oversight.models import MissingMetrics, Policy, TimeoutAction
from oversight.policy import RULES, current_policy
from oversight.reviews import advice, reports
from oversight.roles import MANAGERS, role_required

OPERATION_RE = re.compile(r"^(\*|[a-z0-9][a-z0-9_.-]{0,63})$")


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
        # No link into a month that has not started.
        "next_month_started": end <= timezone.now(),
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
    if not OPERATION_RE.fullmatch(text):
        raise Http404("No such operation.")
    return text


@require_GET
@role_required(MANAGERS)
def policy_list(request: HttpRequest):
    wanted = request.GET.get("operation", "").strip()
    if wanted and OPERATION_RE.fullmatch(wanted):
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
        {"field": name, "old": _shown(_field(older, name)), "new": _shown(_field(newer, name))}
        for name in Policy.SETTING_FIELDS
        if getattr(older, name) != getattr(newer, name)
    ]


def _field(policy: Policy, name: str):
    return policy.notify_masked if name == "notify" else getattr(policy, name)


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
        "notify": "\n".join(policy.notify_masked),
        "remind_every_seconds": text(policy.remind_every_seconds),
        "min_timeout_seconds": str(policy.min_timeout_seconds),
        "required_approvals": str(policy.required_approvals),
        "approver_groups": "\n".join(policy.approver_groups or []),
        "missing_metrics": policy.missing_metrics,
        "reject_cooldown_seconds": str(policy.reject_cooldown_seconds),
        "max_standing_seconds": str(policy.max_standing_seconds),
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
        settings, errors = parse_policy_form(request.POST, effective.settings_dict())
        settings, errors = _notify_fields(request.POST, effective, settings, errors)
        if not errors:
            return _save_edit(request, operation, effective, settings)
        status = 400
    context = {
        "operation": operation, "effective": effective, "own": own, "versions": _versions(operation) if own else [],
        "values": values, "errors": errors, "actions": TimeoutAction.values,
        "missing_choices": MissingMetrics.values, "warnings": policy_keys.warnings(effective.settings_dict()),
        "groups": list(Group.objects.order_by("name").values_list("name", flat=True)),
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
    try:
        policy = actions.do_change_policy(operation, base | settings, by=request.user.get_username(), note=note)
    except actions.PolicyInvalid as invalid:  # the rules between keys, checked again under the lock
        messages.error(request, f"Not saved: {invalid}.")
        return redirect("policy", operation=operation)
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


# The form's fields: every key of the policy table, in its order. A field missing from
# the POST keeps its current value (the checkbox `always` excepted: unticked is absent).
# (`notify` and `remind_every_seconds` have their own step: targets are shown masked.)
FORM_KEYS = tuple(k for k in policy_keys.KEYS if k not in ("notify", "remind_every_seconds"))


def parse_policy_form(data, base: dict | None = None) -> tuple[dict, dict]:
    """The settings a policy form asks for, and errors per field (the keys' parsers of
    oversight/policy_keys.py, then the rules between keys)."""
    settings: dict = {}
    errors: dict[str, str] = {}
    for key in FORM_KEYS:
        if key == "always":
            settings[key] = data.get(key) == "on"
            continue
        if key not in data and base is not None:
            settings[key] = base[key]
            continue
        try:
            settings[key] = policy_keys.parse(key, data.get(key, ""))
        except ValueError as error:
            errors[key] = str(error).capitalize() + "."
    if not errors:
        errors.update({k: v.capitalize() + "." for k, v in policy_keys.check((base or {}) | settings).items()})
    settings["note"] = data.get("note", "").strip()
    if len(settings["note"]) > 300:
        errors["note"] = "At most 300 characters."
    return settings, errors


def _notify_fields(data, effective: Policy, settings: dict, errors: dict) -> tuple[dict, dict]:
    """The notification targets and reminder interval. Targets are shown masked: a line
    left as shown keeps the stored (sealed) target; new lines are validated."""
    from oversight.notifications import InvalidTarget, mask, parse_notify, parse_remind_every

    shown = {mask(stored): stored for stored in effective.notify or []}
    lines = [line.strip() for line in data.get("notify", "").splitlines() if line.strip()]
    try:
        settings["notify"] = parse_notify([shown.get(line, line) for line in lines])
    except InvalidTarget as exc:
        errors["notify"] = str(exc)
    try:
        settings["remind_every_seconds"] = parse_remind_every(data.get("remind_every_seconds", "").strip())
    except InvalidTarget as exc:
        errors["remind_every_seconds"] = str(exc)
    return settings, errors

