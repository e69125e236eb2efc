"""`autokernel-ci bench`: the correctness gate, then timings and % of measured roofline, beside the baselines."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from autokernel_ci.commands import (
    EXIT_NOT_PASSED,
    clear_progress,
    positive_float,
    progress_printer,
    step,
    write_text,
)
from autokernel_ci.errors import AutokernelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="gate, then time the current tree's kernels against eager, vendor and compile",
                       description="For each task: the correctness gate, then timings at the benchmark shapes, "
                                   "% of measured roofline, and the eager / vendor / torch.compile baselines.")
    p.add_argument("--task", action="append", default=[], metavar="TASK",
                   help="a built-in op, a kernel in .autokernel.yml or a KernelBench file (repeatable; default: "
                        "every kernel in the config)")
    p.add_argument("--candidate", metavar="FILE", help="kernel file to bench (with one --task; default: the "
                                                       "task's file, or the built-in starter kernel)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--timeout", type=positive_float, default=600.0, metavar="SECONDS")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./.autokernel.yml if present)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.harness.sandbox import TimingPlan, evaluate, resolve_device
    from autokernel_ci.report.terminal import print_bench_table, print_eval_result

    tasks = _tasks(args)
    if args.candidate and len(tasks) != 1:
        raise AutokernelError("--candidate goes with exactly one --task")
    device = resolve_device(args.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="autokernel-bench-") as tmp:
        for i, task in enumerate(tasks, 1):
            candidate = Path(args.candidate) if args.candidate else candidate_file(task, Path(tmp))
            plan = TimingPlan.for_task(task, device)
            step(f"bench {i}/{len(tasks)} {task.name}: the correctness gate, then timing at {len(plan.shapes)} "
                 f"shape(s) on {device}" + (" (Triton's interpreter: a minute or more)" if device == "cpu" else ""))
            result = evaluate(task, candidate, device=device, timeout=args.timeout, timing=plan,
                              on_progress=progress_printer(f"{task.name}"))
            clear_progress()
            if not result.passed:
                print_eval_result(result)
            results.append(result)
    print_bench_table(results)
    for task, result in zip(tasks, results):
        for line in baseline_gaps(task, result, device):
            print(line)
    if args.json:
        write_text(args.json, json.dumps({"results": [r.to_dict() for r in results]}, indent=2) + "\n")
    return 0 if all(r.passed for r in results) else EXIT_NOT_PASSED


def _tasks(args: argparse.Namespace):
    from autokernel_ci.config import find_config, load_config
    from autokernel_ci.tasks import config_task, resolve_task

    config_path = Path(args.config) if args.config else None
    if args.task:
        return [resolve_task(t, config_path) for t in args.task]
    path = config_path or find_config()
    if path is None:
        raise AutokernelError("nothing to bench: pass --task, or add a .autokernel.yml with kernels")
    cfg = load_config(path)
    if not cfg.kernels:
        raise AutokernelError(f"{path}: no kernels to bench")
    return [config_task(k, cfg) for k in cfg.kernels]


def candidate_file(task, tmp: Path) -> Path:
    """The task's own kernel file, or the built-in library's starter kernel for a bare op name."""
    from autokernel_ci.ops import starter_source

    if task.path is not None:
        return task.path
    if task.op is None:
        raise AutokernelError(f"task {task.name!r} has no kernel file to bench; pass --candidate")
    path = tmp / f"{task.op}.py"
    path.write_text(starter_source(task.op))
    return path


BASELINES = ("eager", "vendor", "compile")


def baseline_gaps(task, result, device: str) -> list[str]:
    """One line per baseline column left empty for `task`, saying why."""
    if not result.timings:
        return []
    if device == "cpu":
        return [f"{task.name}: eager, vendor and compile not timed: on the CPU the kernel runs in Triton's "
                "interpreter, so a comparison with PyTorch on the CPU would mean nothing (a GPU run times them)"]
    if task.kind == "config" and not task.op:
        return [f"{task.name}: eager, vendor and compile not timed: baselines are timed for built-in ops and "
                "KernelBench tasks; a custom task's reference runs only in the correctness gate"]
    lines = []
    for name in BASELINES:
        if any(name in t.baselines_us for t in result.timings):
            continue
        if name == "vendor" and (task.kind == "kernelbench" or task.spec.vendor is None):
            why = "this task has no vendor op to compare with"
        else:
            why = "its timing failed in the baselines worker (run with --json and see the worker log)"
        lines.append(f"{task.name}: {name} not timed: {why}")
    return lines
