"""Spend an optimization budget where it saves the most end-to-end time, and stop where it stops paying.

From a profile `Plan`:

1. `rank` orders the ops that have a built-in kernel by the end-to-end time a kernel could save,
   Amdahl's law: `share × (1 − 1/expected_speedup)`, the expected speedup being the gap to the
   roofline (`profiling.PlanEntry.expected_speedup`).
2. `allocate` gives each a slice of the budget in proportion to that saving; a slice too short to
   measure a baseline and try a few candidates is dropped and its time shared among the others.
3. `run_plan` works through the tasks in rank order, in chunks, and moves on from a task as soon as
   `should_move_on` says its recent experiments stopped paying: the best gain over its last `window`
   experiments is below `min_gain` of its current time, or what it could still save end to end
   (Amdahl again, with the speedup already reached) is below `floor`. Time a task leaves unused goes
   to the tasks after it; what is left at the end goes back to tasks that were still paying.

`extract_tasks` turns the plan's hot ops into tasks the loop can work on: a kernel file in the
user's repository seeded from the built-in library, and a kernel entry in `.autokernel.yml` whose
benchmark shapes are the shapes the model ran. `optimize_model` does it all for a configured model.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import AutokernelError, ConfigError, GitError

if TYPE_CHECKING:
    from autokernel_ci.profiling import Plan, PlanEntry

MIN_SLICE_MINUTES = 2.0
MIN_CHUNK_MINUTES = 0.25


# -- ranking and allocation ------------------------------------------------------------------------------


@dataclass
class RankedTask:
    """An op worth a kernel: what share of the model it is, and what a kernel could save end to end."""

    op: str  # the built-in op
    family: str
    share: float  # of the model's time, 0..1
    expected_speedup: float
    potential_saving: float  # share × (1 − 1/expected_speedup), of the end-to-end time
    task: str = ""  # the kernel entry's name in .autokernel.yml, once extracted
    shapes: list[dict[str, Any]] = field(default_factory=list)


def amdahl_saving(share: float, speedup: float) -> float:
    """The fraction of end-to-end time saved by making a `share` of it `speedup` times faster."""
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}")
    return share * (1.0 - 1.0 / speedup)


def rank(plan: Plan | Iterable[PlanEntry], *, min_share: float = 0.0, ops: Iterable[str] | None = None,
         exclude: Iterable[str] = ()) -> list[RankedTask]:
    """The plan's entries that map to a built-in op, by potential end-to-end saving, largest first."""
    entries = plan.entries if hasattr(plan, "entries") else list(plan)
    allowed = set(ops) if ops is not None else None
    excluded = set(exclude)
    ranked = [
        RankedTask(op=e.builtin, family=e.family, share=e.share, expected_speedup=e.expected_speedup,
                   potential_saving=amdahl_saving(e.share, e.expected_speedup), task=e.builtin,
                   shapes=list(e.shapes))
        for e in entries
        if e.builtin and e.share >= min_share and e.builtin not in excluded
        and (allowed is None or e.builtin in allowed)
    ]
    ranked.sort(key=lambda t: (t.potential_saving, t.share), reverse=True)
    return ranked


@dataclass
class Slice:
    task: RankedTask
    minutes: float


def allocate(ranked: Sequence[RankedTask], budget_minutes: float, *,
             min_slice_minutes: float = MIN_SLICE_MINUTES) -> list[Slice]:
    """Budget slices proportional to potential saving. Tasks that would get less than
    `min_slice_minutes` are dropped, lowest saving first, and their time goes to the rest."""
    if budget_minutes < 0:
        raise ValueError(f"budget_minutes must not be negative, got {budget_minutes}")
    chosen = [t for t in ranked if t.potential_saving > 0]
    while chosen:
        total = sum(t.potential_saving for t in chosen)
        slices = [Slice(t, budget_minutes * t.potential_saving / total) for t in chosen]
        if min(s.minutes for s in slices) >= min_slice_minutes or len(chosen) == 1:
            return slices
        chosen = chosen[:-1]  # ranked: the last has the least to gain
    return []


