"""A whole model with the library's kernels swapped in: profile, outputs, and end-to-end time.

    python benchmarks/model_e2e.py [--model llama|gpt2] [--batch 8] [--seq 2048]   # JSON to $OUT/model_e2e.json

On a CUDA machine, for the example model (default: the compact LLaMA of examples/models/llama.py, bf16,
batch 8 × 2048 tokens, forward only):

1. calibrates the GPU's ceilings unless they are cached (`--no-calibrate` takes the datasheet's);
2. profiles the forward and prints the top ops by share of GPU time, with % of roofline;
3. swaps the built-in starter kernels (`ops.starter_source`) into a copy of the model with
   `runtime.apply`, checks its outputs against the original on the example and fresh inputs, under
   eager and torch.compile, and times eager, torch.compile, patched eager and patched + compile.

Under torch.compile the swap set is decided by timing (`verify`'s `compile_swaps`, `compile_check.decide`):
each swapped op alone, compiled, against the compiled original; `--compile-swaps all` skips that.

Targets it reports against: patched eager ≥ 1.3× eager and at least as fast as torch.compile; the
chosen swap set under compile at least 1.05× torch.compile alone with an IQR under 2 % of its median;
no graph break and no recompile in any compiled variant. Takes about 3 to 8 minutes on an H100 or
H200, most of it in torch.compile (one compile per swapped op for the decision).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "llama": ("models.llama:build", ("rmsnorm", "rope", "swiglu")),
    "gpt2": ("models.gpt2:build", ("layernorm",)),
}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    import triton

    from autokernel_ci.commands.profile import print_plan
    from autokernel_ci.commands.verify import print_verify
    from autokernel_ci.harness.device import calibrate, get_ceilings
    from autokernel_ci.profiling import profile_model
    from autokernel_ci.runtime import starter_file
    from autokernel_ci.tasks import ModelTarget
    from autokernel_ci.verify import TimingOptions, verify_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="llama")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (default: 2048 llama, 1024 gpt2)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--no-calibrate", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--kernel", action="append", default=[], help="OP=FILE: swap FILE in instead of the starter")
    parser.add_argument("--compile-swaps", choices=("auto", "measure", "all"), default="auto")
    args = parser.parse_args()
    seq = args.seq or (2048 if args.model == "llama" else 1024)
    started = time.monotonic()
    print(f"$ python benchmarks/model_e2e.py {' '.join(sys.argv[1:])}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (Triton interpreter)"
    print(f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; device {device}; "
          f"python {platform.python_version()}; torch {torch.__version__}; triton {triton.__version__}", flush=True)
    if not torch.cuda.is_available():
        print("no GPU: this script is meant for one; running the tiny model to show the machinery", flush=True)
    factory, ops = MODELS[args.model]
    on_gpu = torch.cuda.is_available()
    kwargs = {"batch": args.batch, "seq_len": seq} if on_gpu else {"size": "tiny"}
    target = ModelTarget(name=args.model, factory=factory, dtype=args.dtype, swap=list(ops),
                         tolerance=(1e-3, 2e-2) if args.dtype != "fp32" else None, root=ROOT / "examples")

    ceilings = None
    if on_gpu:
        ceilings = get_ceilings()
        if (ceilings is None or ceilings.source != "measured") and not args.no_calibrate:
            _phase("calibrating the GPU's ceilings", started)
            ceilings = calibrate()
        print(f"ceilings ({ceilings.source}): {ceilings.bandwidth_bytes_per_s / 1e12:.2f} TB/s, bf16 "
              f"{ceilings.flops_per_s.get('bf16', 0) / 1e12:.0f} TFLOP/s" if ceilings else "ceilings: none", flush=True)

    _phase(f"profiling {args.model} ({args.dtype}, batch {args.batch} × {seq} tokens, forward)", started)
    plan = profile_model(target, factory_kwargs=kwargs, ceilings=ceilings if on_gpu else None)
    print_plan(plan, top=12)
    torch.cuda.empty_cache() if on_gpu else None

    kernels = {op: starter_file(op) for op in ops}
    for pair in args.kernel:
        op, _, path = pair.partition("=")
        kernels[op] = Path(path)
    _phase("verifying: outputs, then eager / compile / patched / patched + compile", started)
    result = verify_model(target, kernels=kernels, ops=ops, factory_kwargs=kwargs, seeds=(1,),
                          compile=not args.no_compile, compile_swaps=args.compile_swaps,
                          timing=TimingOptions(warmup_ms=300, rep_ms=1500, min_reps=10, max_reps=100),
                          on_step=lambda m: _phase(m, started))
    print_verify(result)

    patched_vs_eager = result.speedup("patched", "eager")
    patched_compile_vs_compile = result.speedup("patched+compile", "compile")
    chosen_vs_compile = result.speedups["chosen swap set + compile vs compile"]
    choice = result.compile_choice
    chosen_iqr = (choice.get("iqr_us") or 0) / choice["median_us"] if choice.get("median_us") else None
    stats = result.compile_stats.values()
    targets = {
        "outputs match": result.passed,
        "patched eager >= 1.3x eager": patched_vs_eager is not None and patched_vs_eager >= 1.3,
        "patched eager at least as fast as compile": (result.speedup("patched", "compile") or 0) >= 1.0,
        "chosen swap set + compile >= 1.05x compile, IQR < 2%": chosen_vs_compile is not None
        and chosen_vs_compile >= 1.05 and chosen_iqr is not None and chosen_iqr < 0.02,
        "no graph breaks or recompiles": bool(stats) and all(s["graph_breaks"] == 0 and s["recompiles"] == 0
                                                             for s in stats),
    }
    if choice:
        print(f"\nswap set under compile: {', '.join(choice['ops']) or 'none'}; "
              f"{choice['median_us'] / 1000:.2f} ms (IQR {100 * (chosen_iqr or 0):.1f} %), "
              f"{_x(chosen_vs_compile)} torch.compile alone")
        for d in choice["decisions"]:
            print(f"  {d['op']}: {d['reason']}")
    for s in stats:
        print(f"compile stats {s['variant']}: {s['graph_breaks']} graph breaks, {s['recompiles']} recompiles, "
              f"{s['calls']} calls")
    print("\n| model | inputs | eager ms | compile ms | patched ms | patched + compile ms | patched vs eager "
          "| patched+compile vs compile |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ms = {k: (f"{t.median_us / 1000:.2f}" if t.median_us else "-") for k, t in result.timings.items()}
    print(f"| {args.model} {args.dtype} | {', '.join(result.inputs)} | {ms.get('eager', '-')} | "
          f"{ms.get('compile', '-')} | {ms.get('patched', '-')} | {ms.get('patched+compile', '-')} | "
          f"{_x(patched_vs_eager)} | {_x(patched_compile_vs_compile)} |")
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")
    print(f"total {time.monotonic() - started:.0f} s", flush=True)
    if os.environ.get("OUT"):
        data = {"command": sys.argv, "device": device, "torch": torch.__version__, "triton": triton.__version__,
                "model": args.model, "batch": args.batch, "seq": seq, "dtype": args.dtype, "targets": targets,
                "plan": plan.to_dict(), "verify": result.to_dict(), "duration_s": time.monotonic() - started}
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        Path(os.environ["OUT"], "model_e2e.json").write_text(json.dumps(data, indent=1, default=str))
    return 0 if result.passed else 1


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _phase(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
