"""Rotary embedding: the Triton kernel against the float64 reference, its knobs, and its starter file."""

from __future__ import annotations

import pytest
import torch

OP = "rope"
SEVERAL_PROGRAMS = {"B": 2, "H": 3, "S": 5, "D": 64}  # 3 heads: the head blocks of 2 and 4 are ragged


def test_matches_float64_reference(check, shape, dtype):
    check(shape, dtype)


def test_stays_within_tolerance_on_extreme_inputs(check, odd, kind, dtype):
    check(odd, dtype, kind=kind, seed=1)


def test_a_head_dim_that_is_not_a_power_of_two(check, dtype):
    check({"B": 1, "H": 3, "S": 7, "D": 6}, dtype)


@pytest.mark.parametrize("batch", [1, 4])
def test_decode_sized_batches(check, batch):
    check({"B": batch, "H": 4, "S": 1, "D": 16}, "bf16")


def test_accepts_heads_transposed_from_a_projection_and_broadcast_tables(op, spec, matches_reference):
    shape = {"B": 2, "H": 3, "S": 5, "D": 8}
    x, cos, sin = spec.make_inputs(shape, torch.float32, torch.Generator().manual_seed(0), "normal")
    x_bshd = x.transpose(1, 2).contiguous().transpose(1, 2)  # [B, S, H, D] memory seen as [B, H, S, D]
    assert not x_bshd.is_contiguous()
    args = (x_bshd, cos[None, None], sin[None, None])
    matches_reference((x_bshd, cos, sin), op.kernel_fn(*args), "fp32", shape)


def test_rejects_an_odd_head_dim_and_mismatched_tables(op):
    with pytest.raises(ValueError, match="head dim must be even"):
        op.kernel_fn(torch.randn(1, 1, 2, 5), torch.randn(2, 2), torch.randn(2, 2))
    with pytest.raises(ValueError, match="cos must hold"):
        op.kernel_fn(torch.randn(1, 1, 2, 4), torch.randn(3, 2), torch.randn(2, 2))


def test_each_knob_value_is_correct(check, set_knobs, op, knob, value):
    set_knobs(op, {knob: value})
    check(SEVERAL_PROGRAMS, "fp32")


def test_starter_file_runs_standalone(load_starter, check, odd):
    check(odd, "bf16", kernel_fn=load_starter(OP)["kernel_fn"])


def test_defaults_and_sampled_configs_pass_check_config_and_run(load_starter, check, spec, defaults, config_sample):
    assert spec.check_config(defaults) is None
    count, sample = config_sample
    assert count > 1
    for config in sample:
        check(SEVERAL_PROGRAMS, "bf16", kernel_fn=load_starter(OP, config)["kernel_fn"])


def test_default_config_compiles_for_h100_without_spills(compiles_for_h100, spec):
    compiles_for_h100("bf16", [*spec.bench_shapes, *spec.decode_shapes])


def test_decode_spreads_the_heads_of_one_position_over_several_programs(op):
    block_half, heads, warps = op._launch_config(1, 32, 128)
    assert heads < 32
    assert op._launch_config(4096, 32, 128)[1] == 32  # prefill: all heads of a position together
