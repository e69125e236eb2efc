"""Statistics for comparing two timings: medians, bootstrap intervals and the gate's verdict.

Pure Python and numpy (no torch), so the gate's maths can be tested and reasoned about alone.

Conventions: `a` is the base, `b` the head; `ratio = median(b) / median(a)`, so a ratio above 1
means the head is slower. Thresholds are fractions (0.03 is 3 %).

The decision rule (`decide`), with `thr = max(threshold, noise)` (`noise` is the run-to-run drift
measured by A/A comparisons, `estimate_noise`), `cut = max(thr / 2, noise)` and a `confidence`
interval `[lo, hi]` of the ratio from a percentile bootstrap:

* **regression** when the head is *significantly* slower (`lo > 1`) *and* the point estimate is
  past the cut (`ratio > 1 + cut`);
* **improvement** the mirror image (`hi < 1` and `ratio < 1 / (1 + cut)`);
* **pass** when the interval rules out a slowdown as large as the threshold (`hi <= 1 + thr`);
* **inconclusive** otherwise: the interval is too wide to tell, and the caller should measure more
  (`needs_more_samples`) until it is tight or a time limit is reached.

Why not "regression only when `lo > 1 + thr`": that asks for proof that the slowdown *exceeds* the
threshold, so a true slowdown of exactly the threshold is caught at most half the time and, with a
finite sample, almost never. Splitting the job instead, significance (`lo > 1`) holds false positives
to the interval's one-sided error (0.5 % at 99 % confidence), and a cut at `thr / 2` sits far enough
below `thr` that a true slowdown of `thr` clears it nearly always once the interval is tighter than
about `thr / 2` either side, which the "pass" rule makes the caller reach before it may stop. A
regression must then reproduce in a fresh measurement (`confirm`), which squares the false-positive
rate. Slowdowns between `thr / 2` and `thr` are real and are sometimes flagged: the price of catching
one at `thr` reliably.

The bootstrap treats samples as independent, so it cannot see drift between rounds (clock or
temperature changes that move a whole block of samples). That is what `noise` is for: the cut never
drops below the largest ratio an A/A comparison reaches, so drift alone does not make a regression;
on such a machine the gate honestly detects less (a larger effective threshold).

`simulate_gate` runs the whole procedure (rounds grown until decided, then confirmation) on
synthetic lognormal timings with outliers and per-round drift; tests/test_stats.py holds it to
≥ 95 % detection of a 5 % slowdown, ≥ 80 % of a 3 % one and ≤ 1 % false positives at threshold 0.03.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np

VERDICTS = ("pass", "regression", "improvement", "inconclusive")

# Below this many samples per side a bootstrap interval of the median means little.
MIN_SAMPLES = 10

# The point estimate must pass this fraction of the effective threshold to call a regression.
POINT_FRACTION = 0.5

Samples = Sequence[float] | np.ndarray


def _as_array(samples: Samples, what: str = "samples") -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{what}: no samples")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: samples must be finite (got NaN or infinity)")
    return x


def median(samples: Samples) -> float:
    """The median of the samples."""
    return float(np.median(_as_array(samples)))


def iqr(samples: Samples) -> float:
    """The interquartile range (75th minus 25th percentile, linear interpolation)."""
    q25, q75 = np.percentile(_as_array(samples), [25.0, 75.0])
    return float(q75 - q25)


def median_ratio(a_samples: Samples, b_samples: Samples) -> float:
    """median(b) / median(a): above 1 means b (the head) is slower than a (the base)."""
    a_median = median(a_samples)
    if a_median <= 0:
        raise ValueError(f"the base median must be positive to form a ratio, got {a_median}")
    return median(b_samples) / a_median


def _bootstrap_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of `n_boot` resamples (with replacement) of `x`, drawn without building the resamples.

    A resample is x[floor(n·U_i)] for n uniforms U_i, and floor is monotone, so its order statistics
    are x sorted, indexed by the uniforms' order statistics. The k-th of n uniforms is Beta(k, n−k+1);
    given it is u, the next one is u + (1−u)·Beta(1, n−k). So each resample's median costs two draws
    instead of n, and the distribution is exactly that of np.median over explicit resamples.
    """
    xs = np.sort(x)
    n = xs.size

    def at(u: np.ndarray) -> np.ndarray:
        return xs[np.minimum((u * n).astype(np.int64), n - 1)]

    k = (n + 1) // 2  # 1-based rank of the (lower) middle element
    lower = rng.beta(k, n - k + 1, size=n_boot)
    if n % 2 == 1:
        return at(lower)
    upper = lower + (1.0 - lower) * rng.beta(1, n - k, size=n_boot)
    return (at(lower) + at(upper)) / 2.0


