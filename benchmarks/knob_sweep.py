"""A kernel file's knobs over a small grid at one shape, each point gated and timed like ops.py does it.

    python benchmarks/knob_sweep.py --op cross_entropy --shape T=4096,V=32000 \\
        --grid BLOCK_SIZE=1024,2048,4096 --grid NUM_WARPS=4,8,16 [--candidate FILE] [--write-best FILE]
    python benchmarks/knob_sweep.py --op rope --shape B=1,H=32,S=4096,D=128 --copy-reference
    python benchmarks/knob_sweep.py --op layernorm --shape rows=1,dim=4096 --grid NUM_WARPS=1,2,4,8 --baselines

Each point is the kernel file with its top-level knobs rewritten (`search.knobs.apply_point`, what the
tuner does), run through the smoke stage of the correctness gate and timed by the worker (CUDA events,
L2 flushed, median) at the shape, in bf16; no baselines. Points that fail the gate are listed, never
picked. `--write-best` writes the fastest point's file, so the exact text that was timed can be
benchmarked further (ops.py --candidate) or adopted.

`--copy-reference` also times a plain device copy of the same number of bytes (half read, half
written) with the same timer: the bandwidth a kernel of this size can reach at best on this GPU, as
against the calibrated ceiling, which is measured on a large buffer. A short kernel loses its ramp-up
and tail to the fixed costs the large copy hides.

The grid is small on purpose: this is for a question about one shape, not a search (that is `optimize`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_shape(text: str) -> dict[str, int]:
    try:
        return {k.strip(): int(v) for k, v in (part.split("=", 1) for part in text.split(","))}
    except ValueError:
        raise SystemExit(f"knob_sweep: --shape wants NAME=INT[,NAME=INT…], got {text!r}") from None


def parse_grid(items: list[str]) -> dict[str, list[object]]:
    grid: dict[str, list[object]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"knob_sweep: --grid wants KNOB=V1,V2,…, got {item!r}")
        try:
            grid[name.strip()] = [None if v.strip() == "None" else int(v) for v in values.split(",")]
        except ValueError:
            raise SystemExit(f"knob_sweep: --grid values are integers or None, got {item!r}") from None
    return grid


def copy_reference(nbytes: int, device: str, ceiling_bytes_s: float | None) -> dict[str, float | None]:
    """A plain copy of `nbytes` (read + written) timed like a kernel: its µs and share of the ceiling."""
    import torch

    from autokernel_ci.harness.timing import time_fn

    half = max(1, nbytes // 2)
    src = torch.empty(half, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    samples = time_fn(lambda: dst.copy_(src), device=device)
    us = samples.median_us
    pct = 100.0 * (2 * half / (us * 1e-6)) / ceiling_bytes_s if ceiling_bytes_s else None
    return {"median_us": us, "pct_roofline": pct}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", required=True)
    parser.add_argument("--shape", required=True, type=parse_shape)
    parser.add_argument("--grid", action="append", default=[], help="KNOB=V1,V2,… (None for the kernel's default)")
    parser.add_argument("--candidate", type=Path, help="the kernel file to sweep (default: the op's starter)")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--copy-reference", action="store_true", help="also time a plain copy of the same bytes")
    parser.add_argument("--baselines", action="store_true",
                        help="also time eager, the vendor op and torch.compile of the reference (with the first point)")
    parser.add_argument("--write-best", type=Path, help="write the fastest passing point's kernel file here")
    args = parser.parse_args(argv)

    import torch

    from autokernel_ci.errors import AutokernelError
    from autokernel_ci.harness.sandbox import TimingPlan, evaluate
    from autokernel_ci.ops import starter_source
    from autokernel_ci.provenance import print_record, run_record
    from autokernel_ci.search.knobs import KnobError, apply_point
    from autokernel_ci.tasks import builtin_task

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        task = builtin_task(args.op)
        source = args.candidate.read_text() if args.candidate else starter_source(args.op)
    except (AutokernelError, OSError) as exc:
        raise SystemExit(f"knob_sweep: {exc}") from None
    grid = parse_grid(args.grid)
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
    print_record(run_record(device))
    print(f"{args.op} at {args.shape} {args.dtype}: {len(points)} point(s)\n", flush=True)
    timed_on_cpu = device == "cpu"
    plan = TimingPlan(shapes=[args.shape], dtype=args.dtype, baselines=())
    if timed_on_cpu:
        plan = TimingPlan(shapes=[args.shape], dtype=args.dtype, warmup_ms=1.0, rep_ms=5.0, min_reps=2, max_reps=4,
                          flush_l2=False, baselines=())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, point in enumerate(points):
            path = Path(tmp) / f"point_{i}.py"
            try:
                text = apply_point(source, point)
            except KnobError as exc:
                raise SystemExit(f"knob_sweep: {exc}") from None
            path.write_text(text)
            with_baselines = args.baselines and i == 0 and not timed_on_cpu
            timing = replace(plan, baselines=("eager", "vendor", "compile")) if with_baselines else plan
            result = evaluate(task, path, device=device, stages=("smoke",), include_bench_shapes=False,
                              timing=timing, standby=True)
            t = result.timings[0] if result.timings else None
            row = {"point": point, "status": result.status.value, "text": text,
                   "median_us": t.median_us if t else None, "pct_roofline": t.pct_roofline if t else None,
                   "message": "" if result.status.value == "PASS" else result.message}
            rows.append(row)
            if with_baselines and t is not None:
                baselines = ", ".join(f"{k} {v:.1f} µs" for k, v in t.baselines_us.items())
                print(f"  baselines: {baselines}", flush=True)
            shown = ", ".join(f"{k}={v}" for k, v in point.items()) or "as written"
            pct = f"{row['pct_roofline']:.1f}%" if row["pct_roofline"] is not None else "-"
            us = f"{row['median_us']:.1f} µs" if row["median_us"] is not None else "-"
            print(f"  {shown:<48} {row['status']:<8} {us:>12} {pct:>7}  {row['message'][:80]}", flush=True)
    passing = sorted((r for r in rows if r["status"] == "PASS" and r["median_us"] is not None),
                     key=lambda r: r["median_us"])
    if passing:
        best = passing[0]
        print(f"\nfastest: {best['point'] or 'as written'}: {best['median_us']:.1f} µs"
              + (f" = {best['pct_roofline']:.1f}% of the measured roofline" if best["pct_roofline"] else ""))
        if args.write_best:
            args.write_best.write_text(best["text"])
            print(f"wrote {args.write_best}")
    else:
        print("\nno point passed the gate")
    if args.copy_reference:
        from autokernel_ci.harness.device import get_ceilings

        dtype = getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(args.dtype, args.dtype))
        nbytes = task.spec.bytes_moved(args.shape, dtype)
        ceilings = get_ceilings() if device != "cpu" else None
        ceiling = ceilings.bandwidth_bytes_per_s if ceilings else None
        ref = copy_reference(nbytes, device, ceiling)
        pct = f" = {ref['pct_roofline']:.1f}% of the measured roofline" if ref["pct_roofline"] else ""
        print(f"a plain copy of the same {nbytes / 1e6:.1f} MB: {ref['median_us']:.1f} µs{pct}"
              + (" (CPU: the number means nothing)" if timed_on_cpu else ""))
    return 0 if passing else 1


if __name__ == "__main__":
    sys.exit(main())
