"""How well the gate catches slowdowns on this GPU, how often it cries wolf, and what one gate run costs.

    python benchmarks/gate_detection.py [--budget-s 450] [--json OUT.json]
    python benchmarks/gate_detection.py --device cpu --quick     # the script's logic on the interpreter

1. **One full gate run** (`gate.run_gate`, worker processes and all) on a temporary git repository
   holding the 7 built-in starter kernels (rmsnorm, layernorm, softmax, cross_entropy, rope,
   swiglu, matmul); head = base + a comment in every kernel file, so all 7 are gated. Run twice:
   cold (empty noise cache, so the A/A noise is measured; Triton's cache as the machine has it) and
   warm (noise cached). The wall time is the GPU time the gate holds the machine.
2. **Known slowdowns** injected into a real kernel: the rmsnorm starter kernel at its benchmark
   shape (16384×4096 bf16) and at a decode shape (16×4096 bf16). Base and head are the same file
   plus one extra Triton launch after the kernel: a single program running a dependent multiply-add
   chain of n steps (pure latency, no memory traffic). Base has n = 0, so the launch itself costs
   both sides alike and the head's extra time is n steps; n is calibrated to 1, 3, 5 and 10 % of the
   base's time, and the injected slowdown actually reached is measured (long interleaved run) and
   printed beside the nominal one. 0 % is the same source in two modules: the false-positive test.
3. **Repeated gate decisions** per size: `gate.compare` (the gate's own decision code: rounds grown
   until decided, the noise floor, the confirmation in a fresh session) with the gate's `ABSettings`
   and timer (`gate.ab_plan`, `gate.timer_options`). Each session is a fresh `ABTimer` on fresh
   inputs in this process (the gate's worker runs the same timer in a child process; a process per
   trial would leave time for a handful of trials). The noise comes from the gate's A/A scheme
   (`gate.noise_from_aa`), measured three times per kernel and used in rotation, as a cached noise
   would be. Sizes are visited round-robin (0 % twice per cycle) until the time budget is spent.

Reports detection rate per size (a confirmed regression), the false-positive rate at 0 %, the share
of first measurements that called a regression before confirmation, inconclusive shares, rounds and
seconds per decision, and the two gate runs' wall times. Targets (issue): ≥ 95 % detection at 5 %,
≥ 80 % at 3 %, ≤ 1 % false positives, under 2 GPU-minutes for the 7 built-in tasks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed

BUILTIN_TASKS = ("rmsnorm", "layernorm", "softmax", "cross_entropy", "rope", "swiglu", "matmul")
SIZES = (0.0, 0.01, 0.03, 0.05, 0.10)
TARGETS = {0.03: 0.80, 0.05: 0.95}
MAX_FALSE_POSITIVES = 0.01

DELAY_SOURCE = '''

# --- injected by benchmarks/gate_detection.py: a known amount of GPU time after the kernel ---
import triton as _injected_triton  # noqa: E402
import triton.language as _injected_tl  # noqa: E402

DELAY_STEPS = {steps}
_injected_scratch = []


@_injected_triton.jit
def _injected_delay(out_ptr, n_steps):
    """One program, one warp: a dependent multiply-add chain of n_steps. The store never happens (acc stays
    in (0, 1)) but the compiler cannot know, so the chain is kept."""
    offs = _injected_tl.arange(0, 32)
    acc = _injected_tl.full([32], 0.5, _injected_tl.float32)
    for _ in range(n_steps):
        acc = acc * 0.999 + 0.001
    _injected_tl.store(out_ptr + offs, acc, mask=acc < -1.0)


_kernel_fn_before_injection = kernel_fn  # noqa: F821


def kernel_fn(*args, **kwargs):  # noqa: F811
    out = _kernel_fn_before_injection(*args, **kwargs)
    if not _injected_scratch:
        _injected_scratch.append(torch.empty(32, dtype=torch.float32, device=out.device))  # noqa: F821
    _injected_delay[(1,)](_injected_scratch[0], DELAY_STEPS)
    return out
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-time budget for the whole script; the trials get what the gate runs leave")
    parser.add_argument("--max-trials", type=int, default=400, help="at most this many decisions per size and kernel")
    parser.add_argument("--threshold", type=float, default=0.03)
    parser.add_argument("--skip-gate-runs", action="store_true", help="only the injected-slowdown trials")
    parser.add_argument("--sizes", default=",".join(f"{x:g}" for x in SIZES), metavar="S[,S…]",
                        help="injected slowdowns to run trials of, as fractions (default: all of "
                             f"{', '.join(f'{x:g}' for x in SIZES)}); e.g. 0 for false positives only")
    parser.add_argument("--skip-trials", action="store_true", help="only the full gate runs")
    parser.add_argument("--cold-only", action="store_true", help="gate runs: the cold run only, no warm one")
    parser.add_argument("--gate-workers", default="1", metavar="N[,N…]",
                        help="the gate runs with each of these worker counts (one GPU per worker), each cold "
                             "then warm; e.g. 1,2 on a two-GPU machine (default 1)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, two tasks, few trials (CPU logic check)")
    parser.add_argument("--json", type=Path, help="write everything here (default: $OUT/gate_detection.json)")
    args = parser.parse_args(argv)
    _sizes(args.sizes)  # a bad list is refused before anything runs

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this process
    started = time.monotonic()
    report: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]),
                              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _print_header(report, device)
    report["settings"] = asdict(_settings())
    report["threshold"] = args.threshold

    deadline = started + args.budget_s
    if not args.skip_gate_runs:
        report["gate_runs"] = _gate_runs(device, args, warm_by=started + args.budget_s / 2)
    try:
        if args.skip_trials:
            raise _Skipped
        report["detection"] = _detection(device, args, deadline)
    except _Skipped:
        report["detection"] = {"kernels": [], "skipped": True}
    except Exception as exc:  # noqa: BLE001 - keep the gate runs' numbers and say what broke
        import traceback

        traceback.print_exc()
        report["detection"] = {"kernels": [], "error": f"{type(exc).__name__}: {exc}"}
    report["wall_s"] = round(time.monotonic() - started, 1)
    _print_summary(report, device)
    out = args.json or (Path(os.environ["OUT"]) / "gate_detection.json" if os.environ.get("OUT") else None)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {out}")
    return 0


class _Skipped(Exception):
    """--skip-trials: no injected-slowdown trials this time."""


def _settings():
    from autokernel_ci.gate import ABSettings

    return ABSettings()


def _print_header(report: dict[str, Any], device: str) -> None:
    from autokernel_ci.harness.device import device_info

    info = device_info()
    report["device"] = info.to_dict()
    print(f"command:  {report['command']}")
    print(f"date:     {report['date']}")
    print(f"device:   {info.label}" + ("" if device == "cuda" else "  (timings NOT representative)"))
    print(f"versions: python {info.python_version}, torch {info.torch_version}, triton {info.triton_version}, "
          f"cuda {info.cuda_version}, driver {info.driver_version}")
    print(f"platform: {info.platform}")
    from autokernel_ci.provenance import describe

    report.update(describe())
    print(f"commit:   {report['commit']} (source {report['source_digest']})\n")


# --- 1. full gate runs ------------------------------------------------------------------------------


def _gate_runs(device: str, args: argparse.Namespace, warm_by: float) -> list[dict[str, Any]]:
    """The cold run, then the warm one if it can start before `warm_by` (the trials need time too).

    With git: `run_gate` on a temporary repository (worktrees and all). Without git on the machine:
    `gate_trees` on the two trees as plain folders, the same per-task work less the checkout.
    """
    from autokernel_ci.ops import starter_source

    tasks = BUILTIN_TASKS[:2] if args.quick else BUILTIN_TASKS
    stages = ("smoke",) if args.quick else None
    use_git = shutil.which("git") is not None
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gate-detection-") as tmp:
        trees = {label: Path(tmp) / label for label in ("base", "head")}
        entries = "".join(f"  - name: {t}\n    op: {t}\n    path: kernels/{t}.py\n" for t in tasks)
        for label, tree in trees.items():
            (tree / "kernels").mkdir(parents=True)
            (tree / ".autokernel.yml").write_text(f"version: 1\nkernels:\n{entries}gate:\n  max_minutes: 10\n")
            for t in tasks:
                edit = "\n# a small edit: the gate must time this kernel again\n" if label == "head" else ""
                (tree / "kernels" / f"{t}.py").write_text(starter_source(t) + edit)
        if use_git:
            repo = trees["base"]
            _git(repo, "init", "-q", "-b", "main")
            _git(repo, "add", "-A")
            _git(repo, "commit", "-q", "-m", "base")
            for t in tasks:
                shutil.copy(trees["head"] / "kernels" / f"{t}.py", repo / "kernels" / f"{t}.py")
            _git(repo, "commit", "-q", "-am", "head: a comment in every kernel")
        else:
            print("git is not installed here: gate_trees on two plain folders (no worktree checkout)\n")
        previous = {name: os.environ.get(name) for name in ("AUTOKERNEL_CACHE_DIR", "TRITON_CACHE_DIR")}
        calibration = Path(previous["AUTOKERNEL_CACHE_DIR"] or "") / "device"
        for workers in [int(w) for w in str(args.gate_workers).split(",") if w.strip()]:
            # Each worker count starts from an empty noise cache and an empty Triton cache (its cold run
            # measures the noise and compiles every kernel); the device calibration is carried over.
            cache = Path(tmp) / f"cache-{workers}"
            if calibration.is_dir():
                shutil.copytree(calibration, cache / "device")
            os.environ["AUTOKERNEL_CACHE_DIR"] = str(cache)
            os.environ["TRITON_CACHE_DIR"] = str(Path(tmp) / f"triton-{workers}")
            try:
                labels = ("cold (noise measured)",) + (() if args.cold_only else ("warm (noise cached)",))
                for label in labels:
                    if runs and label.startswith("warm") and time.monotonic() > warm_by:
                        print(f"gate run, {label}: skipped, the cold run took too much of the budget\n")
                        break
                    print(f"gate run, {len(tasks)} tasks, {workers} worker(s), {label}:")
                    runs.append(_one_gate_run(label, trees, use_git, device, stages, tasks, workers))
            except Exception as exc:  # noqa: BLE001 - the trials below still have something to say
                print(f"gate run failed: {type(exc).__name__}: {exc}\n")
                runs.append({"label": "failed", "workers": workers, "error": f"{type(exc).__name__}: {exc}",
                             "wall_s": None, "verdicts": []})
            finally:
                for name, value in previous.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
    return runs


def _one_gate_run(label: str, trees: dict[str, Path], use_git: bool, device: str, stages, tasks,
                  workers: int = 1) -> dict[str, Any]:
    from autokernel_ci.gate import gate_trees, run_gate

    events: list[tuple[float, str]] = []
    t0 = time.monotonic()
    on_event = lambda m: events.append((time.monotonic() - t0, m))  # noqa: E731
    if use_git:
        gate_report = run_gate(trees["base"], "HEAD~1", "HEAD", device=device, stages=stages, on_event=on_event,
                               workers=workers)
    else:
        gate_report = gate_trees(trees["base"], trees["head"], device=device, stages=stages, on_event=on_event,
                                 workers=workers)
    wall = time.monotonic() - t0
    per_task = _per_task_seconds(events, tasks)
    for v in gate_report.verdicts:
        ratio = "-" if v.ratio is None else f"{(v.ratio - 1) * 100:+.2f} %"
        noise = "-" if v.noise is None else f"{v.noise:.2%}"
        print(f"  {v.task:<14} {v.verdict:<13} {ratio:>9}  noise {noise:>7}  rounds {v.rounds:>3}  "
              f"{per_task.get(v.task, float('nan')):6.1f} s" + (f"  GPU {v.gpu}" if v.gpu is not None else ""))
        if v.verdict not in ("pass", "improvement"):
            print(f"    {' '.join(v.reason.split())[:300]}")
    print(f"  exit code {gate_report.exit_code}; wall {wall:.1f} s "
          f"({'under' if wall < 120 else 'OVER'} the 2-minute target)\n")
    return {"label": label, "workers": gate_report.workers, "wall_s": round(wall, 2),
            "exit_code": gate_report.exit_code, "git": use_git,
            "per_task_s": per_task, "counts": gate_report.counts(),
            "verdicts": [{"task": v.task, "gpu": v.gpu, "verdict": v.verdict, "ratio": v.ratio, "ci_lo": v.ci_lo,
                          "ci_hi": v.ci_hi, "noise": v.noise, "rounds": v.rounds, "reason": v.reason,
                          "shapes": [{"shape": sc.shape, "base_median_us": sc.base_median_us,
                                      "head_median_us": sc.head_median_us, "noise_source": sc.noise_source,
                                      "aa_ratios": sc.aa_ratios, "rounds": sc.rounds} for sc in v.shapes]}
                         for v in gate_report.verdicts]}


def _per_task_seconds(events: list[tuple[float, str]], tasks: tuple[str, ...]) -> dict[str, float]:
    starts = {}
    out = {}
    for t, message in events:
        name, _, what = message.partition(": ")
        if name in tasks and what.startswith("gating"):  # "gating on GPU 1" with several workers
            starts[name] = t
        elif name in starts and name not in out and what.split(":")[0] in (
                "pass", "regression", "improvement", "fail", "new", "removed", "inconclusive", "error"):
            out[name] = round(t - starts[name], 2)
    return out


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=gate-detection", "-c", "user.email=gate@example.com", *args],
                   cwd=repo, check=True, capture_output=True)


# --- 2. known slowdowns -----------------------------------------------------------------------------


class Kernel:
    """The rmsnorm starter kernel at one shape, with variants that add `steps` of delay after it."""

    def __init__(self, label: str, shape: dict[str, int], dtype: str, device: str, folder: Path) -> None:
        from autokernel_ci.gate import ab_plan, timer_options
        from autokernel_ci.ops import starter_source
        from autokernel_ci.tasks import builtin_task

        self.label, self.shape, self.dtype, self.device, self.folder = label, shape, dtype, device, folder
        self.task = builtin_task("rmsnorm")
        self.source = starter_source("rmsnorm")
        plan = ab_plan(self.task, "cuda", _settings())  # the gate's GPU timer settings, on either device
        self.options = timer_options(plan)
        if device == "cpu":
            self.options.update(warmup_ms=1.0, rep_ms=10.0, min_reps=3, max_reps=10, flush_l2=False)
        self.seeds = itertools.count(1000)
        self._count = itertools.count()

    def variant(self, steps: int):
        """kernel_fn of a fresh module: the starter plus a delay launch of `steps` steps."""
        from autokernel_ci.tasks import load_module_from_path

        n = next(self._count)
        path = self.folder / f"{self.label.replace(' ', '_')}_{n}_{steps}.py"
        path.write_text(self.source + DELAY_SOURCE.format(steps=int(steps)))
        return load_module_from_path(path, name=f"gate_detection_{n}").kernel_fn

    def inputs(self) -> list[tuple[Any, ...]]:
        import torch

        from autokernel_ci.ops.base import DTYPES

        generator = torch.Generator(device=self.device)
        generator.manual_seed(next(self.seeds))
        return [tuple(self.task.spec.make_inputs(self.shape, DTYPES[self.dtype], generator))]

    def opener(self, base_fn, head_fn):
        """The gate's open_session: a fresh interleaved timer of base vs head on fresh inputs."""
        from autokernel_ci.harness.timing import ABTimer

        def open_session():
            sets = self.inputs()
            timer = ABTimer(base_fn, head_fn, input_sets_a=sets, input_sets_b=sets, device=self.device,
                            **self.options)
            return timer.measure_round

        return open_session


