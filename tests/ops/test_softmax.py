"""Softmax: the Triton kernel against the float64 reference, its knobs, and its starter file."""

from __future__ import annotations

import pytest
import torch

OP = "softmax"
LONG_ROWS = {"rows": 3, "dim": 3000}  # longer than the small BLOCK_SIZE values: the online two-pass path


def test_matches_float64_reference(check, shape, dtype):
    check(shape, dtype)


def test_stays_within_tolerance_on_extreme_inputs(check, odd, kind, dtype):
    check(odd, dtype, kind=kind, seed=1)


def test_rows_longer_than_a_block_use_the_online_normaliser(check, set_knobs, op, dtype):
    set_knobs(op, {"BLOCK_SIZE": 256, "ROWS_PER_PROGRAM": 2})
    check({"rows": 5, "dim": 1000}, dtype)


def test_online_normaliser_survives_a_max_that_grows_late(set_knobs, op, matches_reference):
    # Each later block holds a larger max, so the running sum is rescaled at every step.
    x = torch.linspace(-50.0, 50.0, 2000).repeat(3, 1)
    set_knobs(op, {"BLOCK_SIZE": 256})
    matches_reference((x,), op.kernel_fn(x), "fp32", {"rows": 3, "dim": 2000})


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
    for x in (wide[:, :100], column_major, torch.randn(2, 3, 100, generator=g)):
        matches_reference((x,), op.kernel_fn(x), "fp32", {"rows": x.numel() // 100, "dim": 100})


def test_rejects_a_zero_dim_input(op):
    with pytest.raises(ValueError, match="at least one dim"):
        op.kernel_fn(torch.tensor(1.0))


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
