"""`autokernel-ci optimize`: run the experiment loop on the kernels named in .autokernel.yml."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.commands import at_least_one, positive_float
from autokernel_ci.errors import AutokernelError

if TYPE_CHECKING:
    from autokernel_ci.loop import LoopProgress, LoopResult

EXIT_INTERRUPTED = 130
EXIT_NO_BASELINE = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimize", help="run the experiment loop: propose, gate, benchmark, keep or revert",
                       description="Optimize kernels from .autokernel.yml on an experiment branch "
                                   "autokernel/<task>-<date>: every kept candidate is one commit, every experiment "
                                   "one row of results.jsonl. Needs a clean work tree.")
    p.add_argument("--task", action="append", metavar="NAME",
                   help="a kernel named in .autokernel.yml (repeat for several; default: all of them)")
    p.add_argument("--budget-minutes", type=positive_float, metavar="M",
                   help="wall-time budget for the whole run (default: optimize.budget_minutes, 60)")
    p.add_argument("--max-experiments", type=int, metavar="N",
                   help="experiments per task (default: optimize.max_experiments, 200)")
    p.add_argument("--patience", type=int, metavar="N",
                   help="stop a task after N experiments in a row without a gain (default: optimize.patience, 40)")
    p.add_argument("--proposer", choices=("tuner", "llm"),
                   help="who proposes candidates (default: optimize.proposer, tuner); llm falls back to the tuner "
                        "when no model is configured")
    p.add_argument("--out", metavar="DIR", help="output folder (default: autokernel-out/ in the repository)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run recorded in DIR/results.jsonl on its experiment branch")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where candidates run (default: cuda if available, else cpu with the Triton interpreter)")
    p.add_argument("--timeout", type=positive_float, default=600.0, metavar="SECONDS",
                   help="hard limit for one evaluation (default 600; the loop also adapts it to the kernel)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./.autokernel.yml)")
    p.add_argument("--model", metavar="NAME",
                   help="a model named in .autokernel.yml: profile it, add tasks for its hottest built-in ops, and "
                        "spend the budget where it saves the most end to end (instead of --task)")
    p.add_argument("--open-pr", action="store_true",
                   help="afterwards, push each experiment branch with a kept commit and open or update its pull "
                        "request, as `autokernel-ci publish --results DIR` does (needs GITHUB_TOKEN)")
    p.add_argument("--workers", type=at_least_one, metavar="N",
                   help="candidates evaluated at once, one worker per GPU (default: the number of visible GPUs; "
                        "1 on the CPU)")
    p.add_argument("--shard", type=int, metavar="I",
                   help="with --shards N: optimize only shard I (0 … N-1) of the split `autokernel-ci plan` prints, "
                        "and leave the kept commits in DIR/commits.bundle for `autokernel-ci merge`")
    p.add_argument("--shards", type=at_least_one, metavar="N",
                   help="the number of shards of the matrix (with --shard)")
    p.add_argument("--weights", metavar="FILE",
                   help="with --shard: the expected gains `autokernel-ci plan --weights` split by (the same file)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.config import OptimizeSettings, find_config, load_config
    from autokernel_ci.tasks import resolve_task

    config_path = Path(args.config) if args.config else find_config()
    if config_path is None:
        raise AutokernelError("optimize needs a .autokernel.yml naming the kernels to optimize (or pass --config)")
    cfg = load_config(config_path)
    command = "autokernel-ci " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["optimize"] else "autokernel-ci optimize"
    if args.model:
        return optimize_for_model(args, config_path, cfg.optimize, command)
    names = args.task or [k.name for k in cfg.kernels]
    if args.shard is not None or args.shards is not None:
        names = _shard_tasks(args, config_path)
        if not names:
            print(f"shard {args.shard} of {args.shards} has no task: there are fewer tasks than shards")
            return 0
    if not names:
        raise AutokernelError(f"{config_path} names no kernels to optimize")
    tasks = [resolve_task(name, config_path) for name in names]
    settings: OptimizeSettings = cfg.optimize
    options = dict(
        budget_minutes=args.budget_minutes or settings.budget_minutes,
        max_experiments=args.max_experiments or settings.max_experiments,
        patience=args.patience or settings.patience,
        proposer=args.proposer or settings.proposer,
        device=args.device, timeout=args.timeout, resume=args.resume, workers=args.workers,
    )
    results = optimize_tasks(tasks, settings, out=Path(args.out) if args.out else None, command=command, **options)
    if any(r.interrupted for r in results):
        return EXIT_INTERRUPTED
    if args.shard is not None and results:
        _leave_for_merge(results, args, names, tasks)
    if args.open_pr and results:
        open_pull_requests(results[0].out_dir, Path(results[0].repo), config_path)
    return EXIT_NO_BASELINE if any(r.best_result is None for r in results) else 0


def _shard_tasks(args: argparse.Namespace, config_path: Path) -> list[str]:
    """`--shard I --shards N`: the tasks of shard I, split as `autokernel-ci plan` splits them."""
    from autokernel_ci.commands.plan import plan_shards

    if args.shard is None or args.shards is None:
        raise AutokernelError("--shard I and --shards N go together (shard I of the N that `autokernel-ci plan` made)")
    if args.resume:
        raise AutokernelError("a shard starts a fresh run; leave out --resume")
    plan = plan_shards(args.shards, config=config_path, tasks=args.task,
                       weights_file=Path(args.weights) if args.weights else None)
    return plan.tasks_of(args.shard)


def _leave_for_merge(results: list[LoopResult], args: argparse.Namespace, names: list[str], tasks: list) -> None:
    """A shard's results folder also carries its kept commits (a git bundle) and which shard it was."""
    import json

    from autokernel_ci.commands.merge import SHARD_FILE, export_commits

    out_dir = results[0].out_dir
    bundle = export_commits(results, out_dir)
    # The op families let the merge job classify the risk on a runner without torch.
    families = {t.name: {"family": t.spec.family, "risk": t.risk} for t in tasks}
    (out_dir / SHARD_FILE).write_text(json.dumps({"shard": args.shard, "shards": args.shards, "tasks": names,
                                                  "start_commit": results[0].start_commit, "families": families},
                                                 indent=1) + "\n")
    if bundle is not None:
        print(f"shard {args.shard} of {args.shards}: kept commits in {bundle}; upload {out_dir} for "
              "`autokernel-ci merge`")


