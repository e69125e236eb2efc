"""verify: a wrong kernel swapped into a model is caught, a right one passes, eager and under
torch.compile; the four variants are timed; the command's exit status says which."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autokernel_ci.profiling import model_target
from autokernel_ci.verify import TimingOptions, compare_outputs, fresh_inputs, verify_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / ".autokernel.yml"
SMALL = {"seq_len": 4}

RIGHT_RMSNORM = '''
import torch

def kernel_fn(x, weight, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)
'''
NO_WEIGHT_RMSNORM = '''
import torch

def kernel_fn(x, weight, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)  # forgets the weight
'''
BACKWARDS_ROPE = '''
from autokernel_ci.ops.rope import reference

def kernel_fn(x, cos, sin):
    return reference(x, cos, -sin)  # rotates the wrong way
'''


def kernel_file(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return path


@pytest.fixture(scope="module")
def llama():
    return model_target("llama-tiny", CONFIG)[0]


def test_a_right_kernel_passes_eager_and_under_torch_compile(llama) -> None:
    # The built-in Triton starters, in the interpreter.
    result = verify_model(llama, seeds=(1,), time_variants=False, compile_backend="aot_eager",
                          factory_kwargs=SMALL)
    assert result.passed, result.message
    assert {c.variant for c in result.checks} == {"patched", "patched+compile", "compile"}
    assert all(c.passed for c in result.checks if c.gating)
    assert result.kernel_calls["rmsnorm"] >= 3 * 5  # the kernels ran: three forwards (patched, compiled, …)
    assert result.fallbacks == {} and not result.representative


def test_a_kernel_that_forgets_the_weight_is_caught(llama, tmp_path: Path) -> None:
    wrong = kernel_file(tmp_path, "rmsnorm_wrong", NO_WEIGHT_RMSNORM)
    result = verify_model(llama, kernels={"rmsnorm": wrong}, ops=["rmsnorm"], seeds=(1, 2), time_variants=False,
                          compile=False, factory_kwargs=SMALL)
    assert not result.passed
    assert all(not c.passed and c.rel_l2 > 1e-2 for c in result.checks)
    assert "3 of 3 output checks failed" in result.message


def test_a_rope_that_rotates_backwards_is_caught_under_torch_compile_too(llama, tmp_path: Path) -> None:
    wrong = kernel_file(tmp_path, "rope_wrong", BACKWARDS_ROPE)
    result = verify_model(llama, kernels={"rope": wrong}, ops=["rope"], seeds=(1,), time_variants=False,
                          compile_backend="aot_eager", factory_kwargs=SMALL)
    assert not result.passed
    assert {c.variant for c in result.checks if not c.passed} == {"patched", "patched+compile"}


def test_the_four_variants_are_timed_and_marked_not_representative_on_a_cpu(llama, tmp_path: Path) -> None:
    right = kernel_file(tmp_path, "rmsnorm_right", RIGHT_RMSNORM)
    result = verify_model(llama, kernels={"rmsnorm": right}, ops=["rmsnorm"], seeds=(), compile_backend="aot_eager",
                          timing=TimingOptions(warmup_ms=1, rep_ms=1, min_reps=3, max_reps=3), factory_kwargs=SMALL)
    assert result.passed
    assert list(result.timings) == ["eager", "compile", "patched", "patched+compile"]
    assert all(t.count == 3 and t.median_us > 0 for t in result.timings.values())
    assert result.speedups["patched vs eager"] is not None
    assert any("not representative" in n for n in result.notes)
    data = json.loads(result.to_json())
    assert data["speedups"] and data["swaps"][0]["op"] == "rmsnorm"


def test_a_bf16_model_is_judged_against_its_own_rounding(tmp_path: Path) -> None:
    target = model_target("llama-tiny", CONFIG)[0]
    target.dtype, target.tolerance = "bf16", (0.0, 1e-6)  # far tighter than bf16 can match
    right = kernel_file(tmp_path, "rmsnorm_right", RIGHT_RMSNORM)
    result = verify_model(target, kernels={"rmsnorm": right}, ops=["rmsnorm"], seeds=(1,), time_variants=False,
                          compile=False, factory_kwargs=SMALL)
    # As close to the fp32 model as the original bf16 model is: within bf16's own rounding.
    assert result.passed, result.message
    assert all(c.rel_l2_vs_fp32 is not None and c.eager_vs_fp32 is not None for c in result.checks)
    wrong = kernel_file(tmp_path, "rmsnorm_wrong", NO_WEIGHT_RMSNORM)
    assert not verify_model(target, kernels={"rmsnorm": wrong}, ops=["rmsnorm"], seeds=(), time_variants=False,
                            compile=False, factory_kwargs=SMALL).passed


def test_compare_outputs_fails_on_nan_and_on_shape_changes() -> None:
    ref = torch.ones(4, 8)
    assert compare_outputs(ref.clone(), ref, (0.0, 1e-6))[2]
    nan = ref.clone()
    nan[1, 2] = float("nan")
    rel, _, passed, nonfinite = compare_outputs(nan, ref, (1.0, 1.0))
    assert not passed and nonfinite
    assert compare_outputs(torch.ones(4, 9), ref, (1.0, 1.0))[0] == math.inf
    assert compare_outputs((ref, torch.arange(3)), (ref, torch.arange(3)), (0.0, 0.0))[2]


def test_fresh_inputs_draw_new_token_ids_from_the_examples_range() -> None:
    tokens = torch.tensor([[0, 63, 5, 9]])
    (new,), _ = fresh_inputs([tokens], {}, seed=3)
    assert new.shape == tokens.shape and new.dtype == tokens.dtype and not torch.equal(new, tokens)
    assert int(new.min()) >= 0 and int(new.max()) <= 63


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autokernel_ci", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_verify_command_exits_one_on_a_wrong_kernel_and_zero_on_a_right_one(tmp_path: Path) -> None:
    common = ("verify", "--config", str(CONFIG), "--model", "llama-tiny", "--ops", "rmsnorm", "--no-time",
              "--no-compile", "--seeds", "1", "--arg", "seq_len=4")
    wrong = cli(*common, "--kernel", f"rmsnorm={kernel_file(tmp_path, 'wrong', NO_WEIGHT_RMSNORM)}")
    assert wrong.returncode == 1 and "FAIL" in wrong.stdout, wrong.stderr
    out = tmp_path / "verify.json"
    right = cli(*common, "--kernel", f"rmsnorm={kernel_file(tmp_path, 'right', RIGHT_RMSNORM)}", "--json", str(out))
    assert right.returncode == 0 and "PASS" in right.stdout, right.stdout + right.stderr
    assert json.loads(out.read_text())["passed"] is True
    bad = cli("verify", "--config", str(CONFIG), "--model", "llama-tiny", "--arg", "size=huge", "--no-time")
    assert bad.returncode == 2 and "factory models.llama:build_tiny" in bad.stderr and "Traceback" not in bad.stderr


def test_a_swapped_op_whose_kernel_never_runs_fails_with_the_reason(llama, monkeypatch) -> None:
    # Without the interpreter on a CPU every call falls back to the original op: the outputs match
    # exactly, and that proves nothing about the kernel.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    result = verify_model(llama, ops=["rmsnorm"], seeds=(1,), time_variants=False, compile=False,
                          factory_kwargs=SMALL)
    assert all(c.passed and c.rel_l2 == 0.0 for c in result.checks)
    assert not result.passed
    assert result.kernel_calls.get("rmsnorm", 0) == 0 and result.fallbacks["rmsnorm"]["device"] > 0
    assert "rmsnorm: kernel never called" in result.message and "TRITON_INTERPRET" in result.message


def test_a_pass_says_how_many_times_each_kernel_ran(llama) -> None:
    result = verify_model(llama, ops=["rmsnorm", "swiglu"], seeds=(), time_variants=False, compile=False,
                          factory_kwargs=SMALL)
    assert result.passed, result.message
    calls = result.kernel_calls
    assert calls["rmsnorm"] > 0 and calls["swiglu"] > 0
    assert f"rmsnorm 5 modules, {calls['rmsnorm']} kernel calls" in result.message


def test_verify_command_turns_the_interpreter_on_for_a_cpu(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "autokernel_ci", "verify", "--config", str(CONFIG), "--model",
                          "llama-tiny", "--ops", "rmsnorm", "--no-time", "--no-compile", "--seeds", "0", "--arg",
                          "seq_len=4", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "kernel call(s)" in run.stdout and "never called" not in run.stdout


CUSTOM_MODEL = '''
import torch


def gelu_fn(x):
    return x * torch.sigmoid(1.702 * x)


class Gelu(torch.nn.Module):
    def forward(self, x):
        return gelu_fn(x)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act, self.out = torch.nn.Linear(16, 32), Gelu(), torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.out(self.act(self.fc(x)))


def build():
    torch.manual_seed(0)
    return Net(), (torch.randn(3, 16),)


def reference(x):
    return gelu_fn(x)


def make_inputs(shape, dtype, generator, kind="normal"):
    return (torch.randn((shape["rows"], shape["dim"]), generator=generator).to(dtype),)
'''
GELU_TRITON = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _gelu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n).to(tl.float32)
    tl.store(y_ptr + offs, (x * tl.sigmoid(SCALE * x)).to(y_ptr.dtype.element_ty), mask=offs < n)


SCALE = 1.702


def launch(x):
    x = x.contiguous()
    y = torch.empty_like(x)
    _gelu_kernel[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), BLOCK=256)
    return y
'''


@pytest.fixture
def custom_repo(tmp_path: Path) -> Path:
    (tmp_path / "mynet.py").write_text(CUSTOM_MODEL)
    (tmp_path / "gelu.py").write_text(GELU_TRITON)
    (tmp_path / "gelu_wrong.py").write_text(GELU_TRITON.replace("SCALE = 1.702", "SCALE = 1.0"))
    (tmp_path / ".autokernel.yml").write_text(
        "version: 1\nkernels:\n"
        "  - {name: gelu, path: gelu.py, entry: launch, reference: 'mynet:reference', inputs: 'mynet:make_inputs',"
        " shapes: [{rows: 3, dim: 32}]}\n"
        "  - {name: gelu_wrong, path: gelu_wrong.py, entry: launch, reference: 'mynet:reference',"
        " inputs: 'mynet:make_inputs', shapes: [{rows: 3, dim: 32}]}\n"
        "models:\n  - {name: net, factory: 'mynet:build', dtype: fp32, swap: [rmsnorm]}\n")
    return tmp_path


@pytest.mark.parametrize("where", ["mynet:Gelu", "mynet:gelu_fn"])
def test_a_config_tasks_own_kernel_is_swapped_for_the_module_or_function_it_names(custom_repo: Path,
                                                                                  where: str) -> None:
    config = custom_repo / ".autokernel.yml"
    target = model_target("net", config)[0]
    right = verify_model(target, config_path=config, custom={"gelu": where}, ops=[], seeds=(1,),
                         time_variants=False, compile=False)
    assert right.passed, right.message
    assert right.kernel_calls["gelu"] == 2  # once per input set: the Triton kernel ran
    assert "gelu 1 module, 2 kernel calls" in right.message
    wrong = verify_model(target, config_path=config, custom={"gelu_wrong": where}, ops=[], seeds=(1,),
                         time_variants=False, compile=False)
    assert not wrong.passed and wrong.kernel_calls["gelu_wrong"] == 2
    import mynet  # the swapped function is put back

    assert mynet.gelu_fn.__name__ == "gelu_fn"


def test_profile_runs_the_model_with_a_config_tasks_kernel_swapped_in(custom_repo: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "autokernel_ci", "profile", "--model", "net", "--config",
                          str(custom_repo / ".autokernel.yml"), "--swap", "gelu=mynet:Gelu", "--steps", "1",
                          "--warmup", "0", "--device", "cpu", "--json", str(custom_repo / "out" / "plan.json")],
                         cwd=custom_repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    swapped = json.loads((custom_repo / "out" / "plan.json").read_text())["swapped"]
    assert len(swapped) == 1 and swapped[0].startswith("gelu in place of mynet:Gelu: 1 module(s), ")
    assert not swapped[0].endswith(" 0 kernel call(s)") and "swapped in: gelu" in run.stdout
