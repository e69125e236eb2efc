"""Does the optimize loop go N times faster with one worker per GPU? The tuner on four built-in tasks,
with a given number of workers, on the same experiment budget; then the runs compared.

    python benchmarks/pool_scaling.py --workers 1 [--ops rmsnorm,softmax,cross_entropy,matmul] [--max-experiments 12]
    python benchmarks/pool_scaling.py --workers 2 …
    python benchmarks/pool_scaling.py --compare pool_scaling_w1.json pool_scaling_w2.json

One run per call (a device call has ten minutes): for each op a temporary git repository holding the
op's starter kernel with a weak config (the same as benchmarks/optimize_tuner.py), the loop with the
tuner and `--workers N` (a `WorkerPool` over the first N visible GPUs; with 1, the plain one-at-a-time
loop), the same `--max-experiments` per op. Every run starts from an empty Triton cache, so no run
inherits another's compiled kernels; the baselines and the device calibration are cached as in
production. While it runs, `nvidia-smi` samples every GPU's utilisation every 200 ms.

Per run it records: experiments, the loop's experiment time and experiments per hour (the start
measurement, identical in both runs, is reported apart), the mean GPU utilisation per GPU over the
experiment phase, and every evaluation: the slot's CUDA_VISIBLE_DEVICES, the UUID of the card the
worker reports it ran on, and the correctness status by candidate hash. `--compare` then prints the
speed-up, checks that every worker ran on its own card, and that every candidate both runs evaluated
got the same correctness status and every experiment both runs tried got the same loop verdict.

Writes pool_scaling_w{N}.json to $OUT when that variable is set (or to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed

from autokernel_ci.provenance import print_record, run_record, write_record  # noqa: E402

OPS = ("rmsnorm", "softmax", "cross_entropy", "matmul")


class GpuSampler:
    """`nvidia-smi` in the background: (seconds since start, GPU index, uuid, utilisation %) every 200 ms."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, str, float]] = []
        self.t0 = time.monotonic()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=index,uuid,utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[0].isdigit():
                try:
                    self.samples.append((time.monotonic() - self.t0, int(parts[0]), parts[1], float(parts[2])))
                except ValueError:
                    continue

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mean_by_gpu(self, start: float, end: float) -> dict[str, float]:
        window: dict[int, list[float]] = {}
        for t, index, _, util in self.samples:
            if start <= t <= end:
                window.setdefault(index, []).append(util)
        return {str(i): round(sum(v) / len(v), 1) for i, v in sorted(window.items()) if v}

    def uuids(self) -> dict[str, str]:
        return {uuid: str(index) for _, index, uuid, _ in self.samples}


class EvaluationLog:
    """Every `sandbox.evaluate` (the pool's slots call it too): where it ran and what it decided."""

    def __init__(self) -> None:
        from autokernel_ci.harness import sandbox

        self.sandbox = sandbox
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._evaluate = sandbox.evaluate

    def __enter__(self) -> EvaluationLog:
        log = self

        def evaluate(task, candidate, **kwargs):
            started = time.monotonic()
            result = log._evaluate(task, candidate, **kwargs)
            row = {"task": task.name, "candidate_sha256": result.candidate_sha256, "status": result.status.value,
                   "timed": kwargs.get("timing") is not None, "seconds": round(time.monotonic() - started, 3),
                   "slot_visible": (kwargs.get("env_overrides") or {}).get("CUDA_VISIBLE_DEVICES"),
                   "gpu_uuid": result.environment.get("gpu_uuid"),
                   "gpu_visible": result.environment.get("gpu_visible")}
            with log._lock:
                log.rows.append(row)
            return result

        self.sandbox.evaluate = evaluate
        return self

    def __exit__(self, *exc) -> None:
        self.sandbox.evaluate = self._evaluate