def optimize_for_model(args: argparse.Namespace, config_path: Path, settings: Any, command: str) -> int:
    """`--model NAME`: profile, rank by end-to-end saving, and run the loop over the hottest ops."""
    from autokernel_ci.orchestrate import optimize_model
    from autokernel_ci.report.terminal import make_console

    if args.task or args.resume:
        raise AutokernelError("--model chooses its own tasks and starts a fresh run; leave out --task and --resume")
    if args.shard is not None or (args.workers or 1) > 1:
        raise AutokernelError("--model runs its tasks one after another on one worker; leave out --shard and "
                              "--workers, or name the tasks with --task")
    done = optimize_model(args.model, config_path, budget_minutes=args.budget_minutes or settings.budget_minutes,
                          out=Path(args.out) if args.out else None, proposer=args.proposer or settings.proposer,
                          device=args.device, timeout=args.timeout,
                          max_experiments=args.max_experiments or settings.max_experiments,
                          patience=args.patience or settings.patience, command=command)
    print_summary(done.loop_results, done.paths, make_console())
    if args.open_pr and done.loop_results:
        first = done.loop_results[0]
        open_pull_requests(first.out_dir, Path(first.repo), config_path)
    return EXIT_NO_BASELINE if any(r.best_result is None for r in done.loop_results) else 0


def open_pull_requests(out_dir: Path, repo: Path, config_path: Path) -> None:
    """`--open-pr`: what `autokernel-ci publish --results DIR` does, right after the loop."""
    from autokernel_ci.commands.publish import publish_results

    try:
        publish_results(out_dir, repo_dir=repo, config_path=config_path)
    except AutokernelError as exc:
        raise AutokernelError(f"the run finished (its results are in {out_dir}), but publishing it failed: {exc} "
                              f"To retry without running the loop again: autokernel-ci publish --results {out_dir}") \
            from None


