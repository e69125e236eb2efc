"""What a kernel file's Triton kernels compile to on an H100, worked out on any machine, GPU or not.

    python -m autokernel_ci.harness.ptx --op rmsnorm [--candidate FILE] [--shape rows=16384,dim=4096] [--dtype bf16]
    python -m autokernel_ci.harness.ptx --task NAME [--config .autokernel.yml] [--shape dim=value,…]

`--task` takes any kernel named in the config, your own included: its input factory draws the inputs,
its `entry` is called, and its file is inspected unless `--candidate` names another.

Triton compiles for a CUDA target without a GPU (the compiler and ptxas come with it); only running
needs one. This calls the kernel file's `kernel_fn` on CPU tensors of the given shape with every
Triton launch intercepted instead of run, compiles each launch exactly as the JIT would on an H100
(sm_90a, the same constexprs, num_warps and num_stages, and the launch's specialisations: an int or
pointer divisible by 16 is marked so, an int equal to 1 becomes a constant), and summarises the
PTX: how wide the global loads and stores are (16-byte vector accesses, or 2-byte scalar ones that
would cap a memory-bound kernel far below the bandwidth), shared-memory round trips and barriers
(layout conversions), special-function ops, and the instruction count per thread.

It must run without TRITON_INTERPRET (the interpreter replaces the JIT); the command line refuses
to run with it set. Numbers are static: what the code asks the GPU to do, not how fast it does it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autokernel_ci.errors import AutokernelError

TARGET = ("cuda", 90, 32)  # an H100: sm_90a, warps of 32
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64", "int64": "i64",
           "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "i1"}
_ACCESS = re.compile(r"\b(ld|st)\.(global|shared)((?:\.\w+)*)")
_WIDTH = re.compile(r"\.(?:b|u|s|f)(\d+)\b")


@dataclass
class Launch:
    """One intercepted launch: the kernel and everything the JIT would specialise on."""

    kernel: Any  # the JITFunction
    args: dict[str, Any]  # parameter name -> value, defaults filled in
    num_warps: int = 4
    num_stages: int = 3

    @property
    def name(self) -> str:
        return self.kernel.__name__


@dataclass
class PtxSummary:
    kernel: str
    num_warps: int
    instructions: int
    global_loads: dict[int, int] = field(default_factory=dict)  # bytes per instruction -> count
    global_stores: dict[int, int] = field(default_factory=dict)
    shared_loads: int = 0
    shared_stores: int = 0
    barriers: int = 0
    special: int = 0  # ex2, lg2, rsqrt, rcp, sqrt, sin, cos (the special-function unit)
    ptx_lines: int = 0

    @property
    def narrowest_global_access(self) -> int:
        widths = list(self.global_loads) + list(self.global_stores)
        return min(widths) if widths else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "narrowest_global_access": self.narrowest_global_access}


def capture_launches(kernel_fn: Any, args: tuple[Any, ...]) -> list[Launch]:
    """Call `kernel_fn(*args)` with every Triton JIT launch recorded instead of run."""
    import triton.runtime.jit as jit

    if not hasattr(jit, "JITFunction") or os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("PTX inspection needs the Triton JIT: unset TRITON_INTERPRET")
    launches: list[Launch] = []
    original = jit.JITFunction.run

    def record(self, *call_args, grid=None, warmup=False, **kwargs):
        names = list(self.arg_names)
        bound = dict(zip(names, call_args))
        options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound.update({k: v for k, v in kwargs.items() if k in names})
        for param in self.params:  # defaults the call left out
            if param.name not in bound and param.has_default:
                bound[param.name] = param.default
        launches.append(Launch(self, bound, options.get("num_warps", 4), options.get("num_stages", 3)))
        return None

    jit.JITFunction.run = record
    try:
        kernel_fn(*args)
    finally:
        jit.JITFunction.run = original
    return launches


def compile_launch(launch: Launch) -> str:
    """The PTX the JIT would produce for this launch on an H100."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    fn = launch.kernel
    names = list(fn.arg_names)
    constexpr_names = {p.name for p in fn.params if p.is_constexpr}
    signature: dict[str, str] = {}
    constexprs: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, name in enumerate(names):
        value = launch.args.get(name)
        if name in constexpr_names or value is None or isinstance(value, str):
            signature[name] = "constexpr"
            constexprs[(i,)] = value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + _DTYPES[str(value.dtype).removeprefix("torch.")]
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            if value == 1:  # the JIT turns an int equal to 1 into a constant
                signature[name] = "constexpr"
                constexprs[(i,)] = 1
                continue
            signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{launch.name}: cannot type argument {name}={value!r}")
    source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget(*TARGET),
                              options={"num_warps": launch.num_warps, "num_stages": launch.num_stages})
    return compiled.asm["ptx"]


