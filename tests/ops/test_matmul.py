"""Matmul: the Triton kernel against the float64 reference, its knobs, and its starter file."""

from __future__ import annotations

import pytest
import torch

OP = "matmul"
RAGGED = {"M": 33, "K": 65, "N": 17}  # no tile size divides it: wrapped rows, masked K


def test_matches_float64_reference(check, shape, dtype):
    check(shape, dtype)


def test_stays_within_tolerance_on_extreme_inputs(check, odd, kind, dtype):
    check(odd, dtype, kind=kind, seed=1)


def test_k_spanning_several_steps_with_a_ragged_tail(check, dtype):
    check({"M": 70, "K": 300, "N": 40}, dtype)


@pytest.mark.parametrize("rows", [1, 4])
def test_decode_sized_batches(check, rows):
    check({"M": rows, "K": 64, "N": 64}, "bf16")


def test_accepts_a_transposed_weight_and_a_sliced_activation(op, matches_reference):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 80, generator=g)  # [N, K], used as b = weight.t()
    a = torch.randn(20, 100, generator=g)[:, :80]
    args = (a, weight.t())
    matches_reference(args, op.kernel_fn(*args), "fp32", {"M": 20, "K": 80, "N": 48})


def test_rejects_mismatched_inner_dims_and_dtypes(op):
    with pytest.raises(ValueError, match="a\\[M, K\\] and b\\[K, N\\]"):
        op.kernel_fn(torch.randn(4, 5), torch.randn(6, 7))
    with pytest.raises(ValueError, match="same dtype"):
        op.kernel_fn(torch.randn(4, 5), torch.randn(5, 7, dtype=torch.float16))


def test_shared_memory_budget_rejects_oversized_pipelines(spec):
    too_big = {"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128, "NUM_STAGES": 4, "NUM_WARPS": 8}
    assert "shared memory" in spec.check_config(too_big)
    fits_16_bit = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "NUM_STAGES": 4, "NUM_WARPS": 8}
    assert spec.check_config(fits_16_bit) is None
    assert "shared memory" in spec.check_config({**fits_16_bit, "dtype": "fp32"})


def test_each_knob_value_is_correct(check, set_knobs, op, knob, value):
    set_knobs(op, {knob: value})
    check(RAGGED, "fp32")


def test_starter_file_runs_standalone(load_starter, check, odd):
    check(odd, "bf16", kernel_fn=load_starter(OP)["kernel_fn"])


def test_defaults_and_sampled_configs_pass_check_config_and_run(load_starter, check, spec, defaults, config_sample):
    assert spec.check_config(defaults) is None
    count, sample = config_sample
    assert count > 1
    for config in sample:
        check(RAGGED, "bf16", kernel_fn=load_starter(OP, config)["kernel_fn"])


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_default_config_compiles_for_h100_without_spills(compiles_for_h100, spec, dtype):
    compiles_for_h100(dtype, [*spec.bench_shapes, *spec.decode_shapes])


def test_knobs_left_to_the_launcher_give_way_so_pinned_big_tiles_still_fit_shared_memory(op, monkeypatch):
    """Measured on an H100: the tuner pinned BLOCK_M 64, BLOCK_N 128 and 5 stages, and the decode path's own
    BLOCK_K of 256 made it need 480 KB of shared memory (OutOfResources). The launcher's choices shrink."""
    for knob, value in {"BLOCK_M": 64, "BLOCK_N": 128, "NUM_STAGES": 5, "BLOCK_K": None}.items():
        monkeypatch.setattr(op, knob, value)
    for m, itemsize in ((16, 2), (1, 2), (16, 4), (4096, 2)):
        bm, bn, bk, _, stages, _ = op._launch_config(m, 4096, 4096, itemsize)
        assert (bm, bn, stages) == (64, 128, 5)
        assert stages * (bm * bk + bk * bn) * itemsize <= op.H100_SHARED_MEMORY, (m, itemsize, bk)
    monkeypatch.setattr(op, "BLOCK_K", 128)  # pinned: the launcher leaves it; the constraint refuses it
    assert op._launch_config(16, 4096, 4096, 2)[2] == 128
    assert "shared memory" in op.SPEC.check_config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128,
                                                    "NUM_STAGES": 5})
