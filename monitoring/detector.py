"""The leak detector's judgement of one process's memory series: pure, no database.

The series is cut into fixed windows over *sample time* (aligned to the epoch, every
`window` seconds), so a window's contents never change from one scan to the next and a
few minutes of warm-up cannot slide into the evidence. Only complete windows count.
Each window is summarised by its **level**, the median of its samples (one spike moves
a median by one rank, never by its height).

How much a level can move by noise alone is measured from the data itself, by batch
means (the variance correction for autocorrelated series): every window is cut into
`blocks` blocks of a few minutes, far longer than the samples' correlation time, so
block medians are nearly independent where raw samples are not (neighbouring samples
of real memory, and of any smoothed series, are strongly correlated, which is what made
Mann–Kendall's p-values on raw points far too small). The block medians' noise σ comes
from their second differences (1.4826 × MAD / √6), which cancel a trend and its
curvature, so a steep warm-up does not pass its own shape off as noise. The standard
error of a level is σ / √blocks; of a rise, √2 times that.

A process is leaking when, over the last `streak` + 1 complete windows, all hold:

- **streak**: every window's level is above the previous one's (a trend that
  continues, window after window);
- **significance**: the net growth (last level − first) exceeds `z_net` standard errors;
- **floor**: the growth rate is at least `floor_abs` bytes/h and `floor_rel` of the level
  per hour (a big process drifting by a hair is not a leak);
- **not a plateau**: the last rise is not significantly smaller than 0.7 × the first,
  and the span's rate not significantly below 0.7 × the rate over the `history` before
  it (a warm-up decelerates towards its plateau; a leak does not);
- **not a step**: a line explains the block medians better than a single step does
  (one jump, then flat, is an allocation, not a leak);
- **a new high**: the last level is above every level of the preceding `history` by
  half the net growth at least (an oscillation or a rise-and-release comes back to
  where it was; a leak leaves its past below it).

A suspect is **cleared** when the trend has stopped: over the last two windows the level
grew by less than the floor rate allows (or by less than the noise), or the process sent
nothing in the last window.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

MIN_POINTS = 5  # samples a window needs to have a level
MIN_NOISE = 64 * 1024  # bytes: a level is never known better than this


@dataclass(frozen=True)
class Params:
    window: float = 900.0  # seconds
    streak: int = 2  # consecutive rises: streak + 1 windows
    blocks: int = 6  # batch-means blocks per window
    history: float = 3600.0  # seconds before the span that the last level must top
    floor_abs: float = 2.0 * 2**20  # bytes per hour
    floor_rel: float = 0.005  # fraction of the level per hour
    z_rise: float = 1.0
    z_net: float = 3.0
    step_ratio: float = 0.5  # a step fit with less than this share of a line's residual is a step
    plateau_ratio: float = 0.7  # a last rise below this share of the first, significantly, decelerates

    def span(self) -> float:
        return (self.streak + 1) * self.window


@dataclass(frozen=True)
class Verdict:
    leaking: bool
    stopped: bool
    slope_per_hour: float  # Theil–Sen over the span's block medians
    level: float  # the fitted line's value at the span's end
    levels: tuple[float, ...]
    noise: float  # standard error of a rise between two windows
    reason: str


def span_end(now: float, window: float) -> float:
    """The end of the latest complete window at `now` (epoch seconds)."""
    return math.floor(now / window) * window


def theil_sen(xs: list[float], ys: list[float]) -> float:
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    return statistics.median(slopes) if slopes else 0.0


def _ssr_line(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))


def _ssr_step(ys: list[float]) -> float:
    """The residual of the best two-level fit (one jump anywhere)."""
    best = math.inf
    for k in range(1, len(ys)):
        left, right = ys[:k], ys[k:]
        ml, mr = sum(left) / len(left), sum(right) / len(right)
        best = min(best, sum((y - ml) ** 2 for y in left) + sum((y - mr) ** 2 for y in right))
    return best


def _bucket(points: list[tuple[float, float]], start: float, width: float, count: int) -> list[list[float]]:
    buckets: list[list[float]] = [[] for _ in range(count)]
    for t, v in points:
        i = int((t - start) // width)
        if 0 <= i < count:
            buckets[i].append(v)
    return buckets


def judge(points: list[tuple[float, float]], end: float, p: Params = Params()) -> Verdict | None:
    """Judge (epoch seconds, rss) points over the `streak` + 1 windows that end at `end`
    (and `history` before them). None when a window has too few samples to judge."""
    start = end - p.span()
    windows = _bucket(points, start, p.window, p.streak + 1)
    if any(len(w) < MIN_POINTS for w in windows):
        last = windows[-1]
        if len(last) == 0 and any(len(w) >= MIN_POINTS for w in windows[:-1]):
            return Verdict(False, True, 0.0, 0.0, (), 0.0, "silent for a window")
        return None
    levels = [statistics.median(w) for w in windows]

    block = p.window / p.blocks
    blocks = _bucket(points, start, block, (p.streak + 1) * p.blocks)
    xs = [(i + 0.5) * block / 3600 for i, b in enumerate(blocks) if b]
    ys = [statistics.median(b) for b in blocks if b]
    slope = theil_sen(xs, ys)
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))
    # Second differences cancel a trend and its curvature, leaving the noise: var = 6 σ².
    bumps = [a - 2 * b + c for a, b, c in zip(ys, ys[1:], ys[2:], strict=False)]
    sigma = 1.4826 * statistics.median(abs(d) for d in bumps) / math.sqrt(6) if bumps else 0.0
    se_level = max(MIN_NOISE, sigma / math.sqrt(p.blocks))
    noise = math.sqrt(2) * se_level
    level = intercept + slope * p.span() / 3600

    rises = [b - a for a, b in itertools.pairwise(levels)]
    back = min(2, len(levels) - 1)
    floor = max(p.floor_abs, p.floor_rel * levels[-1]) * back * p.window / 3600
    stopped = levels[-1] - levels[-1 - back] < max(noise, floor)

    def verdict(leaking: bool, reason: str) -> Verdict:
        return Verdict(leaking, stopped, slope, level, tuple(levels), noise, reason)

    if not all(r > 0 for r in rises):
        return verdict(False, "no streak")
    net = levels[-1] - levels[0]
    if net <= p.z_net * noise:
        return verdict(False, "not significant")
    rate = net / (p.streak * p.window / 3600)
    if rate < max(p.floor_abs, p.floor_rel * levels[0]):
        return verdict(False, "below the floor")
    if rises[-1] < p.plateau_ratio * rises[0] and rises[0] - rises[-1] > 2 * noise:
        return verdict(False, "decelerating: a plateau ahead")
    if len(ys) >= 4 and _ssr_step(ys) < p.step_ratio * _ssr_line(xs, ys):
        return verdict(False, "a single step")
    history = [
        (i, statistics.median(w))
        for i, w in enumerate(_bucket(points, start - p.history, p.window, int(p.history // p.window)))
        if len(w) >= MIN_POINTS
    ]
    if history and levels[-1] - max(v for _, v in history) <= net / 2:
        return verdict(False, "no new high")
    if history:
        # Slower now than before the span, by a clear margin: the tail of a warm-up.
        first, earliest = history[0]
        hours_before = (p.history - first * p.window) / 3600
        if hours_before >= p.window / 1800:
            before = (levels[0] - earliest) / hours_before
            spread = noise * math.hypot(1 / hours_before, 1 / (p.streak * p.window / 3600))
            if rate < p.plateau_ratio * before and before - rate > 2 * spread:
                return verdict(False, "slowing down: a plateau ahead")
    return verdict(True, "leaking")
