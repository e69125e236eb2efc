"""runtime.apply: which modules it swaps, that the swapped model computes the same thing (eager and
under torch.compile), and that it falls back to the original op where a kernel cannot serve a call."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from autokernel_ci import runtime
from autokernel_ci.errors import TaskError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from models import gpt2, llama  # noqa: E402


def tiny_llama(seq_len: int = 4):
    model, (tokens,) = llama.build_tiny(seq_len=seq_len)
    return model.eval(), tokens


def rmsnorm_in_torch(x, weight, eps=1e-6):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def swiglu_in_torch(gate, up):
    return F.silu(gate) * up


def rope_in_torch(x, cos, sin):
    from autokernel_ci.ops.rope import reference

    return reference(x, cos, sin)


PYTHON_KERNELS = {"rmsnorm": rmsnorm_in_torch, "swiglu": swiglu_in_torch, "rope": rope_in_torch}


def test_apply_swaps_the_llama_norms_rotary_and_gated_mlp_and_keeps_its_outputs() -> None:
    model, tokens = tiny_llama()
    patched = copy.deepcopy(model)
    report = runtime.apply(patched)  # the built-in Triton starters, in the interpreter
    assert report.ops() == {"rmsnorm": 5, "rope": 2, "swiglu": 2}
    assert {s.path for s in report.swaps if s.op == "swiglu"} == {"layers.0.feed_forward", "layers.1.feed_forward"}
    with torch.inference_mode():
        torch.testing.assert_close(patched(tokens), model(tokens), rtol=1e-4, atol=1e-5)
    assert report.kernel_calls() == {"rmsnorm": 5, "rope": 4, "swiglu": 2}
    assert report.fallbacks() == {}
    assert list(patched.state_dict()) == list(model.state_dict())


def test_the_patched_model_runs_its_kernels_under_torch_compile() -> None:
    model, tokens = tiny_llama()
    patched = copy.deepcopy(model)
    report = runtime.apply(patched, kernels=PYTHON_KERNELS)
    compiled = torch.compile(patched, backend="aot_eager", fullgraph=True)  # fullgraph: no graph break
    with torch.inference_mode():
        torch.testing.assert_close(compiled(tokens), model(tokens), rtol=1e-5, atol=1e-6)
    assert report.kernel_calls() == {"rmsnorm": 5, "rope": 4, "swiglu": 2}


def test_layernorm_modules_of_gpt2_are_swapped() -> None:
    model, (tokens,) = gpt2.build_tiny(seq_len=4)
    model.eval()
    patched = copy.deepcopy(model)
    report = runtime.apply(patched, ops=["layernorm"])
    assert report.ops() == {"layernorm": 5}
    with torch.inference_mode():
        torch.testing.assert_close(patched(tokens), model(tokens), rtol=1e-4, atol=1e-5)


def test_falls_back_to_the_original_forward_while_autograd_records() -> None:
    model, tokens = tiny_llama()
    patched = copy.deepcopy(model)
    report = runtime.apply(patched, kernels=PYTHON_KERNELS)
    out = patched(tokens)  # grad mode, parameters require grad: the forward-only kernels must not run
    out.sum().backward()
    assert report.kernel_calls() == {"rmsnorm": 0, "rope": 0, "swiglu": 0}
    assert report.fallbacks() == {"rmsnorm": {"autograd": 5}, "rope": {"autograd": 4}, "swiglu": {"autograd": 2}}
    assert patched.layers[0].attention_norm.weight.grad is not None


def test_falls_back_on_a_cpu_without_the_triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokens = tiny_llama()
    patched = copy.deepcopy(model)
    report = runtime.apply(patched, kernels=PYTHON_KERNELS)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with torch.inference_mode():
        assert torch.equal(patched(tokens), model(tokens))  # the original ops, exactly
    assert report.kernel_calls() == {"rmsnorm": 0, "rope": 0, "swiglu": 0}
    assert report.fallbacks()["rmsnorm"] == {"device": 5}


def test_a_kernel_that_refuses_a_shape_falls_back_to_the_reference_and_is_counted() -> None:
    def picky_rmsnorm(x, weight, eps):
        if x.shape[-1] % 64:
            raise ValueError("this kernel needs a multiple of 64 columns")
        return rmsnorm_in_torch(x, weight, eps)

    model, tokens = tiny_llama()  # dim 32
    patched = copy.deepcopy(model)
    report = runtime.apply(patched, kernels={"rmsnorm": picky_rmsnorm})
    with torch.inference_mode():
        torch.testing.assert_close(patched(tokens), model(tokens), rtol=1e-5, atol=1e-6)
    assert report.fallbacks() == {"rmsnorm": {"shape": 5}}
    assert report.kernel_calls() == {"rmsnorm": 0}


class OffsetRMSNorm(nn.Module):
    """Named like an RMSNorm, but scales by (1 + weight), as Gemma does: not the built-in's maths."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.eps = 1e-6
        self.weight = nn.Parameter(torch.randn(dim) * 0.1)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1 + self.weight)


class GeluGatedMLP(nn.Module):
    """Gate, up and down projections, but a GELU gate: not SwiGLU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(dim, 16), nn.Linear(dim, 16), nn.Linear(16, dim)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


def test_look_alike_modules_with_other_maths_are_left_alone() -> None:
    model = nn.Sequential(OffsetRMSNorm(8), GeluGatedMLP(8))
    report = runtime.apply(model, kernels=PYTHON_KERNELS)
    assert report.swaps == []


def test_restore_gives_every_module_its_own_forward_back() -> None:
    model, tokens = tiny_llama()
    patched = copy.deepcopy(model)
    report = runtime.apply(patched, kernels=PYTHON_KERNELS)
    assert runtime.restore(patched) == len(report.swaps)
    with torch.inference_mode():
        patched(tokens)
    assert report.kernel_calls() == {"rmsnorm": 0, "rope": 0, "swiglu": 0}


def test_functional_op_runs_the_kernel_and_falls_back_under_autograd() -> None:
    rmsnorm = runtime.functional("rmsnorm", rmsnorm_in_torch)
    x, w = torch.randn(3, 16), torch.randn(16)
    torch.testing.assert_close(rmsnorm(x, w, 1e-6), rmsnorm_in_torch(x, w))
    assert rmsnorm.slot.kernel_calls == 1
    rmsnorm(x, w.requires_grad_(), 1e-6)
    assert rmsnorm.slot.fallbacks == {"autograd": 1}


def test_unknown_ops_are_refused_with_the_list_of_swappable_ones() -> None:
    with pytest.raises(TaskError, match="swappable ops are"):
        runtime.apply(nn.Linear(2, 2), ops=["conv2d"])