def bootstrap_ratio_ci(
    a_samples: Samples,
    b_samples: Samples,
    confidence: float = 0.99,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(ratio, lo, hi): median(b) / median(a) and its percentile-bootstrap interval.

    a and b are resampled independently (they are separate measurements); the same seed gives the
    same interval, so a verdict can be reproduced from stored samples.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    a = _as_array(a_samples, "base samples")
    b = _as_array(b_samples, "head samples")
    ratio = median_ratio(a, b)
    rng = np.random.default_rng(seed)
    a_medians = _bootstrap_medians(a, n_boot, rng)
    b_medians = _bootstrap_medians(b, n_boot, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = b_medians / a_medians
    alpha = 1.0 - confidence
    lo, hi = np.quantile(ratios, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ratio, float(lo), float(hi)


def estimate_noise(aa_runs: Sequence[tuple[Samples, Samples]], confidence: float = 0.99) -> float:
    """How far apart two measurements of the *same* code land, as a fraction (0.01 is 1 %).

    `aa_runs` are A/A comparisons: pairs (first, second) of samples of identical code, measured the
    way the gate measures base and head. Their log ratios are treated as normal with mean zero; the
    result is the `confidence` bound on |ratio − 1| that an A/A comparison reaches, i.e. a slowdown
    this small cannot be told from the machine's own run-to-run drift.
    """
    if len(aa_runs) == 0:
        raise ValueError("estimate_noise needs at least one A/A run")
    logs = np.array([math.log(median_ratio(a, b)) for a, b in aa_runs])
    rms = float(np.sqrt(np.mean(logs**2)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    return math.exp(z * rms) - 1.0


@dataclass
class Decision:
    """The gate's verdict on one comparison, with the numbers that led to it.

    ratio, ci_lo and ci_hi are None only when there were too few samples to compute them.
    """

    verdict: str  # one of VERDICTS
    ratio: float | None
    ci_lo: float | None
    ci_hi: float | None
    effective_threshold: float
    reason: str
    n_base: int = 0
    n_head: int = 0
    confidence: float = 0.99
    confirmed: bool = False  # a regression reproduced by a second, fresh measurement

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def half_width(self) -> float | None:
        """Half the interval's width, as a fraction of the ratio scale (0.01 is ±1 %)."""
        if self.ci_lo is None or self.ci_hi is None:
            return None
        return (self.ci_hi - self.ci_lo) / 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**data)


def _pct(ratio: float) -> str:
    return f"{(ratio - 1.0) * 100:+.2f} %"


def decide(
    base_samples: Samples,
    head_samples: Samples,
    threshold: float,
    noise: float = 0.0,
    *,
    confidence: float = 0.99,
    n_boot: int = 2000,
    seed: int = 0,
    min_samples: int = MIN_SAMPLES,
    point_fraction: float = POINT_FRACTION,
) -> Decision:
    """The verdict on head vs base timings (see the module docstring for the rule and its reasons).

    `threshold` is the slowdown the project tolerates (0.03 is 3 %); `noise` is the run-to-run
    drift from `estimate_noise`. The effective threshold is the larger of the two.
    """
    if threshold < 0 or noise < 0:
        raise ValueError(f"threshold and noise must be non-negative, got {threshold} and {noise}")
    thr = max(threshold, noise)
    n_a, n_b = len(base_samples), len(head_samples)
    common = dict(effective_threshold=thr, n_base=n_a, n_head=n_b, confidence=confidence)
    if min(n_a, n_b) < min_samples:
        reason = f"too few samples ({n_a} base, {n_b} head; at least {min_samples} each needed)"
        return Decision("inconclusive", None, None, None, reason=reason, **common)

    ratio, lo, hi = bootstrap_ratio_ci(base_samples, head_samples, confidence, n_boot, seed)
    cut = 1.0 + max(point_fraction * thr, noise)
    ci = f"{_pct(ratio)} ({confidence:.0%} interval {_pct(lo)} .. {_pct(hi)})"
    if ratio > cut and lo > 1.0:
        verdict, reason = "regression", f"head is slower: {ci}, past {_pct(cut)} and significant"
    elif ratio < 1.0 / cut and hi < 1.0:
        verdict, reason = "improvement", f"head is faster: {ci}"
    elif hi <= 1.0 + thr:
        verdict, reason = "pass", f"no slowdown of {thr:.1%} or more: {ci}"
    else:
        verdict = "inconclusive"
        reason = f"interval too wide: {ci}; head could be up to {_pct(hi)} slower"
    return Decision(verdict, ratio, lo, hi, reason=reason, **common)


def needs_more_samples(
    decision: Decision,
    *,
    elapsed_s: float = 0.0,
    time_cap_s: float = math.inf,
    max_samples: int | None = None,
) -> bool:
    """Whether the caller should measure another round before accepting `decision`.

    Only an inconclusive verdict asks for more; the time cap and the sample cap end the search (and
    the caller keeps "inconclusive"). The "pass" rule already demands an interval tight enough to
    rule out a slowdown of the threshold, so a decided verdict never needs more.
    """
    if decision.verdict != "inconclusive" or elapsed_s >= time_cap_s:
        return False
    return max_samples is None or min(decision.n_base, decision.n_head) < max_samples


def confirm(first: Decision, second: Decision) -> Decision:
    """Combine a first verdict with a fresh second measurement: a regression must reproduce.

    Anything but a regression in the first round stands as it is. A regression that reproduces is
    reported with the smaller of the two ratios (the conservative one); one that does not becomes
    "inconclusive", never "pass": the two rounds disagree, so neither can be trusted alone.
    """
    if first.verdict != "regression":
        return first
    if second.verdict == "regression":
        smaller = min(first, second, key=lambda d: d.ratio if d.ratio is not None else math.inf)
        reason = f"regression reproduced in a fresh measurement; {smaller.reason}"
        return replace(smaller, reason=reason, confirmed=True)
    reason = f"first measurement: {first.reason}; not reproduced in a fresh one ({second.verdict}: {second.reason})"
    return replace(second, verdict="inconclusive", reason=reason, confirmed=False)


Round = tuple[Samples, Samples]


def decide_in_rounds(
    measure_round: Callable[[], Round],
    threshold: float,
    noise: float = 0.0,
    *,
    min_rounds: int = 2,
    max_rounds: int = 20,
    time_cap_s: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
    **decide_kwargs: Any,
) -> Decision:
    """Measure rounds (base samples, head samples) until `decide` is decided or a cap is reached.

    Every round's samples are pooled. This is the loop the gate runs, once, and once more to
    `confirm` a regression.
    """
    start = clock()
    base: list[float] = []
    head: list[float] = []
    decision = None
    for rounds in range(1, max_rounds + 1):
        a, b = measure_round()
        base.extend(float(x) for x in a)
        head.extend(float(x) for x in b)
        if rounds < min_rounds:
            continue
        decision = decide(base, head, threshold, noise, **decide_kwargs)
        if not needs_more_samples(decision, elapsed_s=clock() - start, time_cap_s=time_cap_s):
            return decision
    if decision is None:  # max_rounds < min_rounds: decide on what there is
        decision = decide(base, head, threshold, noise, **decide_kwargs)
    return decision


@dataclass
class SimulationResult:
    """Share of each verdict over simulated gate runs of one true slowdown."""

    true_ratio: float
    trials: int
    rates: dict[str, float]
    mean_rounds: float


def simulate_gate(
    true_ratio: float,
    *,
    threshold: float = 0.03,
    trials: int = 200,
    sigma: float = 0.015,
    outlier_rate: float = 0.02,
    round_drift: float = 0.003,
    reps_per_round: int = 20,
    min_rounds: int = 2,
    max_rounds: int = 12,
    aa_runs: int = 0,
    confirm_regressions: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
) -> SimulationResult:
    """Run the gate's whole procedure on synthetic timings whose true median ratio is `true_ratio`.

    Each round draws a block of base and a block of head samples: lognormal noise of `sigma`, a
    multiplicative drift per block of `round_drift` (clocks, temperature), and with probability
    `outlier_rate` a sample 1.2–3× too slow (a preemption, a page fault). With `aa_runs` > 0 each
    trial first measures that many A/A comparisons of `min_rounds` rounds and passes
    `estimate_noise` of them to the decision, as the gate does on a machine of unknown drift.
    """
    rng = np.random.default_rng(seed)

    def block(scale: float) -> np.ndarray:
        drift = math.exp(rng.normal(0.0, round_drift))
        x = 100.0 * scale * drift * np.exp(rng.normal(0.0, sigma, reps_per_round))
        hit = rng.random(reps_per_round) < outlier_rate
        x[hit] *= rng.uniform(1.2, 3.0, int(hit.sum()))
        return x

    def measure_round() -> Round:
        return block(1.0), block(true_ratio)

    def aa_run() -> Round:
        blocks = [(block(1.0), block(1.0)) for _ in range(min_rounds)]
        return np.concatenate([a for a, _ in blocks]), np.concatenate([b for _, b in blocks])

    counts = dict.fromkeys(VERDICTS, 0)
    rounds_used = 0
    for trial in range(trials):
        noise = estimate_noise([aa_run() for _ in range(aa_runs)]) if aa_runs else 0.0
        kwargs = dict(min_rounds=min_rounds, max_rounds=max_rounds, n_boot=n_boot, seed=trial)
        decision = decide_in_rounds(measure_round, threshold, noise, **kwargs)
        rounds_used += decision.n_base // reps_per_round
        if confirm_regressions and decision.verdict == "regression":
            second = decide_in_rounds(measure_round, threshold, noise, **kwargs)
            decision = confirm(decision, second)
        counts[decision.verdict] += 1
    rates = {k: v / trials for k, v in counts.items()}
    return SimulationResult(true_ratio, trials, rates, rounds_used / trials)
