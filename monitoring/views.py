"""/monitoring/: hosts' pressure, alerts, leak suspects, agents' processes; chart data; acknowledge."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from monitoring import alerts, leaks
from monitoring.leaks import finding_dict
from monitoring.models import AgentRollup, AgentSample, Alert, HostRollup, HostSample, LeakFinding, LeakWeek
from oversight import audit
from oversight.api.errors import error_response
from oversight.models import AuditEvent
from oversight.roles import MANAGERS, OPERATORS, role_required
from oversight.serializers import iso

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
# 7 days of minutes is 10 080 points a line: the chart gets 10-minute buckets instead.
BUCKET_MINUTES = {"1h": 0, "24h": 1, "7d": 10}
HOSTS_SHOWN_FOR = timedelta(hours=1)


def host_cards(now) -> list[dict]:
    """The latest sample of each host seen within the last hour."""
    hosts = HostSample.objects.filter(at__gt=now - HOSTS_SHOWN_FOR).values("host").annotate(last=Max("at"))
    cards = []
    for row in sorted(hosts, key=lambda r: r["host"]):
        sample = HostSample.objects.filter(host=row["host"], at=row["last"]).first()
        if sample is not None:
            cards.append({"sample": sample, "at": iso(sample.at), "stale": now - sample.at > timedelta(seconds=60)})
    return cards


def agent_processes(now) -> list[AgentSample]:
    """Each agent process's latest sample within the last hour."""
    latest = (
        AgentSample.objects.filter(at__gt=now - HOSTS_SHOWN_FOR)
        .values("agent_id", "host", "pid")
        .annotate(last=Max("at"))
        .order_by("-last")[:100]
    )
    rows = []
    for row in latest:
        sample = (
            AgentSample.objects.select_related("agent")
            .filter(agent_id=row["agent_id"], host=row["host"], pid=row["pid"], at=row["last"])
            .first()
        )
        if sample is not None:
            rows.append(sample)
    return rows


@require_GET
@role_required(OPERATORS, MANAGERS)
def monitoring_page(request: HttpRequest):
    now = timezone.now()
    context = {
        "hosts": host_cards(now),
        "firing": alerts.firing(),
        "recent": Alert.objects.filter(resolved_at__isnull=False).order_by("-resolved_at")[:20],
        "leaks": [
            {"finding": f, "evidence": leaks.evidence(f)}
            for f in LeakFinding.objects.select_related("agent").order_by("-detected_at")[:20]
        ],
        "processes": agent_processes(now),
        "thresholds": {
            "warning": settings.MONITORING_WARNING_RAISE,
            "critical": settings.MONITORING_CRITICAL_RAISE,
        },
    }
    return render(request, "monitoring/monitoring.html", context)


def _range(request: HttpRequest) -> str:
    name = request.GET.get("range", "1h")
    return name if name in RANGES else "1h"


def _bucketed(points: list[dict], minutes: int) -> list[dict]:
    """Merge per-minute points into `minutes`-long buckets (min of mins, max of maxes, mean of avgs)."""
    if minutes <= 1:
        return points
    buckets: dict[str, list[dict]] = {}
    for p in points:
        at = p["_dt"]
        start = at.replace(minute=at.minute - at.minute % minutes)
        buckets.setdefault(iso(start), []).append(p)
    return [
        {"at": at, "min": min(p["min"] for p in group), "avg": sum(p["avg"] for p in group) / len(group),
         "max": max(p["max"] for p in group)}
        for at, group in buckets.items()
    ]


@require_GET
@role_required(OPERATORS, MANAGERS)
def host_series(request: HttpRequest):
    """A host's pressure over the last hour (raw samples) or 24 h / 7 d (roll-ups)."""
    host, name = request.GET.get("host", ""), _range(request)
    since = timezone.now() - RANGES[name]
    if name == "1h":
        rows = HostSample.objects.filter(host=host, at__gt=since).order_by("at")
        points = [
            {"at": iso(s.at), "min": s.pressure, "avg": s.pressure, "max": s.pressure,
             "psi_some": s.psi_some_avg10, "psi_full": s.psi_full_avg10}
            for s in rows.only("at", "pressure", "psi_some_avg10", "psi_full_avg10")
        ]
    else:
        rows = HostRollup.objects.filter(host=host, minute__gt=since).order_by("minute")
        points = _bucketed(
            [{"_dt": r.minute, "at": iso(r.minute), "min": r.pressure_min, "avg": r.pressure_avg, "max": r.pressure_max}
             for r in rows],
            BUCKET_MINUTES[name],
        )
        for p in points:
            p.pop("_dt", None)
    return JsonResponse({"host": host, "range": name, "points": points})


@require_GET
@role_required(OPERATORS, MANAGERS)
def process_series(request: HttpRequest):
    """One agent process's RSS over the range: raw samples for 1 h, roll-ups beyond."""
    try:
        agent_id, pid = int(request.GET.get("agent", "")), int(request.GET.get("pid", ""))
    except ValueError:
        raise Http404("Name an agent and a pid.") from None
    host, name = request.GET.get("host", ""), _range(request)
    since = timezone.now() - RANGES[name]
    if name == "1h":
        rows = AgentSample.objects.filter(agent_id=agent_id, host=host, pid=pid, at__gt=since).order_by("at")
        points = [{"at": iso(at), "rss": rss} for at, rss in rows.values_list("at", "rss_bytes")[:2000]]
    else:
        rows = AgentRollup.objects.filter(agent_id=agent_id, host=host, pid=pid, minute__gt=since).order_by("minute")
        points = [{"at": iso(m), "rss": round(avg)} for m, avg in rows.values_list("minute", "rss_avg")[:10080]]
    return JsonResponse({"points": points})


