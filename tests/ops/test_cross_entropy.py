"""Cross-entropy: the Triton kernels against the float64 reference, their knobs, and the starter file."""

from __future__ import annotations

import math

import pytest
import torch

OP = "cross_entropy"
MANY_STEPS = {"T": 3, "V": 5000}  # several BLOCK_SIZE steps and several splits for the small blocks


def test_matches_float64_reference(check, shape, dtype):
    check(shape, dtype)


def test_stays_within_tolerance_on_extreme_inputs(check, odd, kind, dtype):
    check(odd, dtype, kind=kind, seed=1)


def test_returns_a_float32_scalar_for_16_bit_logits(op, spec):
    logits, targets = spec.make_inputs({"T": 3, "V": 100}, torch.bfloat16, torch.Generator().manual_seed(0), "normal")
    loss = op.kernel_fn(logits, targets)
    assert loss.dtype == torch.float32 and loss.dim() == 0


@pytest.mark.parametrize("splits", [1, 3, 8])
def test_splitting_the_vocabulary_gives_the_same_loss(check, set_knobs, op, splits):
    set_knobs(op, {"BLOCK_SIZE": 1024, "VOCAB_SPLITS": splits})
    check(MANY_STEPS, "fp32")


def test_a_llama3_wide_vocabulary_streams_through(check):
    check({"T": 2, "V": 128256}, "bf16")


def test_the_mean_is_bitwise_reproducible(op, spec):
    args = spec.make_inputs({"T": 37, "V": 300}, torch.float32, torch.Generator().manual_seed(0), "normal")
    assert torch.equal(op.kernel_fn(*args), op.kernel_fn(*args))


def test_an_out_of_range_target_gives_nan_not_a_wild_read(op):
    logits = torch.randn(2, 10)
    assert math.isnan(op.kernel_fn(logits, torch.tensor([3, 10])).item())
    assert math.isnan(op.kernel_fn(logits, torch.tensor([-1, 2])).item())


@pytest.mark.parametrize("rows", [1, 4])
def test_decode_sized_batches(check, rows):
    check({"T": rows, "V": 100}, "bf16")


def test_accepts_strided_logits_targets_and_leading_dims(op, matches_reference):
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(6, 200, generator=g)
    targets = torch.randint(0, 100, (12,), generator=g)
    cases = [(wide[:, :100], targets[::2]), (torch.randn(100, 6, generator=g).t(), targets[:6]),
             (torch.randn(2, 3, 100, generator=g), targets[:6].view(2, 3))]
    for logits, t in cases:
        matches_reference((logits, t), op.kernel_fn(logits, t), "fp32", {"T": t.numel(), "V": 100})


def test_rejects_targets_of_the_wrong_shape_or_dtype(op):
    with pytest.raises(ValueError, match="targets must have shape"):
        op.kernel_fn(torch.randn(2, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integer dtype"):
        op.kernel_fn(torch.randn(2, 8), torch.tensor([1.0, 2.0]))


def test_each_knob_value_is_correct(check, set_knobs, op, knob, value):
    set_knobs(op, {knob: value})
    check(MANY_STEPS, "fp32")


def test_starter_file_runs_standalone(load_starter, check, odd):
    check(odd, "bf16", kernel_fn=load_starter(OP)["kernel_fn"])


def test_defaults_and_sampled_configs_pass_check_config_and_run(load_starter, check, spec, defaults, config_sample):
    assert spec.check_config(defaults) is None
    count, sample = config_sample
    assert count > 1
    for config in sample:
        check(MANY_STEPS, "bf16", kernel_fn=load_starter(OP, config)["kernel_fn"])


def test_default_config_compiles_for_h100_without_spills(compiles_for_h100, spec):
    compiles_for_h100("bf16", [*spec.bench_shapes, *spec.decode_shapes])