def _ratio(kernel: Kernel, base_fn, head_fn, rounds: int) -> tuple[float, float, float]:
    """(ratio, lo, hi) of head vs base over `rounds` interleaved rounds: a long, careful measurement."""
    from autokernel_ci import stats

    measure_round = kernel.opener(base_fn, head_fn)()
    base, head = [], []
    for _ in range(rounds):
        a, b = measure_round()
        base += a
        head += b
    return stats.bootstrap_ratio_ci(base, head)


def _calibrate(kernel: Kernel, base_fn, quick: bool) -> dict[str, Any]:
    """Steps per 1 % of the base's time, from a probe; then each size's variant and its measured slowdown."""
    rounds = 4 if quick else 10
    probe_steps = 200 if quick else 2000
    for _ in range(6):  # grow the probe until it shows a slowdown well above the noise
        ratio, lo, hi = _ratio(kernel, base_fn, kernel.variant(probe_steps), rounds)
        if ratio - 1.0 > 0.08:
            break
        probe_steps *= 4 if ratio - 1.0 < 0.02 else 2
    per_step = (ratio - 1.0) / probe_steps
    print(f"  {kernel.label}: probe {probe_steps} steps → {(ratio - 1) * 100:+.2f} % "
          f"({(lo - 1) * 100:+.2f} .. {(hi - 1) * 100:+.2f}); {per_step * 1e6:.2f} ppm a step")
    variants = {}
    for size in SIZES:
        steps = 0 if size == 0 else max(1, round(size / per_step))
        head_fn = kernel.variant(steps)
        actual, lo, hi = _ratio(kernel, base_fn, head_fn, rounds) if size else (1.0, 1.0, 1.0)
        variants[size] = {"steps": steps, "fn": head_fn, "actual": actual - 1.0, "actual_lo": lo - 1.0,
                          "actual_hi": hi - 1.0}
        if size:
            print(f"    nominal {size:5.0%}: {steps:>7} steps → measured {(actual - 1) * 100:+.2f} % "
                  f"({(lo - 1) * 100:+.2f} .. {(hi - 1) * 100:+.2f})")
    return {"probe_steps": probe_steps, "probe_ratio": ratio, "per_step": per_step, "variants": variants}


