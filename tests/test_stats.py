"""The gate's statistics: summaries, bootstrap intervals, the verdict rule and its simulated power."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autokernel_ci import stats
from autokernel_ci.stats import (
    Decision,
    bootstrap_ratio_ci,
    confirm,
    decide,
    decide_in_rounds,
    estimate_noise,
    iqr,
    median,
    median_ratio,
    needs_more_samples,
    simulate_gate,
)

THRESHOLD = 0.03


def timings(rng: np.random.Generator, n: int, scale: float = 1.0, sigma: float = 0.015, outliers: float = 0.02):
    """Kernel-like timings in µs: lognormal noise and now and then a sample 1.2–3× too slow."""
    x = 50.0 * scale * np.exp(rng.normal(0.0, sigma, n))
    hit = rng.random(n) < outliers
    x[hit] *= rng.uniform(1.2, 3.0, int(hit.sum()))
    return x


def test_median_and_iqr_of_known_samples():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == 2.0
    assert iqr([7.0] * 5) == 0.0


def test_summaries_refuse_empty_or_non_finite_samples():
    with pytest.raises(ValueError, match="no samples"):
        median([])
    with pytest.raises(ValueError, match="finite"):
        iqr([1.0, float("nan")])


def test_ratio_is_head_over_base_so_above_one_means_slower():
    assert median_ratio([10.0, 10.0], [12.0, 12.0]) == pytest.approx(1.2)


def test_bootstrap_interval_brackets_the_ratio_and_is_reproducible():
    rng = np.random.default_rng(1)
    a, b = timings(rng, 60), timings(rng, 60, scale=1.05)
    ratio, lo, hi = bootstrap_ratio_ci(a, b, seed=7)
    assert lo <= ratio <= hi
    assert 1.0 < lo and hi < 1.1
    assert bootstrap_ratio_ci(a, b, seed=7) == (ratio, lo, hi)


@pytest.mark.parametrize("n", [1, 2, 11, 40])
def test_bootstrap_medians_match_medians_of_explicit_resamples(n):
    x = timings(np.random.default_rng(n), n, sigma=0.3)
    fast = stats._bootstrap_medians(x, 100_000, np.random.default_rng(0))
    explicit = np.median(x[np.random.default_rng(1).integers(0, n, size=(100_000, n))], axis=1)
    for q in (0.005, 0.025, 0.25, 0.75, 0.975, 0.995):
        assert abs(np.mean(fast <= np.quantile(explicit, q)) - np.mean(explicit <= np.quantile(explicit, q))) < 0.01


def test_bootstrap_interval_covers_the_true_ratio_about_as_often_as_promised():
    rng = np.random.default_rng(2)
    true_ratio, trials, covered = 1.04, 1000, 0
    for trial in range(trials):
        a, b = timings(rng, 40), timings(rng, 40, scale=true_ratio)
        _, lo, hi = bootstrap_ratio_ci(a, b, confidence=0.95, seed=trial)
        covered += lo <= true_ratio <= hi
    # 95 % promised; a percentile bootstrap of a median may run a little narrow at n=40.
    assert covered / trials >= 0.93


def test_identical_samples_pass():
    samples = timings(np.random.default_rng(3), 50)
    decision = decide(samples, samples.copy(), THRESHOLD)
    assert decision.verdict == "pass"
    assert decision.ratio == 1.0 and decision.ci_lo < 1.0 < decision.ci_hi
    constant = decide([20.0] * 30, [20.0] * 30, THRESHOLD)
    assert constant.verdict == "pass" and constant.ci_lo == constant.ci_hi == 1.0


def test_head_twice_as_slow_is_a_regression():
    rng = np.random.default_rng(4)
    decision = decide(timings(rng, 30), timings(rng, 30, scale=2.0), THRESHOLD)
    assert decision.verdict == "regression"
    assert decision.ratio == pytest.approx(2.0, rel=0.05)
    assert decision.ci_lo > 1.0


def test_head_twice_as_fast_is_an_improvement():
    rng = np.random.default_rng(5)
    decision = decide(timings(rng, 30), timings(rng, 30, scale=0.5), THRESHOLD)
    assert decision.verdict == "improvement"
    assert decision.ci_hi < 1.0


def test_too_few_samples_are_inconclusive_and_ask_for_more():
    rng = np.random.default_rng(6)
    decision = decide(timings(rng, 5), timings(rng, 5, scale=2.0), THRESHOLD)
    assert decision.verdict == "inconclusive"
    assert decision.ratio is None and "too few samples" in decision.reason
    assert needs_more_samples(decision)


def test_wide_interval_is_inconclusive_until_the_time_cap():
    rng = np.random.default_rng(7)
    base, head = timings(rng, 12, sigma=0.2), timings(rng, 12, sigma=0.2)
    decision = decide(base, head, THRESHOLD)
    assert decision.verdict == "inconclusive"
    assert decision.ci_hi > 1.0 + THRESHOLD
    assert needs_more_samples(decision, elapsed_s=1.0, time_cap_s=60.0)
    assert not needs_more_samples(decision, elapsed_s=60.0, time_cap_s=60.0)
    assert not needs_more_samples(decision, max_samples=12)


def test_decided_verdicts_need_no_more_samples():
    rng = np.random.default_rng(8)
    assert not needs_more_samples(decide(timings(rng, 30), timings(rng, 30, scale=2.0), THRESHOLD))


def test_small_but_significant_slowdown_under_the_cut_passes():
    rng = np.random.default_rng(9)
    base, head = timings(rng, 400, sigma=0.005, outliers=0), timings(rng, 400, 1.007, sigma=0.005, outliers=0)
    decision = decide(base, head, THRESHOLD)
    assert decision.ci_lo > 1.0  # significant …
    assert decision.verdict == "pass"  # … but far below the threshold


def test_measured_noise_raises_the_threshold_and_the_cut():
    rng = np.random.default_rng(10)
    base, head = timings(rng, 400, sigma=0.005, outliers=0), timings(rng, 400, 1.025, sigma=0.005, outliers=0)
    assert decide(base, head, THRESHOLD).verdict == "regression"
    noisy = decide(base, head, THRESHOLD, noise=0.04)
    assert noisy.effective_threshold == 0.04
    assert noisy.verdict == "pass"


def test_noise_of_identical_code_is_small_and_zero_for_identical_samples():
    rng = np.random.default_rng(11)
    same = timings(rng, 50)
    assert estimate_noise([(same, same)]) == 0.0
    runs = [(timings(rng, 50), timings(rng, 50)) for _ in range(5)]
    assert 0.0 < estimate_noise(runs) < 0.02
    with pytest.raises(ValueError):
        estimate_noise([])


def _decision(verdict: str, ratio: float) -> Decision:
    return Decision(verdict, ratio, ratio - 0.01, ratio + 0.01, THRESHOLD, reason=verdict, n_base=40, n_head=40)


def test_regression_that_reproduces_is_confirmed_with_the_smaller_ratio():
    confirmed = confirm(_decision("regression", 1.08), _decision("regression", 1.05))
    assert confirmed.verdict == "regression" and confirmed.confirmed
    assert confirmed.ratio == 1.05


def test_regression_that_does_not_reproduce_is_inconclusive_not_pass():
    result = confirm(_decision("regression", 1.05), _decision("pass", 1.0))
    assert result.verdict == "inconclusive" and not result.confirmed
    assert "not reproduced" in result.reason


def test_confirm_leaves_non_regressions_alone():
    first = _decision("improvement", 0.9)
    assert confirm(first, _decision("regression", 1.1)) is first


def test_decision_round_trips_through_json():
    decision = decide([1.0] * 3, [1.0] * 3, THRESHOLD)  # too few: None ratios must serialise
    again = Decision.from_dict(json.loads(json.dumps(decision.to_dict(), allow_nan=False)))
    assert again == decision
    with pytest.raises(ValueError, match="verdict"):
        Decision("maybe", 1.0, 1.0, 1.0, THRESHOLD, reason="")


def test_rounds_grow_until_the_verdict_is_decided():
    rng = np.random.default_rng(12)
    measured = []

    def measure_round():
        measured.append(1)
        return timings(rng, 10, sigma=0.05), timings(rng, 10, scale=1.3, sigma=0.05)

    decision = decide_in_rounds(measure_round, THRESHOLD, max_rounds=50)
    assert decision.verdict == "regression"
    assert decision.n_base == 10 * len(measured) and len(measured) >= 2


def test_rounds_stop_at_the_time_cap_as_inconclusive():
    rng = np.random.default_rng(13)
    ticks = iter(range(1000))
    decision = decide_in_rounds(
        lambda: (timings(rng, 10, sigma=0.3), timings(rng, 10, sigma=0.3)),
        THRESHOLD,
        time_cap_s=3,
        clock=lambda: float(next(ticks)),
    )
    assert decision.verdict == "inconclusive"
    assert decision.n_base <= 40


# The simulation the decision rule is designed against: the whole procedure (rounds grown until
# decided, then a fresh confirmation of any regression) at threshold 3 %, 2 % lognormal noise and
# 2 % outliers, 20 samples per round and side.
SIM = dict(threshold=THRESHOLD, sigma=0.02, outlier_rate=0.02, reps_per_round=20)


def test_simulated_false_positive_rate_with_no_change_is_at_most_one_percent():
    result = simulate_gate(1.0, trials=2000, seed=100, **SIM)
    assert result.rates["regression"] <= 0.01
    assert result.rates["pass"] >= 0.95


def test_simulated_detection_of_a_five_percent_slowdown_is_at_least_95_percent():
    assert simulate_gate(1.05, trials=500, seed=101, **SIM).rates["regression"] >= 0.95


def test_simulated_detection_of_a_three_percent_slowdown_is_at_least_80_percent():
    assert simulate_gate(1.03, trials=1000, seed=102, **SIM).rates["regression"] >= 0.80


def test_simulated_improvement_is_never_called_a_regression():
    result = simulate_gate(0.95, trials=300, seed=103, **SIM)
    assert result.rates["regression"] == 0.0 and result.rates["improvement"] >= 0.95


def test_drift_between_rounds_is_kept_from_false_positives_by_the_measured_noise():
    # 1 % drift per block fools an interval that assumes independent samples; the A/A noise does not.
    drifting = dict(SIM, round_drift=0.01, aa_runs=5)
    assert simulate_gate(1.0, trials=1000, seed=104, **drifting).rates["regression"] <= 0.01
