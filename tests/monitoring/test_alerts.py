from datetime import UTC, datetime, timedelta

import pytest

from monitoring import alerts
from monitoring.alerts import CLEARING, FIRING, OK, PENDING, RAISE, RESOLVE, Rule, State, step
from monitoring.models import Alert

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
WARN = Rule("warning", 80.0, 75.0, timedelta(seconds=30))


def run(values, *, every=5, rule=WARN, state=None):
    """Feed one value every `every` seconds; returns the final state and [(second, event)]."""
    state = state or State()
    events = []
    for i, value in enumerate(values):
        if value is None:  # a missing sample
            continue
        state, event = step(state, rule, value, T0 + timedelta(seconds=i * every))
        if event:
            events.append((i * every, event))
    return state, events


def test_it_raises_only_after_holding_for_the_whole_period():
    state, events = run([81] * 7)
    assert events == [(30, RAISE)]
    assert state.phase == FIRING
    assert state.since == T0


def test_it_stays_pending_until_the_period_has_passed():
    state, events = run([81] * 6)
    assert events == []
    assert state.phase == PENDING


def test_it_never_raises_on_a_short_spike():
    state, events = run([50, 95, 95, 95, 50, 50, 50, 50, 50, 50])
    assert events == []
    assert state.phase == OK


def test_it_treats_exactly_the_threshold_as_not_above():
    assert run([80.0] * 10)[1] == []


def test_it_resolves_only_below_the_clear_threshold_after_holding():
    # Raised at 30 s; 78 is below 80 but not below 75: still firing (hysteresis).
    state, events = run([81] * 7 + [78] * 10 + [74] * 7)
    assert events == [(30, RAISE), (5 * 17 + 30, RESOLVE)]
    assert state.phase == OK


def test_it_goes_back_to_firing_when_clearing_is_interrupted():
    state, events = run([81] * 7 + [70, 70, 76] + [70] * 3)
    assert events == [(30, RAISE)]
    assert state.phase == CLEARING
    assert state.since == T0 + timedelta(seconds=50)


def test_it_does_not_flap_on_a_series_oscillating_around_the_threshold():
    wobble = [79, 81, 82, 79, 83, 80.5, 78, 81] * 10
    _, events = run(wobble)
    assert events == []
    # Once firing, a wobble around the raise threshold never resolves it either.
    _, events = run([85] * 7 + [79, 81, 76, 82, 77] * 20)
    assert events == [(30, RAISE)]


def test_it_does_not_take_missing_samples_for_a_recovery():
    state, events = run([81] * 7 + [None] * 50 + [81])
    assert events == [(30, RAISE)]
    assert state.phase == FIRING


def test_it_keeps_the_peak_and_ignores_late_samples():
    state, _ = run([81, 85, 95, 90, 82, 82, 82])
    assert state.peak == 95
    stale, event = step(state, WARN, 10.0, T0)
    assert (stale, event) == (state, None)


def test_it_raises_at_once_with_no_hold_time():
    rule = Rule("critical", 90.0, 85.0, timedelta(0))
    assert run([91, 80], rule=rule)[1] == [(0, RAISE), (5, RESOLVE)]


@pytest.fixture
def thresholds(settings):
    settings.MONITORING_ALERT_FOR_SECONDS = 30


def feed(host, values, *, process="", start=T0):
    changed = []
    for i, value in enumerate(values):
        changed += alerts.observe(host, process, value, start + timedelta(seconds=5 * i))
    return changed


@pytest.mark.django_db
def test_it_stores_raises_and_resolves_with_peak_and_pushes_them(thresholds, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        feed("box", [91] * 7)
    firing = {a.severity: a for a in Alert.objects.filter(resolved_at__isnull=True)}
    assert set(firing) == {"warning", "critical"}
    assert firing["critical"].threshold == 90
    assert firing["warning"].started_at == T0
    assert firing["warning"].raised_at == T0 + timedelta(seconds=30)
    assert len(callbacks) == 2
    feed("box", [97, 84, 84, 84, 84, 84, 84, 84], start=T0 + timedelta(seconds=35))
    critical = Alert.objects.get(severity="critical")
    assert critical.peak == 97
    assert critical.resolved_at == T0 + timedelta(seconds=35 + 5 + 30)
    assert Alert.objects.get(severity="warning").resolved_at is None
    dicts = alerts.firing()
    assert [a.severity for a in dicts] == ["warning"]


@pytest.mark.django_db
def test_it_lists_firing_alerts_in_the_contract_shape(thresholds):
    from monitoring.hooks import firing_alerts

    feed("box", [85] * 7)
    (alert,) = firing_alerts()
    assert set(alert) == {"id", "host", "process", "kind", "severity", "value", "threshold", "started_at", "resolved_at"}
    assert alert["host"] == "box"
    assert alert["process"] == ""
    assert alert["kind"] == "pressure"
    assert alert["severity"] == "warning"
    assert alert["value"] == 85
    assert alert["started_at"] == "2026-11-25T10:00:00.000Z"
    assert alert["resolved_at"] is None


@pytest.mark.django_db
def test_it_writes_nothing_for_a_healthy_host(thresholds, django_assert_max_num_queries):
    feed("box", [40])
    with django_assert_max_num_queries(6):  # two reads and savepoints; no write
        feed("box", [41], start=T0 + timedelta(seconds=5))
    from monitoring.models import AlertTrack

    assert AlertTrack.objects.count() == 0


@pytest.mark.django_db
def test_it_lets_the_first_operator_acknowledge(thresholds, operator, second_operator):
    feed("box", [85] * 7)
    alert = Alert.objects.get()
    assert alerts.acknowledge(alert.id, operator.username)
    assert not alerts.acknowledge(alert.id, second_operator.username)
    alert.refresh_from_db()
    assert alert.acknowledged_by == operator.username
    assert alert.acknowledged_at is not None
