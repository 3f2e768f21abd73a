import random
from datetime import UTC, datetime, timedelta

import pytest

from monitoring import leaks
from monitoring.models import AgentSample, HostSample, LeakFinding

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MIB = 1 << 20


def series(shape, minutes=60, every=30):
    """(time, rss) every `every` seconds for `minutes`, rss = shape(hours since start) with noise."""
    rng = random.Random(7)
    points = []
    for i in range(minutes * 60 // every):
        hours = i * every / 3600
        points.append((T0 + timedelta(seconds=i * every), int(shape(hours) + rng.uniform(-2, 2) * MIB)))
    return points


def rising(hours):
    return 500 * MIB + 40 * MIB * hours


def one_jump(hours):
    return 500 * MIB + (200 * MIB if hours > 0.2 else 0)


def plateau(hours):
    return 800 * MIB


def windows(points):
    half = T0 + timedelta(minutes=30)
    return [leaks.trend([p for p in points if p[0] <= half]), leaks.trend([p for p in points if p[0] > half])]


def test_it_finds_a_steady_rise_with_its_rate():
    earlier, later = windows(series(rising))
    assert leaks.is_leaking([earlier, later], MIB)
    assert later.slope_per_hour == pytest.approx(40 * MIB, rel=0.15)


@pytest.mark.parametrize("shape", [one_jump, plateau], ids=["a single jump", "a plateau"])
def test_it_does_not_flag_a_jump_or_a_plateau(shape):
    assert not leaks.is_leaking(windows(series(shape)), MIB)


def test_it_ignores_an_isolated_spike():
    points = series(plateau)
    points[40] = (points[40][0], 4000 * MIB)
    assert not leaks.is_leaking(windows(points), MIB)


def test_mann_kendall_tells_a_rise_from_noise():
    assert leaks.mann_kendall_p(list(range(20))) < 0.001
    assert leaks.mann_kendall_p([5] * 20) == 1.0
    assert leaks.mann_kendall_p(list(range(20, 0, -1))) == 1.0


@pytest.mark.django_db
def test_it_records_one_finding_per_episode_with_a_forecast_and_pushes_it(agent, settings, django_capture_on_commit_callbacks):
    settings.MONITORING_LEAK_WINDOW_MINUTES = 30
    settings.MONITORING_LEAK_MIN_SLOPE_BYTES_PER_HOUR = MIB
    HostSample.objects.create(host="box", at=T0, pressure=50, total_bytes=8000 * MIB, available_bytes=4000 * MIB, used_bytes=4000 * MIB)
    AgentSample.objects.bulk_create(
        AgentSample(agent=agent.agent, host="box", pid=9, process="crawler", at=at, rss_bytes=rss)
        for at, rss in series(rising)
    )
    now = T0 + timedelta(minutes=60)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert leaks.scan(now) == 1
        assert leaks.scan(now + timedelta(seconds=10)) == 0  # still the same episode
    assert len(callbacks) == 1
    finding = LeakFinding.objects.get()
    assert (finding.agent_id, finding.host, finding.pid, finding.process) == (agent.agent.id, "box", 9, "crawler")
    assert finding.confidence > 0.99
    hours_left = (finding.exhaustion_at - now).total_seconds() / 3600
    assert hours_left == pytest.approx(4000 / 40, rel=0.2)
    assert leaks.finding_dict(finding)["agent"] == agent.name
    assert leaks.weekly_summary(now)["findings"] == 1
