"""What the OS sandbox costs one evaluation: the same honest candidate evaluated with and without it.

    python benchmarks/sandbox_overhead.py [--op rmsnorm] [--repeats 5] [--device cpu|cuda] [--time]

Alternates `--sandbox=process` and bubblewrap evaluations of the op's library kernel (the screen
stages the loop runs; with `--time`, the benchmark shapes timed too, no baselines), so drift on a
loaded machine falls on both alike; prints each evaluation's wall time, the medians and their ratio,
and writes sandbox_overhead.json to $OUT when set. Each evaluation starts a fresh worker (no standby
process), which is what a sandbox adds its start to.
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
    from autokernel_ci.harness import bwrap, sandbox
    from autokernel_ci.harness.sandbox import TimingPlan
    from autokernel_ci.loop import SCREEN_STAGES
    from autokernel_ci.ops import starter_source
    from autokernel_ci.tasks import builtin_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="rmsnorm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--time", action="store_true", help="time the benchmark shapes too")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
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
    rows: dict[str, list[float]] = {"process": [], "bwrap": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.op}.py"
        path.write_text(starter_source(args.op))
        for i in range(args.repeats):
            for mode in ("process", "bwrap"):
                os.environ[bwrap.MODE_ENV] = mode
                os.environ["AUTOKERNEL_STANDBY"] = "0"
                started = time.perf_counter()
                result = sandbox.evaluate(task, path, device=device, stages=SCREEN_STAGES, timing=plan, seed=i)
                seconds = time.perf_counter() - started
                if result.status.value != "PASS":
                    print(f"#{i} {mode}: {result.status.value}: {result.message}", file=sys.stderr)
                    return 1
                rows[mode].append(seconds)
                print(f"#{i} {mode:8s} {result.sandbox:22s} {seconds:6.2f} s", flush=True)
    med = {mode: statistics.median(times) for mode, times in rows.items()}
    ratio = med["bwrap"] / med["process"]
    print(f"median: process {med['process']:.2f} s, bubblewrap {med['bwrap']:.2f} s, "
          f"ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%) over {args.repeats} pairs on {result.device}")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "sandbox_overhead.json").write_text(json.dumps(
            {"op": args.op, "device": result.device, "timed": args.time, "seconds": rows, "median_s": med,
             "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
