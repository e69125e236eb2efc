"""SwiGLU: the Triton kernel against the float64 reference, its knobs, and its starter file."""

from __future__ import annotations

import pytest
import torch

OP = "swiglu"
SEVERAL_BLOCKS = {"rows": 3, "dim": 3000}  # several blocks for every BLOCK_SIZE value but the largest


def test_matches_float64_reference(check, shape, dtype):
    check(shape, dtype)


def test_stays_within_tolerance_on_extreme_inputs(check, odd, kind, dtype):
    check(odd, dtype, kind=kind, seed=1)


@pytest.mark.parametrize("rows", [1, 4])
def test_decode_sized_batches(check, rows):
    check({"rows": rows, "dim": 64}, "bf16")


def test_accepts_the_halves_of_a_fused_gate_up_projection(op, matches_reference):
    gate_up = torch.randn(2, 5, 2 * 300, generator=torch.Generator().manual_seed(0))
    gate, up = gate_up.chunk(2, dim=-1)
    assert not gate.is_contiguous()
    matches_reference((gate, up), op.kernel_fn(gate, up), "fp32", {"rows": 10, "dim": 300})


def test_rejects_gate_and_up_of_different_shapes(op):
    with pytest.raises(ValueError, match="same shape and dtype"):
        op.kernel_fn(torch.randn(2, 8), torch.randn(2, 9))


def test_each_knob_value_is_correct(check, set_knobs, op, knob, value):
    set_knobs(op, {knob: value})
    check(SEVERAL_BLOCKS, "fp32")


def test_starter_file_runs_standalone(load_starter, check, odd):
    check(odd, "bf16", kernel_fn=load_starter(OP)["kernel_fn"])


def test_defaults_and_sampled_configs_pass_check_config_and_run(load_starter, check, spec, defaults, config_sample):
    assert spec.check_config(defaults) is None
    count, sample = config_sample
    assert count > 1
    for config in sample:
        check(SEVERAL_BLOCKS, "bf16", kernel_fn=load_starter(OP, config)["kernel_fn"])


def test_default_config_compiles_for_h100_without_spills(compiles_for_h100, spec):
    compiles_for_h100("bf16", [*spec.bench_shapes, *spec.decode_shapes])