def run_op(op: str, workers: int, max_experiments: int, minutes: float, device: str, work: Path,
           sampler: GpuSampler) -> dict[str, Any]:
    from optimize_tuner import weak_start

    from autokernel_ci.loop import LoopSettings, mean_pct_roofline, run_loop
    from autokernel_ci.pool import WorkerPool
    from autokernel_ci.search import TunerProposer

    repo = work / op
    task = weak_start(op, repo)
    pool = WorkerPool.for_device(device, workers) if workers > 1 else None
    marks: dict[str, float] = {"start": sampler.now()}

    def show(p):
        if p.phase == "experiment" and p.last is not None:
            marks.setdefault("experiments", sampler.now() - p.last.duration_s)
            e = p.last
            speed = e.speedup_vs_start
            print(f"  [{op}] #{e.n:<3} {e.verdict:<13} {f'{speed:.2f}x' if speed else '-':>7}  "
                  f"{e.duration_s:5.1f} s  {e.description[:70]}", flush=True)

    settings = LoopSettings(out_dir=repo / "autokernel-out", budget_minutes=minutes, max_experiments=max_experiments,
                            patience=max_experiments, device=device, timeout=300.0, workers=workers, pool=pool)
    try:
        result = run_loop(task, TunerProposer(), settings, on_progress=show)
    finally:
        if pool is not None:
            pool.close()
    marks["end"] = sampler.now()
    tried = [r for r in result.experiments if r.is_experiment]
    setup = [r for r in result.experiments if not r.is_experiment]
    exp_s = sum(r.duration_s for r in tried)
    return {
        "op": op, "experiments": len(tried), "kept": len(result.kept), "reverted": result.reverted_by_reason(),
        "setup_s": round(sum(r.duration_s for r in setup), 2), "experiment_s": round(exp_s, 2),
        "wall_s": round(marks["end"] - marks["start"], 2),
        "experiments_per_hour": 3600 * len(tried) / exp_s if exp_s else None,
        "gpu_util_experiments": sampler.mean_by_gpu(marks.get("experiments", marks["start"]), marks["end"]),
        "speedup_vs_weak_start": result.speedup,
        "pct_roofline_start": mean_pct_roofline(result.start_result) if result.start_result else None,
        "pct_roofline_final": mean_pct_roofline(result.best_result) if result.best_result else None,
        "best_params": result.best.params if result.best else None, "stop_reason": result.stop_reason,
        "rows": [{"n": r.n, "description": r.description, "verdict": r.verdict, "sha": r.candidate_sha256,
                  "duration_s": r.duration_s} for r in tried],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from autokernel_ci.harness import sandbox
    from autokernel_ci.pool import visible_gpus

    device = sandbox.resolve_device(args.device)
    gpus = visible_gpus() if device == "cuda" else []
    if device == "cuda" and args.workers > len(gpus):
        raise SystemExit(f"--workers {args.workers}: only {len(gpus)} GPU(s) visible")
    report: dict[str, Any] = {
        **run_record(device), "visible_gpus": gpus, "workers": args.workers,
        "settings": {"ops": args.ops, "max_experiments": args.max_experiments, "minutes_per_op": args.minutes_per_op},
    }
    print_record(report, f" × {len(gpus)} visible; {args.workers} worker(s)")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    with tempfile.TemporaryDirectory(prefix="autokernel-scaling-") as tmp:
        os.environ["TRITON_CACHE_DIR"] = str(Path(tmp) / "triton")  # cold: nothing compiled by an earlier run
        with GpuSampler() as sampler, EvaluationLog() as log:
            report["ops"] = []
            for op in ops:
                print(f"\n{op}:", flush=True)
                entry = run_op(op, args.workers, args.max_experiments, args.minutes_per_op, device, Path(tmp), sampler)
                report["ops"].append(entry)
                write_record(report, args.out)  # after every op: a run cut short still leaves what it measured
                print(f"  {entry['experiments']} experiments in {entry['experiment_s']:.1f} s = "
                      f"{entry['experiments_per_hour'] or 0:.0f}/hour; setup {entry['setup_s']:.1f} s; "
                      f"GPU util {entry['gpu_util_experiments']}; speedup {entry['speedup_vs_weak_start'] or 0:.2f}x; "
                      f"% roofline {entry['pct_roofline_start'] or 0:.1f} -> {entry['pct_roofline_final'] or 0:.1f}",
                      flush=True)
        report["evaluations"] = log.rows
        report["gpu_uuids"] = sampler.uuids()
    total_exp = sum(e["experiments"] for e in report["ops"])
    total_s = sum(e["experiment_s"] for e in report["ops"])
    report["summary"] = {"experiments": total_exp, "experiment_s": total_s,
                         "experiments_per_hour": 3600 * total_exp / total_s if total_s else None,
                         "setup_s": sum(e["setup_s"] for e in report["ops"]),
                         "placement": placement(report)}
    print(f"\nall ops, {args.workers} worker(s): {total_exp} experiments in {total_s:.0f} s = "
          f"{report['summary']['experiments_per_hour'] or 0:.0f} experiments/hour")
    print(f"placement: {report['summary']['placement']}")
    return report


def placement(report: dict[str, Any]) -> dict[str, Any]:
    """Which card each slot's evaluations ran on: {slot's CUDA_VISIBLE_DEVICES: {card index: count}}."""
    # nvidia-smi writes "GPU-<uuid>", torch the bare uuid.
    by_uuid = {uuid.removeprefix("GPU-"): index for uuid, index in report.get("gpu_uuids", {}).items()}
    out: dict[str, dict[str, int]] = {}
    for row in report.get("evaluations", []):
        slot = row["slot_visible"] or "unpinned"
        card = by_uuid.get((row["gpu_uuid"] or "").removeprefix("GPU-"), row["gpu_uuid"] or "?")
        out.setdefault(slot, {}).setdefault(card, 0)
        out[slot][card] += 1
    return out


def compare(paths: list[Path]) -> int:
    runs = [json.loads(p.read_text()) for p in paths]
    base = next((r for r in runs if r["workers"] == 1), runs[0])
    print(f"{'workers':>7} {'experiments':>11} {'loop s':>7} {'exp/hour':>9} {'speed-up':>8}  GPU util (per GPU, mean)")
    for run in runs:
        s = run["summary"]
        speedup = s["experiments_per_hour"] / base["summary"]["experiments_per_hour"]
        util = {}
        for op in run["ops"]:
            for gpu, value in op["gpu_util_experiments"].items():
                util.setdefault(gpu, []).append(value)
        util_text = ", ".join(f"GPU {g} {sum(v) / len(v):.0f}%" for g, v in sorted(util.items()))
        print(f"{run['workers']:>7} {s['experiments']:>11} {s['experiment_s']:>7.0f} {s['experiments_per_hour']:>9.0f} "
              f"{speedup:>7.2f}x  {util_text}")
    problems = []
    for run in runs:
        for slot, cards in placement(run).items():
            on_gpu = not run["device"].startswith("cpu")
            if on_gpu and run["workers"] > 1 and (slot == "unpinned" or list(cards) != [slot]):
                problems.append(f"{run['workers']} workers: slot {slot} ran on cards {cards}")
        print(f"{run['workers']} worker(s): evaluations per slot → card: {placement(run)}")
    for run in runs:
        if run is base:
            continue
        status_a = {(r["task"], r["candidate_sha256"]): r["status"] for r in base["evaluations"]}
        status_b = {(r["task"], r["candidate_sha256"]): r["status"] for r in run["evaluations"]}
        common = set(status_a) & set(status_b)
        differ = sorted(k for k in common if status_a[k] != status_b[k])
        rows_a = {(op["op"], r["sha"]): r["verdict"] for op in base["ops"] for r in op["rows"]}
        rows_b = {(op["op"], r["sha"]): r["verdict"] for op in run["ops"] for r in op["rows"]}
        shared = set(rows_a) & set(rows_b)
        verdicts_differ = sorted(k for k in shared if rows_a[k] != rows_b[k])
        print(f"{run['workers']} vs 1 worker: {len(common)} candidates evaluated by both, correctness status "
              f"differs on {len(differ)}; {len(shared)} experiments tried by both, loop verdict differs on "
              f"{len(verdicts_differ)}")
        for key in verdicts_differ:
            print(f"  {key[0]} {key[1][:10]}: {rows_a[key]} with 1 worker, {rows_b[key]} with {run['workers']}")
        problems += [f"correctness status differs: {k}" for k in differ]
        for op_a in base["ops"]:
            op_b = next((o for o in run["ops"] if o["op"] == op_a["op"]), None)
            if op_b:
                print(f"  {op_a['op']:<14} final % roofline {op_a['pct_roofline_final'] or 0:5.1f} (1 worker) vs "
                      f"{op_b['pct_roofline_final'] or 0:5.1f} ({run['workers']}); best {op_a['best_params']} vs "
                      f"{op_b['best_params']}")
    print("\n" + ("OK: every worker on its own card; correctness verdicts match" if not problems
                  else "PROBLEMS:\n  " + "\n  ".join(problems)))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="one worker per GPU, on the first N (default 1)")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated ops (default: the four)")
    parser.add_argument("--max-experiments", type=int, default=12, help="experiment budget per op (default 12)")
    parser.add_argument("--minutes-per-op", type=float, default=3.0, help="time budget per op (default 3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--json", type=Path, help="where to write (default: $OUT/pool_scaling_w{N}.json)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="JSON", help="compare runs written before")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # optimize_tuner's weak configs
    out = args.json or (Path(os.environ["OUT"]) / f"pool_scaling_w{args.workers}.json" if os.environ.get("OUT")
                        else None)
    args.out = out
    write_record(measure(args), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
