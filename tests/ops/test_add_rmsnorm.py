"""Residual add + RMSNorm: the Triton kernel against the float64 reference, its knobs, its starter file."""

from __future__ import annotations

import pytest
import torch

OP = "add_rmsnorm"
LONG_ROWS = {"rows": 3, "dim": 3000}  # longer than the small BLOCK_SIZE values: the two-pass path


def test_matches_float64_reference(check, shape, dtype):
    check(shape, dtype)


def test_stays_within_tolerance_on_extreme_inputs(check, odd, kind, dtype):
    check(odd, dtype, kind=kind, seed=1)


@pytest.mark.parametrize("block", [None, 256], ids=["one-pass", "two-pass"])
def test_new_residual_is_the_sum_rounded_once_and_y_is_its_norm(set_knobs, op, spec, block):
    # fp16, not bf16: Triton's CPU interpreter truncates fp32 → bf16 where the GPU rounds to nearest,
    # and fp16 rounds to nearest in both.
    set_knobs(op, {"BLOCK_SIZE": block})
    x, residual, weight, eps = spec.make_inputs({"rows": 5, "dim": 1000}, torch.float16,
                                                torch.Generator().manual_seed(0), "normal")
    y, h = op.kernel_fn(x, residual, weight, eps)
    assert torch.equal(h, (x.float() + residual.float()).to(torch.float16))
    # y is the norm of the h returned, as an unfused `h = x + r; rms_norm(h)` would give.
    h64 = h.double()
    expected = h64 * torch.rsqrt(h64.pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    torch.testing.assert_close(y.double(), expected.to(torch.float16).double(), atol=0, rtol=1e-3)


def test_rows_longer_than_a_block_take_two_passes(check, set_knobs, op, dtype):
    set_knobs(op, {"BLOCK_SIZE": 256, "ROWS_PER_PROGRAM": 2})
    check({"rows": 5, "dim": 1000}, dtype)


def test_short_rows_are_packed_several_per_program(check, op):
    assert op._launch_config(300, 64)[1] > 1
    check({"rows": 300, "dim": 64}, "fp32")


@pytest.mark.parametrize("rows", [1, 4])
def test_decode_sized_batches(check, rows):
    check({"rows": rows, "dim": 64}, "bf16")


def test_accepts_strided_and_batched_inputs(op, matches_reference):
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(6, 200, generator=g)
    column_major = torch.randn(100, 6, generator=g).t()
    weight = torch.randn(100, generator=g)
    for x, residual in ((wide[:, :100], wide[:, 100:]), (column_major, wide[:, 50:150]),
                        (torch.randn(2, 3, 100, generator=g), torch.randn(2, 3, 100, generator=g))):
        args = (x, residual, weight, 1e-6)
        matches_reference(args, op.kernel_fn(*args), "fp32", {"rows": x.numel() // 100, "dim": 100})


def test_rejects_a_residual_of_another_shape(op):
    with pytest.raises(ValueError, match="residual must match x"):
        op.kernel_fn(torch.randn(2, 8), torch.randn(3, 8), torch.randn(8))


def test_each_knob_value_is_correct(check, set_knobs, op, knob, value):
    set_knobs(op, {knob: value})
    check(LONG_ROWS, "fp32")


def test_starter_file_runs_standalone(load_starter, check, odd):
    check(odd, "bf16", kernel_fn=load_starter(OP)["kernel_fn"])


def test_defaults_and_sampled_configs_pass_check_config_and_run(load_starter, check, spec, defaults, config_sample):
    assert spec.check_config(defaults) is None
    count, sample = config_sample
    assert count > 1
    for config in sample:
        check(LONG_ROWS, "bf16", kernel_fn=load_starter(OP, config)["kernel_fn"])


def test_default_config_compiles_for_h100_without_spills(compiles_for_h100, spec):
    compiles_for_h100("bf16", [*spec.bench_shapes, *spec.decode_shapes])
