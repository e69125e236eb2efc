"""What the OS sandbox costs one evaluation: the same honest candidate evaluated with and without it.

    python benchmarks/sandbox_overhead.py [--op rmsnorm] [--repeats 5] [--device cpu|cuda] [--time]
                                          [--modes process,bwrap[,bwrap-source]]

Alternates `--sandbox=process` and bubblewrap evaluations of the op's library kernel (the screen
stages the loop runs; with `--time`, the benchmark shapes timed too, no baselines), so drift on a
loaded machine falls on both alike; prints each evaluation's wall time, the medians and their ratio,
and writes sandbox_overhead.json to $OUT when set. Each evaluation starts a fresh worker (no standby
process), which is what a sandbox adds its start to. The warm-up rounds fill the caches first, so no
mode's figures hold the one-time builds. `bwrap-source` is bubblewrap without the bytecode folder the
parent prepares (`harness.bytecode`): every worker compiles its imports from source.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed


def main(argv: list[str] | None = None) -> int:
    from autokernel_ci.harness import bwrap, bytecode, sandbox
    from autokernel_ci.harness.sandbox import TimingPlan
    from autokernel_ci.loop import SCREEN_STAGES
    from autokernel_ci.ops import starter_source
    from autokernel_ci.tasks import builtin_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="rmsnorm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--time", action="store_true", help="time the benchmark shapes too")
    parser.add_argument("--modes", default="process,bwrap",
                        help="comma-separated, from process, bwrap, bwrap-source; the first is the base")
    parser.add_argument("--warmup", type=int, default=1,
                        help="rounds run first and not counted (they fill the build caches every mode reads)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if len(modes) < 2 or any(m not in ("process", "bwrap", "bwrap-source") for m in modes):
        parser.error("--modes takes two or more of process, bwrap, bwrap-source")
    reason = bwrap.unavailable_reason()
    if reason:
        print(f"sandbox_overhead: {reason}", file=sys.stderr)
        return 2
    device = sandbox.resolve_device(args.device)
    task = builtin_task(args.op)
    plan = None
    if args.time:
        from dataclasses import replace

        plan = replace(TimingPlan.for_task(task, device), baselines=())
    rows: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.op}.py"
        path.write_text(starter_source(args.op))
        for i in range(-args.warmup, args.repeats):
            for mode in modes:
                os.environ[bwrap.MODE_ENV] = mode.split("-")[0]
                os.environ[bytecode.ENV] = "0" if mode == "bwrap-source" else ""
                os.environ["AUTOKERNEL_STANDBY"] = "0"
                started = time.perf_counter()
                result = sandbox.evaluate(task, path, device=device, stages=SCREEN_STAGES, timing=plan, seed=abs(i))
                seconds = time.perf_counter() - started
                if result.status.value != "PASS":
                    print(f"#{i} {mode}: {result.status.value}: {result.message}", file=sys.stderr)
                    return 1
                if i >= 0:
                    rows[mode].append(seconds)
                label = f"#{i}" if i >= 0 else "warm-up"
                print(f"{label:8s} {mode:8s} {result.sandbox:22s} {seconds:6.2f} s", flush=True)
    med = {mode: statistics.median(times) for mode, times in rows.items()}
    base = modes[0]
    ratios = {mode: med[mode] / med[base] for mode in modes[1:]}
    print(f"median over {args.repeats} rounds on {result.device}: "
          + ", ".join(f"{mode} {med[mode]:.2f} s" for mode in modes))
    for mode, ratio in ratios.items():
        print(f"{mode} / {base}: ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "sandbox_overhead.json").write_text(json.dumps(
            {"op": args.op, "device": result.device, "timed": args.time, "seconds": rows, "median_s": med,
             "base": base, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