def summarize(ptx: str, kernel: str, num_warps: int) -> PtxSummary:
    summary = PtxSummary(kernel=kernel, num_warps=num_warps, instructions=0, ptx_lines=len(ptx.splitlines()))
    loads: collections.Counter[int] = collections.Counter()
    stores: collections.Counter[int] = collections.Counter()
    for raw in ptx.splitlines():
        line = raw.strip()
        if not line or line.startswith(("//", ".", "{", "}", "$")) or line.endswith(":"):
            continue
        summary.instructions += 1
        access = _ACCESS.search(line)
        if access:
            kind, space, suffix = access.groups()
            if space == "shared":
                if kind == "ld":
                    summary.shared_loads += 1
                else:
                    summary.shared_stores += 1
                continue
            vector = re.search(r"\.v(\d)", suffix)
            width = _WIDTH.search(suffix)
            nbytes = (int(vector.group(1)) if vector else 1) * (int(width.group(1)) // 8 if width else 4)
            (loads if kind == "ld" else stores)[nbytes] += 1
        elif re.match(r"(@!?%p\d+\s+)?bar\.", line):
            summary.barriers += 1
        elif re.search(r"\b(ex2|lg2|rsqrt|rcp|sqrt|sin|cos)\.", line):
            summary.special += 1
    summary.global_loads = dict(sorted(loads.items()))
    summary.global_stores = dict(sorted(stores.items()))
    return summary


def inspect_source(path: str | Path, args: tuple[Any, ...], entry: str = "kernel_fn") -> list[PtxSummary]:
    """Every Triton launch `entry(*args)` of the file at `path` makes, compiled for an H100 and summarised."""
    from autokernel_ci.tasks import load_module_from_path

    module = load_module_from_path(Path(path), name=f"_autokernel_ptx_{abs(hash(str(path)))}")
    if not callable(getattr(module, entry, None)):
        raise AutokernelError(f"{path} defines no callable {entry}")
    launches = capture_launches(getattr(module, entry), args)
    return [summarize(compile_launch(launch), launch.name, launch.num_warps) for launch in launches]


def _parse_shape(text: str) -> dict[str, int]:
    shape = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if not value.strip().isdigit():
            raise SystemExit(f"--shape: expected name=value pairs such as rows=16384,dim=4096, got {text!r}")
        shape[key.strip()] = int(value)
    return shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autokernel_ci.harness.ptx", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--op", help="a built-in op: its input factory and, without --candidate, its starter kernel")
    which.add_argument("--task", help="a kernel named in .autokernel.yml (built-in op or your own): its input "
                                      "factory, its entry function and, without --candidate, its file")
    parser.add_argument("--config", type=Path, help="the config for --task (default: ./.autokernel.yml)")
    parser.add_argument("--candidate", type=Path, help="the kernel file (default: the op's starter kernel)")
    parser.add_argument("--shape", help="dims as name=value,… (default: the first benchmark shape, else the "
                                        "largest test shape)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--json", type=Path, help="write the summaries here")
    args = parser.parse_args(argv)
    from autokernel_ci.harness import bwrap

    inside = os.environ.get(bwrap.INSIDE_ENV) == "1"
    if inside:
        os.environ.pop("TRITON_INTERPRET", None)  # the sandbox's CPU environment sets it; compiling needs the JIT
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("TRITON_INTERPRET=1 replaces Triton's JIT: run this without it")
    import tempfile

    import torch

    from autokernel_ci.ops import OP_NAMES, get_op, starter_source
    from autokernel_ci.ops.base import DTYPES

    entry, default_path, label = "kernel_fn", None, args.op
    if args.task:
        from autokernel_ci.tasks import resolve_task

        try:
            task = resolve_task(args.task, args.config)
        except AutokernelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if task.kind == "kernelbench":
            parser.error(f"{args.task} is a KernelBench task: its ModelNew is not a kernel_fn to inspect")
        spec, entry, default_path, label = task.spec, task.entry, task.path, task.name
        from autokernel_ci.tasks import InSandbox, task_inputs_from_wire

        if isinstance(spec.make_inputs, InSandbox):  # the input factory is repository code
            if not inside and bwrap.sandbox_mode() == "bwrap":
                # Run this whole command in the sandbox, as profile and verify do.
                return bwrap.run_command_inside(list(sys.argv[1:] if argv is None else argv), [args.json],
                                                module="autokernel_ci.harness.ptx")
            from dataclasses import replace

            spec = replace(spec, make_inputs=task_inputs_from_wire(task.to_wire())[0])
    elif args.op not in OP_NAMES:
        parser.error(f"unknown op {args.op!r}; built-in ops: {', '.join(OP_NAMES)}")
    else:
        spec = get_op(args.op)
    shapes = [s for s in spec.bench_shapes if s] or [max(spec.test_shapes, key=lambda s: sum(s.values()))]
    shape = _parse_shape(args.shape) if args.shape else dict(shapes[0])
    if set(shape) != set(spec.dims):
        parser.error(f"--shape must name {', '.join(spec.dims)}; got {', '.join(shape)}")
    try:
        inputs = spec.make_inputs(shape, DTYPES[args.dtype], torch.Generator().manual_seed(0), "normal")
    except Exception as exc:  # noqa: BLE001 - the user's input factory failed: say so, with where
        from autokernel_ci.harness.correctness import user_code_error

        print(f"error: {user_code_error(f'the input factory of {label}', exc)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        path = args.candidate or default_path
        if path is None:
            path = Path(tmp) / f"{args.op}.py"
            path.write_text(starter_source(args.op))
        try:
            summaries = inspect_source(path, tuple(inputs), entry=entry)
        except AutokernelError as exc:  # a file that is missing, does not import, or has no kernel_fn
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - the candidate's own failure (a compile error, a bad launch)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(f"error: {path} could not be compiled for sm_90a: {type(exc).__name__}: {first}"[:500],
                  file=sys.stderr)
            return 1
    if not summaries:
        print(f"error: {path}'s {entry} launched no Triton kernel", file=sys.stderr)
        return 1
    print(f"{label} {'×'.join(str(v) for v in shape.values())} {args.dtype}, "
          f"{args.candidate or default_path or 'starter kernel'}, compiled for sm_90a:")
    for s in summaries:
        print(f"  {s.kernel}: {s.num_warps} warps, {s.instructions} PTX instructions a thread; global loads "
              f"{_widths(s.global_loads)}, stores {_widths(s.global_stores)}; shared ld/st {s.shared_loads}/"
              f"{s.shared_stores}, barriers {s.barriers}, special-function ops {s.special}")
    if args.json:
        try:
            args.json.write_text(json.dumps([s.to_dict() for s in summaries], indent=1))
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


def _widths(counts: dict[int, int]) -> str:
    return ", ".join(f"{n}×{width} B" for width, n in counts.items()) or "none"


if __name__ == "__main__":
    sys.exit(main())
