"""A labelled corpus of process memory series for the leak detector (fixed seed).

Every series is three hours of samples every 10 s (the SDK reporter's default interval)
with AR(1) noise (φ = 0.6, σ = 1.5 MiB; 5 MiB for the noisy leaks and the noisy healthy
shapes) on a level between 150 and 800 MiB. Leaks carry their rate and onset; healthy shapes carry none.

The linear leaks are also generated at the noise levels between (`NOISE_SHAPES`: σ 2 and
3 MiB) from a random stream of their own, so adding them left every other series of a
seed as it was; with `linear` (σ 1.5) and `noisy` (σ 5) they give recall by noise level.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MIB = 1 << 20
HOURS = 3.0
EVERY = 10.0  # seconds between samples
LEAK_RATES = [1, 2, 3, 5, 10, 20, 50, 100]  # MiB/h
NOISE_SHAPES = {"noisy-2": 2.0, "noisy-3": 3.0}  # linear leaks at σ 2 and 3 MiB
LEAK_SHAPES = ["linear", "gc-sawtooth", "late-onset", "bursty", "noisy", *NOISE_SHAPES]
NOISE_LEVELS = {"linear": 1.5, **NOISE_SHAPES, "noisy": 5.0}  # σ MiB of the linear leaks from the first sample
HEALTHY_SHAPES = [
    "flat", "flat-noisy", "gc-sawtooth", "warm-up-fast", "warm-up-slow", "warm-up-slow-noisy", "spikes",
    "oscillation-slow",
    "oscillation-fast", "rise-and-release", "single-step", "restart-pid-reused",
]
REPEATS = 2


@dataclass
class Series:
    name: str
    kind: str  # "leak" or "healthy"
    shape: str
    rate_mib_h: float  # 0 for healthy
    onset_s: float  # seconds after the first sample when the leak starts
    values: list[float]  # rss bytes, one per EVERY seconds


def _noise(rng: random.Random, n: int, sigma: float, phi: float = 0.6) -> list[float]:
    innovation = sigma * math.sqrt(1 - phi * phi)
    e, out = rng.gauss(0, sigma), []
    for _ in range(n):
        e = phi * e + rng.gauss(0, innovation)
        out.append(e)
    return out


def _sawtooth(t: float, amplitude: float, period: float) -> float:
    return amplitude * ((t % period) / period)


def _leak(shape: str, rate: float, rng: random.Random, n: int) -> tuple[list[float], float]:
    base = rng.uniform(150, 800) * MIB
    per_s = rate * MIB / 3600
    onset = 80 * 60.0 if shape == "late-onset" else 0.0
    sigma = NOISE_LEVELS.get(shape, 1.5) * MIB
    noise = _noise(rng, n, sigma)
    steps: list[float] = []
    if shape == "bursty":
        t = rng.uniform(0, 600)
        while t < HOURS * 3600:
            steps.append(t)
            t += rng.uniform(300, 1200)
    values = []
    for i in range(n):
        t = i * EVERY
        grown = max(0.0, t - onset) * per_s
        if shape == "bursty":
            # The same growth, delivered in steps: each step brings what accrued since the last.
            done = [s for s in steps if s <= t]
            grown = done[-1] * per_s if done else 0.0
        v = base + grown + noise[i]
        if shape == "gc-sawtooth":
            v += _sawtooth(t, 30 * MIB, 170.0)
        values.append(v)
    return values, onset


def _healthy(shape: str, rng: random.Random, n: int) -> list[float]:
    base = rng.uniform(150, 800) * MIB
    noise = _noise(rng, n, (5 if shape.endswith("-noisy") else 1.5) * MIB)
    spikes = {rng.randrange(n) for _ in range(n // 100)}
    values = []
    for i in range(n):
        t, m = i * EVERY, i * EVERY / 60
        v = base
        if shape == "gc-sawtooth":
            v += _sawtooth(t, 40 * MIB, 170.0)
        elif shape == "warm-up-fast":
            v += 300 * MIB * (1 - math.exp(-m / 3))
        elif shape in ("warm-up-slow", "warm-up-slow-noisy"):
            v += 300 * MIB * (1 - math.exp(-m / 20))
        elif shape == "spikes":
            if i in spikes:
                v += rng.uniform(50, 400) * MIB
            if 95 <= m < 96.5:
                v += 120 * MIB  # a short burst of work
        elif shape == "oscillation-slow":
            v += 40 * MIB * math.sin(2 * math.pi * m / 60)
        elif shape == "oscillation-fast":
            v += 30 * MIB * math.sin(2 * math.pi * m / 10)
        elif shape == "rise-and-release":
            phase = m % 60
            v += 100 * MIB * (min(phase, 15) / 15 if phase < 30 else 0)
        elif shape == "single-step":
            v += 150 * MIB if m >= 70 else 0
        elif shape == "restart-pid-reused":
            since = m % 60  # the process restarts (same pid) every hour and warms up again
            v = 100 * MIB + (base - 100 * MIB) * (1 - math.exp(-since / 3))
        values.append(v + noise[i])
    return values


def corpus(seed: int = 12) -> list[Series]:
    rng = random.Random(seed)
    n = int(HOURS * 3600 / EVERY)
    out = []
    for repeat in range(REPEATS):
        for shape in LEAK_SHAPES:
            if shape in NOISE_SHAPES:
                continue
            for rate in LEAK_RATES:
                values, onset = _leak(shape, rate, rng, n)
                out.append(Series(f"leak-{shape}-{rate}-{repeat}", "leak", shape, rate, onset, values))
        for shape in HEALTHY_SHAPES:
            out.append(Series(f"healthy-{shape}-{repeat}", "healthy", shape, 0, 0, _healthy(shape, rng, n)))
    extra = random.Random(f"{seed}-noise")
    for repeat in range(REPEATS):
        for shape in NOISE_SHAPES:
            for rate in LEAK_RATES:
                values, onset = _leak(shape, rate, extra, n)
                out.append(Series(f"leak-{shape}-{rate}-{repeat}", "leak", shape, rate, onset, values))
    return out