# -- diminishing returns --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One experiment as the orchestrator sees it: the time it measured and whether it became the best.

    `experiment` is False for a measurement of the current kernel (the loop's baseline or re-measure)."""

    time_us: float | None
    kept: bool
    experiment: bool = True


def as_outcome(row: Any) -> Outcome:
    """An `Outcome` from itself, a loop `Experiment` (or its dict), using the screening time when there is one."""
    if isinstance(row, Outcome):
        return row
    get = row.get if isinstance(row, dict) else (lambda k, d=None: getattr(row, k, d))
    verdict = get("verdict", "")
    time_us = get("score_us") or get("gate_score_us")
    incumbent = verdict in ("baseline", "remeasure")
    return Outcome(time_us=float(time_us) if time_us else None, kept=verdict == "kept" or incumbent,
                   experiment=not incumbent)


def best_times(history: Iterable[Any]) -> list[float | None]:
    """After each row, the best time so far (None before the first measurement)."""
    best: float | None = None
    out: list[float | None] = []
    for o in map(as_outcome, history):
        if o.kept and o.time_us:
            best = o.time_us if best is None else min(best, o.time_us)
        out.append(best)
    return out


@dataclass(frozen=True)
class MoveOnRule:
    """When a task's experiments stop paying.

    window: judge the gain over this many most recent experiments (and never before that many ran).
    min_gain: move on when that gain, relative to the current best time, is below this.
    floor: move on when what the task could still save end to end is below this fraction.
    """

    window: int = 10
    min_gain: float = 0.01
    floor: float = 0.002


@dataclass(frozen=True)
class Decision:
    move_on: bool
    reason: str
    recent_gain: float | None = None  # over the last window experiments
    remaining_saving: float | None = None  # of the end-to-end time
    speedup: float | None = None  # reached so far: first time ÷ best time


def should_move_on(history: Sequence[Any], rule: MoveOnRule = MoveOnRule(), *, share: float | None = None,
                   expected_speedup: float | None = None) -> Decision:
    """Whether to stop working on a task, from its experiments so far (see `MoveOnRule`)."""
    outcomes = [as_outcome(r) for r in history]
    best = best_times(outcomes)
    first = next((b for b in best if b is not None), None)
    if first is None:
        if outcomes:
            return Decision(True, "nothing was measured: the current kernel fails its own gate or every "
                            "experiment failed")
        return Decision(False, "not started")
    current = best[-1]
    speedup = first / current
    remaining = None
    if share is not None and expected_speedup is not None:
        # The op now takes share/speedup of the original end-to-end time; a kernel reaching the expected
        # speedup would bring it to share/expected_speedup.
        remaining = max(0.0, share / speedup - share / expected_speedup)
        if remaining < rule.floor:
            return Decision(True, f"what is left to gain is {remaining:.2%} of the end-to-end time, below the "
                            f"{rule.floor:.2%} floor ({speedup:.2f}× reached of {expected_speedup:.2f}× expected)",
                            remaining_saving=remaining, speedup=speedup)
    experiment_indices = [i for i, o in enumerate(outcomes) if o.experiment]
    if len(experiment_indices) < rule.window:
        return Decision(False, f"{len(experiment_indices)} of {rule.window} experiments before judging",
                        remaining_saving=remaining, speedup=speedup)
    start = experiment_indices[-rule.window]
    before = next((b for b in reversed(best[:start]) if b is not None), first)
    gain = (before - current) / current
    if gain < rule.min_gain:
        return Decision(True, f"the last {rule.window} experiments gained {gain:.2%}, below {rule.min_gain:.2%}",
                        recent_gain=gain, remaining_saving=remaining, speedup=speedup)
    return Decision(False, f"the last {rule.window} experiments gained {gain:.2%}", recent_gain=gain,
                    remaining_saving=remaining, speedup=speedup)


# -- running the plan ------------------------------------------------------------------------------------


@dataclass
class TaskRun:
    """What the orchestrator gave a task and what came of it."""

    task: RankedTask
    slice_minutes: float
    used_minutes: float = 0.0
    chunks: int = 0
    history: list[Any] = field(default_factory=list)
    stop_reason: str = ""
    still_paying: bool = False  # stopped only because its time ran out

    @property
    def speedup(self) -> float | None:
        best = best_times(self.history)
        first = next((b for b in best if b is not None), None)
        return first / best[-1] if first and best[-1] else None

    def to_dict(self) -> dict[str, Any]:
        return {"task": asdict(self.task), "slice_minutes": self.slice_minutes, "used_minutes": self.used_minutes,
                "chunks": self.chunks, "experiments": sum(as_outcome(r).experiment for r in self.history),
                "speedup": self.speedup, "stop_reason": self.stop_reason, "still_paying": self.still_paying}


@dataclass
class PlanRun:
    runs: list[TaskRun]
    budget_minutes: float
    used_minutes: float

    def to_dict(self) -> dict[str, Any]:
        return {"budget_minutes": self.budget_minutes, "used_minutes": self.used_minutes,
                "tasks": [r.to_dict() for r in self.runs]}


RunTask = Callable[[RankedTask, float], Sequence[Any]]


def run_plan(ranked: Sequence[RankedTask], budget_minutes: float, run_task: RunTask, *,
             rule: MoveOnRule = MoveOnRule(), chunk_minutes: float | None = None,
             min_slice_minutes: float = MIN_SLICE_MINUTES, min_chunk_minutes: float = MIN_CHUNK_MINUTES,
             clock: Callable[[], float] = time.monotonic) -> PlanRun:
    """Run tasks in rank order within their slices; `run_task(task, minutes)` runs experiments for at
    most about `minutes` and returns the new ones (loop `Experiment` rows or `Outcome`s); an empty
    return means it has nothing left to try."""
    slices = allocate(ranked, budget_minutes, min_slice_minutes=min_slice_minutes)
    runs = [TaskRun(s.task, s.minutes) for s in slices]
    started = clock()

    def left() -> float:
        return budget_minutes - (clock() - started) / 60

    for i, run in enumerate(runs):
        _work(run, min(run.slice_minutes, left()), run_task, rule, chunk_minutes, min_chunk_minutes, clock)
        unused = run.slice_minutes - run.used_minutes
        later = runs[i + 1:]
        if unused > 0 and later:  # a task that stopped early hands its time to the ones after it
            total = sum(r.task.potential_saving for r in later)
            for r in later:
                r.slice_minutes += unused * r.task.potential_saving / total
    # Time left over goes back to tasks that were still paying when their slice ran out, best first.
    for run in sorted((r for r in runs if r.still_paying), key=lambda r: -r.task.potential_saving):
        if left() < min_chunk_minutes:
            break
        extra = left()
        run.slice_minutes += extra
        _work(run, extra, run_task, rule, chunk_minutes, min_chunk_minutes, clock)
    return PlanRun(runs=runs, budget_minutes=budget_minutes, used_minutes=(clock() - started) / 60)


def _work(run: TaskRun, minutes: float, run_task: RunTask, rule: MoveOnRule, chunk_minutes: float | None,
          min_chunk_minutes: float, clock: Callable[[], float]) -> None:
    spent = 0.0
    run.still_paying = False
    while True:
        remaining = minutes - spent
        experiments = sum(as_outcome(r).experiment for r in run.history)
        per_experiment = run.used_minutes / experiments if experiments else 0.0
        if remaining < max(min_chunk_minutes, per_experiment):  # too short for one more experiment
            run.stop_reason = f"its slice of the budget ({run.slice_minutes:.1f} min) is spent"
            run.still_paying = True
            return
        chunk = min(chunk_minutes or remaining, remaining)
        t0 = clock()
        new = list(run_task(run.task, chunk))
        elapsed = (clock() - t0) / 60
        spent += elapsed
        run.used_minutes += elapsed
        run.chunks += 1
        run.history.extend(new)
        # Nothing new, or (after the first chunk) only a re-measure of the current kernel: the proposer
        # has nothing left.
        if not new or (run.chunks > 1 and not any(as_outcome(r).experiment for r in new)):
            run.stop_reason = "nothing left to try"
            return
        decision = should_move_on(run.history, rule, share=run.task.share,
                                  expected_speedup=run.task.expected_speedup)
        if decision.move_on:
            run.stop_reason = decision.reason
            return


# -- extraction ---------------------------------------------------------------------------------------------


@dataclass
class ExtractedTask:
    op: str
    name: str  # the kernel entry's name in .autokernel.yml
    path: Path  # the kernel file
    created_file: bool
    added_entry: bool


def extract_tasks(ranked: Sequence[RankedTask], config_path: str | Path, *, kernels_dir: str = "kernels",
                  max_bench_shapes: int = 2, commit: bool = False, model: str = "") -> list[ExtractedTask]:
    """For each ranked op: reuse the config's kernel entry for it, or create `kernels_dir/<op>.py` from
    the built-in starter and add an entry (benchmarked at the shapes the model ran). With `commit`, the
    new files are committed, since the loop needs a clean work tree."""
    from autokernel_ci.config import load_config
    from autokernel_ci.ops import get_op, starter_source

    config_path = Path(config_path)
    cfg = load_config(config_path)
    out: list[ExtractedTask] = []
    new_entries: list[dict[str, Any]] = []
    written: list[Path] = []
    names = {k.name for k in cfg.kernels}
    for task in ranked:
        existing = next((k for k in cfg.kernels if k.op == task.op), None)
        if existing is not None:
            task.task = existing.name
            out.append(ExtractedTask(task.op, existing.name, cfg.root / existing.path, False, False))
            continue
        path = cfg.root / kernels_dir / f"{task.op}.py"
        created = not path.exists()
        if created:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(starter_source(task.op), encoding="utf-8")
            written.append(path)
        name = task.op if task.op not in names else f"{task.op}-{model or 'model'}"
        names.add(name)
        dims = get_op(task.op).dims
        shapes = [s["shape"] for s in task.shapes if all(d in s["shape"] for d in dims)][:max_bench_shapes]
        entry = {"name": name, "path": path.relative_to(cfg.root).as_posix(), "op": task.op}
        if shapes:
            entry["bench_shapes"] = [{d: int(s[d]) for d in dims} for s in shapes]
        new_entries.append(entry)
        task.task = name
        out.append(ExtractedTask(task.op, name, path, created, True))
    if new_entries:
        try:
            add_kernel_entries(config_path, new_entries, note=f"extracted from the profile of {model}" if model
                               else "extracted from a profile")
        except ConfigError:
            for p in written:
                p.unlink(missing_ok=True)
            raise
    if commit and (written or new_entries):
        _commit(cfg.root, [config_path, *written],
                f"autokernel: add kernel tasks for {', '.join(e['name'] for e in new_entries) or 'the plan'}"
                + (f" from the profile of {model}" if model else ""))
    return out


def add_kernel_entries(config_path: str | Path, entries: Sequence[dict[str, Any]], note: str = "") -> None:
    """Append kernel entries to the config's `kernels:` list, keeping the rest of the file as written.
    The result is validated; on any problem the file is left as it was."""
    from autokernel_ci.config import load_config

    path = Path(config_path)
    original = path.read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    head = next((i for i, line in enumerate(lines) if re.match(r"^kernels:\s*(\[\s*\])?\s*(#.*)?$", line)), None)
    if head is None:
        indent = "  "
        block = _render_entries(entries, indent, note)
        text = "".join(lines) + ("\n" if lines and lines[-1].strip() else "") + "kernels:\n" + block
    else:
        lines[head] = "kernels:\n"
        end = head
        for j in range(head + 1, len(lines)):
            stripped = lines[j].strip()
            if not stripped or stripped.startswith("#"):
                continue
            if lines[j][0] in " \t-":
                end = j
            else:
                break
        first_item = next((lines[j] for j in range(head + 1, end + 1) if lines[j].lstrip().startswith("- ")), None)
        indent = first_item[: len(first_item) - len(first_item.lstrip())] if first_item else "  "
        text = "".join(lines[: end + 1]) + _render_entries(entries, indent, note) + "".join(lines[end + 1:])
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError:
        path.write_text(original, encoding="utf-8")
        raise


def _render_entries(entries: Sequence[dict[str, Any]], indent: str, note: str) -> str:
    out = [f"{indent}# {note}\n"] if note else []
    for entry in entries:
        out.append(f"{indent}- name: {entry['name']}\n")
        out.append(f"{indent}  path: {entry['path']}\n")
        out.append(f"{indent}  op: {entry['op']}\n")
        if entry.get("bench_shapes"):
            out.append(f"{indent}  bench_shapes:\n")
            for shape in entry["bench_shapes"]:
                out.append(f"{indent}    - {{{', '.join(f'{k}: {v}' for k, v in shape.items())}}}\n")
    return "".join(out)


def _commit(root: Path, paths: Sequence[Path], message: str) -> None:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        if result.returncode != 0:
            raise GitError(f"git {' '.join(args[:2])} failed in {root}: {result.stderr.strip() or result.stdout}")
        return result.stdout

    rel = [str(Path(p).resolve().relative_to(Path(git("rev-parse", "--show-toplevel").strip()).resolve()))
           for p in paths]
    identity: list[str] = []
    if not subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True).stdout.strip():
        identity = ["-c", "user.name=autokernel-ci", "-c", "user.email=autokernel-ci@users.noreply.github.com"]
    top = git("rev-parse", "--show-toplevel").strip()
    subprocess.run(["git", "add", "--", *rel], cwd=top, check=False, capture_output=True)
    result = subprocess.run(["git", *identity, "commit", "-m", message, "--", *rel], cwd=top, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise GitError(f"could not commit the new kernel tasks: {result.stderr.strip() or result.stdout.strip()}")


# -- the whole thing for a configured model -------------------------------------------------------------


@dataclass
class ModelOptimization:
    plan: Plan
    ranked: list[RankedTask]
    extracted: list[ExtractedTask]
    run: PlanRun
    loop_results: list[Any]  # the last LoopResult of each task
    paths: dict[str, Path]


def loop_runner(config_path: Path, *, out_dir: Path, proposer: str, optimize_settings: Any, device: str | None,
                timeout: float, experiments_per_chunk: int, max_experiments: int, patience: int,
                on_progress: Callable[[Any], None] | None = None,
                results: dict[str, Any] | None = None) -> RunTask:
    """A `run_task` for `run_plan` that runs the experiment loop: the first chunk of a task starts its
    run, later chunks resume it (the loop re-measures the incumbent each time)."""
    from autokernel_ci.loop import LoopSettings, run_loop
    from autokernel_ci.search import make_proposer
    from autokernel_ci.tasks import resolve_task

    results = results if results is not None else {}
    seen: dict[str, int] = {}

    def run_task(task: RankedTask, minutes: float) -> list[Any]:
        kernel = resolve_task(task.task, config_path)
        done = seen.get(task.task)
        chosen, _ = make_proposer(proposer, optimize_settings)
        tried = sum(1 for e in results[task.task].experiments if e.is_experiment) if task.task in results else 0
        if tried >= max_experiments:
            return []
        settings = LoopSettings(out_dir=out_dir, budget_minutes=minutes, resume=done is not None, device=device,
                                timeout=timeout, patience=patience,
                                max_experiments=min(max_experiments, tried + experiments_per_chunk))
        result = run_loop(kernel, chosen, settings, on_progress=on_progress)
        results[task.task] = result
        if result.interrupted:
            raise KeyboardInterrupt
        new = [e for e in result.experiments if done is None or e.n > done]
        seen[task.task] = max((e.n for e in result.experiments), default=-1)
        return new

    return run_task


def optimize_model(model: str, config_path: str | Path, *, budget_minutes: float, out: Path | None = None,
                   proposer: str = "tuner", device: str | None = None, timeout: float = 600.0,
                   max_experiments: int = 200, patience: int = 40, min_share: float = 0.01,
                   rule: MoveOnRule = MoveOnRule(), experiments_per_chunk: int | None = None,
                   factory_kwargs: dict[str, Any] | None = None, run_task: RunTask | None = None,
                   console: Any = None, command: str = "") -> ModelOptimization:
    """Profile the configured `model`, extract tasks for its hot built-in ops (committed, so the loop
    finds a clean tree), and run the loop over them by expected end-to-end gain. Writes plan.json,
    orchestrate.json and the loop's reports to `out` (default: <repo>/autokernel-out)."""
    import json

    from autokernel_ci.config import load_config
    from autokernel_ci.profiling import model_target, profile_model

    config_path = Path(config_path)
    cfg = load_config(config_path)
    target = model_target(model, config_path)[0]
    plan = profile_model(target, device=None if device in (None, "cuda") else device, factory_kwargs=factory_kwargs)
    ranked = rank(plan, min_share=min_share, ops=target.swap or None)
    if not ranked:
        raise AutokernelError(f"no op of {model!r} with a built-in kernel takes {min_share:.0%} or more of its time; "
                              "nothing to optimize")
    extracted = extract_tasks(ranked, config_path, commit=True, model=model)
    out_dir = (out or cfg.root / "autokernel-out").resolve()
    if run_task is None:
        from autokernel_ci.loop import prepare_out_dir

        prepare_out_dir(out_dir, resume=False)  # a previous run's files are moved aside, not mixed in
    out_dir.mkdir(parents=True, exist_ok=True)
    loop_results: dict[str, Any] = {}
    if run_task is None:
        run_task = loop_runner(config_path, out_dir=out_dir, proposer=proposer, optimize_settings=cfg.optimize,
                               device=device, timeout=timeout, experiments_per_chunk=experiments_per_chunk
                               or rule.window, max_experiments=max_experiments, patience=patience,
                               results=loop_results)
    run = run_plan(ranked, budget_minutes, run_task, rule=rule)
    paths = {"plan": out_dir / "plan.json", "orchestrate": out_dir / "orchestrate.json"}
    paths["plan"].write_text(plan.to_json() + "\n")
    paths["orchestrate"].write_text(json.dumps(run.to_dict(), indent=1, default=str) + "\n")
    if loop_results:
        from autokernel_ci.loop import write_reports

        paths.update(write_reports(list(loop_results.values()), out_dir, command=command))
    return ModelOptimization(plan=plan, ranked=ranked, extracted=extracted, run=run,
                             loop_results=list(loop_results.values()), paths=paths)
