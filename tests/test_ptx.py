"""The built-in kernels compiled for an H100 on this GPU-less machine: a memory-bound kernel must move
its rows in 16-byte vector accesses, or it cannot come near the bandwidth whatever else it does.

Runs `python -m autokernel_ci.harness.ptx` in a child without TRITON_INTERPRET (the interpreter
replaces the JIT that compiles). Shapes keep the benchmark's row lengths, with few rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW_OPS = {  # op -> (shape, the kernel that streams the rows)
    "rmsnorm": ("rows=64,dim=4096", "_rmsnorm_fwd_kernel"),
    "layernorm": ("rows=64,dim=4096", "_layernorm_fwd_kernel"),
    "softmax": ("rows=64,dim=4096", "_softmax_fwd_kernel"),
    "swiglu": ("rows=64,dim=4096", "_swiglu_fwd_kernel"),
    "add_rmsnorm": ("rows=64,dim=4096", "_add_rmsnorm_fwd_kernel"),
    "rope": ("B=1,H=32,S=64,D=128", "_rope_fwd_kernel"),
    "cross_entropy": ("T=64,V=32000", "_cross_entropy_partial_kernel"),
}


def inspect(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "ptx.json"
    done = subprocess.run([sys.executable, "-m", "autokernel_ci.harness.ptx", *args, "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    return done, (json.loads(out.read_text()) if out.is_file() else [])


@pytest.mark.parametrize("op", sorted(ROW_OPS))
def test_memory_bound_kernels_move_rows_in_16_byte_vectors(op: str, tmp_path: Path):
    from autokernel_ci.ops import get_op

    shape, kernel = ROW_OPS[op]
    dims = [part.split("=")[0] for part in shape.split(",")]
    assert dims == list(get_op(op).dims), f"{op}: the test's shape names {dims}"
    done, summaries = inspect(tmp_path, "--op", op, "--shape", shape)
    assert done.returncode == 0, done.stderr[-3000:]
    (main,) = [s for s in summaries if s["kernel"] == kernel]
    loads = {int(k): n for k, n in main["global_loads"].items()}
    stores = {int(k): n for k, n in main["global_stores"].items()}
    assert loads.get(16), f"{op}: no 16-byte loads: {loads}"
    row_stores = stores if op != "cross_entropy" else {}  # it stores two floats per row, not a row
    assert all(width == 16 for width in row_stores), f"{op}: stores narrower than 16 bytes: {stores}"
    assert main["instructions"] > 0 and main["num_warps"] >= 1


def test_an_odd_row_length_is_seen_to_cost_the_vector_accesses(tmp_path: Path):
    done, summaries = inspect(tmp_path, "--op", "rmsnorm", "--shape", "rows=64,dim=4095")
    assert done.returncode == 0, done.stderr[-3000:]
    (main,) = summaries
    assert main["narrowest_global_access"] == 2  # one bf16 at a time: rows no longer 16-byte aligned
    assert "2 B" in done.stdout


def test_a_candidate_file_is_inspected_and_bad_input_is_one_line(tmp_path: Path):
    candidate = ROOT / "benchmarks" / "candidates" / "rope_position_blocks.py"
    done, summaries = inspect(tmp_path, "--op", "rope", "--candidate", str(candidate), "--shape", "B=1,H=32,S=64,D=128")
    assert done.returncode == 0 and summaries[0]["kernel"] == "_rope_fwd_kernel", done.stderr[-2000:]
    bad, _ = inspect(tmp_path, "--op", "rope", "--shape", "rows=4")
    assert bad.returncode == 2 and "--shape must name B, H, S, D" in bad.stderr
    missing, _ = inspect(tmp_path, "--op", "rope", "--candidate", str(tmp_path / "nope.py"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("import triton\nimport triton.language as tl\n\n@triton.jit\ndef k(X):\n"
                      "    tl.store(X, undefined_name)\n\ndef kernel_fn(x, cos, sin):\n    k[(1,)](x)\n    return x\n")
    failed, _ = inspect(tmp_path, "--op", "rope", "--candidate", str(broken), "--shape", "B=1,H=1,S=1,D=2")
    assert failed.returncode == 1 and "could not be compiled for sm_90a" in failed.stderr
    assert all("Traceback" not in r.stderr for r in (bad, missing, failed))


GELU_KERNEL = '''\
import torch
import triton
import triton.language as tl


@triton.jit
def _gelu_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n).to(tl.float32)
    y = x * tl.sigmoid(1.702 * x)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=offs < n)


def launch(x):
    y = torch.empty_like(x)
    _gelu_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    return y
'''
GELU_REFS = '''\
import torch

def reference(x):
    return x * torch.sigmoid(1.702 * x)

def make_inputs(shape, dtype, generator, kind="normal"):
    return (torch.randn((shape["rows"], shape["dim"]), generator=generator).to(dtype),)
'''


def test_a_custom_kernel_named_in_the_config_is_inspected_with_its_own_inputs_and_entry(tmp_path: Path):
    repo = tmp_path / "repo"  # apart from the output folder: in the sandbox the repository is read-only
    repo.mkdir()
    (repo / "gelu.py").write_text(GELU_KERNEL)
    (repo / "gelu_refs.py").write_text(GELU_REFS)
    config = repo / ".autokernel.yml"
    config.write_text("version: 1\nkernels:\n  - name: gelu\n    path: gelu.py\n    entry: launch\n"
                      "    reference: gelu_refs:reference\n    inputs: gelu_refs:make_inputs\n"
                      "    shapes: [{rows: 7, dim: 33}, {rows: 64, dim: 4096}]\n")
    done, summaries = inspect(tmp_path, "--task", "gelu", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [s["kernel"] for s in summaries] == ["_gelu_kernel"]
    assert done.stdout.startswith("gelu 64×4096 bf16, ")  # the largest test shape, as no bench shape is given
    (tmp_path / "ptx.json").unlink()  # an output that exists is mounted read-only like any named file
    odd, summaries = inspect(tmp_path, "--task", "gelu", "--config", str(config), "--shape", "rows=3,dim=5")
    assert odd.returncode == 0 and summaries[0]["instructions"] > 0, odd.stderr[-2000:]
