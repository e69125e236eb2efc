"""How fast the experiment loop runs with the tuner, and how far it gets from a deliberately weak start.

For each op (rmsnorm, softmax, cross_entropy, matmul) it makes a temporary git repository holding the
op's starter kernel with its knobs set to a weak config, runs the loop with the tuner for a fixed
budget, and prints: experiments per hour, the time of one experiment split into worker start,
correctness cases (compile included; the first case is mostly compile), timing and the parent's
judging, the speedup over the weak start and the final % of roofline. Sized for about 8 minutes on
an H100 (fresh machine: the first evaluation of each op also measures the eager/vendor/compile
baselines and the device ceilings, reported as setup).

    python benchmarks/optimize_tuner.py [--ops rmsnorm,matmul] [--minutes-per-op 1.5] [--max-experiments 60]

Writes optimize_tuner.json to $OUT when that variable is set (or to --json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed


from autokernel_ci.harness import sandbox  # noqa: E402
from autokernel_ci.loop import LoopSettings, init_repository, mean_pct_roofline, run_loop  # noqa: E402
from autokernel_ci.ops import starter_source  # noqa: E402
from autokernel_ci.provenance import print_record, run_record, write_record  # noqa: E402
from autokernel_ci.search import TunerProposer  # noqa: E402
from autokernel_ci.search.knobs import apply_point  # noqa: E402
from autokernel_ci.tasks import KernelTask, builtin_task  # noqa: E402

# Weak but valid starting points: short tiles, few warps, no pipelining; each passes check_config.
WEAK = {
    "rmsnorm": {"BLOCK_SIZE": 1024, "ROWS_PER_PROGRAM": 1, "NUM_WARPS": 2},
    "softmax": {"BLOCK_SIZE": 1024, "ROWS_PER_PROGRAM": 1, "NUM_WARPS": 2},
    "cross_entropy": {"BLOCK_SIZE": 1024, "NUM_WARPS": 32, "VOCAB_SPLITS": 1},
    "matmul": {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1, "NUM_STAGES": 2, "NUM_WARPS": 4},
}


def weak_start(op: str, repo: Path) -> KernelTask:
    """A git repository at `repo` holding the op's starter kernel at its weak config, committed, and the
    task that points at it: where every loop benchmark starts."""
    (repo / "kernels").mkdir(parents=True)
    (repo / "kernels" / f"{op}.py").write_text(apply_point(starter_source(op), WEAK[op]))
    init_repository(repo, f"{op} starter kernel with a weak config")
    return replace(builtin_task(op), path=repo / "kernels" / f"{op}.py", root=repo)


class WorkerClock:
    """Wraps the sandbox's `run_worker` to record, per worker process, its wall time and its cases' times."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.evaluations: list[float] = []
        self._original = sandbox.run_worker
        self._evaluate = sandbox.evaluate

    def __enter__(self) -> WorkerClock:
        def timed(request, out_dir, timeout, env, on_progress=None, **kwargs):
            run = self._original(request, out_dir, timeout, env, on_progress, **kwargs)
            cases = [c.get("seconds", 0.0) for c in (run.result or {}).get("cases", []) if isinstance(c, dict)]
            self.records.append({"kind": "baselines" if request.get("candidate") is None else "candidate",
                                 "worker_s": run.seconds, "cases_s": sum(cases),
                                 "first_case_s": cases[0] if cases else 0.0, "n_cases": len(cases),
                                 "timed": bool(request.get("timing")), "timed_out": run.timed_out})
            return run

        def evaluate(*args, **kwargs):
            started = time.perf_counter()
            result = self._evaluate(*args, **kwargs)
            self.evaluations.append(time.perf_counter() - started)
            return result

        sandbox.run_worker = timed
        sandbox.evaluate = evaluate
        return self

    def __exit__(self, *exc) -> None:
        sandbox.run_worker = self._original
        sandbox.evaluate = self._evaluate