def optimize_tasks(tasks: list, optimize_settings: Any, *, out: Path | None, budget_minutes: float,
                   max_experiments: int, patience: int, proposer: str, device: str | None, timeout: float,
                   resume: bool, command: str, console=None, base_results: dict | None = None,
                   workers: int | None = None) -> list[LoopResult]:
    """Run the loop on each task in turn (sharing the time budget), then write the reports and print a summary.

    `workers`: candidates evaluated at once, one worker per GPU (None: every visible GPU; 1 on the CPU)."""
    from autokernel_ci.loop import DEFAULT_OUT, LoopSettings, Workspace, prepare_out_dir, run_loop, write_reports
    from autokernel_ci.report.terminal import make_console
    from autokernel_ci.search import make_proposer

    console = console or make_console()
    for task in tasks:
        if task.path is None:
            raise AutokernelError(f"task {task.name!r} has no kernel file to edit; optimize works on kernels named "
                                  "in .autokernel.yml (their 'path' is the file it changes)")
    out_dir = (out or Workspace(tasks[0].path).root / DEFAULT_OUT).resolve()
    archived = prepare_out_dir(out_dir, resume)
    if archived is not None:
        console.print(f"[dim]moved the previous run's files in {out_dir} to {archived.name}/[/]")
    results: list[LoopResult] = []
    started = time.monotonic()
    pool = worker_pool(device, workers)
    if pool is not None:
        where = ", ".join(f"GPU {d}" if d != "cpu" else "CPU" for d in pool.devices)
        console.print(f"[dim]{pool.size} worker(s): {where}[/]")
    try:
        for i, task in enumerate(tasks):
            chosen, note = make_proposer(proposer, optimize_settings)
            if note:
                console.print(f"[yellow]{note}[/]")
            left = budget_minutes - (time.monotonic() - started) / 60
            settings = LoopSettings(out_dir=out_dir, budget_minutes=max(left / (len(tasks) - i), 0.0),
                                    max_experiments=max_experiments, patience=patience, resume=resume, device=device,
                                    timeout=timeout, base_result=(base_results or {}).get(task.name),
                                    workers=pool.size if pool is not None else 1, pool=pool)
            with ProgressDisplay(console) as display:
                result = run_loop(task, chosen, settings, on_progress=display)
            results.append(result)
            if result.interrupted:
                break
    finally:
        if pool is not None:
            pool.close(cancel=any(r.interrupted for r in results))
    paths = write_reports(results, out_dir, command=command)
    print_summary(results, paths, console)
    return results


def worker_pool(device: str | None, workers: int | None):
    """The pool `--workers` asks for: one slot per visible GPU (all of them by default), CPU slots when
    asked for more than one off-GPU, else None (evaluations run one at a time, as without a pool)."""
    from autokernel_ci.harness.sandbox import resolve_device
    from autokernel_ci.pool import WorkerPool, visible_gpus

    if resolve_device(device) == "cpu":
        return WorkerPool.cpu(workers) if workers and workers > 1 else None
    return WorkerPool.for_device("cuda", workers or max(1, len(visible_gpus())))


