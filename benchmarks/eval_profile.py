"""Where one loop evaluation's time goes: the screen the loop runs for every candidate, profiled.

    python benchmarks/eval_profile.py [--op rmsnorm] [--repeats 3] [--top 25]

Runs `sandbox.evaluate` on the op's starter kernel as the loop screens a candidate (screen stages,
the benchmark shapes timed, no baselines) `--repeats` times, the first with a cold Triton cache.
Each worker runs under cProfile (AUTOKERNEL_WORKER_PROFILE) and reports its phases (imports, CUDA
start, candidate import, cases, timing). Prints, per evaluation, the parent's wall time, the
worker's wall time and its phases; then the worker's hottest functions (cumulative) of the last one.
Writes eval_profile.json (and the .prof files) to $OUT when set.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed


def main(argv: list[str] | None = None) -> int:
    from autokernel_ci.harness import sandbox
    from autokernel_ci.harness.sandbox import TimingPlan
    from autokernel_ci.loop import SCREEN_STAGES
    from autokernel_ci.ops import starter_source
    from autokernel_ci.tasks import builtin_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="rmsnorm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    args = parser.parse_args(argv)
    device = sandbox.resolve_device(args.device)
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="eval-profile-"))
    task = builtin_task(args.op)
    plan = TimingPlan.for_task(task, device)
    from dataclasses import replace

    plan = replace(plan, baselines=())
    runs = []
    original = sandbox.run_worker
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRITON_CACHE_DIR"] = str(Path(tmp) / "triton")
        path = Path(tmp) / f"{args.op}.py"
        path.write_text(starter_source(args.op))
        for i in range(args.repeats):
            prof_dir = out / f"prof{i}"
            os.environ["AUTOKERNEL_WORKER_PROFILE"] = str(prof_dir)
            seen = {}

            def recording(request, out_dir, timeout, env, *a, seen=seen, **k):
                run = original(request, out_dir, timeout, env, *a, **k)
                seen["worker_s"] = run.seconds
                seen["phases"] = (run.result or {}).get("phases_s", {})
                return run

            sandbox.run_worker = recording
            started = time.perf_counter()
            result = sandbox.evaluate(task, path, device=device, stages=SCREEN_STAGES, timing=plan)
            total = time.perf_counter() - started
            sandbox.run_worker = original
            phases = seen.get("phases", {})
            outside = seen.get("worker_s", 0.0) - sum(phases.values())
            runs.append({"status": result.status.value, "evaluate_s": round(total, 3),
                         "worker_s": round(seen.get("worker_s", 0.0), 3), "phases_s": phases,
                         "process_start_and_exit_s": round(outside, 3)})
            print(f"#{i} {result.status.value}: evaluate {total:.2f} s = worker {seen.get('worker_s', 0):.2f} s "
                  f"(python start + exit {outside:.2f} s; {', '.join(f'{k} {v:.2f}' for k, v in phases.items())}) "
                  f"+ parent {total - seen.get('worker_s', 0):.2f} s", flush=True)
    os.environ.pop("AUTOKERNEL_WORKER_PROFILE", None)
    last = sorted((out / f"prof{args.repeats - 1}").glob("*.prof"))
    if last:
        stats = pstats.Stats(str(last[0]))
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(15)
    (out / "eval_profile.json").write_text(json.dumps({"op": args.op, "device": device, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
