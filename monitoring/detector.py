"""The leak detector's judgement of one process's memory series: pure, no database.

The periodic scan (every `step` seconds, 5 minutes by default) judges every process as
of the end of the latest complete step of *sample time* (aligned to the epoch), so a
verdict never depends on when the scan ran or when the samples arrived, and the same
samples always give the same verdict.

**Blocks.** The samples are cut into blocks of `block` seconds (1 minute) aligned to the
epoch; a block's value is the median of its samples, so a spike moves it by one rank,
never by its height, and a sawtooth averages out.

**The floor of a sawtooth.** Under a GC sawtooth (memory climbs, a collection drops it) a
1-minute block holds part of a cycle, so its median swings with the cycle's phase and
hides a slow leak; what a leak raises is the level a collection leaves behind. When the
block medians do not find a leak and the span holds at least `collection_cycles` (10)
collections (sudden falls of more than `collection_drop` (8) robust scales of the
sample-to-sample differences, so plain noise, however loud, has none), the series is
looked at twice more, by the same rules and guards:

- *the post-collection floor*: each sample less the rise since its cycle's collection
  (the rise per second fitted within the cycles and pooled; as a line over time when
  the cycles' rise clearly changes, |z| ≥ 3, so cycles that grow taller over a flat floor
  do not read as a rising floor), judged on 1-minute block medians: every sample of a
  cycle carries the floor, where its lowest sample is one noisy value a cycle. This
  look leans on the cycles' rise being steady, so it is taken only when the troughs
  agree: their own line (one point a cycle, its residual noise) rises with z ≥
  `z_confirm` (1) and not clearly (two standard errors) more slowly than the floor's;
- *the collection troughs*: each cycle's lowest sample, judged on their own (the counts
  the rules ask for scaled by how many blocks hold a trough): no model of the rise at
  all, for a sawtooth whose cycles change height or length. Being a third look at the
  same series, it asks for z ≥ `z_slope` + `z_troughs` (3.5).

In both looks the slope's noise is never scaled *down* for a negative lag-one
correlation (ρ is clipped at 0, not −0.5): one value a cycle, or a series with the rise
taken out, has no fast alternation for that scaling to undo, and a chance negative ρ
made a healthy sawtooth's troughs look significant (z 5.2; bench seed 200). Nor is ρ
taken as read: the residuals of a line fitted to n values read it low by about
(2 + 4ρ) / n, a tenth for the twenty-odd troughs of an hour, so in both looks (and the
troughs' line that confirms the floor) it is corrected by that much before it scales the
noise (a healthy sawtooth's troughs read z 4.2 at 60 minutes without it; bench seed 360).
The block medians are left as they are: 45–60 of them, a bias of 0.04–0.05, and their
slope's standard error is right on average (docs/monitoring.md, "Fresh seeds"); the
correction there cost up to 22 leaks ≥ 5 MiB/h found within the hour per seed range and
removed no false alarm the looks at a sawtooth did not.

A process then stops being a suspect only when every look that found it says stopped.
On the bench corpus (docs/monitoring.md) the floor took the recall within the hour of
5 MiB/h leaks under the sawtooth from 0.90 (3-minute minima, the lower envelope it
replaced) to 1.00 on seed 12 and from 0.98 to 1.00 on seeds 100–119, with 0 false alarms
on both; the rest of the misses are leaks in louder noise (docs/monitoring.md, "Goal
status": a statistical limit).

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

A process is **leaking** when, in one of the looks, one of two rules finds the rise
significant:

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
  thirds (under `plateau_ratio` of it, by more than two standard errors) while the
  quadratic fit below bends over by at least one standard error; or a
  quadratic fit bends over significantly, its slope at the end under `plateau_ratio`
  of the line's; or the span rises clearly more slowly than the `history` before it
  (a warm-up decelerates towards its plateau; a leak does not);
- *single step*: one jump explains the block values better than the line does
  (half the residual or less: an allocation, then flat, is not a leak);
- *a fall*: one quarter of the span sits clearly (three standard errors) below the
  quarter before it (a release, a restart, the down-swing of an oscillation);
- *no new high*: the span's last quarter does not top every window of the `history`
  before the span by half the span's net growth (an oscillation or a rise-and-release
  comes back to where it was; a leak leaves its past below it); when the history shows
  no rise (its slope's z under `z_clear`), also by two standard errors of that
  difference, from the history's own noise (a flat noisy process can end its span on a
  chance upswing; bench seed 243).

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
    collection_drop: float = 8.0  # a fall of this many robust scales of the differences is a collection (0: off)
    collection_cycles: int = 10  # collections in the span for the post-collection floor to be judged
    z_confirm: float = 1.0  # the troughs' slope z that the fitted floor needs beside it
    z_troughs: float = 0.5  # what the troughs alone need above z_slope (a third look at one series)

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


def fit(xs: list[float], ys: list[float], min_rho: float = MIN_RHO, corrected: bool = False) -> Fit | None:
    """Least squares line through (hours, bytes), with its slope's standard error from the
    residuals, inflated for their lag-one autocorrelation. `corrected`: that correlation
    less its bias, for a short series (the residuals of a fitted line read it low by about
    (2 + 4ρ) / n)."""
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
    rho = lag / ssr if ssr > 0 else 0.0
    if corrected and ssr > 0:
        rho += (2 + 4 * rho) / n
    rho = min(MAX_RHO, max(min_rho, rho))
    sigma = max(MIN_NOISE, math.sqrt(ssr / (n - 2)) * math.sqrt((1 + rho) / (1 - rho)))
    return Fit(b, a, sigma / math.sqrt(sxx), sigma, ssr, n - 2)


def curvature(xs: list[float], ys: list[float], min_rho: float = MIN_RHO) -> tuple[float, float] | None:
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
    rho = min(MAX_RHO, max(min_rho, lag / ssr)) if ssr > 0 else 0.0
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


def collections(points: list[tuple[float, float]], drop: float) -> list[int]:
    """The indices of the samples just after a sudden fall (a garbage collection): a step
    down of more than `drop` robust scales (1.4826 × the median absolute deviation) of the
    sample-to-sample differences."""
    if len(points) < 3 or drop <= 0:
        return []
    diffs = [b[1] - a[1] for a, b in itertools.pairwise(points)]
    centre = _median(diffs)
    scale = max(MIN_NOISE, 1.4826 * _median([abs(d - centre) for d in diffs]))
    return [i + 1 for i, d in enumerate(diffs) if d < centre - drop * scale]


def floor_series(points: list[tuple[float, float]], falls: list[int]) -> list[tuple[float, float]]:
    """The post-collection floor of a sawtooth: each sample less the rise since its cycle's
    collection, so the series keeps only what the collections leave behind, at every
    sample rather than at one trough a cycle. The rise per second is fitted within each
    cycle, then as a line over the cycles' times (weighted by how well each cycle fixes
    it), so a sawtooth whose cycles grow taller (a growing young generation) does not read
    as a rising floor. The samples before the first collection have no phase and are left
    out."""
    bounds = list(itertools.pairwise([*falls, len(points)]))
    rates: list[tuple[float, float, float]] = []  # (cycle time, rise per second, weight)
    for lo, hi in bounds:
        if hi - lo < 3:
            continue
        ph = [points[i][0] - points[lo][0] for i in range(lo, hi)]
        vs = [points[i][1] for i in range(lo, hi)]
        mp, mv = sum(ph) / len(ph), sum(vs) / len(vs)
        sxx = sum((x - mp) ** 2 for x in ph)
        if sxx > 0:
            sxy = sum((x - mp) * (v - mv) for x, v in zip(ph, vs, strict=True))
            rates.append((points[lo][0], sxy / sxx, sxx))
    weight = sum(w for _, _, w in rates)
    if len(rates) < 3 or weight <= 0:
        return []
    mt = sum(t * w for t, _, w in rates) / weight
    mr = sum(r * w for _, r, w in rates) / weight
    stt = sum(w * (t - mt) ** 2 for t, _, w in rates)
    trend = sum(w * (t - mt) * (r - mr) for t, r, w in rates) / stt if stt > 0 else 0.0
    # The trend costs the floor's slope precision, so it is taken only when the cycles' rise
    # clearly changes (|z| >= 3 on their own line).
    full = [(t, r) for t, r, w in rates if w >= _median([w for _, _, w in rates]) / 2]  # whole cycles
    change = fit([t / 3600 for t, _ in full], [r * 3600 for _, r in full]) if len(full) >= 6 else None
    if change is None or abs(change.z) < 3:
        trend = 0.0
    out = []
    for lo, hi in bounds:
        t0 = points[lo][0]
        rise = mr + trend * (t0 - mt)
        out += [(points[i][0], points[i][1] - rise * (points[i][0] - t0)) for i in range(lo, hi)]
    return out


def judge(points: list[tuple[float, float]], end: float, p: Params = Params()) -> Verdict | None:
    """Judge (epoch seconds, rss) points as of `end` (a step boundary): the `span` before it
    and `history` before that. None when the span holds too few samples to judge."""
    middle = _judge(points, end, p, _median)
    if middle is None or middle.leaking or p.collection_drop <= 0:
        return middle
    start = end - p.span()
    window = [pt for pt in points if start - p.history <= pt[0] < end]
    falls = collections(window, p.collection_drop)
    cycles = sum(1 for i in falls if window[i][0] >= start)
    if cycles < p.collection_cycles:
        return middle
    lows = [min(window[lo:hi], key=lambda pt: pt[1]) for lo, hi in itertools.pairwise([*falls, len(window)])]
    blocks = len({int(t // p.block) for t, _ in window if t >= start})
    density = min(1.0, cycles / max(blocks, 1))
    low = _judge(lows, end, replace(p, z_slope=p.z_slope + p.z_troughs), min, density=density, min_rho=0.0,
                 corrected=True)
    if low is not None and not low.leaking:
        span_lows = [(t, v) for t, v in lows if t >= start]
        trough = fit([(t - start) / 3600 for t, _ in span_lows], [v for _, v in span_lows], min_rho=0.0,
                     corrected=True)
        if trough is not None and trough.z >= p.z_confirm:
            floor = _judge(floor_series(window, falls), end, p, _median, min_rho=0.0, corrected=True)
            if floor is not None and floor.leaking and trough.slope >= floor.slope_per_hour - 2 * trough.se:
                return replace(floor, stopped=middle.stopped and floor.stopped,
                               reason=floor.reason + " (post-collection floor)")
    if low is None or not low.leaking:
        return middle
    return replace(low, stopped=middle.stopped and low.stopped, reason=low.reason + " (collection troughs)")


def _judge(points: list[tuple[float, float]], end: float, p: Params, value, density: float = 1.0,
           min_rho: float = MIN_RHO, corrected: bool = False) -> Verdict | None:
    """One look at the series: block values (`value` of each block's points), a line and
    the rules. `density` is the share of blocks expected to hold a point (the troughs of a
    sawtooth fill about one block in three): the counts a rule asks for scale with it."""
    span = p.span()
    start = end - span
    per_block = round(span / p.block)
    hist_blocks = round(p.history / p.block)
    buckets = _blocks(points, start - p.history, p.block, hist_blocks + per_block)
    history, current = buckets[:hist_blocks], buckets[hist_blocks:]
    xs = [(i + 0.5) * p.block / 3600 for i, b in enumerate(current) if b]
    ys = [value(b) for b in current if b]
    last_window = round(p.window / p.block)
    if len(xs) < p.coverage * per_block * density:
        if xs and not any(current[-last_window:]):
            return Verdict(False, True, 0.0, 0.0, (), 0.0, 0.0, "silent for a window")
        return None
    line = fit(xs, ys, min_rho=min_rho, corrected=corrected)
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
        f = fit(wx, wy, min_rho=min_rho, corrected=corrected) if len(wx) >= p.coverage * last_window * density else None
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
    early = fit(*_join(part(0, 3), part(1, 3)), min_rho=min_rho, corrected=corrected)
    late = fit(*part(2, 3), min_rho=min_rho, corrected=corrected)
    if early is None or late is None:
        return verdict(False, "too few samples")
    bend = curvature(xs, ys, min_rho)
    # The thirds' deceleration counts only where the quadratic fit bends over too (by one
    # standard error): a warm-up decelerates in both, while a noisy stretch or a leak's
    # bursts can make the last third look flat with no bend over the span.
    if late.slope < p.plateau_ratio * early.slope and early.slope - late.slope > 2 * math.hypot(early.se, late.se) \
            and bend is not None and bend[0] <= -bend[1]:
        return verdict(False, "decelerating: a plateau")
    if bend is not None:
        end_slope = line.slope + 2 * bend[0] * (xs[-1] - sum(xs) / len(xs))
        if end_slope < p.plateau_ratio * line.slope and bend[0] < -2 * bend[1]:
            return verdict(False, "bending over: a plateau")
    hx = [(i + 0.5) * p.block / 3600 for i, b in enumerate(history) if b]
    before = None
    if len(hx) >= hist_blocks / 2 * density:
        before = fit(hx, [value(b) for b in history if b], min_rho=min_rho, corrected=corrected)
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
        if len(vals) >= last_window / 2 * density:
            past.append(_median(vals))
    # A rise from a flat history (its slope's z under z_clear: no evidence of a rise) began
    # inside the span, so its new high must also clear the noise: two standard errors of
    # the difference of two 15-block medians, from the history's own block noise (the span's
    # line misfits a rise that starts late). A flat noisy process whose span ends on an
    # upswing tops its past by half a chance net growth (bench seed 243, z 3.6).
    margin = (levels[-1] - levels[0]) / 2
    if before is not None and before.z < p.z_clear:
        margin = max(margin, 2 * math.sqrt(2) * before.sigma / math.sqrt(last_window * density))
    if past and levels[-1] - max(past) <= margin:
        return verdict(False, "no new high")
    return verdict(True, "a streak of steep windows" if steep else "a significant slope over the span")
