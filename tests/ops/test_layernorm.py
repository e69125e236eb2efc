"""LayerNorm: the Triton kernel against the float64 reference, its knobs, and its starter file."""

from __future__ import annotations

import pytest
import torch

OP = "layernorm"
LONG_ROWS = {"rows": 3, "dim": 3000}  # longer than the small BLOCK_SIZE values: the two-pass path


def test_matches_float64_reference(check, shape, dtype):
    check(shape, dtype)


def test_stays_within_tolerance_on_extreme_inputs(check, odd, kind, dtype):
    check(odd, dtype, kind=kind, seed=1)


@pytest.mark.parametrize("block", [None, 256], ids=["one-pass", "two-pass"])
def test_a_row_of_equal_values_gives_exactly_the_bias(set_knobs, op, block):
    set_knobs(op, {"BLOCK_SIZE": block})
    x = torch.full((3, 1000), 1.7)
    weight, bias = torch.randn(1000), torch.randn(1000)
    assert torch.equal(op.kernel_fn(x, weight, bias), bias.expand(3, 1000))


def test_a_large_common_offset_does_not_swamp_the_variance(check, set_knobs, op, matches_reference):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2000, generator=g) + 1e4
    args = (x, torch.ones(2000), torch.zeros(2000), 1e-5)
    for block in (None, 512):
        set_knobs(op, {"BLOCK_SIZE": block})
        matches_reference(args, op.kernel_fn(*args), "fp32", {"rows": 4, "dim": 2000})


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
    weight, bias = torch.randn(100, generator=g), torch.randn(100, generator=g)
    for x in (wide[:, :100], column_major, torch.randn(2, 3, 100, generator=g)):
        args = (x, weight, bias, 1e-5)
        matches_reference(args, op.kernel_fn(*args), "fp32", {"rows": x.numel() // 100, "dim": 100})


def test_rejects_a_bias_of_the_wrong_size(op):
    with pytest.raises(ValueError, match="bias must have shape"):
        op.kernel_fn(torch.randn(2, 8), torch.randn(8), torch.randn(9))


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