def measure_worker_start() -> float:
    """Seconds for a fresh Python to import torch and triton and make a CUDA context: the floor of a worker."""
    code = ("import torch, triton, triton.language; "
            "torch.zeros(1, device='cuda' if torch.cuda.is_available() else 'cpu')")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def run_op(op: str, minutes: float, max_experiments: int, device: str, work: Path, start_s: float) -> dict[str, Any]:
    repo = work / op
    task = weak_start(op, repo)

    def show(p):
        if p.phase == "experiment" and p.last is not None:
            e = p.last
            speed = e.speedup_vs_start
            print(f"  [{op}] #{e.n:<3} {e.verdict:<13} {f'{speed:.2f}x' if speed else '-':>7}  "
                  f"{e.duration_s:5.1f} s  {e.description[:70]}", flush=True)

    settings = LoopSettings(out_dir=repo / "autokernel-out", budget_minutes=minutes, max_experiments=max_experiments,
                            patience=max_experiments, device=device, timeout=300.0)
    with WorkerClock() as clock:
        started = time.perf_counter()
        result = run_loop(task, TunerProposer(), settings, on_progress=show)
        wall = time.perf_counter() - started
    rows = result.experiments
    setup = [r for r in rows if not r.is_experiment]
    tried = [r for r in rows if r.is_experiment]
    exp_s = sum(r.duration_s for r in tried)
    candidates = [r for r in clock.records if r["kind"] == "candidate"]
    split = {
        "worker_start_s": start_s,
        "cases_s": statistics.median([r["cases_s"] for r in candidates]) if candidates else None,
        "first_case_s": statistics.median([r["first_case_s"] for r in candidates]) if candidates else None,
        "timing_and_teardown_s": statistics.median([max(r["worker_s"] - start_s - r["cases_s"], 0.0)
                                                    for r in candidates]) if candidates else None,
        "worker_s": statistics.median([r["worker_s"] for r in candidates]) if candidates else None,
        "evaluation_s": statistics.median(clock.evaluations) if clock.evaluations else None,
    }
    if split["evaluation_s"] is not None and split["worker_s"] is not None:
        # Static checks before the worker, the float64 reference and the judging after it.
        split["parent_s"] = max(split["evaluation_s"] - split["worker_s"], 0.0)
    evals_per_experiment = (len(candidates) - 3) / len(tried) if tried else None  # 3 measure the start
    start_pct = mean_pct_roofline(result.start_result) if result.start_result else None
    best_pct = mean_pct_roofline(result.best_result) if result.best_result else None
    per_shape = [{"shape": t.shape, "dtype": t.dtype, "median_us": t.median_us, "pct_roofline": t.pct_roofline,
                  "baselines_us": t.baselines_us} for t in (result.best_result.timings if result.best_result else [])]
    return {
        "op": op, "weak_config": WEAK[op], "experiments": len(tried), "kept": len(result.kept),
        "reverted": result.reverted_by_reason(), "wall_s": wall, "setup_s": sum(r.duration_s for r in setup),
        "experiment_s_total": exp_s, "experiment_s_median": statistics.median([r.duration_s for r in tried])
        if tried else None, "experiments_per_hour": 3600 * len(tried) / exp_s if exp_s else None,
        "experiments_per_hour_with_setup": 3600 * len(tried) / wall if wall else None,
        "evaluations_per_experiment": evals_per_experiment, "split_median_per_evaluation": split,
        "speedup_vs_weak_start": result.speedup, "pct_roofline_start": start_pct, "pct_roofline_final": best_pct,
        "final_timings": per_shape, "best_params": result.best.params if result.best else None,
        "noise": result.noise, "stop_reason": result.stop_reason, "representative": result.representative,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(WEAK), help="comma-separated ops (default: all four)")
    parser.add_argument("--minutes-per-op", type=float, default=1.5, help="loop time budget per op (default 1.5)")
    parser.add_argument("--max-experiments", type=int, default=60, help="experiment budget per op (default 60)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--json", type=Path, help="where to write the JSON (default: $OUT/optimize_tuner.json)")
    args = parser.parse_args(argv)
    device = sandbox.resolve_device(args.device)
    report: dict[str, Any] = {
        **run_record(device),
        "settings": {"minutes_per_op": args.minutes_per_op, "max_experiments": args.max_experiments},
    }
    print_record(report)
    start_s = measure_worker_start()
    print(f"worker start (python + torch + triton + CUDA context): {start_s:.2f} s\n")
    report["ops"] = []
    with tempfile.TemporaryDirectory(prefix="autokernel-bench-") as tmp:
        for op in [o.strip() for o in args.ops.split(",") if o.strip()]:
            print(f"{op}: weak start {WEAK[op]}")
            entry = run_op(op, args.minutes_per_op, args.max_experiments, device, Path(tmp), start_s)
            report["ops"].append(entry)
            _print_op(entry)
    _print_table(report["ops"])
    write_record(report, args.json or (Path(os.environ["OUT"]) / "optimize_tuner.json" if os.environ.get("OUT")
                                       else None))
    return 0


def _print_op(e: dict[str, Any]) -> None:
    s = e["split_median_per_evaluation"]
    fmt = lambda v, unit="s": "-" if v is None else f"{v:.2f} {unit}"
    print(f"  {e['experiments']} experiments ({e['kept']} kept; reverted {e['reverted']}); stop: {e['stop_reason']}")
    print(f"  setup {e['setup_s']:.1f} s; experiment median {fmt(e['experiment_s_median'])}, "
          f"{e['evaluations_per_experiment'] or 0:.2f} evaluations each")
    print(f"  per evaluation (median): {fmt(s['evaluation_s'])} = worker {fmt(s['worker_s'])} (start "
          f"{fmt(s['worker_start_s'])} + cases {fmt(s['cases_s'])}, the first mostly compile "
          f"{fmt(s['first_case_s'])}, + timing {fmt(s['timing_and_teardown_s'])}) + parent {fmt(s.get('parent_s'))} "
          "(static checks, float64 reference, judging)")
    print(f"  speedup over the weak start {e['speedup_vs_weak_start'] or 0:.2f}x; % roofline "
          f"{fmt(e['pct_roofline_start'], '%')} -> {fmt(e['pct_roofline_final'], '%')}; best {e['best_params']}\n")


def _print_table(ops: list[dict[str, Any]]) -> None:
    print("| op | experiments | kept | exp/hour (loop) | exp/hour (with setup) | median s/exp | speedup | "
          "% roofline start → final |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for e in ops:
        pct = lambda v: "-" if v is None else f"{v:.1f}%"
        print(f"| {e['op']} | {e['experiments']} | {e['kept']} | {e['experiments_per_hour'] or 0:.0f} | "
              f"{e['experiments_per_hour_with_setup'] or 0:.0f} | {e['experiment_s_median'] or 0:.1f} | "
              f"{e['speedup_vs_weak_start'] or 0:.2f}x | {pct(e['pct_roofline_start'])} → "
              f"{pct(e['pct_roofline_final'])} |")
    total_exp = sum(e["experiments"] for e in ops)
    total_s = sum(e["experiment_s_total"] for e in ops)
    if total_s:
        print(f"\nall ops: {total_exp} experiments in {total_s:.0f} s of loop time = "
              f"{3600 * total_exp / total_s:.0f} experiments per GPU-hour (target ≥ 300)")


if __name__ == "__main__":
    sys.exit(main())
