from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from monitoring.models import AgentRollup, AgentSample, HostRollup, HostSample
from monitoring.retention import roll_up_and_prune

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def host_sample(at, pressure, host="box"):
    HostSample.objects.create(
        host=host, at=at, pressure=pressure, total_bytes=1000, available_bytes=1000 - int(pressure * 10),
        used_bytes=int(pressure * 10), psi_some_avg10=pressure / 10,
    )


def agent_sample(agent, at, rss):
    AgentSample.objects.create(agent=agent, host="box", pid=7, process="crawler", at=at, rss_bytes=rss)


def test_it_rolls_complete_minutes_into_min_avg_max(agent):
    for second, pressure in [(0, 10), (20, 30), (40, 50), (65, 70)]:
        host_sample(T0 + timedelta(seconds=second), pressure)
        agent_sample(agent.agent, T0 + timedelta(seconds=second), pressure * 100)
    with time_machine.travel(T0 + timedelta(seconds=90), tick=False):
        done = roll_up_and_prune()
    assert done["host_minutes"] == 1  # 10:01 is not complete yet
    minute = HostRollup.objects.get()
    assert (minute.minute, minute.samples) == (T0, 3)
    assert (minute.pressure_min, minute.pressure_avg, minute.pressure_max) == (10, pytest.approx(30), 50)
    assert minute.psi_some_avg10_max == pytest.approx(5.0)
    process = AgentRollup.objects.get()
    assert (process.pid, process.process, process.rss_min, process.rss_max) == (7, "crawler", 1000, 5000)


def test_it_rerolls_late_samples_and_catches_up_after_a_pause(agent):
    host_sample(T0, 10)
    with time_machine.travel(T0 + timedelta(minutes=1, seconds=5), tick=False):
        roll_up_and_prune()
    host_sample(T0 + timedelta(seconds=30), 90)  # arrived late, for a rolled minute
    for hour in range(1, 4):  # and three hours of beat downtime
        host_sample(T0 + timedelta(hours=hour), 20)
    with time_machine.travel(T0 + timedelta(hours=4), tick=False):
        roll_up_and_prune()
    assert HostRollup.objects.get(minute=T0).pressure_max == 90
    assert HostRollup.objects.count() == 4


def test_it_prunes_raw_after_a_week_and_rollups_after_ninety_days(agent):
    host_sample(T0, 10)
    agent_sample(agent.agent, T0, 100)
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        roll_up_and_prune()
    with time_machine.travel(T0 + timedelta(days=6, hours=23), tick=False):
        assert roll_up_and_prune()["host_samples"] == 0
    with time_machine.travel(T0 + timedelta(days=7, minutes=1), tick=False):
        done = roll_up_and_prune()
    assert (done["host_samples"], done["agent_samples"], done["host_rollups"]) == (1, 1, 0)
    assert HostRollup.objects.count() == 1
    with time_machine.travel(T0 + timedelta(days=90, minutes=1), tick=False):
        done = roll_up_and_prune()
    assert (done["host_rollups"], done["agent_rollups"]) == (1, 1)
    assert HostRollup.objects.count() == AgentRollup.objects.count() == 0
