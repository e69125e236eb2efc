"""Compile a kernel file's Triton kernels for an H100 (sm_90) without a GPU, and report their resources.

Triton's NVIDIA backend (bundled with the triton wheel, ptxas included) compiles on a machine without
a GPU when the target is named. `compile_calls` runs `kernel_fn` on meta tensors with every kernel
launch turned into a compile-only warm-up, so the interpreter's blind spots are caught here: type
errors the interpreter forgives, shared memory over the 227 KB budget, register spills.

Run in a fresh process with TRITON_INTERPRET unset (the interpreter replaces `triton.jit` at import):

    python -m tests.ops.hopper rmsnorm bf16 "rows=16384,dim=4096;rows=1,dim=4096" [KNOB=value ...]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

H100_SHARED_MEM = 232448  # bytes a block may use (227 KB)


@dataclass
class CompiledKernelInfo:
    name: str
    num_warps: int
    num_stages: int
    shared: int
    registers: int
    spill_bytes: int
    vector_loads: int  # ld.global.v2/v4 instructions in the PTX


class _CompileOnlyDriver:
    """Just enough of a driver for `JITFunction.run(warmup=True)`: an sm_90 target, device 0."""

    def __init__(self) -> None:
        from triton.backends.compiler import GPUTarget

        self._target = GPUTarget("cuda", 90, 32)

    def get_current_target(self):
        return self._target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


def _ptxas_resources(ptx: str) -> tuple[int, int]:
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name=sm_90a", str(src), "-o", str(Path(tmp) / "k.o")],
                              capture_output=True, text=True, check=True)
    log = proc.stderr + proc.stdout
    regs = re.search(r"Used (\d+) registers", log)
    spills = [int(m) for m in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    return (int(regs.group(1)) if regs else -1), max(spills, default=0)


def compile_calls(op: str, dtype: str, shape: dict[str, int], knobs: dict[str, object]) -> list[CompiledKernelInfo]:
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    from autokernel_ci.ops.base import DTYPES

    module = __import__(f"autokernel_ci.ops.{op}", fromlist=["kernel_fn"])
    for name, value in knobs.items():
        setattr(module, name, value)
    args = meta_inputs(op, shape, DTYPES[dtype])

    compiled = []
    original_run = JITFunction.run

    def compile_only(self, *a, grid, warmup, **kw):
        kernel = original_run(self, *a, grid=grid, warmup=True, **kw)
        compiled.append(kernel)
        return kernel

    driver.set_active(_CompileOnlyDriver())
    JITFunction.run = compile_only
    try:
        module.kernel_fn(*args)
    finally:
        JITFunction.run = original_run
    infos = []
    for kernel in compiled:
        regs, spills = _ptxas_resources(kernel.asm["ptx"])
        vec = len(re.findall(r"ld\.global(?:\.\w+)*\.v[24]", kernel.asm["ptx"]))
        md = kernel.metadata
        infos.append(CompiledKernelInfo(md.name, md.num_warps, md.num_stages, md.shared, regs, spills, vec))
    return infos


def meta_inputs(op: str, shape: dict[str, int], dtype) -> tuple:
    """The op's arguments as meta tensors (shape, dtype and strides, no data) at a full-size shape."""
    import torch

    def t(*size, dt=dtype):
        return torch.empty(size, dtype=dt, device="meta")

    s = shape
    if op in ("rmsnorm", "add_rmsnorm", "layernorm", "softmax", "swiglu"):
        x = t(s["rows"], s["dim"])
        return {"rmsnorm": (x, t(s["dim"]), 1e-6), "layernorm": (x, t(s["dim"]), t(s["dim"]), 1e-5),
                "softmax": (x,), "swiglu": (x, t(s["rows"], s["dim"])),
                "add_rmsnorm": (x, t(s["rows"], s["dim"]), t(s["dim"]), 1e-6)}[op]
    if op == "cross_entropy":
        return (t(s["T"], s["V"]), t(s["T"], dt=torch.int64))
    if op == "rope":
        return (t(s["B"], s["H"], s["S"], s["D"]), t(s["S"], s["D"] // 2), t(s["S"], s["D"] // 2))
    if op == "matmul":
        return (t(s["M"], s["K"]), t(s["K"], s["N"]))
    raise ValueError(f"no meta inputs for op {op!r}")


def compile_in_subprocess(op: str, dtype: str, shapes: list[dict[str, int]], knobs: dict[str, object] | None = None,
                          timeout: float = 600) -> list[list[CompiledKernelInfo]]:
    """`compile_calls` for each shape, in a child process without the interpreter.

    Returns, per shape, the kernels `kernel_fn` launched; raises with the child's stderr on failure.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    shape_arg = ";".join(",".join(f"{k}={v}" for k, v in shape.items()) for shape in shapes)
    knob_args = [f"{k}={v!r}" for k, v in (knobs or {}).items()]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "tests.ops.hopper", op, dtype, shape_arg, *knob_args],
                          capture_output=True, text=True, env=env, cwd=root, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling {op} {dtype} {shapes} {knobs} for sm_90 failed:\n{proc.stderr[-4000:]}")
    per_shape = json.loads(proc.stdout.strip().splitlines()[-1])
    return [[CompiledKernelInfo(**d) for d in kernels] for kernels in per_shape]


def main(argv: list[str]) -> int:
    import ast

    op, dtype, shapes_arg, *knob_args = argv
    shapes = [{k: int(v) for k, v in (item.split("=") for item in shape.split(","))} for shape in shapes_arg.split(";")]
    knobs = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in knob_args)}
    print(json.dumps([[asdict(i) for i in compile_calls(op, dtype, shape, knobs)] for shape in shapes]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
