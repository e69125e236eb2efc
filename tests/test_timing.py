"""The timing harness: the CPU protocol and its data handling here; the CUDA protocol under `gpu`."""

from __future__ import annotations

import json
import time

import pytest
import torch

from autokernel_ci import stats
from autokernel_ci.errors import HarnessError
from autokernel_ci.harness.timing import ABTimer, TimingSamples, interleaved_ab, time_fn
from autokernel_ci.results import EvalResult, ShapeTiming, Status

FAST = dict(warmup_ms=1, rep_ms=2, device="cpu")


def busy(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def test_cpu_timing_is_marked_not_representative_and_summarises_its_samples():
    result = time_fn(lambda: busy(50), **FAST)
    assert result.representative is False
    assert result.method == "perf-counter" and not result.l2_flushed and result.device == "cpu"
    assert result.count == len(result.samples_us) >= 20
    assert result.median_us == stats.median(result.samples_us)
    assert result.iqr_us == stats.iqr(result.samples_us)
    assert 40 < result.median_us < 5000
    assert result.sync_us is not None and result.sync_us > 40 and result.sync_calls >= 5
    assert result.batch_events_us is None and result.hidden_work_ratio is None


def test_repetitions_stay_within_min_and_max():
    slow = time_fn(lambda: busy(2000), warmup_ms=0, rep_ms=1, min_reps=7, max_reps=50, device="cpu")
    assert slow.count == 7
    fast = time_fn(lambda: None, warmup_ms=0, rep_ms=50, min_reps=3, max_reps=30, device="cpu")
    assert fast.count == 30


def test_invalid_repetition_bounds_are_refused():
    with pytest.raises(ValueError, match="min_reps"):
        time_fn(lambda: None, min_reps=10, max_reps=5, device="cpu")


def test_input_sets_rotate_and_each_first_call_is_untimed_warmup():
    seen: list[int] = []
    result = time_fn(seen.append, input_sets=[(0,), (1,), (2,)], min_reps=9, max_reps=9, **dict(FAST, rep_ms=0))
    assert seen[:3] == [0, 1, 2]  # the compile / autotune call of every set comes first
    assert set(seen) == {0, 1, 2}
    timed = seen[len(seen) - result.sync_calls - 9 : len(seen) - result.sync_calls]
    assert sorted(timed) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert result.warmup_calls >= 3


def test_empty_input_sets_are_an_error_not_a_silent_fn_call():
    with pytest.raises(ValueError, match="input_sets"):
        time_fn(lambda: None, input_sets=[], device="cpu")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device"):
        time_fn(lambda: None, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_asking_for_cuda_without_a_gpu_explains_itself():
    with pytest.raises(HarnessError, match="no CUDA device"):
        time_fn(lambda: None, device="cuda")


def test_interleaved_rounds_alternate_the_order_of_a_and_b():
    log: list[str] = []
    timer = ABTimer(lambda: log.append("a"), lambda: log.append("b"), reps_per_round=5, **FAST)
    orders = []
    for _ in range(4):
        before = len(log)
        timer.measure_round()
        calls = "".join(log[before:])
        orders.append(calls[0] + calls[-1])
        assert calls.count("a") == calls.count("b") >= 5 + 1  # a block plus its warm-up calls
    assert orders == ["ab", "ba", "ab", "ba"]


def test_interleaved_ab_pools_every_round():
    a, b = interleaved_ab(lambda: busy(5), lambda: busy(5), 4, reps_per_round=5, **FAST)
    assert a.count == b.count == 20 and a.rounds == b.rounds == 4
    assert not a.representative and not b.representative
    with pytest.raises(ValueError, match="rounds"):
        interleaved_ab(lambda: None, lambda: None, 0, **FAST)


def test_ab_timer_hands_each_round_to_the_gate_loop():
    timer = ABTimer(lambda: busy(20), lambda: busy(60), reps_per_round=12, **FAST)
    decision = stats.decide_in_rounds(timer.measure_round, threshold=0.03, max_rounds=6)
    assert decision.n_base == decision.n_head == 12 * timer.rounds
    assert decision.verdict == "regression" and decision.ratio > 1.5
    a, b = timer.results()
    assert a.count == decision.n_base and b.median_us > a.median_us


def test_ab_results_before_any_round_is_an_error():
    with pytest.raises(HarnessError):
        ABTimer(lambda: None, lambda: None, **FAST).results()


def test_timing_becomes_a_shape_timing_in_a_json_eval_result():
    timing = TimingSamples.from_samples(
        [10.0, 12.0, 11.0, 30.0], representative=True, method="cuda-events", l2_flushed=True, warmup_calls=3
    )
    assert timing.median_us == 11.5 and timing.count == 4
    shape_timing = timing.to_shape_timing({"M": 4, "N": 8}, "bf16", bytes_moved=64, pct_roofline=12.5)
    assert isinstance(shape_timing, ShapeTiming) and shape_timing.samples_us == [10.0, 12.0, 11.0, 30.0]
    result = EvalResult(Status.PASS, "rmsnorm", "c.py", timings=[shape_timing])
    assert EvalResult.from_json(result.to_json()).timings[0] == shape_timing
    assert json.loads(json.dumps(timing.to_dict()))["method"] == "cuda-events"


def test_hidden_work_ratio_compares_wall_clock_with_events():
    meta = dict(representative=True, method="cuda-events", l2_flushed=True, warmup_calls=1)
    timing = TimingSamples.from_samples([5.0], sync_us=50.0, batch_events_us=5.0, **meta)
    assert timing.hidden_work_ratio == 10.0


def test_late_launches_travel_into_the_eval_results_json():
    timing = TimingSamples.from_samples([5.0, 6.0], representative=True, method="cuda-events", l2_flushed=True,
                                        warmup_calls=1, late_launches=1)
    shape_timing = timing.to_shape_timing({"rows": 1}, "bf16")
    result = EvalResult(Status.PASS, "rmsnorm", "c.py", timings=[shape_timing])
    assert EvalResult.from_json(result.to_json()).timings[0].late_launches == 1


# --- on a GPU ----------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_a_launcher_slower_than_the_gap_is_counted_late():
    # A small kernel behind 300 µs of host work a call (a launcher doing checks, a busy CPU): longer
    # than the ~135 µs of GPU work in front of each call, so the GPU waits inside the interval; the
    # harness cannot prevent that, but it must say so.
    x = torch.randn(4096, device="cuda")
    out = torch.empty_like(x)
    quick = time_fn(lambda: torch.add(x, 1.0, out=out), min_reps=40, max_reps=40)

    def slow_launcher():
        end = time.perf_counter() + 300e-6
        while time.perf_counter() < end:
            pass
        torch.add(x, 1.0, out=out)

    slow = time_fn(slow_launcher, min_reps=40, max_reps=40)
    assert quick.late_launches <= 2 and slow.late_launches >= 36, (quick.late_launches, slow.late_launches)
    assert slow.median_us > quick.median_us + 50, (slow.median_us, quick.median_us)


@pytest.mark.gpu
def test_gpu_timing_uses_events_and_agrees_with_the_synchronized_wall_clock():
    x = torch.randn(16 * 1024**2, device="cuda")
    out = torch.empty_like(x)
    result = time_fn(lambda: torch.add(x, 1.0, out=out))
    assert result.representative and result.method == "cuda-events" and result.l2_flushed
    assert result.count >= 20 and result.median_us > 0
    # 128 MiB moved per call: tens of µs on any recent GPU; the events saw all of it.
    assert 5 < result.median_us < 5000
    assert 0.8 < result.hidden_work_ratio < 1.5


@pytest.mark.gpu
def test_gpu_l2_flush_makes_a_cache_sized_kernel_read_from_memory():
    # A read-only reduction over 32 MiB: fits in the H100's 50 MB L2, and is long enough (about 11 µs
    # from HBM) that reading it from L2 instead shows. (An 8 MiB add sits at the launch-latency floor
    # either way: measured 9.70 µs with and without the flush on an H100.)
    x = torch.randn(8 * 1024**2, device="cuda")
    warm = time_fn(lambda: torch.sum(x), flush_l2=False)
    cold = time_fn(lambda: torch.sum(x), flush_l2=True)
    assert cold.l2_flushed and not warm.l2_flushed
    assert cold.median_us > warm.median_us * 1.03


@pytest.mark.gpu
def test_gpu_cuda_graph_removes_launch_overhead_of_many_tiny_kernels():
    x = torch.randn(1024, device="cuda")

    def many_tiny():
        y = x
        for _ in range(50):
            y = y + 1.0
        return y

    eager = time_fn(many_tiny, flush_l2=False)
    graph = time_fn(many_tiny, flush_l2=False, cuda_graph=True)
    assert graph.method == "cuda-graph"
    assert graph.median_us < 0.8 * eager.median_us


@pytest.mark.gpu
def test_gpu_work_hidden_on_another_stream_shows_in_the_synchronize_cross_check():
    """The hidden work is a one-thread spin, not a matmul: a matmul filling every SM would hold back the
    visible stream's small kernel too, and the events would see the delay. A spin leaves the SMs free,
    so only the synchronize sees it. The bar comes from the measurement, not from one card: the spin is
    timed on its own first, and the synchronize must see most of it (a ratio bar fails wherever the
    host launches more slowly, since the events then span the launch gaps too)."""
    from autokernel_ci.harness.sandbox import HIDDEN_WORK_MIN_US, HIDDEN_WORK_RATIO

    x = torch.randn(1024, device="cuda")
    side = torch.cuda.Stream()
    spin = time_fn(lambda: torch.cuda._sleep(200_000), flush_l2=False)  # where the events do see it
    visible = time_fn(lambda: x + 1.0, flush_l2=False)

    def sneaky():
        with torch.cuda.stream(side):  # never joined: the caller's stream does not wait for it
            torch.cuda._sleep(200_000)
        return x + 1.0

    result = time_fn(sneaky, flush_l2=False)
    torch.cuda.synchronize()
    hidden_us = result.sync_us - result.batch_events_us
    assert hidden_us > 0.5 * (spin.median_us - visible.median_us), (spin.median_us, visible.median_us, result)
    # and the gate's own rule flags it
    assert result.hidden_work_ratio > HIDDEN_WORK_RATIO and hidden_us > HIDDEN_WORK_MIN_US


@pytest.mark.gpu
def test_gpu_input_sets_rotate_and_graphs_capture_each_set():
    sets = [(torch.randn(1 << 20, device="cuda"),) for _ in range(3)]
    eager = time_fn(lambda t: t * 2.0, input_sets=sets)
    graph = time_fn(lambda t: t * 2.0, input_sets=sets, cuda_graph=True)
    assert eager.count >= 20 and graph.count >= 20


@pytest.mark.gpu
def test_gpu_interleaved_ab_tells_a_slower_kernel_apart():
    x = torch.randn(8 * 1024**2, device="cuda")
    a, b = interleaved_ab(lambda: x + 1.0, lambda: torch.cat([x, x]) + 1.0, rounds=4)
    assert a.count == b.count and a.rounds == 4 and a.representative
    decision = stats.decide(a.samples_us, b.samples_us, threshold=0.03)
    assert decision.verdict == "regression"
