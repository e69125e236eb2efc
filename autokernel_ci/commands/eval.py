"""`autokernel-ci eval`: gate one candidate on correctness in a sandboxed child process."""

from __future__ import annotations

import argparse
from pathlib import Path

from autokernel_ci.commands import (
    EXIT_NOT_PASSED,
    clear_progress,
    positive_float,
    progress_printer,
    require_file,
    write_text,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run the correctness gate (and anti-cheat checks) on one candidate kernel file",
                       description="Gate one candidate on correctness in a sandboxed child process. "
                                   "Exits 0 only on PASS.")
    p.add_argument("--task", required=True,
                   help="a built-in op name, a kernel named in .autokernel.yml, or a KernelBench-style .py file")
    p.add_argument("--candidate", required=True, help="the kernel file to evaluate (defines kernel_fn or ModelNew)")
    p.add_argument("--json", metavar="OUT", help="write the EvalResult JSON here")
    p.add_argument("--timeout", type=positive_float, default=600.0, metavar="SECONDS",
                   help="time limit for the candidate process (default 600)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda if available, else cpu with the Triton interpreter)")
    p.add_argument("--seed", type=int, default=None, help="seed for the case seeds (default: fresh each run)")
    p.add_argument("--stages", metavar="STAGE,STAGE", default=None,
                   help="run only these correctness stages (default all: smoke,shapes,dtypes,stability,determinism)")
    p.add_argument("--time", action="store_true",
                   help="after a PASS, also time the candidate at the benchmark shapes (with the timing checks)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./.autokernel.yml if present)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.harness.sandbox import TimingPlan, evaluate, resolve_device
    from autokernel_ci.report.terminal import print_eval_result
    from autokernel_ci.tasks import resolve_task

    task = resolve_task(args.task, Path(args.config) if args.config else None)
    require_file(args.candidate, "candidate")
    device = resolve_device(args.device)
    timing = TimingPlan.for_task(task, device) if args.time else None
    stages = parse_stages(args.stages)
    progress = progress_printer(f"evaluating {args.candidate} against {task.name}")
    result = evaluate(task, args.candidate, device=device, timeout=args.timeout, seed=args.seed, timing=timing,
                      stages=stages, on_progress=progress)
    clear_progress()
    print_eval_result(result)
    if args.json:
        write_text(args.json, result.to_json() + "\n")
    return 0 if result.passed else EXIT_NOT_PASSED


def parse_stages(text: str | None) -> tuple[str, ...] | None:
    from autokernel_ci.errors import AutokernelError
    from autokernel_ci.harness.correctness import STAGES

    if text is None:
        return None
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise AutokernelError(f"--stages: unknown stage(s) {', '.join(unknown) or '(none given)'}; the stages are "
                              f"{', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in stages)