class ProgressDisplay:
    """A live panel on a terminal (experiment n/N, best speedup, the candidate being measured);
    one line per experiment in a log."""

    def __init__(self, console) -> None:
        self.console = console
        self.live = None
        self.recent: list[str] = []
        self.state: LoopProgress | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            for line in self.recent[-5:]:
                self.console.print(line)

    def __call__(self, p: LoopProgress) -> None:
        self.state = p
        if p.phase == "experiment" and p.last is not None:
            line = experiment_line(p)
            self.recent.append(line)
            if self.live is None:
                self.console.print(line)
        elif p.phase == "baseline" and self.live is None:
            from rich.markup import escape

            self.console.print(escape(f"[{p.task}] {p.candidate}: the full gate with timing, then two screening "
                                      "runs (the reference every candidate is held to) …"))
        elif p.phase == "done" and self.live is None:
            from rich.markup import escape

            self.console.print(escape(f"[{p.task}] stopped: {p.message}"))
        if self.live is not None:
            self.live.update(self._render())

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        p = self.state
        best = f"{p.best_speedup:.2f}×" if p.best_speedup else "-"
        where = "" if p.representative else "  [yellow](CPU interpreter: timings not representative)[/]"
        head = (f"[bold]{p.task}[/]  experiment {p.experiments_done}/{p.max_experiments}  ·  best {best} vs start  ·  "
                f"{_clock(p.elapsed_s)} / {_clock(p.budget_s)}  ·  {p.since_improvement} without a gain "
                f"(patience {p.patience}){where}")
        now = f"[cyan]{p.phase}[/] {p.candidate}" if p.phase in ("baseline", "screen", "gate", "propose") else ""
        lines = [Text.from_markup(head), Text.from_markup(now)] + [Text.from_markup(x) for x in self.recent[-5:]]
        return Group(*lines)


def experiment_line(p: LoopProgress) -> str:
    e = p.last
    color = {"kept": "green", "baseline": "blue", "remeasure": "blue", "slower": "dim", "within-noise": "dim",
             "not-confirmed": "yellow"}.get(e.verdict, "red")
    speed = e.speedup_vs_start
    speed_text = f"{speed:.2f}× vs start" if speed else ""
    vs_best = f"{1 / e.gate_ratio:.2f}× vs best" if e.gate_ratio else f"{1 / e.ratio:.2f}× vs best" if e.ratio else ""
    roof = f"{e.pct_roofline:.1f}% roofline" if e.pct_roofline is not None else ""
    number = f"{p.experiments_done}/{p.max_experiments}" if e.is_experiment else "-"
    numbers = "  ".join(x for x in (speed_text, vs_best, roof) if x)
    detail = e.description if e.verdict in ("kept", "slower", "within-noise", "baseline", "remeasure") \
        else f"{e.description}: {e.message[:120]}"
    from rich.markup import escape

    line = (f"{escape(f'[{p.task}]')} {number} [{color}]{e.verdict:<13}[/] {numbers:<44} {escape(detail)}  "
            f"[dim]{e.duration_s:.1f} s[/]")
    if e.note.startswith("reproduce: "):
        line += f"\n    {escape(e.note)}"
    return line


def print_summary(results: list[LoopResult], paths: dict[str, Path], console) -> None:
    from rich.table import Table

    from autokernel_ci.loop import mean_pct_roofline

    table = Table(title="optimization summary", show_edge=False, box=None)
    for col in ("kernel", "tried", "kept", "reverted", "speedup", "% roofline", "branch", "stopped because"):
        table.add_column(col, justify="right" if col in ("tried", "kept", "speedup") else "left")
    for r in results:
        reverted = ", ".join(f"{n} {v}" for v, n in sorted(r.reverted_by_reason().items())) or "-"
        speedup = f"{r.speedup:.2f}×" if r.speedup else "-"
        before = mean_pct_roofline(r.start_result) if r.start_result else None
        after = mean_pct_roofline(r.best_result) if r.best_result else None
        roof = "-" if after is None else f"{before:.1f}% → {after:.1f}%" if before is not None else f"{after:.1f}%"
        table.add_row(r.task, str(len(r.tried)), str(len(r.kept)), reverted, speedup, roof, r.branch,
                      r.stop_reason)
    console.print(table)
    if any(not r.representative for r in results):
        console.print("[yellow]timings on the CPU interpreter are not representative of GPU speed[/]")
    for r in results:
        if r.kept:
            console.print(f"{r.task}: {len(r.kept)} kept commit(s) on [bold]{r.branch}[/] "
                          f"(git log {r.start_commit[:10]}..{r.branch})")
    for name in ("summary", "plot", "results"):
        if name in paths:
            console.print(f"{name}: {paths[name]}")


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}"
