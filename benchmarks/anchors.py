"""The op library side by side with Liger-Kernel and AutoKernel's starter kernels, in one process.

    python benchmarks/anchors.py [--anchors DIR] [OP ...]   # on a CUDA machine; JSON to $OUT/anchors.json

DIR holds AutoKernel's starter kernels (`rmsnorm.py`, `layernorm.py`, ... each with `kernel_fn`); they
are loaded from there at run time, never copied into the package (default: ../shared/anchors/autokernel,
else ./anchors/autokernel). Liger-Kernel is imported when installed (`pip install liger-kernel`).

Every implementation is checked against the op's reference on the same inputs first (a wrong one is
listed, not timed), then timed with the harness's `time_fn` (CUDA events, L2 flushed, median), one
after another on the same inputs, bf16. A plain device copy of the same bytes is timed beside each
memory-bound op: the practical ceiling at that size (for rope, the issue's target is 95 % of it).
Decode shapes (1–16 rows) are also timed under CUDA-graph replay, which is how they run in serving.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# op → the AutoKernel starter file that implements it with the same signature
AUTOKERNEL_FILES = {"rmsnorm": "rmsnorm.py", "layernorm": "layernorm.py", "softmax": "softmax.py",
                    "cross_entropy": "cross_entropy.py", "rope": "rotary_embedding.py"}
OPS = ("rmsnorm", "layernorm", "softmax", "cross_entropy", "rope", "swiglu", "add_rmsnorm")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _liger(op: str):
    """Liger-Kernel's forward for `op`, adapted to the op's signature, or None."""
    try:
        if op == "rmsnorm":
            from liger_kernel.ops.rms_norm import rms_norm_forward

            return lambda x, w, eps=1e-6: rms_norm_forward(x, w, eps, 0.0, "llama", None)[0]
        if op == "layernorm":
            from liger_kernel.ops.layer_norm import layer_norm_forward

            return lambda x, w, b, eps=1e-5: layer_norm_forward(x, w, b, eps)[0]
        if op == "softmax":
            from liger_kernel.ops.softmax import _softmax_forward

            return lambda x: _softmax_forward(x)[0]
        if op == "swiglu":
            from liger_kernel.ops.swiglu import swiglu_forward

            return lambda a, b: swiglu_forward(a, b)[2]
        if op == "add_rmsnorm":
            from liger_kernel.ops.fused_add_rms_norm import fused_add_rms_norm_forward

            return lambda x, r, w, eps=1e-6: fused_add_rms_norm_forward(x, r, w, eps, 0.0, "llama")[0]
        if op == "cross_entropy":
            from liger_kernel.ops.cross_entropy import cross_entropy_forward

            # Liger's forward also writes the logits' gradient into the logits (its training fusion):
            # it moves about twice the bytes of a forward-only loss.
            return lambda logits, targets: cross_entropy_forward(logits, targets, None,
                                                                 -100, 0.0, 0.0, "mean", None, False)[0]
    except Exception:  # not installed, or an API this script does not know
        return None
    return None  # rope: Liger rotates halves (HF layout), not interleaved pairs: not the same op


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: a smoke run on the CPU
    import triton

    from autokernel_ci.harness.device import get_ceilings
    from autokernel_ci.harness.timing import time_fn
    from autokernel_ci.ops import get_op
    from autokernel_ci.ops.base import DTYPES
    from autokernel_ci.runtime import starter_file

    parser = argparse.ArgumentParser()
    parser.add_argument("ops", nargs="*", default=list(OPS))
    parser.add_argument("--anchors", type=Path, default=None)
    parser.add_argument("--no-decode", action="store_true")
    args = parser.parse_args()
    anchors = args.anchors or next((p for p in (ROOT.parent / "shared" / "anchors" / "autokernel",
                                                ROOT / "anchors" / "autokernel") if p.is_dir()), None)
    on_gpu = torch.cuda.is_available()
    dev = "cuda" if on_gpu else "cpu"
    device = torch.cuda.get_device_name() if on_gpu else "cpu (Triton interpreter: a smoke run, timings mean nothing)"
    print(f"$ python benchmarks/anchors.py {' '.join(sys.argv[1:])}")
    print(f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; device {device}; "
          f"python {platform.python_version()}; torch {torch.__version__}; triton {triton.__version__}; "
          f"AutoKernel anchors {anchors}", flush=True)
    try:
        from importlib.metadata import version

        print(f"liger-kernel {version('liger-kernel')}")
    except Exception:
        print("liger-kernel: not installed")
    ceilings = get_ceilings() if on_gpu else None
    bw = ceilings.bandwidth_bytes_per_s if ceilings else None
    print(f"ceilings: {ceilings.source if ceilings else 'none'}"
          + (f", copy {bw / 1e12:.2f} TB/s" if bw else ""), flush=True)
    dtype = DTYPES["bf16"]
    rows: list[dict[str, Any]] = []
    print("\n| op | shape | timing | ours µs | % of copy bw | AutoKernel µs | Liger µs | plain copy µs "
          "| ours vs best anchor |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for op in args.ops:
        spec = get_op(op)
        impls: dict[str, Any] = {"ours": _load(starter_file(op), f"_ours_{op}").kernel_fn}
        if anchors is not None and op in AUTOKERNEL_FILES and (anchors / AUTOKERNEL_FILES[op]).is_file():
            impls["autokernel"] = _load(anchors / AUTOKERNEL_FILES[op], f"_anchor_{op}").kernel_fn
        liger = _liger(op)
        if liger is not None:
            impls["liger"] = liger
        shapes = [(s, "events") for s in (spec.bench_shapes if on_gpu else spec.test_shapes[-1:])]
        if not args.no_decode and on_gpu:
            shapes += [(s, "graph") for s in spec.decode_shapes]
        for shape, method in shapes:
            generator = torch.Generator(device=dev).manual_seed(0)
            inputs = spec.make_inputs(shape, dtype, generator, "normal")
            expected = spec.reference(*[t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                                        for t in inputs])
            expected = expected[0] if isinstance(expected, tuple) else expected  # add_rmsnorm: (y, x + r)
            nbytes = spec.bytes_moved(shape, dtype)
            row: dict[str, Any] = {"op": op, "shape": dict(shape), "timing": method, "bytes": nbytes, "us": {},
                                   "errors": {}}
            for name, fn in impls.items():
                try:
                    args_ = tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in inputs)
                    out = fn(*args_)
                    out = out[0] if isinstance(out, tuple) else out
                    err = (out.float() - expected.float()).abs().max().item()
                    scale = expected.float().abs().max().item() + 1e-6
                    if not err <= 0.05 * scale + 0.05:
                        row["errors"][name] = f"max error {err:.3g} against the reference: not timed"
                        continue
                    t = time_fn(lambda fn=fn, a=args_: fn(*a), flush_l2=method == "events",
                                cuda_graph=method == "graph", device=dev, min_reps=20 if on_gpu else 2,
                                max_reps=1000 if on_gpu else 2)
                    row["us"][name] = t.median_us
                except Exception as exc:  # one implementation failing does not stop the table
                    row["errors"][name] = f"{type(exc).__name__}: {str(exc).strip()[:160]}"
            if spec.bound == "memory":
                src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=dev)
                dst = torch.empty_like(src)
                row["us"]["copy"] = time_fn(lambda d=dst, s=src: d.copy_(s), flush_l2=method == "events",
                                            cuda_graph=method == "graph", device=dev).median_us
            rows.append(row)
            print(_row(row, bw), flush=True)
            for name, error in row["errors"].items():
                print(f"    {op} {name}: {error}", flush=True)
            if os.environ.get("OUT"):
                Path(os.environ["OUT"], "anchors.json").write_text(json.dumps(
                    {"device": device, "ceilings": ceilings.to_dict() if ceilings else None, "rows": rows}, indent=1))
    return 0


def _row(row: dict[str, Any], bw: float | None) -> str:
    us = row["us"]

    def cell(name: str) -> str:
        if name in us:
            return f"{us[name]:.1f}"
        error = row["errors"].get(name)
        return "-" if error is None else ("wrong" if error.startswith("max error") else "error")

    ours = us.get("ours")
    pct = f"{100 * row['bytes'] / (ours * 1e-6) / bw:.1f}" if ours and bw and row["timing"] == "events" else "-"
    anchors = [us[k] for k in ("autokernel", "liger") if k in us]
    vs = f"{min(anchors) / ours:.2f}×" if ours and anchors else "-"
    shape = "×".join(map(str, row["shape"].values()))
    return (f"| {row['op']} | {shape} | {row['timing']} | {cell('ours')} | {pct} | {cell('autokernel')} | "
            f"{cell('liger')} | {cell('copy')} | {vs} |")


if __name__ == "__main__":
    sys.exit(main())