@require_GET
@role_required(OPERATORS, MANAGERS)
def leaks_json(request: HttpRequest):
    """Findings, newest first, with §9.6's fields; `?status=` narrows to one status."""
    findings = LeakFinding.objects.select_related("agent").order_by("-detected_at")
    status = request.GET.get("status")
    if status:
        findings = findings.filter(status=status)
    return JsonResponse({"findings": [finding_dict(f) for f in findings[:200]]})


@require_GET
@role_required(OPERATORS, MANAGERS)
def leak_series(request: HttpRequest, finding_id: int):
    """One finding's samples (the judged span and the history before it) and its fitted line."""
    finding = LeakFinding.objects.filter(id=finding_id).select_related("agent").first()
    if finding is None:
        return error_response(404, "not_found", "No such finding.")
    p = leaks.params()
    since = finding.last_seen_at - timedelta(seconds=p.span() + p.history)
    until = max(finding.last_seen_at, finding.cleared_at or finding.last_seen_at)
    if finding.agent_id is not None:
        rows = AgentSample.objects.filter(agent_id=finding.agent_id, host=finding.host, pid=finding.pid,
                                          at__gte=since, at__lte=until).order_by("at").values_list("at", "rss_bytes")
        points = [{"at": iso(at), "rss": rss} for at, rss in rows[:5000]]
    else:
        rows = HostSample.objects.filter(host=finding.host, at__gte=since, at__lte=until).order_by("at")
        points = [
            {"at": iso(at), "rss": proc["rss_bytes"]}
            for at, top in rows.values_list("at", "top_processes")[:5000]
            for proc in (top or ()) if isinstance(proc, dict) and proc.get("pid") == finding.pid
        ]
    span_start = finding.last_seen_at - timedelta(seconds=p.span())
    fit = [
        {"at": iso(span_start), "rss": round(finding.rss_bytes - finding.slope_bytes_per_hour * p.span() / 3600)},
        {"at": iso(finding.last_seen_at), "rss": finding.rss_bytes},
    ]
    return JsonResponse({"finding": leaks.finding_detail(finding), "points": points, "fit": fit,
                         "evidence": leaks.evidence(finding)})


def _reason(request: HttpRequest) -> str:
    return (request.POST.get("reason") or "").strip()[:2000]


def _answer(request: HttpRequest, status: int, body: dict):
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse(body, status=status)
    if status >= 400:
        return render(request, "error.html", {"title": "Not done", "message": body["error"]["message"]}, status=status)
    return redirect("/monitoring/")


@require_POST
@role_required(OPERATORS)
def dismiss_leak(request: HttpRequest, finding_id: int):
    """An operator marks a finding a false positive, with a reason; the first mark stands."""
    if not LeakFinding.objects.filter(id=finding_id).exists():
        return error_response(404, "not_found", "No such finding.")
    reason = _reason(request)
    if not reason:
        return _answer(request, 400, {"error": {"code": "validation_error", "message": "Say why it is a false positive.",
                                                "details": {"reason": ["This field is required."]}}})
    done = leaks.dismiss(finding_id, request.user.get_username(), reason)
    finding = LeakFinding.objects.select_related("agent").get(id=finding_id)
    if not done:
        return _answer(request, 409, {"error": {"code": "conflict", "details": {},
                                                "message": f"Already marked a false positive by {finding.dismissed_by}."}})
    return _answer(request, 200, {"finding": leaks.finding_detail(finding)})


@require_POST
@role_required(OPERATORS)
def alert_false_positive(request: HttpRequest, alert_id: int):
    """An operator marks an alert a false positive, with a reason; the first mark stands."""
    if not Alert.objects.filter(id=alert_id).exists():
        return error_response(404, "not_found", "No such alert.")
    reason = _reason(request)
    if not reason:
        return _answer(request, 400, {"error": {"code": "validation_error", "message": "Say why it is a false positive.",
                                                "details": {"reason": ["This field is required."]}}})
    done = alerts.mark_false_positive(alert_id, request.user.get_username(), reason)
    alert = Alert.objects.get(id=alert_id)
    if not done:
        return _answer(request, 409, {"error": {"code": "conflict", "details": {},
                                                "message": f"Already marked a false positive by {alert.false_positive_by}."}})
    return _answer(request, 200, {"alert": alerts.alert_dict(alert), "false_positive_by": alert.false_positive_by,
                                  "false_positive_reason": alert.false_positive_reason})


@require_GET
@role_required(OPERATORS, MANAGERS)
def weekly_leaks(request: HttpRequest):
    """The stored weekly leak scans, newest first, and the week so far."""
    now = timezone.now()
    so_far = leaks.weekly_summary(now + timedelta(days=7))  # the current week, live
    return render(request, "monitoring/weekly.html", {"weeks": LeakWeek.objects.order_by("-week")[:104], "so_far": so_far})


@require_POST
@role_required(OPERATORS)
def acknowledge(request: HttpRequest, alert_id: int):
    """An operator takes an alert in hand; the first acknowledgement stands."""
    if not Alert.objects.filter(id=alert_id).exists():
        raise Http404("No such alert.")
    with transaction.atomic():
        done = alerts.acknowledge(alert_id, request.user.get_username())
        if done:  # only the acknowledgement that stands is audited
            audit.record(AuditEvent.Kind.ALERT_ACKNOWLEDGED, request.user.get_username(), alert=alert_id)
    alert = Alert.objects.get(id=alert_id)
    if "application/json" in request.headers.get("Accept", ""):
        body = {"alert": alerts.alert_dict(alert), "acknowledged_by": alert.acknowledged_by}
        return JsonResponse(body, status=200 if done else 409)
    return redirect("/monitoring/")