def _noise_draws(kernel: Kernel, base_fn, draws: int) -> list[dict[str, Any]]:
    """The gate's A/A scheme: the base against a second module of the same source."""
    from autokernel_ci.gate import noise_from_aa

    settings = _settings()
    out = []
    for _ in range(draws):
        measure_round = kernel.opener(base_fn, kernel.variant(0))()
        rounds = [measure_round() for _ in range(settings.aa_pairs * settings.min_rounds)]
        noise, ratios = noise_from_aa(rounds, settings.min_rounds, settings.confidence)
        out.append({"noise": noise, "aa_ratios": ratios})
    noises = ", ".join(f"{d['noise']:.2%}" for d in out)
    ratios = ", ".join(f"{r:.4f}" for d in out for r in d["aa_ratios"])
    print(f"  {kernel.label}: A/A noise {noises} (ratios {ratios})")
    return out


def _detection(device: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    from autokernel_ci.gate import compare

    settings = _settings()
    quick = args.quick
    shapes = [("rmsnorm bench", {"rows": 64, "dim": 256} if quick else {"rows": 16384, "dim": 4096}),
              ("rmsnorm decode", {"rows": 4, "dim": 64} if quick else {"rows": 16, "dim": 4096})]
    dtype = "fp32" if device == "cpu" else "bf16"
    results: dict[str, Any] = {"kernels": []}
    with tempfile.TemporaryDirectory(prefix="gate-detection-kernels-") as tmp:
        kernels = []
        print("calibration: steps of injected delay per size, and the slowdown they actually cause")
        for label, shape in shapes:
            kernel = Kernel(label, shape, dtype, device, Path(tmp))
            base_fn = kernel.variant(0)
            calibration = _calibrate(kernel, base_fn, quick)
            noise = _noise_draws(kernel, base_fn, 3)
            kernels.append((kernel, base_fn, calibration, noise))
        tallies = {(k.label, s): _Tally() for k, *_ in kernels for s in SIZES}
        chosen = _sizes(args.sizes)
        schedule = [s for s in chosen for _ in range(2 if s == 0 and len(chosen) > 1 else 1)]
        max_trials = 2 if quick else args.max_trials
        reserve = 5.0
        print(f"\ntrials until {max(deadline - time.monotonic(), 0):.0f} s from now "
              f"(round-robin over sizes, 0 % twice per cycle; at most {max_trials} per size)")
        trial = 0
        while time.monotonic() < deadline - reserve:
            progressed = False
            for kernel, base_fn, calibration, noise in kernels:
                for size in schedule:
                    tally = tallies[(kernel.label, size)]
                    if tally.trials >= max_trials or time.monotonic() >= deadline - reserve:
                        continue
                    head_fn = calibration["variants"][size]["fn"]
                    draw = noise[trial % len(noise)]["noise"]
                    t0 = time.monotonic()
                    decision, measurements = compare(kernel.opener(base_fn, head_fn), args.threshold, draw,
                                                     settings=settings, time_cap_s=30.0)
                    tally.add(decision, measurements, time.monotonic() - t0)
                    trial += 1
                    progressed = True
            if not progressed:
                break
        for kernel, _, calibration, noise in kernels:
            entry = {"label": kernel.label, "shape": kernel.shape, "dtype": kernel.dtype,
                     "noise_draws": noise, "probe_steps": calibration["probe_steps"],
                     "per_step": calibration["per_step"], "sizes": []}
            for size in SIZES:
                variant = calibration["variants"][size]
                entry["sizes"].append({"nominal": size, "steps": variant["steps"], "actual": variant["actual"],
                                       "actual_lo": variant["actual_lo"], "actual_hi": variant["actual_hi"],
                                       **tallies[(kernel.label, size)].summary()})
            results["kernels"].append(entry)
    return results


def _sizes(text: str) -> list[float]:
    sizes = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise SystemExit(f"--sizes: {part!r} is not a number") from None
        if value not in SIZES:
            raise SystemExit(f"--sizes: {value:g} is not one of {', '.join(f'{x:g}' for x in SIZES)}")
        sizes.append(value)
    return sizes


class _Tally:
    def __init__(self) -> None:
        self.trials = 0
        self.verdicts: dict[str, int] = {}
        self.first_regressions = 0
        self.rounds: list[int] = []
        self.seconds: list[float] = []
        self.ratios: list[float] = []

    def add(self, decision, measurements, seconds: float) -> None:
        self.trials += 1
        self.verdicts[decision.verdict] = self.verdicts.get(decision.verdict, 0) + 1
        self.first_regressions += measurements[0].decision["verdict"] == "regression"
        self.rounds.append(sum(m.rounds for m in measurements))
        self.seconds.append(seconds)
        if measurements[0].decision.get("ratio") is not None:
            self.ratios.append(measurements[0].decision["ratio"])

    def summary(self) -> dict[str, Any]:
        n = max(self.trials, 1)
        return {"trials": self.trials, "verdicts": dict(self.verdicts),
                "detected": self.verdicts.get("regression", 0) / n, "first_regression": self.first_regressions / n,
                "inconclusive": self.verdicts.get("inconclusive", 0) / n,
                "mean_rounds": sum(self.rounds) / n, "mean_s": sum(self.seconds) / n,
                "median_ratio": sorted(self.ratios)[len(self.ratios) // 2] if self.ratios else None}


# --- the summary ------------------------------------------------------------------------------------


def _print_summary(report: dict[str, Any], device: str) -> None:
    print("\n== results" + ("" if device == "cuda" else " (CPU interpreter: NOT representative)") + " ==")
    runs = [r for r in report.get("gate_runs", []) if r.get("wall_s") is not None]
    for run in runs:
        print(f"gate run, {run.get('workers', 1)} worker(s), {run['label']}: {run['wall_s']:.1f} s wall, "
              f"exit {run['exit_code']}, {run['counts']}")
    if report["detection"].get("skipped"):
        print("injected-slowdown trials: skipped (--skip-trials)")
    else:
        _print_detection(report)
    for workers in sorted({r.get("workers", 1) for r in runs}):
        mine = [r for r in runs if r.get("workers", 1) == workers]
        cold, warm = mine[0]["wall_s"], mine[-1]["wall_s"]
        print(f"  one gate run, {len(mine[0]['verdicts'])} tasks, {workers} worker(s): {cold:.1f} s cold, "
              f"{warm:.1f} s warm (target < 120 s: {'met' if warm < 120 else 'NOT met'} warm)")
    print(f"total wall time {report['wall_s']:.0f} s")


def _print_detection(report: dict[str, Any]) -> None:
    header = (f"{'kernel':<16}{'nominal':>8}{'injected':>10}{'trials':>7}{'regression':>11}{'1st meas.':>10}"
              f"{'inconcl.':>9}{'rounds':>7}{'s/dec':>6}")
    print("\n" + header)
    pooled: dict[float, list[int]] = {s: [0, 0] for s in SIZES}
    for entry in report["detection"]["kernels"]:
        for row in entry["sizes"]:
            hits = row["verdicts"].get("regression", 0)
            pooled[row["nominal"]][0] += hits
            pooled[row["nominal"]][1] += row["trials"]
            print(f"{entry['label']:<16}{row['nominal']:>8.0%}{row['actual'] * 100:>+9.2f}%{row['trials']:>7}"
                  f"{row['detected']:>11.1%}{row['first_regression']:>10.1%}{row['inconclusive']:>9.1%}"
                  f"{row['mean_rounds']:>7.1f}{row['mean_s']:>6.2f}")
    print("\nboth kernels together (regression = confirmed regression verdict):")
    for size, (hits, trials) in pooled.items():
        if not trials:
            print(f"  {size:.0%}: no trials")
            continue
        rate = hits / trials if trials else float("nan")
        if size == 0:
            bound = 1 - 0.05 ** (1 / trials) if trials and hits == 0 else float("nan")
            verdict = "met" if rate <= MAX_FALSE_POSITIVES else "NOT met"
            extra = f"; 95 % upper bound {bound:.1%}" if hits == 0 and trials else ""
            print(f"  0 %: false positives {hits}/{trials} = {rate:.1%} (target ≤ 1 %: {verdict}{extra})")
        else:
            target = TARGETS.get(size)
            check = f" (target ≥ {target:.0%}: {'met' if rate >= target else 'NOT met'})" if target else ""
            print(f"  {size:.0%}: detected {hits}/{trials} = {rate:.1%}{check}")


if __name__ == "__main__":
    sys.exit(main())
