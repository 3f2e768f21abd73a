import dataclasses
import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError

from monitoring import detector, leaks
from monitoring.models import AgentSample, HostSample, LeakFinding, LeakWeek

T0 = datetime(2026, 11, 25, 10, 0, 20, tzinfo=UTC)
MIB = 1 << 20
P = detector.Params()


def series(shape, minutes=180, every=10, seed=7, sigma=1.5):
    """(time, rss) every `every` seconds, rss = shape(minutes since start) + AR(1) noise."""
    rng = random.Random(seed)
    e, points = 0.0, []
    for i in range(minutes * 60 // every):
        e = 0.6 * e + rng.gauss(0, sigma * 0.8)
        points.append((T0 + timedelta(seconds=i * every), int(shape(i * every / 60) + e * MIB)))
    return points


def leaking(minutes):
    return 400 * MIB + 10 * MIB * minutes / 60


def warm_up(minutes):
    return 300 * MIB + 300 * MIB * (1 - math.exp(-minutes / 20))


def one_step(minutes):
    return 400 * MIB + (150 * MIB if minutes >= 70 else 0)


def oscillating(minutes):
    return 400 * MIB + 40 * MIB * math.sin(2 * math.pi * minutes / 60)


def first_alarm(points, p=P):
    """Scan the series as the periodic task would, every 5 minutes; minutes to the first alarm."""
    epoch = [(at.timestamp(), float(v)) for at, v in points]
    for k in range(1, 37):
        now = points[0][0].timestamp() + k * 300
        end = detector.span_end(now, p.step)
        verdict = detector.judge([pt for pt in epoch if pt[0] < end], end, p)
        if verdict is not None and verdict.leaking:
            return k * 5
    return None


def test_it_finds_a_10_mib_an_hour_leak_within_the_hour_with_its_rate():
    points = series(leaking)
    assert first_alarm(points) <= 60
    end = detector.span_end((T0 + timedelta(minutes=90)).timestamp(), P.step)
    verdict = detector.judge([(at.timestamp(), float(v)) for at, v in points], end, P)
    assert verdict.leaking and verdict.slope_per_hour == pytest.approx(10 * MIB, rel=0.3)


def test_a_fast_leak_is_found_by_the_streak_of_steep_windows():
    points = series(lambda m: 400 * MIB + 60 * MIB * m / 60)
    assert first_alarm(points) <= 50
    end = detector.span_end((T0 + timedelta(minutes=50)).timestamp(), P.step)
    verdict = detector.judge([(at.timestamp(), float(v)) for at, v in points], end, P)
    assert verdict.leaking and verdict.reason == "a streak of steep windows"


def test_a_slow_noisy_leak_whose_evidence_dips_below_the_raising_z_is_not_cleared():
    # Hysteresis: raised at z >= 3, kept while the evidence dips (here to z 2.1 at 65 min).
    points = [(at.timestamp(), float(v))
              for at, v in series(lambda m: 400 * MIB + 5 * MIB * m / 60, seed=6, sigma=4)]
    verdicts = [detector.judge([pt for pt in points if pt[0] < end], end, P)
                for end in (detector.span_end((T0 + timedelta(minutes=m)).timestamp(), P.step) for m in (60, 65))]
    assert verdicts[0].leaking
    assert 1 <= verdicts[1].z < P.z_slope and not verdicts[1].leaking and not verdicts[1].stopped


def test_a_slow_leak_under_a_gc_sawtooth_is_found_within_the_hour_by_its_lower_envelope():
    # The block medians swing with the sawtooth's phase; the post-GC level is what rises.
    for seed in (4, 5):
        points = series(lambda m: 400 * MIB + 5 * MIB * m / 60 + 30 * MIB * (m * 60 % 170) / 170, seed=seed)
        assert first_alarm(points) <= 60


@pytest.mark.parametrize(("name", "seed"), [("leak-gc-sawtooth-5-0", 12), ("leak-gc-sawtooth-5-0", 109),
                                           ("leak-gc-sawtooth-5-1", 12), ("leak-gc-sawtooth-5-1", 106)])
def test_bench_sawtooth_leaks_the_block_medians_found_late_are_found_within_the_hour(name, seed):
    # The last two were found at 70 and 65 minutes by 3-minute minima (an envelope as noisy
    # as one sample a cycle); the post-collection floor uses every sample of a cycle.
    from bench.leak_corpus import EVERY, corpus

    s = next(c for c in corpus(seed) if c.name == name)
    points = [(BENCH_T0 + timedelta(seconds=i * EVERY), v) for i, v in enumerate(s.values)]
    minute = first_alarm(points)
    assert minute is not None and minute <= 60
    end = detector.span_end((BENCH_T0 + timedelta(minutes=minute)).timestamp(), P.step)
    verdict = detector.judge([(at.timestamp(), float(v)) for at, v in points
                              if at.timestamp() < end], end, P)
    assert verdict.leaking and verdict.reason.endswith(("(post-collection floor)", "(collection troughs)"))


def test_a_last_third_that_reads_flat_is_no_plateau_when_the_span_does_not_bend_over():
    # Bench seed 259: a 5 MiB/h leak under the sawtooth whose floor's last third read flat by
    # chance at 55 minutes (the thirds' deceleration beyond two standard errors) while the
    # quadratic fit did not bend over: it was found at 70 minutes.
    from bench.leak_corpus import EVERY, corpus

    s = next(c for c in corpus(259) if c.name == "leak-gc-sawtooth-5-0")
    points = [(BENCH_T0 + timedelta(seconds=i * EVERY), v) for i, v in enumerate(s.values)]
    assert first_alarm(points) <= 60


def sawtooth(height, period=173.0):
    """A GC sawtooth: `height(minutes)` MiB of rise over each `period` seconds, then a drop."""
    return lambda m: height(m) * MIB * ((m * 60) % period) / period


def test_a_leak_under_a_sawtooth_of_changing_height_is_found_by_its_collection_troughs():
    # The cycles' rise swings (30 ± 10 MiB over 40 minutes), so no one rise fits them and the
    # fitted floor is too noisy; each cycle's lowest sample still carries the leak (found
    # at 50-80 minutes: one sample a cycle, and a third look asks for z 3.5, not 3).
    swing = sawtooth(lambda m: 30 + 10 * math.sin(2 * math.pi * m / 40))
    for seed in range(4):
        points = series(lambda m: 400 * MIB + 5 * MIB * m / 60 + swing(m), seed=seed)
        minute = first_alarm(points)
        assert minute is not None and minute <= 90
        end = detector.span_end((T0 + timedelta(minutes=minute)).timestamp(), P.step)
        verdict = detector.judge([(at.timestamp(), float(v)) for at, v in points if at.timestamp() < end], end, P)
        assert verdict.reason.endswith("(collection troughs)")


def test_the_floor_of_a_sawtooth_whose_cycles_grow_taller_stays_flat():
    # A young generation that grows (20 MiB cycles to 40 over the hour) over a flat floor: a
    # single rise for every cycle would read the taller cycles as a rising floor.
    points = [(at.timestamp(), float(v)) for at, v in
              series(lambda m: 400 * MIB + sawtooth(lambda m: 20 + 20 * min(m, 60) / 60)(m), minutes=60)]
    falls = detector.collections(points, P.collection_drop)
    assert len(falls) >= 18
    floor = detector.floor_series(points, falls)
    line = detector.fit([t / 3600 for t, _ in floor], [v for _, v in floor])
    assert abs(line.slope) < P.floor_abs


def test_the_fitted_floor_counts_only_where_the_troughs_agree():
    # Cycles growing slowly taller (20 MiB to 40 over three hours) over a flat floor: too
    # slowly for the fitted rise to take a trend, so the fitted floor creeps up; the troughs
    # (each cycle's lowest sample) stay flat and veto it.
    saw = sawtooth(lambda m: 20 + 20 * m / 180)
    points = series(lambda m: 400 * MIB + saw(m), seed=9)
    assert first_alarm(points) is None
    assert first_alarm(points, dataclasses.replace(P, z_confirm=-math.inf)) is not None


@pytest.mark.parametrize("height", [lambda m: 30 + 10 * math.sin(2 * math.pi * m / 40), lambda m: 40],
                         ids=["swinging", "steady"])
def test_it_never_flags_a_healthy_sawtooth(height):
    saw = sawtooth(height)
    for seed in range(3):
        assert first_alarm(series(lambda m: 400 * MIB + saw(m), seed=seed)) is None


@pytest.mark.parametrize("shape", [warm_up, one_step, oscillating], ids=["warm-up", "single step", "oscillation"])
def test_it_never_flags_a_warm_up_a_step_or_an_oscillation(shape):
    for seed in range(3):
        assert first_alarm(series(shape, seed=seed)) is None


# Healthy processes of the bench corpus (bench/leak_corpus.py, its series starting at the
# bench's first moment) that the earlier detector (medians of 15-minute windows, a streak
# of rises, batch-means noise) flagged as leaks, each with the seed of a corpus where it
# did and the minute of that false alarm.
BENCH_T0 = datetime(2026, 11, 2, 9, 3, 20, tzinfo=UTC)
EARLIER_FALSE_ALARMS = [
    ("healthy-flat-1", 101, 45),
    ("healthy-flat-noisy-0", 106, 90),
    ("healthy-gc-sawtooth-0", 107, 45),
    ("healthy-warm-up-fast-1", 109, 60),
    ("healthy-warm-up-slow-noisy-1", 100, 180),
    ("healthy-restart-pid-reused-0", 108, 60),
    # Flagged by a lower envelope of 3-minute minima when it was judged on every series; the
    # looks at a sawtooth's floor now run only where there are collections to cut cycles at.
    ("healthy-flat-noisy-1", 109, 65),
    ("healthy-warm-up-fast-0", 109, 75),
    # Flagged by the collection troughs (z 5.2 at 175 minutes) while their line's noise
    # could be scaled down for a negative lag-one correlation, and they asked for z 3 as the
    # block medians do: one point a cycle is independent, and a third look needs more.
    ("healthy-gc-sawtooth-0", 200, 175),
    # Flagged at z 3.6 (a chance upswing at the span's end) while the last quarter had only
    # to top the flat history's windows by half the span's net growth, with no regard to
    # the noise: it did by 1.9 MiB, where two standard errors of that difference are 3.1.
    ("healthy-flat-noisy-1", 243, 110),
    # Flagged by the collection troughs (z 4.2 at 60 minutes) while their line's lag-one
    # correlation, from some twenty troughs, was taken as read: the residuals of a fitted
    # line read it low by about (2 + 4ρ) / n, a tenth at that length, and the slope's noise
    # with it.
    ("healthy-gc-sawtooth-1", 360, 60),
]


@pytest.mark.parametrize(("name", "seed", "minute"), EARLIER_FALSE_ALARMS, ids=[n for n, _, _ in EARLIER_FALSE_ALARMS])
def test_healthy_processes_the_earlier_detector_flagged_are_not_flagged(name, seed, minute):
    from bench.leak_corpus import EVERY, corpus

    s = next(c for c in corpus(seed) if c.name == name)
    points = [(BENCH_T0 + timedelta(seconds=i * EVERY), v) for i, v in enumerate(s.values)]
    assert first_alarm(points) is None


def test_it_ignores_spikes_on_a_flat_process():
    points = series(lambda m: 500 * MIB)
    for i in range(0, len(points), 37):
        points[i] = (points[i][0], 4000 * MIB)
    assert first_alarm(points) is None


def test_it_reads_a_window_without_samples_as_a_stop():
    points = [(at.timestamp(), float(v)) for at, v in series(leaking, minutes=60)]
    end = detector.span_end((T0 + timedelta(minutes=95)).timestamp(), P.step)
    verdict = detector.judge(points, end, P)
    assert verdict is not None and verdict.stopped and not verdict.leaking


def store(agent, points, pid=9, host="box", process="crawler"):
    AgentSample.objects.bulk_create(
        AgentSample(agent=agent, host=host, pid=pid, process=process, at=at, rss_bytes=rss) for at, rss in points
    )


def host_memory(host="box", at=T0, available=4000 * MIB, limit=None):
    HostSample.objects.create(host=host, at=at, pressure=50, total_bytes=8000 * MIB, available_bytes=available,
                              used_bytes=8000 * MIB - available, cgroup_limit_bytes=limit)


@pytest.mark.django_db
def test_it_records_one_finding_per_episode_with_a_forecast_and_pushes_it_once(agent, django_capture_on_commit_callbacks):
    host_memory()
    store(agent.agent, series(leaking, minutes=90))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        found = sum(leaks.scan(T0 + timedelta(minutes=m)) for m in range(5, 91, 5))
    assert found == 1 and len(callbacks) == 1
    finding = LeakFinding.objects.get()
    assert (finding.agent_id, finding.host, finding.pid, finding.process, finding.status) == (
        agent.agent.id, "box", 9, "crawler", "suspected")
    assert finding.detected_at <= T0 + timedelta(minutes=60)
    hours_left = (finding.exhaustion_at - finding.last_seen_at).total_seconds() / 3600
    assert hours_left == pytest.approx(4000 / 10, rel=0.3)


@pytest.mark.django_db
def test_it_forecasts_against_the_cgroup_limit_when_it_is_smaller(agent):
    host_memory(limit=600 * MIB)
    store(agent.agent, series(leaking, minutes=90))
    leaks.scan(T0 + timedelta(minutes=90))
    finding = LeakFinding.objects.get()
    hours_left = (finding.exhaustion_at - finding.last_seen_at).total_seconds() / 3600
    # About 415 MiB used of 600 MiB, growing 10 MiB/h.
    assert hours_left == pytest.approx((600 - 415) / 10, rel=0.3)


@pytest.mark.django_db
def test_it_clears_a_finding_when_the_trend_stops(agent):
    def rise_then_flat(m):
        return leaking(min(m, 80))

    store(agent.agent, series(rise_then_flat, minutes=150))
    leaks.scan(T0 + timedelta(minutes=75))
    assert LeakFinding.objects.get().status == "suspected"
    for m in range(80, 151, 5):
        leaks.scan(T0 + timedelta(minutes=m))
    finding = LeakFinding.objects.get()
    assert finding.status == "cleared" and finding.cleared_at is not None


@pytest.mark.django_db
def test_a_dismissed_finding_stays_dismissed_while_the_leak_goes_on(agent):
    store(agent.agent, series(leaking, minutes=120))
    leaks.scan(T0 + timedelta(minutes=75))
    finding = LeakFinding.objects.get()
    assert leaks.dismiss(finding.id, "olga", "a cache filling on purpose")
    assert not leaks.dismiss(finding.id, "ivan", "again")  # the first mark stands
    assert leaks.scan(T0 + timedelta(minutes=120)) == 0
    finding.refresh_from_db()
    assert (finding.status, finding.dismissed_by, finding.dismiss_reason) == (
        "dismissed", "olga", "a cache filling on purpose")
    assert LeakFinding.objects.count() == 1


@pytest.mark.django_db
def test_after_a_dismissed_episode_ends_a_new_leak_is_a_new_finding(agent):
    def leak_pause_leak(m):
        return leaking(min(m, 70)) + (10 * MIB * (m - 130) / 60 if m > 130 else 0)

    store(agent.agent, series(leak_pause_leak, minutes=220))
    leaks.scan(T0 + timedelta(minutes=70))
    first = LeakFinding.objects.get()
    assert leaks.dismiss(first.id, "olga", "expected")
    for m in range(75, 221, 5):
        leaks.scan(T0 + timedelta(minutes=m))
    first.refresh_from_db()
    assert first.status == "dismissed" and first.cleared_at is not None
    second = LeakFinding.objects.exclude(pk=first.pk).get()
    assert second.status == "suspected" and second.detected_at > first.cleared_at


@pytest.mark.django_db
def test_it_finds_a_leaking_host_process_from_the_workers_samples():
    rows = series(leaking, minutes=90, every=10)
    HostSample.objects.bulk_create(
        HostSample(host="bare", at=at, pressure=40, total_bytes=8000 * MIB, available_bytes=5000 * MIB,
                   used_bytes=3000 * MIB, top_processes=[{"pid": 77, "name": "java", "rss_bytes": rss, "vms_bytes": rss},
                                                         {"pid": 1, "name": "init", "rss_bytes": 9 * MIB, "vms_bytes": 0}])
        for at, rss in rows
    )
    assert leaks.scan(T0 + timedelta(minutes=90)) == 1
    finding = LeakFinding.objects.get()
    assert (finding.agent_id, finding.host, finding.pid, finding.process) == (None, "bare", 77, "java")


@pytest.mark.django_db
def test_leakscan_judges_backfilled_samples_by_their_own_time_and_prints_json(agent, capsys):
    host_memory()
    store(agent.agent, series(leaking, minutes=90))
    store(agent.agent, series(warm_up, minutes=90, seed=3), pid=10, process="warm")
    call_command("leakscan", "--at", "2026-11-25T10:40:20Z", "--json")
    assert capsys.readouterr().out == ""  # not yet: 40 minutes of samples
    call_command("leakscan", "--at", (T0 + timedelta(minutes=90)).isoformat(), "--json")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert set(row) == {"id", "agent", "host", "pid", "process", "status", "slope_bytes_per_hour",
                        "first_detected_at", "exhaustion_at"}
    assert (row["agent"], row["host"], row["pid"], row["process"], row["status"]) == (
        agent.agent.name, "box", 9, "crawler", "suspected")
    assert row["slope_bytes_per_hour"] == pytest.approx(10 * MIB, rel=0.3)
    # The finding is not active at an earlier moment.
    call_command("leakscan", "--at", "2026-11-25T10:30:00Z", "--json")
    assert capsys.readouterr().out == ""
    call_command("leakscan", "--at", (T0 + timedelta(minutes=90)).isoformat())
    assert "crawler (pid 9) on box" in capsys.readouterr().out


@pytest.mark.django_db
def test_leakscan_refuses_a_moment_it_cannot_read():
    with pytest.raises(CommandError, match="ISO-8601"):
        call_command("leakscan", "--at", "yesterday")


@pytest.mark.django_db
def test_the_weekly_scan_is_stored_and_mailed_once(agent, settings):
    from django.contrib.auth.models import Group, User

    from monitoring.tasks import handle_weekly_leaks

    boss = User.objects.create_user("boss", email="boss@example.com")
    boss.groups.add(Group.objects.get_or_create(name="managers")[0])
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    common = {"agent": agent.agent, "host": "box", "process": "p", "confidence": 0.9, "last_seen_at": monday}
    LeakFinding.objects.create(pid=1, slope_bytes_per_hour=5 * MIB, detected_at=monday + timedelta(days=1), **common)
    LeakFinding.objects.create(pid=2, slope_bytes_per_hour=9 * MIB, detected_at=monday + timedelta(days=2),
                               status="dismissed", **common)
    LeakFinding.objects.create(pid=2, slope_bytes_per_hour=7 * MIB, detected_at=monday + timedelta(days=3),
                               status="cleared", **common)
    LeakFinding.objects.create(pid=3, slope_bytes_per_hour=99 * MIB, detected_at=monday + timedelta(days=8), **common)
    now = monday + timedelta(days=7, hours=6)
    assert handle_weekly_leaks(now) is True
    assert handle_weekly_leaks(now) is False
    week = LeakWeek.objects.get()
    assert (str(week.week), week.findings, week.processes, week.fastest_bytes_per_hour, week.cleared, week.dismissed) == (
        "2026-11-23", 3, 2, 9 * MIB, 1, 1)
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["boss@example.com"]
    assert "Fastest growth: 9.0 MiB/h" in mail.outbox[0].body


@pytest.mark.django_db(transaction=True)
def test_two_scans_at_once_record_each_leak_once(agent):
    import threading

    from django.db import connection

    for pid in range(12):
        store(agent.agent, series(leaking, minutes=90, seed=pid), pid=pid)
    now = T0 + timedelta(minutes=90)
    start = threading.Barrier(2)
    found, errors = [], []

    def scanner():
        try:
            start.wait()
            found.append(leaks.scan(now))
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=scanner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    count = LeakFinding.objects.count()
    assert count >= 10 and sorted(found) == [0, count]
    assert LeakFinding.objects.values("pid").distinct().count() == count
