"""The leak detector's judgement of one process's memory series: pure, no database.

The periodic scan (every `step` seconds, 5 minutes by default) judges every process as
of the end of the latest complete step of *sample time* (aligned to the epoch), so a
verdict never depends on when the scan ran or when the samples arrived, and the same
samples always give the same verdict.

**Blocks.** The samples are cut into blocks of `block` seconds (1 minute) aligned to the
epoch; a block's value is the median of its samples, so a spike moves it by one rank,
never by its height, and a sawtooth averages out.

**The lower envelope.** Under a GC sawtooth (memory climbs, a collection drops it) a
1-minute block holds part of a cycle, so its median swings with the cycle's phase and
hides a slow leak; what a leak raises is the post-GC level. When the block medians do not
find a leak, the series is judged a second time, by the same rules and guards, on
3-minute blocks (`envelope_block`, longer than a typical collection cycle) valued by
their *minimum*; that verdict is taken only when its slope's standard error is under
`envelope_ratio` (0.6) of the medians' (the envelope is clearly the quieter line, as for
a sawtooth; on plain noise the minimum of a block is no quieter than its median, and a
second look there would only add false alarms). A process then stops being a suspect
only when both looks say stopped. On the bench corpus (docs/monitoring.md) it takes the
recall within the hour of 5 MiB/h leaks from 0.70 to 0.80 on seed 12 and from 0.72 to
0.85 on seeds 100–119, with 0 false alarms on both; the rest of the misses are noisy.

**An honest noise estimate.** A line is fitted (least squares) to the block values of a
stretch of time. Its slope's standard error is taken from the *residuals* of that fit,
not from an independence assumption: σ² = Σ r² / (n − 2), then scaled by
√((1 + ρ) / (1 − ρ)), where ρ is the residuals' lag-one autocorrelation (clipped to
[−0.5, 0.9]; a GC sawtooth faster than a block alternates, ρ < 0, and averages out
over the span). Neighbouring samples of real memory are correlated, and a curved shape
(a warm-up, an oscillation) leaves long runs of residuals of one sign; both make ρ
large and the slope *less* significant, where Mann–Kendall's p-value on raw points, which
assumes independent points, made them look far more significant than they were. The
slope's z is slope / standard error; the z a rule asks for is moved to Student's t for
the fit's n − 2 degrees of freedom (`needed`: a 15-block window needs 5.3 for 4, a
60-block span 3.1 for 3).

A process is **leaking** when one of two rules finds the rise significant:

(a) **streak**: each of the last `streak` consecutive fixed windows of `window` seconds
    (3 × 15 minutes) has a positive slope with z ≥ `z_streak` (4) above the floor, each
    window's median above the previous one's, and the last window not clearly less
    steep than the first (a fast leak is found after three windows);
(b) **slope over the span**: the slope over the last `span` seconds (60 minutes, at
    least `coverage` of it with samples) has z ≥ `z_slope` (3);

and none of these guards objects (they apply to both rules):

- *floor*: the slope and the net growth (last quarter's median − first quarter's, per
  hour) are both at least the floor (below);
- *plateau*: the last third of the span is clearly less steep than the first two
  thirds (under `plateau_ratio` of it, by more than two standard errors); or a
  quadratic fit bends over significantly, its slope at the end under `plateau_ratio`
  of the line's; or the span rises clearly more slowly than the `history` before it
  (a warm-up decelerates towards its plateau; a leak does not);
- *single step*: one jump explains the block values better than the line does
  (half the residual or less: an allocation, then flat, is not a leak);
- *a fall*: one quarter of the span sits clearly (three standard errors) below the
  quarter before it (a release, a restart, the down-swing of an oscillation);
- *no new high*: the span's last quarter does not top every window of the `history`
  before the span by half the span's net growth (an oscillation or a rise-and-release
  comes back to where it was; a leak leaves its past below it).

**The floor.** The growth rate must be at least `floor_abs` bytes per hour (3 MiB/h) and
`floor_rel` of the process's level per hour (0.5 %/h): below that, a trend is too small
to matter and too close to what noise and slow drifts produce.

**Clearing, with hysteresis.** A suspect is `stopped` (the caller clears it) when the
span's slope has fallen to z < `z_clear` (1) or below half the floor *and* the last
quarter is no new high (above the earlier quarters by more than its standard error), or
the process sent nothing in the last window. Raising needs z ≥ 3 (or the streak at 4),
clearing needs the evidence to have all but gone, so a finding seldom flaps while a
noisy leak goes on.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, replace

MIN_NOISE = 64 * 1024  # bytes: a level is never known better than this
MAX_RHO = 0.9
MIN_RHO = -0.5


@dataclass(frozen=True)
class Params:
    step: float = 300.0  # seconds: the scan cadence, and the grid a verdict's end is on
    block: float = 60.0  # seconds per block
    window: float = 900.0  # seconds per streak window
    streak: int = 3  # consecutive steep windows for rule (a)
    span_seconds: float = 3600.0  # rule (b)'s span
    coverage: float = 0.75  # share of the span's blocks that must hold samples
    history: float = 3600.0  # seconds before the span that the last quarter must top
    floor_abs: float = 3.0 * 2**20  # bytes per hour
    floor_rel: float = 0.005  # fraction of the level per hour
    z_slope: float = 3.0
    z_streak: float = 4.0
    z_clear: float = 1.0
    step_ratio: float = 0.5  # a step fit with less than this share of a line's residual is a step
    plateau_ratio: float = 0.5
    envelope_block: float = 180.0  # seconds per lower-envelope block (0: no second look)
    envelope_ratio: float = 0.6  # the envelope's slope SE must be under this share of the medians'

    def span(self) -> float:
        return max(self.span_seconds, self.streak * self.window)


@dataclass(frozen=True)
class Verdict:
    leaking: bool
    stopped: bool
    slope_per_hour: float  # fitted over the span's blocks
    level: float  # the fitted line's value at the span's end
    levels: tuple[float, ...]  # the span's quarter levels
    noise: float  # standard error of the slope, bytes per hour
    z: float  # the span slope's z
    reason: str


@dataclass(frozen=True)
class Fit:
    slope: float  # bytes per hour
    intercept: float
    se: float  # standard error of the slope, bytes per hour
    sigma: float  # one block's noise, inflated for autocorrelation
    ssr: float
    df: int  # degrees of freedom of the noise estimate

    @property
    def z(self) -> float:
        return self.slope / self.se if self.se > 0 else 0.0


def needed(z: float, df: int) -> float:
    """The z a slope needs when its noise is estimated from `df` degrees of freedom: the
    normal quantile `z` moved to Student's t (Cornish–Fisher, first order), so a short
    window, whose σ is itself uncertain, needs more."""
    return z * (1 + (z * z + 1) / (4 * df))


def span_end(now: float, step: float) -> float:
    """The end of the latest complete step at `now` (epoch seconds)."""
    return math.floor(now / step) * step


def fit(xs: list[float], ys: list[float]) -> Fit | None:
    """Least squares line through (hours, bytes), with its slope's standard error from the
    residuals, inflated for their lag-one autocorrelation."""
    n = len(xs)
    if n < 6:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    res = [y - a - b * x for x, y in zip(xs, ys, strict=True)]
    ssr = sum(r * r for r in res)
    lag = sum(r0 * r1 for r0, r1 in itertools.pairwise(res))
    rho = min(MAX_RHO, max(MIN_RHO, lag / ssr)) if ssr > 0 else 0.0
    sigma = max(MIN_NOISE, math.sqrt(ssr / (n - 2)) * math.sqrt((1 + rho) / (1 - rho)))
    return Fit(b, a, sigma / math.sqrt(sxx), sigma, ssr, n - 2)


def curvature(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """The quadratic term c of y = a + b x + c (x − x̄)² and its standard error (residuals,
    inflated for autocorrelation as in `fit`)."""
    n = len(xs)
    if n < 8:
        return None
    mx = sum(xs) / n
    us = [x - mx for x in xs]
    vs = [u * u for u in us]
    mv = sum(vs) / n
    vs = [v - mv for v in vs]
    my = sum(ys) / n
    suu, svv, suv = sum(u * u for u in us), sum(v * v for v in vs), sum(u * v for u, v in zip(us, vs, strict=True))
    det = suu * svv - suv * suv
    if det <= 0:
        return None
    suy = sum(u * (y - my) for u, y in zip(us, ys, strict=True))
    svy = sum(v * (y - my) for v, y in zip(vs, ys, strict=True))
    b = (svv * suy - suv * svy) / det
    c = (suu * svy - suv * suy) / det
    res = [y - my - b * u - c * v for u, v, y in zip(us, vs, ys, strict=True)]
    ssr = sum(r * r for r in res)
    lag = sum(r0 * r1 for r0, r1 in itertools.pairwise(res))
    rho = min(MAX_RHO, max(MIN_RHO, lag / ssr)) if ssr > 0 else 0.0
    sigma = max(MIN_NOISE, math.sqrt(ssr / (n - 3)) * math.sqrt((1 + rho) / (1 - rho)))
    return c, sigma * math.sqrt(suu / det)


def _ssr_step(ys: list[float]) -> float:
    """The residual of the best two-level fit (one jump anywhere), in O(n)."""
    n = len(ys)
    total, total2 = sum(ys), sum(y * y for y in ys)
    best, left, left2 = math.inf, 0.0, 0.0
    for k in range(1, n):
        left += ys[k - 1]
        left2 += ys[k - 1] ** 2
        right, right2 = total - left, total2 - left2
        best = min(best, left2 - left * left / k + right2 - right * right / (n - k))
    return best


def _blocks(points: list[tuple[float, float]], start: float, width: float, count: int) -> list[list[float]]:
    buckets: list[list[float]] = [[] for _ in range(count)]
    for t, v in points:
        i = int((t - start) // width)
        if 0 <= i < count:
            buckets[i].append(v)
    return buckets


def _join(a: tuple[list[float], list[float]], b: tuple[list[float], list[float]]) -> tuple[list[float], list[float]]:
    return a[0] + b[0], a[1] + b[1]


def _median(values: list[float]) -> float:
    return statistics.median(values)


def judge(points: list[tuple[float, float]], end: float, p: Params = Params()) -> Verdict | None:
    """Judge (epoch seconds, rss) points as of `end` (a step boundary): the `span` before it
    and `history` before that. None when the span holds too few samples to judge."""
    middle = _judge(points, end, p, _median)
    if middle is None or middle.leaking or p.envelope_block <= 0:
        return middle
    low = _judge(points, end, replace(p, block=p.envelope_block), min)
    if low is None or not low.leaking or low.noise > p.envelope_ratio * middle.noise:
        return middle
    return replace(low, stopped=middle.stopped and low.stopped, reason=low.reason + " (lower envelope)")


def _judge(points: list[tuple[float, float]], end: float, p: Params, value) -> Verdict | None:
    span = p.span()
    start = end - span
    per_block = round(span / p.block)
    hist_blocks = round(p.history / p.block)
    buckets = _blocks(points, start - p.history, p.block, hist_blocks + per_block)
    history, current = buckets[:hist_blocks], buckets[hist_blocks:]
    xs = [(i + 0.5) * p.block / 3600 for i, b in enumerate(current) if b]
    ys = [value(b) for b in current if b]
    last_window = round(p.window / p.block)
    if len(xs) < p.coverage * per_block:
        if xs and not any(current[-last_window:]):
            return Verdict(False, True, 0.0, 0.0, (), 0.0, 0.0, "silent for a window")
        return None
    line = fit(xs, ys)
    if line is None:
        return None
    hours = span / 3600
    level = line.intercept + line.slope * hours
    # Quarters and thirds of the stretch that holds samples (a process may be younger than the span).
    x0, width = xs[0], xs[-1] - xs[0] + p.block / 3600

    def part(k: int, parts: int) -> tuple[list[float], list[float]]:
        lo, hi = x0 + k * width / parts, x0 + (k + 1) * width / parts
        pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if lo <= x < hi]
        return [x for x, _ in pairs], [y for _, y in pairs]

    quarters = [ys_ for _, ys_ in (part(q, 4) for q in range(4)) if ys_]
    levels = tuple(_median(q) for q in quarters)
    floor = max(p.floor_abs, p.floor_rel * max(levels[0], 0.0))
    se_quarter = line.sigma / math.sqrt(min(len(q) for q in quarters))
    # Hysteresis: raised at z >= 3 (or the streak at 4); stopped only once the evidence has
    # all but gone and the last quarter is no new high.
    stopped = not any(current[-last_window:]) or (
        (line.z < p.z_clear or line.slope < floor / 2)
        and (len(levels) < 2 or levels[-1] <= max(levels[:-1]) + se_quarter)
    )

    def verdict(leaking: bool, reason: str, slope: float = line.slope) -> Verdict:
        return Verdict(leaking, stopped, slope, level, levels, line.se, line.z, reason)

    # Rule (a): a streak of steep windows.
    windows = [current[len(current) - (k + 1) * last_window: len(current) - k * last_window]
               for k in reversed(range(p.streak))]
    fits: list[Fit] = []
    medians: list[float] = []
    for w in windows:
        wx = [(i + 0.5) * p.block / 3600 for i, b in enumerate(w) if b]
        wy = [value(b) for b in w if b]
        f = fit(wx, wy) if len(wx) >= p.coverage * last_window else None
        if f is None or f.z < needed(p.z_streak, f.df) or f.slope < floor:
            break
        fits.append(f)
        medians.append(_median(wy))
    steep = (
        len(fits) == p.streak
        and all(b > a for a, b in itertools.pairwise(medians))
        # A warm-up is steep too, but each window less so than the one before.
        and not (fits[-1].slope < p.plateau_ratio * fits[0].slope
                 and fits[0].slope - fits[-1].slope > 2 * math.hypot(fits[0].se, fits[-1].se))
    )

    # Rule (b): the slope over the span. Both rules then face the same guards.
    if not steep and line.z < needed(p.z_slope, line.df):
        return verdict(False, "not significant")
    net_rate = (levels[-1] - levels[0]) / (width * 3 / 4) if len(levels) == 4 else 0.0
    if line.slope < floor or net_rate < floor:
        return verdict(False, "below the floor")
    early, late = fit(*_join(part(0, 3), part(1, 3))), fit(*part(2, 3))
    if early is None or late is None:
        return verdict(False, "too few samples")
    if late.slope < p.plateau_ratio * early.slope and early.slope - late.slope > 2 * math.hypot(early.se, late.se):
        return verdict(False, "decelerating: a plateau")
    bend = curvature(xs, ys)
    if bend is not None:
        end_slope = line.slope + 2 * bend[0] * (xs[-1] - sum(xs) / len(xs))
        if end_slope < p.plateau_ratio * line.slope and bend[0] < -2 * bend[1]:
            return verdict(False, "bending over: a plateau")
    hx = [(i + 0.5) * p.block / 3600 for i, b in enumerate(history) if b]
    if len(hx) >= hist_blocks / 2:
        before = fit(hx, [value(b) for b in history if b])
        if before is not None and line.slope < p.plateau_ratio * before.slope \
                and before.slope - line.slope > 2 * math.hypot(before.se, line.se):
            return verdict(False, "slowing down: a plateau")
    if _ssr_step(ys) < p.step_ratio * line.ssr:
        return verdict(False, "a single step")
    if any(later < earlier - 3 * math.sqrt(2) * se_quarter for earlier, later in itertools.pairwise(levels)):
        return verdict(False, "a fall")
    past = []
    for i in range(0, hist_blocks - last_window + 1, last_window):
        vals = [value(b) for b in history[i: i + last_window] if b]
        if len(vals) >= last_window / 2:
            past.append(_median(vals))
    if past and levels[-1] - max(past) <= (levels[-1] - levels[0]) / 2:
        return verdict(False, "no new high")
    return verdict(True, "a streak of steep windows" if steep else "a significant slope over the span")
