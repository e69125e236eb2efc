"""Does the worker pool cost anything on one GPU? The experiment loop without a pool vs with a pool of one worker.

`optimize` on a GPU machine runs its evaluations through `pool.WorkerPool` (one slot per visible GPU,
the worker pinned with CUDA_VISIBLE_DEVICES). With one GPU that is a pool of one: the same loop, one
evaluation at a time, plus a thread hand-off per evaluation. This measures both on the same budget:

- a temporary git repository holding the rmsnorm starter kernel with a weak config;
- the tuner, the same experiment budget per run, runs in the order A B B A … (A: no pool, B: a pool
  of one) after one warm-up run (Triton's compile cache and the baseline cache filled), so drift over
  the session falls on both;
- experiments per hour from the loop's own durations, and the pool's own cost per evaluation:
  `WorkerPool.evaluate` wall time minus the `sandbox.evaluate` inside it.

Sized for about 5 minutes on an H100.

    python benchmarks/pool_overhead.py [--op rmsnorm] [--max-experiments 6] [--repeats 2]

Prints the command, date, device and versions; writes pool_overhead.json to $OUT when that variable is
set (or to --json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed


from autokernel_ci.harness import sandbox  # noqa: E402
from autokernel_ci.loop import LoopSettings, run_loop  # noqa: E402
from autokernel_ci.pool import WorkerPool, visible_gpus  # noqa: E402
from autokernel_ci.provenance import print_record, run_record, write_record  # noqa: E402
from autokernel_ci.search import TunerProposer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimize_tuner import WEAK as TUNER_WEAK  # noqa: E402  (the weak starting configs)
from optimize_tuner import weak_start  # noqa: E402

WEAK = {op: TUNER_WEAK[op] for op in ("rmsnorm", "softmax")}



class EvaluationClock:
    """Times every `sandbox.evaluate` and every `WorkerPool.evaluate` (which wraps one)."""

    def __init__(self) -> None:
        self.sandbox: list[float] = []
        self.pool: list[float] = []
        self._evaluate = sandbox.evaluate
        self._pool_evaluate = WorkerPool.evaluate

    def __enter__(self) -> EvaluationClock:
        clock = self

        def evaluate(*args, **kwargs):
            started = time.perf_counter()
            try:
                return clock._evaluate(*args, **kwargs)
            finally:
                clock.sandbox.append(time.perf_counter() - started)

        def pool_evaluate(pool, *args, **kwargs):
            started = time.perf_counter()
            try:
                return clock._pool_evaluate(pool, *args, **kwargs)
            finally:
                clock.pool.append(time.perf_counter() - started)

        sandbox.evaluate = evaluate
        WorkerPool.evaluate = pool_evaluate
        return self

    def __exit__(self, *exc) -> None:
        sandbox.evaluate = self._evaluate
        WorkerPool.evaluate = self._pool_evaluate


def one_run(label: str, op: str, use_pool: bool, max_experiments: int, minutes: float, device: str,
            work: Path) -> dict[str, Any]:
    repo = work / label
    task = weak_start(op, repo)
    pool = None
    if use_pool:
        pool = WorkerPool.cpu(1) if device == "cpu" else WorkerPool(visible_gpus()[:1])
    settings = LoopSettings(out_dir=repo / "autokernel-out", budget_minutes=minutes, max_experiments=max_experiments,
                            patience=max_experiments, device=device, timeout=300.0, workers=1, pool=pool)
    try:
        with EvaluationClock() as clock:
            started = time.perf_counter()
            result = run_loop(task, TunerProposer(), settings)
            wall = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.close()
    tried = [r for r in result.experiments if r.is_experiment]
    exp_s = sum(r.duration_s for r in tried)
    overhead = None
    if use_pool and clock.pool:
        # Each pool evaluation wraps exactly one sandbox evaluation, in order.
        overhead = statistics.median(p - s for p, s in zip(clock.pool, clock.sandbox))
    return {"label": label, "pool": use_pool, "experiments": len(tried), "kept": len(result.kept), "wall_s": wall,
            "experiment_s": exp_s, "experiments_per_hour": 3600 * len(tried) / exp_s if exp_s else None,
            "evaluations": len(clock.sandbox), "evaluation_s_median": statistics.median(clock.sandbox)
            if clock.sandbox else None, "pool_overhead_s_median": overhead, "speedup": result.speedup,
            "stop_reason": result.stop_reason}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=sorted(WEAK), default="rmsnorm")
    parser.add_argument("--max-experiments", type=int, default=6, help="experiments per run (default 6)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant, in the order A B B A … (default 2)")
    parser.add_argument("--minutes-per-run", type=float, default=2.0, help="time budget of one run (default 2)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--json", type=Path, help="where to write the JSON (default: $OUT/pool_overhead.json)")
    args = parser.parse_args(argv)
    device = sandbox.resolve_device(args.device)
    report: dict[str, Any] = {
        **run_record(device), "visible_gpus": visible_gpus() if device == "cuda" else [],
        "settings": {"op": args.op, "max_experiments": args.max_experiments, "repeats": args.repeats,
                     "minutes_per_run": args.minutes_per_run},
    }
    print_record(report, f" (pool of one: GPU {(report['visible_gpus'] or ['-'])[0]})")
    order = ["ABBA"[i % 4] for i in range(2 * args.repeats)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="autokernel-pool-") as tmp:
        if not args.no_warmup:
            print("warm-up run (not counted) …", flush=True)
            one_run("warmup", args.op, False, min(2, args.max_experiments), args.minutes_per_run, device, Path(tmp))
        for i, variant in enumerate(order):
            entry = one_run(f"{variant}{i}", args.op, variant == "B", args.max_experiments, args.minutes_per_run,
                            device, Path(tmp))
            runs.append(entry)
            rate = entry["experiments_per_hour"]
            extra = (f", pool overhead {entry['pool_overhead_s_median'] * 1e3:.2f} ms/evaluation"
                     if entry["pool_overhead_s_median"] is not None else "")
            print(f"  {'pool of one' if entry['pool'] else 'no pool    '}: {entry['experiments']} experiments in "
                  f"{entry['experiment_s']:.1f} s = {rate or 0:.0f} experiments/hour; median evaluation "
                  f"{entry['evaluation_s_median'] or 0:.2f} s{extra}", flush=True)
    report["runs"] = runs
    summary = {}
    for pool in (False, True):
        mine = [r for r in runs if r["pool"] is pool and r["experiment_s"]]
        total_exp = sum(r["experiments"] for r in mine)
        total_s = sum(r["experiment_s"] for r in mine)
        summary["pool" if pool else "no_pool"] = {"experiments": total_exp, "seconds": total_s,
                                                  "experiments_per_hour": 3600 * total_exp / total_s if total_s
                                                  else None}
    overheads = [r["pool_overhead_s_median"] for r in runs if r["pool_overhead_s_median"] is not None]
    summary["pool_overhead_s_median"] = statistics.median(overheads) if overheads else None
    a, b = summary["no_pool"]["experiments_per_hour"], summary["pool"]["experiments_per_hour"]
    summary["ratio_pool_vs_no_pool"] = b / a if a and b else None
    report["summary"] = summary
    print(f"\nexperiments/hour: no pool {a or 0:.0f}, pool of one {b or 0:.0f} "
          f"(ratio {summary['ratio_pool_vs_no_pool'] or 0:.3f}); the pool's own cost per evaluation: "
          f"{(summary['pool_overhead_s_median'] or 0) * 1e3:.2f} ms")
    write_record(report, args.json or (Path(os.environ["OUT"]) / "pool_overhead.json" if os.environ.get("OUT")
                                       else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
