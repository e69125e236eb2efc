"""`autokernel-ci demo`: the whole story on the bundled example, in a throwaway git repository.

It copies the examples into a temporary git repository and runs eval (the correctness gate, timed),
optimize (the tuner, a small budget) and the report a pull request would carry, written to DIR as
Markdown plus the progress PNG. Without a GPU the kernels run under Triton's interpreter on small
shapes and every timing is labelled as not representative.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from autokernel_ci.commands import positive_float
from autokernel_ci.errors import AutokernelError

DEMO_TASK = "rmsnorm"
DEFAULT_OUT = "autokernel-demo"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run eval → optimize → report on the bundled example in a temporary repository",
                       description="Copy the bundled examples into a temporary git repository, gate and time the "
                                   "example RMSNorm kernel, optimize it with the tuner on a small budget, and write "
                                   "the report a pull request would carry (summary.md, progress.png) to DIR. On a "
                                   "machine without a GPU this takes a few minutes and the timings are not "
                                   "representative.")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"where to write the report (default {DEFAULT_OUT})")
    p.add_argument("--max-experiments", type=int, default=6, metavar="N", help="experiments to run (default 6)")
    p.add_argument("--budget-minutes", type=positive_float, default=3.0, metavar="M",
                   help="wall-time budget for the optimize step (default 3)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda if available, else cpu with the Triton interpreter)")
    p.set_defaults(handler=run)


def examples_dir() -> Path:
    """The bundled examples: inside the installed package, or the repository's examples/ folder."""
    import autokernel_ci

    package = Path(autokernel_ci.__file__).resolve().parent
    for candidate in (package / "examples", package.parent / "examples"):
        if (candidate / ".autokernel.yml").is_file():
            return candidate
    raise AutokernelError(f"the bundled examples are missing (looked in {package / 'examples'}); reinstall "
                          "autokernel-ci")


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.commands.optimize import optimize_tasks
    from autokernel_ci.config import load_config
    from autokernel_ci.harness.sandbox import evaluate, resolve_device
    from autokernel_ci.loop import init_repository, timing_plan
    from autokernel_ci.report.terminal import make_console, print_eval_result
    from autokernel_ci.tasks import resolve_task

    console = make_console()
    device = resolve_device(args.device)
    out = Path(args.out).resolve()
    repo = Path(tempfile.mkdtemp(prefix="autokernel-demo-")) / "repo"
    shutil.copytree(examples_dir(), repo, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "autokernel-out"))
    init_repository(repo, "Examples for the autokernel-ci demo")
    config = repo / ".autokernel.yml"
    task = resolve_task(DEMO_TASK, config)
    cpu = device == "cpu"
    console.rule("[bold]autokernel-ci demo")
    console.print(f"example repository: {repo} (a temporary copy of the bundled examples)")
    if cpu:
        console.print("[yellow]no GPU: kernels run under Triton's interpreter on small shapes; the timings only show "
                      "that the machinery works and are not representative of GPU speed[/]")

    console.rule("1. eval: the correctness gate, then timing")
    result = evaluate(task, task.path, device=device, timing=timing_plan(task, device))
    print_eval_result(result, console)
    if not result.passed:
        raise AutokernelError(f"the example kernel did not pass its gate ({result.status.value}); the demo stops here")

    console.rule(f"2. optimize: the tuner, at most {args.max_experiments} experiments")
    results = optimize_tasks(
        [task], load_config(config).optimize, out=out, budget_minutes=args.budget_minutes,
        max_experiments=args.max_experiments, patience=args.max_experiments, proposer="tuner", device=device,
        timeout=300.0, resume=False, command=f"autokernel-ci demo --out {args.out}", console=console,
        base_results={task.name: result})

    console.rule("3. the report a pull request would carry")
    console.print(f"Markdown: {out / 'summary.md'}")
    console.print(f"plot:     {out / 'progress.png'}")
    kept = results[0].kept
    if kept:
        console.print(f"{len(kept)} kept commit(s) on branch {results[0].branch} of {repo}")
    else:
        console.print(f"no candidate was kept: branch {results[0].branch} of {repo} holds only the starting kernel")
    if cpu:
        console.print("[yellow]reminder: CPU interpreter timings are not representative of GPU speed[/]")
    return 130 if results[0].interrupted else 0
