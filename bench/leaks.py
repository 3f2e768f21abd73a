"""The leak detector against a labelled corpus, through the real path; and the scan's cost.

    .venv/bin/python bench/leaks.py                     # SQLite + a private Redis
    .venv/bin/python bench/leaks.py --replay --seeds 200-259   # detector.judge alone, no database
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/oversight_bench REDIS_URL=redis://127.0.0.1:6379/8 \
        .venv/bin/python bench/leaks.py

1. Quality. `bench/leak_corpus.py` generates, with a fixed seed, three hours of samples
   every 10 s for each series: leaks of 1–100 MiB/h (linear, under a GC sawtooth, late
   onset, bursty steps, noisy) and healthy shapes (flat, sawtooth, warm-up plateaus
   fast and slow, spikes, oscillations slow and fast, rise-and-release, a single step,
   restarts with the pid reused). Every series is stored as an agent process's
   `AgentSample` rows; then the clock travels from the first sample to the last in
   steps of MONITORING_LEAK_SCAN_SECONDS and at each step the periodic task
   (`monitoring.leak_scan`) runs, exactly as beat would run it. Printed: recall by leak
   rate (found within 60 minutes of onset, and found at all), recall by shape for the
   rates ≥ 5 MiB/h, recall within 60 minutes by noise level (the linear leaks at σ 1.5,
   2, 3 and 5 MiB), false alarms by healthy shape, and detection delays. `--seeds 100-119`
   runs the corpus of each seed in turn (a line per seed, then the tables pooled). Each
   seed's findings are checked against the replay below (same findings, same minutes).
   `--replay` scores by the replay alone: the same scans over `detector.judge` without
   the database (about 2 s a seed, where the real path takes minutes), for many seeds.
2. Cost: one scan over --processes agent processes × 2 h of samples every 10 s
   (CPU seconds of this process, and wall time), beside the scan interval.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import bench_env, django_here, migrated_agent_key  # noqa: E402
from bench.leak_corpus import EVERY, HEALTHY_SHAPES, LEAK_RATES, LEAK_SHAPES, MIB, NOISE_LEVELS, corpus  # noqa: E402
from oversight.runner import Supervisor  # noqa: E402

T0 = datetime(2026, 11, 2, 9, 3, 20, tzinfo=UTC)  # not on a window boundary
GOAL_MINUTES = 60
SEED = 12


def store_corpus(agent, series) -> None:
    from monitoring.models import AgentSample, HostSample

    HostSample.objects.create(host="bench", at=T0, pressure=40, total_bytes=16384 * MIB,
                              available_bytes=8192 * MIB, used_bytes=8192 * MIB)
    rows = [
        AgentSample(agent=agent, host="bench", pid=1000 + n, process=s.name, at=T0 + timedelta(seconds=i * EVERY),
                    rss_bytes=int(v))
        for n, s in enumerate(series) for i, v in enumerate(s.values)
    ]
    AgentSample.objects.bulk_create(rows, batch_size=2000)


def run_scans(hours: float) -> int:
    """The periodic task at its cadence, with the clock travelled."""
    import time_machine
    from django.conf import settings

    from monitoring.tasks import leak_scan

    step = timedelta(seconds=settings.MONITORING_LEAK_SCAN_SECONDS)
    now, scans = T0 + step, 0
    while now <= T0 + timedelta(hours=hours):
        with time_machine.travel(now, tick=False):
            leak_scan()
        now += step
        scans += 1
    return scans


def measure(agent, seed: int) -> dict:
    """Store the corpus of `seed`, run the periodic task over it, and score the findings."""
    from monitoring.models import AgentSample, HostSample, LeakFinding

    AgentSample.objects.all().delete()
    HostSample.objects.all().delete()
    LeakFinding.objects.all().delete()
    series = corpus(seed)
    store_corpus(agent, series)
    started = time.perf_counter()
    scans = run_scans(3.0)
    elapsed = time.perf_counter() - started
    found: dict[int, list[float]] = defaultdict(list)
    for f in LeakFinding.objects.order_by("detected_at"):
        found[f.pid - 1000].append((f.detected_at - T0).total_seconds() / 60)
    return score(seed, series, found, scans, elapsed)


def replay(seed: int, hours: float = 3.0) -> dict:
    """The same scans as `measure` over `detector.judge` alone, without the database: the
    same moments, the samples as stored (whole bytes, read from the span and history before
    each scan's end), and a finding's life as `leaks.handle_one_verdict` leads it (a new
    finding when a process is first judged leaking, cleared when the verdict says stopped)."""
    from django.conf import settings

    from monitoring.detector import judge, span_end
    from monitoring.leaks import params

    p, series, t0 = params(), corpus(seed), T0.timestamp()
    step = settings.MONITORING_LEAK_SCAN_SECONDS
    scans = int(hours * 3600 // step)
    started = time.perf_counter()
    found: dict[int, list[float]] = defaultdict(list)
    for n, s in enumerate(series):
        points = [(t0 + i * EVERY, float(int(v))) for i, v in enumerate(s.values)]
        times = [t for t, _ in points]
        active = False
        for k in range(1, scans + 1):
            end = span_end(t0 + k * step, p.step)
            read = points[bisect.bisect_left(times, end - p.span() - p.history): bisect.bisect_left(times, end)]
            if not read:  # silent for the span and the history: the process is gone
                active = False
                continue
            verdict = judge(read, end, p)
            if verdict is not None and verdict.leaking:
                if not active:
                    found[n].append(k * step / 60)
                active = True
            elif verdict is not None and verdict.stopped:
                active = False
    return score(seed, series, found, scans, time.perf_counter() - started)


def score(seed: int, series, found: dict[int, list[float]], scans: int, elapsed: float) -> dict:
    """Recall, delays and false alarms from `found`: each series' findings, the minutes
    (after the first sample) at which each was detected."""
    out = {"seed": seed, "series": series, "scans": scans, "elapsed": elapsed, "found": found,
           "delays": defaultdict(list), "by_rate": defaultdict(list), "at_all": defaultdict(list),
           "by_shape": defaultdict(list), "alarms": defaultdict(int), "misses": [], "false": [], "split": [],
           "by_noise": defaultdict(list)}
    for n, s in enumerate(series):
        detected = found[n][0] if found.get(n) else None
        if s.kind == "healthy":
            out["alarms"][s.shape] += detected is not None
            if detected is not None:
                out["false"].append(f"{s.name} ({detected:.0f} min)")
            continue
        delay = None if detected is None else detected - s.onset_s / 60
        in_time = delay is not None and delay <= GOAL_MINUTES
        out["by_rate"][s.rate_mib_h].append(in_time)
        if s.shape in NOISE_LEVELS:
            out["by_noise"][(NOISE_LEVELS[s.shape], s.rate_mib_h)].append(in_time)
        out["at_all"][s.rate_mib_h].append(delay is not None)
        if len(found[n]) > 1:
            out["split"].append(f"{s.name} ({len(found[n])} findings)")
        if delay is not None:
            out["delays"][s.rate_mib_h].append(delay)
        if s.rate_mib_h >= 5:
            out["by_shape"][s.shape].append(in_time)
            if not in_time:
                out["misses"].append(f"{s.name} ({'never' if delay is None else f'{delay:.0f} min'})")
    return out


def print_tables(runs: list[dict]) -> None:
    """Recall by rate and by shape, false alarms by shape, delays: pooled over `runs`."""
    def pooled(key: str) -> dict:
        merged: dict = defaultdict(list)
        for r in runs:
            for k, v in r[key].items():
                merged[k] += v
        return merged

    delays, by_rate, at_all, by_shape = pooled("delays"), pooled("by_rate"), pooled("at_all"), pooled("by_shape")
    print("| leak rate | recall ≤ 60 min | recall in 3 h | median delay | max delay |")
    print("|---:|---:|---:|---:|---:|")
    for rate in LEAK_RATES:
        d = delays[rate]
        print(f"| {rate} MiB/h | {sum(by_rate[rate]) / len(by_rate[rate]):.2f} | "
              f"{sum(at_all[rate]) / len(at_all[rate]):.2f} | "
              f"{f'{statistics.median(d):.0f} min' if d else '–'} | {f'{max(d):.0f} min' if d else '–'} |")
    print("\n| leak shape (≥ 5 MiB/h) | recall ≤ 60 min |")
    print("|---|---:|")
    for shape in LEAK_SHAPES:
        print(f"| {shape} | {sum(by_shape[shape]) / len(by_shape[shape]):.2f} |")
    by_noise = pooled("by_noise")
    rates = [r for r in LEAK_RATES if r >= 3]
    print("\n| noise σ (linear leaks from the first sample) | " + " | ".join(f"{r} MiB/h" for r in rates) + " |")
    print("|---|" + "---:|" * len(rates))
    for sigma in sorted(set(NOISE_LEVELS.values())):
        print(f"| {sigma:g} MiB | " + " | ".join(f"{sum(by_noise[(sigma, r)]) / len(by_noise[(sigma, r)]):.2f}"
                                             for r in rates) + " |")
    print("\n| healthy shape | series | false alarms |")
    print("|---|---:|---:|")
    total = 0
    for shape in HEALTHY_SHAPES:
        count = sum(1 for r in runs for s in r["series"] if s.kind == "healthy" and s.shape == shape)
        alarms = sum(r["alarms"][shape] for r in runs)
        total += alarms
        print(f"| {shape} | {count} | {alarms} |")
    print(f"\nfalse alarms: {total}; leaks ≥ 5 MiB/h missed within 60 min: "
          f"{', '.join(m for r in runs for m in r['misses']) or 'none'}")
    print(f"leaks split into several findings: {', '.join(m for r in runs for m in r['split']) or 'none'}")


def quality(agent, seeds: list[int]) -> None:
    """Score the corpus of each seed: through the real path given an agent (and check that
    the replay over `detector.judge` finds the same), or by the replay alone."""
    runs = []
    for seed in seeds:
        run = measure(agent, seed) if agent is not None else replay(seed)
        runs.append(run)
        if agent is not None:
            again = replay(seed)["found"]
            differ = [s.name for n, s in enumerate(run["series"]) if run["found"].get(n, []) != again.get(n, [])]
            print(f"seed {seed}: the replay without the database finds "
                  f"{'the same findings at the same minutes' if not differ else 'otherwise for ' + ', '.join(differ)}",
                  flush=True)
        if len(seeds) > 1:
            found = sum(v for r in run["by_rate"] if r >= 5 for v in run["by_rate"][r])
            wanted = sum(len(run["by_rate"][r]) for r in run["by_rate"] if r >= 5)
            print(f"seed {seed}: recall ≥ 5 MiB/h within 60 min {found}/{wanted}, "
                  f"false alarms {len(run['false'])} {', '.join(run['false'])}; "
                  f"{run['scans']} scans in {run['elapsed']:.1f} s", flush=True)
    first = runs[0]
    how = "the periodic task" if agent is not None else "`detector.judge` (replayed, no database)"
    print(f"\n{len(first['series'])} series per seed, seeds {', '.join(str(s) for s in seeds)}; "
          f"{first['scans']} scans of {how} over 3 h of sample time each\n")
    print_tables(runs)


def cost(agent, processes: int) -> None:
    from django.conf import settings

    from monitoring.leaks import scan
    from monitoring.models import AgentSample, LeakFinding

    AgentSample.objects.all().delete()
    LeakFinding.objects.all().delete()
    start = T0 + timedelta(days=1)
    per = int(2 * 3600 / EVERY)
    batch = []
    for pid in range(processes):
        base = (200 + pid % 500) * MIB
        for i in range(per):
            batch.append(AgentSample(agent=agent, host="cost", pid=pid, process="w",
                                     at=start + timedelta(seconds=i * EVERY), rss_bytes=base + (i * 7919 % 4096) * 1024))
        if len(batch) >= 20000:
            AgentSample.objects.bulk_create(batch, batch_size=5000)
            batch = []
    AgentSample.objects.bulk_create(batch, batch_size=5000)
    now = start + timedelta(hours=2)
    rounds = []
    for _ in range(3):
        cpu, wall = time.process_time(), time.perf_counter()
        scan(now)
        rounds.append((time.process_time() - cpu, time.perf_counter() - wall))
    cpu, wall = min(r[0] for r in rounds), min(r[1] for r in rounds)
    print(f"\nscan of {processes} processes × 2 h of samples every {EVERY:.0f} s ({processes * per} rows): "
          f"{cpu:.2f} s CPU, {wall:.2f} s wall (best of 3); scan interval {settings.MONITORING_LEAK_SCAN_SECONDS:.0f} s")


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=1000, help="processes in the cost run (0: skip it)")
    parser.add_argument("--seeds", default=str(SEED),
                        help=f"corpus seeds: a list and/or ranges, e.g. 100-119 or 12,100-104 (default {SEED})")
    parser.add_argument("--replay", action="store_true",
                        help="score by the replay over detector.judge alone: no database, no cost run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oversight-bench-"))
    if args.replay:
        django_here(bench_env(work))
        quality(None, seeds(args.seeds))
        return 0
    supervisor = Supervisor(prefix_logs=False)
    try:
        env = bench_env(work, supervisor)
        migrated_agent_key(env)
        django_here(env)
        from oversight.models import Agent

        agent = Agent.objects.order_by("-id").first()
        print(f"database: {env['DATABASE_URL'].split('://')[0]}")
        quality(agent, seeds(args.seeds))
        if args.processes:
            cost(agent, args.processes)
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
