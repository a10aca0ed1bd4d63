"""Numbers across repeats: medians, ranges, the noise verdict, loss-curve distances, time to a loss.

The unit of replication is the run (DESIGN.md, "The gate"): per-step samples of one run are
correlated, so every verdict here compares figures of whole runs (one per repeat), never steps.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

HIGHER = 1    # higher is better (tokens/s, MFU)
LOWER = -1    # lower is better (times, memory)
NEUTRAL = 0   # no direction (final loss: judged through the curve distance instead)

ONE_RUN = "one run: no verdict"
WITHIN = "within noise"
BETTER = "better, beyond noise"
WORSE = "worse, beyond noise"

# The trailing window that smooths a loss curve before it is compared with a target: single steps
# of a noisy curve dip below a level that the run has not yet reached.
LOSS_WINDOW = 5

VERDICT_RULE = (
    "Noise verdict, judged across repeats (the run is the unit; steps of one run are correlated): with at "
    "least two repeats on each side, a difference is 'beyond noise' when the candidate's and the baseline's "
    "ranges over their repeats do not overlap AND the relative difference of their medians is larger than "
    "the A/A floor, the larger relative range (max - min) / median of the two sides' own repeats (the "
    "same-build spread); otherwise it is 'within noise'. With a single repeat on either side: "
    "'one run: no verdict'. Loss curves: the distance of two curves (largest |L_a - L_b| over the measured "
    "steps, median over pairs of repeats) is compared with the larger of the two trainers' A/A floors, whose "
    "floor it is named: a trainer's floor is the largest distance between its cell and the cell's A/A twin "
    "(the same trainer with the same global batch as accumulated half micro-batches: rounding alone) and "
    "between repeats of its cell. Each trainer's floor is measured, none assumed (kernels round "
    "differently): where either trainer has none, there is no verdict. A largest difference is noisy, so the "
    "bias is judged too: the mean signed difference L_a - L_b over the measured steps (median over pairs of "
    "repeats), which rounding noise averages out of and a curve lying below another does not, is 'biased' "
    "when its magnitude is larger than the largest A/A bias (|mean difference| over the same pairs as the "
    "floors) of any trainer of the workload: every twin samples the same rounding noise.")


@dataclass
class Agg:
    """One figure over the repeats of a cell."""
    values: list

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def rel_range(self) -> float:
        m = self.median
        return (self.hi - self.lo) / abs(m) if m else 0.0


def agg(values) -> Agg | None:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return Agg(vals) if vals else None


def ratio(candidate: Agg | None, baseline: Agg | None) -> float | None:
    if candidate is None or baseline is None or not baseline.median:
        return None
    return candidate.median / baseline.median


def verdict(candidate: Agg | None, baseline: Agg | None, direction: int) -> str:
    """VERDICT_RULE for one figure."""
    if candidate is None or baseline is None:
        return "n/a"
    if candidate.n < 2 or baseline.n < 2:
        return ONE_RUN
    if direction == NEUTRAL or not baseline.median:
        return "n/a"
    floor = max(candidate.rel_range, baseline.rel_range)
    diff = candidate.median / baseline.median - 1.0
    overlap = candidate.lo <= baseline.hi and baseline.lo <= candidate.hi
    if overlap or abs(diff) <= floor:
        return WITHIN
    return BETTER if (diff > 0) == (direction > 0) else WORSE


def curve_distance(a: list, b: list) -> float | None:
    """Largest |loss difference| of two loss curves over their steps (the run summary's measure,
    results::max_loss_difference); None when they do not cover the same steps (not equal work)."""
    if not a or len(a) != len(b):
        return None
    return max(abs(x - y) for x, y in zip(a, b))


def curve_bias(a: list, b: list) -> float | None:
    """Mean of a - b over the steps, signed (results::mean_loss_difference): rounding noise flips
    sign from step to step and averages out, a curve lying below another does not; None as above."""
    if not a or len(a) != len(b):
        return None
    return sum(x - y for x, y in zip(a, b)) / len(a)


def over_pairs(curves_a: list, curves_b: list, measure=curve_distance) -> list:
    """`measure` of every curve of curves_a against every one of curves_b that covers the same steps."""
    out = []
    for a in curves_a:
        for b in curves_b:
            if a is not b:
                d = measure(a, b)
                if d is not None:
                    out.append(d)
    return out


def within_pairs(curves: list, measure=curve_distance) -> list:
    """`measure` between every two repeats of one cell: what runs of identical work differ by."""
    out = []
    for i in range(len(curves)):
        for j in range(i + 1, len(curves)):
            d = measure(curves[i], curves[j])
            if d is not None:
                out.append(d)
    return out


def loss_verdict(distance: float | None, floor: float | None) -> str:
    if distance is None:
        return "n/a"
    if floor is None:
        return "no A/A floor"
    return "within A/A floor" if distance <= floor else "beyond A/A floor"


def bias_verdict(bias: float | None, floor: float | None) -> str:
    if bias is None:
        return "n/a"
    if floor is None:
        return "no A/A floor"
    return "no bias beyond A/A" if abs(bias) <= floor else "biased"


def smoothed(losses: list, window: int = LOSS_WINDOW) -> list:
    """Trailing mean over up to `window` steps."""
    out = []
    for i in range(len(losses)):
        part = losses[max(0, i - window + 1): i + 1]
        out.append(sum(part) / len(part))
    return out


def loss_target(curves: list) -> float | None:
    """The loss that every curve reaches: the highest of their (smoothed) minima."""
    minima = [min(smoothed(c)) for c in curves if c]
    return max(minima) if minima else None


@dataclass
class TimeToLoss:
    steps: int       # optimizer steps until the smoothed loss is at or below the target
    seconds: float   # wall-clock seconds of those steps
    gpu_hours: float


def time_to_loss(steps: list, target: float, nproc: int) -> TimeToLoss | None:
    """Time for one run to reach `target`: the recorded times of its measured steps up to the first
    step whose smoothed loss is at or below it, with each warm-up step counted at the median measured
    step time (a warm-up step's recorded time holds one-time start-up costs that a long run does not
    pay per step)."""
    losses = [s.get("loss") for s in steps]
    if not steps or any(not isinstance(x, (int, float)) for x in losses):
        return None
    measured = [s["step_time_s"] for s in steps if not s.get("warmup")] or [s["step_time_s"] for s in steps]
    typical = statistics.median(measured)
    for i, level in enumerate(smoothed(losses)):
        if level <= target:
            seconds = sum(typical if s.get("warmup") else s["step_time_s"] for s in steps[: i + 1])
            return TimeToLoss(i + 1, seconds, seconds * nproc / 3600.0)
    return None
