"""Memory pressure alerts: a small state machine per (host, process, severity).

    ok ──value > raise──▶ pending ──held ≥ hold──▶ firing ──value < clear──▶ clearing ──held ≥ hold──▶ ok
          ◀──value ≤ raise──┘                         ▲◀──────value ≥ clear───────┘

Warning and critical are two independent machines with their own thresholds
(80/75 and 90/85 by default): above 90 both fire, as Prometheus rules would.
Hysteresis (raise above X, clear only below a lower Y) and the hold time keep an
alert from flapping on a series that wobbles around a threshold. Only samples
move the machine: no sample is not a recovery. A sample older than the last one
seen (a late batch from an agent) is ignored rather than rewinding time.

`step()` is pure; `observe_series()` persists it in AlertTrack rows so that any
worker storing the next sample continues where another left off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitoring.models import Alert, AlertTrack, Severity
from oversight.events import send_event_on_commit
from oversight.serializers import iso

OK, PENDING, FIRING, CLEARING = "ok", "pending", "firing", "clearing"
RAISE, RESOLVE = "raise", "resolve"


@dataclass(frozen=True)
class Rule:
    severity: str
    raise_above: float
    clear_below: float
    hold: timedelta


@dataclass(frozen=True)
class State:
    phase: str = OK
    since: datetime | None = None  # when the current phase began
    last_at: datetime | None = None
    first_value: float | None = None  # the value that started the pending phase
    peak: float | None = None


def rules() -> list[Rule]:
    hold = timedelta(seconds=settings.MONITORING_ALERT_FOR_SECONDS)
    return [
        Rule(Severity.WARNING, settings.MONITORING_WARNING_RAISE, settings.MONITORING_WARNING_CLEAR, hold),
        Rule(Severity.CRITICAL, settings.MONITORING_CRITICAL_RAISE, settings.MONITORING_CRITICAL_CLEAR, hold),
    ]


def step(state: State, rule: Rule, value: float, at: datetime) -> tuple[State, str | None]:
    """The next state after one sample, and RAISE / RESOLVE when the alert changes."""
    if state.last_at is not None and at <= state.last_at:
        return state, None
    if state.phase == OK:
        if value <= rule.raise_above:
            return state, None  # unchanged, so a healthy host costs no write
        return _maybe_raise(State(PENDING, at, at, value, value), rule, at)
    state = replace(state, last_at=at, peak=max(state.peak or value, value))
    if state.phase == PENDING:
        if value <= rule.raise_above:
            return State(OK, None, at), None  # a short spike: never raised
        return _maybe_raise(state, rule, at)
    if state.phase == FIRING:
        if value >= rule.clear_below:
            return state, None
        return _maybe_resolve(replace(state, phase=CLEARING, since=at), rule, at)
    # CLEARING
    if value >= rule.clear_below:
        return replace(state, phase=FIRING), None
    return _maybe_resolve(state, rule, at)


def _maybe_raise(state: State, rule: Rule, at: datetime) -> tuple[State, str | None]:
    if at - state.since >= rule.hold:
        return replace(state, phase=FIRING), RAISE
    return state, None


def _maybe_resolve(state: State, rule: Rule, at: datetime) -> tuple[State, str | None]:
    if at - state.since >= rule.hold:
        return State(OK, None, at), RESOLVE
    return state, None


def alert_dict(alert: Alert) -> dict:
    """An alert as the feed and firing_alerts() carry it (spec §5)."""
    return {
        "id": alert.id,
        "host": alert.host,
        "process": alert.process,
        "kind": alert.kind,
        "severity": alert.severity,
        "value": alert.value,
        "threshold": alert.threshold,
        "started_at": iso(alert.started_at),
        "resolved_at": iso(alert.resolved_at),
    }


def observe(host: str, process: str, value: float, at: datetime, *, agent=None) -> list[Alert]:
    return observe_series(host, process, [(at, value)], agent=agent)


def observe_series(
    host: str, process: str, points: Iterable[tuple[datetime, float]], *, agent=None
) -> list[Alert]:
    """Feed samples (any order) of one host or process to every rule. Returns alerts raised or resolved."""
    points = sorted(points, key=lambda p: p[0])
    changed: list[Alert] = []
    for rule in rules():
        changed.extend(_run_track(host, process, rule, points, agent))
    return changed


def _run_track(host, process, rule: Rule, points, agent) -> list[Alert]:
    changed = []
    with transaction.atomic():
        track = _track(host, process, rule.severity)
        before = _state_of(track)
        state = before
        for at, value in points:
            state, event = step(state, rule, value, at)
            if event == RAISE:
                track.alert = _raise(host, process, rule, state, at, agent)
                changed.append(track.alert)
            elif event == RESOLVE:
                changed.extend(_resolve(track.alert_id, at))
                track.alert = None
        if state.phase == FIRING and track.alert_id and state.peak != before.peak:
            Alert.objects.filter(id=track.alert_id, peak__lt=state.peak).update(peak=state.peak)
        # The common case, a healthy host, writes nothing.
        if state != before:
            _save(track, state)
    return changed


def _track(host: str, process: str, severity: str) -> AlertTrack:
    # Row lock on PostgreSQL: two workers storing samples of one process queue here
    # instead of both raising. (SQLite's IMMEDIATE transactions serialise anyway.)
    track = AlertTrack.objects.select_for_update().filter(host=host, process=process, severity=severity).first()
    return track or AlertTrack(host=host, process=process, severity=severity)


def _state_of(track: AlertTrack) -> State:
    return State(track.phase, track.since, track.last_at, track.first_value, track.peak)


def _save(track: AlertTrack, state: State) -> None:
    track.phase, track.since, track.last_at = state.phase, state.since, state.last_at
    track.first_value, track.peak = state.first_value, state.peak
    if track.pk is None:
        # Another worker may have created it since we looked; theirs then wins.
        AlertTrack.objects.bulk_create([track], ignore_conflicts=True)
    else:
        track.save()


def _raise(host, process, rule: Rule, state: State, at: datetime, agent) -> Alert:
    alert = Alert.objects.create(
        host=host,
        process=process,
        agent=agent,
        severity=rule.severity,
        value=state.first_value,
        threshold=rule.raise_above,
        peak=state.peak,
        started_at=state.since,
        raised_at=at,
    )
    send_event_on_commit("alert.raised", {"alert": alert_dict(alert)})
    if alert.severity == Severity.CRITICAL:
        from oversight.notifications import schedule_monitoring

        schedule_monitoring(
            "alert", str(alert.pk), f"[Oversight] Critical memory pressure on {host}",
            f"Host:      {host}\nProcess:   {process or '-'}\nPressure:  {alert.value:g} % "
            f"(threshold {alert.threshold:g} %)\nSince:     {iso(alert.started_at)}\n",
        )
    return alert


def _resolve(alert_id: int | None, at: datetime) -> list[Alert]:
    if alert_id is None or not Alert.objects.filter(id=alert_id, resolved_at__isnull=True).update(resolved_at=at):
        return []
    alert = Alert.objects.get(id=alert_id)
    send_event_on_commit("alert.resolved", {"alert": alert_dict(alert)})
    return [alert]


def acknowledge(alert_id: int, username: str, now: datetime | None = None) -> bool:
    """Mark an alert acknowledged; False when it was already (the first one keeps the credit)."""
    now = now or timezone.now()
    return bool(
        Alert.objects.filter(id=alert_id, acknowledged_at__isnull=True).update(
            acknowledged_by=username, acknowledged_at=now
        )
    )


def mark_false_positive(alert_id: int, username: str, reason: str, now: datetime | None = None) -> bool:
    """An operator marks an alert a false positive (who, when, why); False when it already was."""
    return bool(
        Alert.objects.filter(id=alert_id, false_positive_at__isnull=True).update(
            false_positive_by=username, false_positive_at=now or timezone.now(), false_positive_reason=reason
        )
    )


def firing() -> list[Alert]:
    return list(Alert.objects.filter(resolved_at__isnull=True).order_by("-started_at", "-id"))
