"""The experiment loop: propose a candidate, gate it, time it, keep it as a commit or put the file back.

On an experiment branch `autokernel/<task>-<YYYYMMDD>` of the user's repository:

1. **Measure the incumbent** (the kernel file as committed): the full correctness gate with timing,
   then two screening runs whose disagreement is the run-to-run noise (`stats.estimate_noise`).
2. **Each experiment**: the proposer's candidate is written into the task's kernel file and
   *screened* (reduced correctness stages plus timing, one worker process). A candidate that passes
   and is faster than the incumbent's screening times by more than the noise, with its bootstrap
   interval below 1, is *gated*: the full correctness gate with timing, compared with the
   incumbent's full-gate times. Only a candidate that passes that too and is again faster by more than
   the noise is kept: one commit of the kernel file, its message carrying the numbers. Anything else
   restores the file. Every experiment, kept or not, is one row of `results.jsonl` and `results.tsv`.
3. **Stop** on the wall-time budget, the experiment count, `patience` experiments without a gain,
   or when the proposer has nothing left.

Like is compared with like: screening times with screening times, gate times with gate times (the
two runs differ in what ran before the timing, which moves interpreter timings by tens of percent).

Safety: the loop refuses a dirty work tree, writes only the kernel file (and commits only it) and
the output folder, restores the kernel file in a `finally`, appends each row with flush and fsync,
and `--resume` picks up the branch and the log after the runner died, trying nothing twice.

**Several workers** (`LoopSettings.workers` > 1, with a `pool.WorkerPool`): each round asks the
proposer for up to that many candidates (one that cannot give several gives one), screens them at
once, each in its own scratch copy of the kernel file under the output folder (never in the tracked
file), then applies the rule above to each in the order proposed. Every measurement that decides a
keep (the incumbent's, the full gate, the re-screen) runs on the pool's slot 0, so they all come from
one GPU. With one worker the loop runs exactly as described above.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import AutokernelError, GitError
from autokernel_ci.search.proposer import Candidate, Experiment, Proposer

if TYPE_CHECKING:
    from concurrent.futures import Future

    from autokernel_ci.harness.sandbox import TimingPlan
    from autokernel_ci.pool import WorkerPool
    from autokernel_ci.results import EvalResult, ShapeTiming
    from autokernel_ci.tasks import KernelTask

DEFAULT_OUT = "autokernel-out"
BOT_NAME = "autokernel-ci"
BOT_EMAIL = "autokernel-ci@users.noreply.github.com"
RUN_FILES = ("results.jsonl", "results.tsv", "best.json", "summary.md", "progress.png", "experiments", "llm")
TSV_COLUMNS = ("n", "task", "verdict", "status", "stage", "speedup_vs_start", "vs_best", "pct_roofline", "score_us",
               "duration_s", "representative", "commit", "description", "message")
SCREEN_STAGES = ("smoke", "shapes", "stability")
NOISE_CONFIDENCE = 0.95
BOOTSTRAP_CONFIDENCE = 0.99


@dataclass
class LoopSettings:
    """Budgets and measurement settings of one loop run. Defaults suit a GPU runner."""

    out_dir: Path | None = None  # default: <repo>/autokernel-out (kept out of git via .git/info/exclude)
    budget_minutes: float = 60.0
    max_experiments: int = 200
    patience: int = 40  # stop after this many experiments in a row without a kept one
    resume: bool = False
    device: str | None = None  # None: cuda when available, else the CPU interpreter
    timeout: float = 600.0  # hard limit for one evaluation
    min_timeout: float = 60.0  # the adaptive limit (5× the incumbent's evaluation) never goes below this
    min_gain: float = 0.005  # a gain must clear max(this, the measured noise)
    screen_stages: tuple[str, ...] = SCREEN_STAGES
    timing: TimingPlan | None = None  # default: `timing_plan(task, device)`
    seed: int | None = None
    date: str | None = None  # YYYYMMDD for the branch name; default today
    base_result: EvalResult | None = None  # an evaluation (full gate, timed) of the file as it is, if already run
    workers: int = 1  # candidates screened at once; above 1 the loop uses `pool` (or makes one for the device)
    pool: WorkerPool | None = None  # where evaluations run; None: in a child of this process, one at a time


@dataclass
class LoopProgress:
    """What a progress display needs, sent at each phase change and after each experiment."""

    task: str
    phase: str  # "baseline", "screen", "gate", "experiment", "done"
    experiments_done: int
    max_experiments: int
    best_speedup: float | None
    elapsed_s: float
    budget_s: float
    since_improvement: int
    patience: int
    candidate: str = ""
    last: Experiment | None = None
    representative: bool = False
    message: str = ""


@dataclass
class LoopResult:
    """A finished (or stopped) run for one task: everything the reports are rendered from."""

    task: str
    kernel_path: str  # relative to the repository root
    repo: str
    branch: str
    start_commit: str
    head_commit: str
    proposer: str
    out_dir: Path
    experiments: list[Experiment]
    start_result: EvalResult | None
    best_result: EvalResult | None
    stop_reason: str
    elapsed_s: float
    noise: float | None
    representative: bool
    device: str = ""
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def tried(self) -> list[Experiment]:
        return [e for e in self.experiments if e.is_experiment]

    @property
    def kept(self) -> list[Experiment]:
        return [e for e in self.experiments if e.kept]

    @property
    def best(self) -> Experiment | None:
        return next((e for e in reversed(self.experiments) if e.is_incumbent), None)

    @property
    def speedup(self) -> float | None:
        """Start ÷ best, from full-gate times; None when nothing was measured."""
        if self.start_result is None or self.best_result is None:
            return None
        return _speedup(self.start_result, self.best_result)

    def reverted_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.tried:
            if not e.kept:
                counts[e.verdict] = counts.get(e.verdict, 0) + 1
        return counts


# -- timing and comparison ---------------------------------------------------------------------------


def timing_plan(task: KernelTask, device: str) -> TimingPlan:
    """The task's benchmark shapes on a GPU. On the CPU interpreter, the test shape with the longest
    dim (the knobs of these kernels are tile sizes along it, so that is where they show), briefly."""
    from autokernel_ci.harness.sandbox import TimingPlan

    if device != "cpu":
        return TimingPlan.for_task(task, device)
    shapes = task.spec.test_shapes
    shape = max(shapes, key=lambda s: (max(s.values(), default=0), math.prod(s.values())))
    # Enough samples that a median survives other processes taking the CPU for a while.
    return TimingPlan(shapes=[dict(shape)], dtype=task.spec.dtypes[0], warmup_ms=1.0, rep_ms=400.0, min_reps=9,
                      max_reps=40, flush_l2=False, baselines=())


def samples_of(t: ShapeTiming) -> list[float]:
    """The samples a comparison uses. On a GPU, all of them. Off-GPU, the fastest half: there other
    processes taking the CPU only ever add time, in bursts, so the slow half measures the machine's
    load and the fast half the kernel."""
    samples = sorted(float(x) for x in t.samples_us)
    if t.representative or len(samples) < 4:
        return samples
    return samples[: (len(samples) + 1) // 2]


def shape_median_us(t: ShapeTiming) -> float:
    from autokernel_ci import stats

    samples = samples_of(t)
    return stats.median(samples) if samples else t.median_us


def score_us(result: EvalResult) -> float | None:
    """Geometric mean of the per-shape medians: one number for a kernel that must serve every shape."""
    medians = [shape_median_us(t) for t in result.timings]
    if not medians or min(medians) <= 0:
        return None
    return math.exp(sum(math.log(m) for m in medians) / len(medians))


def mean_pct_roofline(result: EvalResult) -> float | None:
    pcts = [t.pct_roofline for t in result.timings if t.pct_roofline is not None]
    return sum(pcts) / len(pcts) if pcts else None


@dataclass
class Comparison:
    """Candidate ÷ incumbent over the timed shapes: the geometric mean of the median ratios, and the
    geometric mean of their upper bootstrap bounds (conservative for the mean of independent shapes)."""

    ratio: float
    hi: float
    threshold: float
    per_shape: list[tuple[str, float, float, float]]

    @property
    def better(self) -> bool:
        return self.ratio < 1.0 / (1.0 + self.threshold) and self.hi < 1.0

    def verdict(self) -> str:
        return "slower" if self.ratio >= 1.0 else "within-noise"


def compare(incumbent: EvalResult, candidate: EvalResult, threshold: float, seed: int = 0) -> Comparison:
    from autokernel_ci import stats

    inc = {_timing_key(t): t for t in incumbent.timings}
    per_shape = []
    for t in candidate.timings:
        base = inc.get(_timing_key(t))
        if base is None:
            raise AutokernelError(f"the incumbent was not timed at {t.shape} {t.dtype}; cannot compare")
        ratio, lo, hi = stats.bootstrap_ratio_ci(samples_of(base), samples_of(t), BOOTSTRAP_CONFIDENCE, 2000,
                                                 seed)
        per_shape.append((_shape_label(t), ratio, lo, hi))
    if not per_shape:
        raise AutokernelError("the candidate has no timings to compare")
    geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))
    return Comparison(geo([p[1] for p in per_shape]), geo([p[3] for p in per_shape]), threshold, per_shape)


def estimate_noise(first: EvalResult, second: EvalResult) -> float:
    """Run-to-run drift from two measurements of the same kernel in two worker processes."""
    from autokernel_ci import stats

    other = {_timing_key(t): t for t in second.timings}
    pairs = [(samples_of(t), samples_of(other[_timing_key(t)])) for t in first.timings if _timing_key(t) in other]
    return stats.estimate_noise(pairs, confidence=NOISE_CONFIDENCE) if pairs else 0.0


def pooled(first: EvalResult, second: EvalResult) -> EvalResult:
    """`first` with each shape's samples joined with `second`'s: the incumbent's screening reference."""
    from autokernel_ci import stats

    other = {_timing_key(t): t for t in second.timings}
    timings = []
    for t in first.timings:
        samples = list(t.samples_us) + list(other[_timing_key(t)].samples_us) if _timing_key(t) in other \
            else list(t.samples_us)
        timings.append(replace(t, samples_us=samples, median_us=stats.median(samples), iqr_us=stats.iqr(samples),
                               count=len(samples)))
    return replace(first, timings=timings)


def _timing_key(t: ShapeTiming) -> str:
    return json.dumps([sorted(t.shape.items()), t.dtype])


def _shape_label(t: ShapeTiming) -> str:
    return "×".join(str(v) for v in t.shape.values()) + f" {t.dtype}"


def _speedup(before: EvalResult, after: EvalResult) -> float | None:
    a, b = score_us(before), score_us(after)
    return a / b if a and b else None


def _timing_rows(result: EvalResult) -> list[dict[str, Any]]:
    return [{"shape": dict(t.shape), "dtype": t.dtype, "median_us": t.median_us, "pct_roofline": t.pct_roofline,
             "representative": t.representative} for t in result.timings]


# -- the results log ---------------------------------------------------------------------------------


class ResultsLog:
    """`results.jsonl` (one JSON object per experiment) and `results.tsv` (the same, for people).

    Each row is appended, flushed and fsync'd before the loop moves on; a line cut short by a dying
    process is dropped when the log is next opened.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.jsonl = out_dir / "results.jsonl"
        self.tsv = out_dir / "results.tsv"

    def rows(self, task: str | None = None) -> list[Experiment]:
        if not self.jsonl.is_file():
            return []
        rows = []
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a row cut short when the runner died
            if isinstance(data, dict) and (task is None or data.get("task") == task):
                rows.append(Experiment.from_dict(data))
        return rows

    def append(self, row: Experiment) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _repair_tail(self.jsonl)
        _append_line(self.jsonl, json.dumps(row.to_dict(), allow_nan=False, default=str))
        _repair_tail(self.tsv)
        if not self.tsv.is_file() or self.tsv.stat().st_size == 0:
            _append_line(self.tsv, "\t".join(TSV_COLUMNS))
        _append_line(self.tsv, "\t".join(_tsv_cell(v) for v in _tsv_values(row)))


def _tsv_values(row: Experiment) -> list[Any]:
    vs_best = (1.0 / row.gate_ratio if row.gate_ratio else 1.0 / row.ratio if row.ratio else None)
    speedup = row.speedup_vs_start
    score = decided_score_us(row)
    return [row.n, row.task, row.verdict, row.status or "", row.stage or "", f"{speedup:.3f}" if speedup else "",
            f"{vs_best:.3f}" if vs_best else "", f"{row.pct_roofline:.1f}" if row.pct_roofline is not None else "",
            f"{score:.2f}" if score else "", f"{row.duration_s:.1f}",
            "yes" if row.representative else "no (CPU interpreter)", (row.commit or "")[:12], row.description,
            row.message[:200]]


def decided_score_us(row: Experiment) -> float | None:
    """The score of the measurement that decided the row: the full gate's where it ran, else the screen's."""
    return row.gate_score_us if row.stage == "gate" and row.gate_score_us else row.score_us


def _tsv_cell(value: Any) -> str:
    return " ".join(str(value).split())


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _repair_tail(path: Path) -> None:
    """Cut a last line that has no newline (the write a killed process did not finish)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file, fsync and rename: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_out_dir(out_dir: Path, resume: bool) -> Path | None:
    """For a fresh run, move an earlier run's files aside (to `previous-<time>/`); returns where to."""
    if resume or not out_dir.is_dir():
        return None
    present = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    if not present:
        return None
    archive = out_dir / f"previous-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    archive.mkdir(parents=True, exist_ok=True)
    for path in present:
        shutil.move(str(path), archive / path.name)
    return archive


# -- git ---------------------------------------------------------------------------------------------


class Workspace:
    """The user's repository as the loop sees it: one kernel file to edit and commit, nothing else."""

    def __init__(self, kernel_path: Path) -> None:
        import git

        self._git = git
        try:
            self.repo = git.Repo(kernel_path.resolve().parent, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitError(f"{kernel_path} is not inside a git repository; the loop keeps its results as commits "
                           "there (git init and commit the kernel first)") from None
        if self.repo.working_tree_dir is None:
            raise GitError(f"{self.repo.git_dir} is a bare repository; the loop needs a work tree")
        self.root = Path(self.repo.working_tree_dir).resolve()
        self.kernel = kernel_path.resolve()
        try:
            self.rel = self.kernel.relative_to(self.root).as_posix()
        except ValueError:
            raise GitError(f"{kernel_path} is outside the repository at {self.root}") from None

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        try:
            return self.repo.git.execute(["git", *args], env=env)
        except self._git.GitCommandError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise GitError(f"git {' '.join(args[:3])} failed: {detail[-1] if detail else exc}") from None

    def dirty_files(self) -> list[str]:
        out = self.git("status", "--porcelain", "--untracked-files=no")
        return [line[3:] for line in out.splitlines() if line.strip()]

    def require_tracked(self) -> None:
        try:
            self.git("ls-files", "--error-unmatch", "--", self.rel)
        except GitError:
            raise GitError(f"{self.rel} is not tracked by git; commit it first so every change can be reverted") \
                from None

    def current_ref(self) -> str:
        """The branch checked out, or the commit when HEAD is detached."""
        try:
            return self.repo.active_branch.name
        except TypeError:
            return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def branch_exists(self, name: str) -> bool:
        return bool(self.git("branch", "--list", name).strip())

    def checkout(self, ref: str, create: bool = False) -> None:
        self.git("checkout", "-q", *(["-b"] if create else []), ref)

    def restore_kernel(self) -> None:
        self.git("checkout", "-q", "--", self.rel)

    def commit_kernel(self, message: str) -> str:
        self.git("add", "--", self.rel)
        self.git("commit", "-q", "--no-verify", "-m", message, "--", self.rel, env=self._identity())
        return self.head()

    def _identity(self) -> dict[str, str] | None:
        """The bot as author and committer, unless this repository's own config names someone."""
        reader = self.repo.config_reader("repository")
        if reader.has_option("user", "name") and reader.has_option("user", "email"):
            return None
        return {"GIT_AUTHOR_NAME": BOT_NAME, "GIT_AUTHOR_EMAIL": BOT_EMAIL,
                "GIT_COMMITTER_NAME": BOT_NAME, "GIT_COMMITTER_EMAIL": BOT_EMAIL}

    def exclude(self, path: Path) -> None:
        """Keep `path` (a folder in the work tree) out of `git status` through .git/info/exclude."""
        try:
            rel = path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return
        exclude = Path(self.repo.common_dir) / "info" / "exclude"
        line = f"/{rel}/"
        text = exclude.read_text() if exclude.is_file() else ""
        if line in text.splitlines():
            return
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with open(exclude, "a") as f:
            f.write(("" if not text or text.endswith("\n") else "\n") + line + "\n")

    def kept_commits(self, start: str, branch: str) -> list[tuple[str, dict[str, str]]]:
        """(sha, trailers) of the loop's commits on `branch` after `start`, oldest first."""
        out = self.git("log", "--reverse", "--format=%H%x00%B%x1e", f"{start}..{branch}", "--", self.rel)
        commits = []
        for chunk in out.split("\x1e"):
            if "\x00" not in chunk:
                continue
            sha, body = chunk.strip().split("\x00", 1)
            trailers = {}
            for line in body.splitlines():
                key, sep, value = line.partition(": ")
                if sep and key.startswith("Autokernel-"):
                    trailers[key] = value.strip()
            if "Autokernel-Experiment" in trailers:
                commits.append((sha, trailers))
        return commits


def init_repository(path: Path, message: str = "Initial commit") -> str:
    """`git init` at `path` and commit everything in it (as the bot); returns the commit."""
    import git

    repo = git.Repo.init(path)
    env = {"GIT_AUTHOR_NAME": BOT_NAME, "GIT_AUTHOR_EMAIL": BOT_EMAIL,
           "GIT_COMMITTER_NAME": BOT_NAME, "GIT_COMMITTER_EMAIL": BOT_EMAIL}
    repo.git.execute(["git", "add", "-A"])
    repo.git.execute(["git", "commit", "-q", "--no-verify", "-m", message], env=env)
    return repo.head.commit.hexsha


# -- the loop ----------------------------------------------------------------------------------------


class _Incumbent:
    """The kernel to beat: its source and its screening and full-gate measurements."""

    def __init__(self, source: str, screen: EvalResult, gate: EvalResult, n: int) -> None:
        self.source, self.screen, self.gate, self.n = source, screen, gate, n


def run_loop(task: KernelTask, proposer: Proposer, settings: LoopSettings | None = None,
             on_progress: Callable[[LoopProgress], None] | None = None) -> LoopResult:
    """Run (or resume) the experiment loop for one task; see the module docstring."""
    return ExperimentLoop(task, proposer, settings or LoopSettings(), on_progress).run()


class ExperimentLoop:
    def __init__(self, task: KernelTask, proposer: Proposer, settings: LoopSettings,
                 on_progress: Callable[[LoopProgress], None] | None = None) -> None:
        if task.path is None:
            raise AutokernelError(f"task {task.name!r} has no kernel file to edit; name a kernel from "
                                  ".autokernel.yml (its 'path' is the file the loop optimizes)")
        self.task = task
        self.proposer = proposer
        self.settings = settings
        self.on_progress = on_progress
        self.ws = Workspace(task.path)
        self.out_dir = (settings.out_dir or self.ws.root / DEFAULT_OUT).resolve()
        self.log = ResultsLog(self.out_dir)
        self.history: list[Experiment] = []
        self.notes: list[str] = []
        self.incumbent: _Incumbent | None = None
        self.start_result: EvalResult | None = None
        self.noise: float | None = None  # run-to-run noise on a GPU; None on the CPU interpreter
        self.interpreter_spread: float | None = None
        self.stop_reason = ""
        self.interrupted = False
        self.session_start = time.monotonic()
        self.prior_s = 0.0
        self.device = ""
        self.branch = ""
        self.start_commit = ""
        self.tried_sources: set[str] = set()
        self.timeout = settings.timeout
        self.pool: WorkerPool | None = None
        self.workers = 1

    # -- driver ----------------------------------------------------------------------------------

    def run(self) -> LoopResult:
        from autokernel_ci.harness.sandbox import resolve_device

        self.device = resolve_device(self.settings.device)
        self.plan = self.settings.timing or timing_plan(self.task, self.device)
        self.screen_plan = replace(self.plan, baselines=())
        original_ref = self.ws.current_ref()
        own_pool = self._open_pool()
        previous_handler = self._trap_sigterm()
        self._start_proposer()
        try:
            if self.settings.resume:
                self._resume()
            else:
                self._start()
            if self.incumbent is not None:
                self._experiments()
        except KeyboardInterrupt:
            self.interrupted = True
            self.stop_reason = "interrupted"
        finally:
            if self.pool is not None and (own_pool or self.interrupted):
                self.pool.close(cancel=self.interrupted)  # an interrupted run kills the workers in flight
            self._restore_kernel()
            self._finish_proposer()
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            head = self.ws.head() if self.branch else ""
            # Back to where the user was; the experiment branch keeps the kept commits.
            if self.branch and self.ws.current_ref() != original_ref and not self.ws.dirty_files():
                self.ws.checkout(original_ref)
        self._write_best(head)
        self._progress("done", message=self.stop_reason)
        return self._result(head)

    def _open_pool(self) -> bool:
        """Use the settings' pool, or make one when `workers` > 1; True when the loop made it (and closes it)."""
        from autokernel_ci.pool import WorkerPool

        self.pool = self.settings.pool
        wanted = max(1, self.settings.workers)
        if self.pool is None and wanted > 1:
            self.pool = WorkerPool.for_device(self.device, wanted)
            self.workers = self.pool.size
            return True
        self.workers = min(wanted, self.pool.size) if self.pool is not None else 1
        return False

    def _start_proposer(self) -> None:
        """A proposer with a `start_run(task, out_dir)` (the LLM's) keeps its audit trail in the output folder."""
        start = getattr(self.proposer, "start_run", None)
        if callable(start):
            start(self.task, self.out_dir)

    def _finish_proposer(self) -> None:
        """A proposer with a `finish_run()` winds down (a request in flight, its totals) and may leave a note."""
        finish = getattr(self.proposer, "finish_run", None)
        if callable(finish):
            note = finish()
            if note:
                self.notes.append(note)

    def _trap_sigterm(self):
        """SIGTERM (a cancelled CI job) ends the loop like Ctrl-C: the kernel file is restored first."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        return signal.signal(signal.SIGTERM, interrupt)

    # -- starting and resuming -------------------------------------------------------------------

    def _start(self) -> None:
        dirty = self.ws.dirty_files()
        if dirty:
            raise GitError(f"the work tree of {self.ws.root} has uncommitted changes ({', '.join(dirty[:5])}"
                           f"{' …' if len(dirty) > 5 else ''}); commit or stash them first: the loop commits and "
                           "reverts the kernel file and must not mix your changes into its experiments")
        self.ws.require_tracked()
        if self.log.rows(self.task.name):
            raise AutokernelError(f"{self.log.jsonl} already holds experiments of {self.task.name}; pass --resume "
                                  "to continue that run, or choose another --out for a fresh one")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ws.exclude(self.out_dir)
        self.start_commit = self.ws.head()
        self.branch = self._new_branch_name()
        self.ws.checkout(self.branch, create=True)
        source = self.task.path.read_text(encoding="utf-8")
        self._measure_incumbent(source, n=0, verdict="baseline", base=self.settings.base_result)

    def _new_branch_name(self) -> str:
        date = self.settings.date or datetime.now().strftime("%Y%m%d")
        base = f"autokernel/{self.task.name}-{date}"
        name, k = base, 2
        while self.ws.branch_exists(name):
            name, k = f"{base}-{k}", k + 1
        return name

    def _resume(self) -> None:
        rows = self.log.rows(self.task.name)
        if not rows:
            raise AutokernelError(f"nothing to resume: {self.log.jsonl} has no experiments of {self.task.name}")
        self.branch = rows[-1].branch
        start = next((r for r in rows if r.verdict == "baseline"), None)
        if not self.branch or start is None or not start.commit:
            raise AutokernelError(f"{self.log.jsonl} does not say which branch and commit the run of "
                                  f"{self.task.name} started from; start a fresh run with another --out")
        if not self.ws.branch_exists(self.branch):
            raise GitError(f"the experiment branch {self.branch} no longer exists; start a fresh run instead")
        self.start_commit = start.commit
        dirty = self.ws.dirty_files()
        if self.ws.current_ref() == self.branch and dirty == [self.ws.rel]:
            self.ws.restore_kernel()  # the candidate an interrupted experiment left behind
            self.notes.append(f"restored {self.ws.rel}: the interrupted run left a candidate in it")
        elif dirty:
            raise GitError(f"the work tree of {self.ws.root} has uncommitted changes ({', '.join(dirty[:5])}); "
                           "commit or stash them before resuming")
        if self.ws.current_ref() != self.branch:
            self.ws.checkout(self.branch)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ws.exclude(self.out_dir)
        self.history = rows
        self._recover_commits()
        self.prior_s = sum(r.duration_s for r in self.history)
        self.tried_sources = {r.candidate_sha256 for r in self.history if r.candidate_sha256}
        self.start_result = self._load_result(start.n, "gate")
        source = self.task.path.read_text(encoding="utf-8")
        self._measure_incumbent(source, n=self._next_n(), verdict="remeasure")

    def _recover_commits(self) -> None:
        """Rows for kept experiments whose commit landed but whose log row did not (the runner died between)."""
        logged = {r.n for r in self.history}
        for sha, trailers in self.ws.kept_commits(self.start_commit, self.branch):
            try:
                n = int(trailers["Autokernel-Experiment"])
                params = json.loads(trailers.get("Autokernel-Params", "{}"))
            except ValueError:
                continue
            if n in logged:
                continue
            row = Experiment(n=n, task=self.task.name, verdict="kept",
                             description=trailers.get("Autokernel-Description", ""),
                             params=params if isinstance(params, dict) else {}, commit=sha, branch=self.branch,
                             started_at=_now(), note="recovered from its commit: the log row was lost when the "
                             "runner died")
            self.log.append(row)
            self.history.append(row)
            self.notes.append(f"recovered experiment {n} from commit {sha[:12]}")
        self.history.sort(key=lambda r: r.n)

    def _measure_incumbent(self, source: str, n: int, verdict: str, base: EvalResult | None = None) -> None:
        """The full gate with timing, then two screening runs: the references every candidate is held to."""
        started, started_at = time.monotonic(), _now()
        self._progress("baseline", candidate="measuring the current kernel")
        sha = _sha(source)
        gate = base if base is not None and base.candidate_sha256 == sha and base.timings else \
            self._evaluate(stages=None, plan=self.plan)
        row = Experiment(n=n, task=self.task.name, verdict=verdict, description=f"{verdict}: the kernel as committed",
                         params=self.proposer.params_of(self.task, source), proposer=self.proposer.name,
                         status=gate.status.value, stage="gate", message=gate.message, candidate_sha256=sha,
                         commit=self.ws.head(), branch=self.branch, started_at=started_at,
                         representative=gate.representative_timing if gate.timings else self.device != "cpu")
        results = {"gate": gate}
        if gate.passed:
            first = self._evaluate(stages=self.settings.screen_stages, plan=self.screen_plan)
            second = self._evaluate(stages=self.settings.screen_stages, plan=self.screen_plan) if first.passed \
                else first
            results.update(screen=first, screen_repeat=second)
            if first.passed and second.passed:
                spread = estimate_noise(first, second)
                if self.device == "cpu":
                    # The interpreter's spread measures the machine's load, not a GPU's run-to-run noise:
                    # recorded, never used as a threshold (a gain still needs its bootstrap bound below 1).
                    self.interpreter_spread = spread
                else:
                    self.noise = spread
                screen = pooled(first, second)
                self.incumbent = _Incumbent(source, screen, gate, n)
                self.timeout = min(self.settings.timeout, max(self.settings.min_timeout,
                                                             5 * max(gate.duration_s, first.duration_s)))
                row.score_us, row.gate_score_us = score_us(screen), score_us(gate)
                row.pct_roofline, row.timings = mean_pct_roofline(gate), _timing_rows(gate)
                row.threshold = self._threshold()
                row.message = f"{gate.message}; " + self._noise_text()
            else:
                failed = first if not first.passed else second
                row.status, row.stage, row.message = failed.status.value, "screen", failed.message
        if verdict == "baseline":
            self.start_result = gate
        if self.start_result is not None and gate.passed:
            row.speedup_vs_start = _speedup(self.start_result, gate)
        row.duration_s = round(time.monotonic() - started, 3)
        self._save_results(n, results)
        self._record(row)
        self.tried_sources.add(sha)
        if self.incumbent is None:
            self.stop_reason = (f"the {'starting' if verdict == 'baseline' else 'current'} kernel does not pass its "
                                f"own gate ({row.status}: {row.message}); fix it before optimizing")

    # -- experiments -----------------------------------------------------------------------------

    def _experiments(self) -> None:
        if self.workers > 1:
            self._experiments_in_rounds()
            return
        while True:
            reason = self._budget_spent()
            if reason:
                self.stop_reason = reason
                return
            self._progress("propose", candidate="choosing the next candidate")
            candidate = self.proposer.propose(self.task, self.incumbent.source, self.incumbent.gate,
                                              list(self.history))
            if candidate is None:
                self.stop_reason = self._nothing_left()
                return
            if not candidate.proposer:
                candidate.proposer = self.proposer.name
            self._record(self._experiment(self._next_n(), candidate))

    def _nothing_left(self) -> str:
        return f"the {self.proposer.name} has nothing left to try" + (
            f": {self.proposer.done_reason}" if self.proposer.done_reason else "")

    def _experiments_in_rounds(self) -> None:
        """Several workers: a round of candidates screened at once, then judged one by one, in order."""
        while True:
            reason = self._budget_spent()
            if reason:
                self.stop_reason = reason
                return
            done = sum(1 for r in self.history if r.is_experiment)
            self._progress("propose", candidate=f"choosing up to {self.workers} candidates")
            batch = self._propose_round(min(self.workers, self.settings.max_experiments - done))
            if not batch:
                self.stop_reason = self._nothing_left()
                return
            started = time.monotonic()
            screens = self._screen_round(batch)
            share = (time.monotonic() - started) / len(batch)  # the round's screening time, split between its rows
            for n, candidate in batch:
                self._record(self._experiment(n, candidate, screen=screens.get(n), screen_s=share))

    def _propose_round(self, room: int) -> list[tuple[int, Candidate]]:
        """Up to `room` candidates, each numbered. The proposer sees the ones already chosen as pending
        rows of the history, so it proposes something else; one that repeats itself gives one a round."""
        batch: list[tuple[int, Candidate]] = []
        pending: list[Experiment] = []
        first = self._next_n()
        while len(batch) < room:
            candidate = self.proposer.propose(self.task, self.incumbent.source, self.incumbent.gate,
                                              list(self.history) + pending)
            if candidate is None:
                break
            if not candidate.proposer:
                candidate.proposer = self.proposer.name
            sha = _sha(candidate.source)
            if any(row.candidate_sha256 == sha for row in pending):
                break
            n = first + len(batch)
            batch.append((n, candidate))
            pending.append(Experiment(n=n, task=self.task.name, verdict="pending", description=candidate.description,
                                      params=dict(candidate.params), proposer=candidate.proposer,
                                      candidate_sha256=sha, branch=self.branch))
        return batch

    def _screen_round(self, batch: list[tuple[int, Candidate]]) -> dict[int, EvalResult | AutokernelError]:
        """Screen the round's candidates at once, each in its own copy of the kernel file under the output
        folder. Duplicates and invalid configs are left out: `_experiment` records why, as one at a time."""
        scratch = self.out_dir / "scratch" / self.task.name
        futures: dict[int, Future] = {}
        for n, candidate in batch:
            if _sha(candidate.source) in self.tried_sources or self._invalid(candidate):
                continue
            path = scratch / f"{n:04d}" / self.task.path.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(candidate.source, encoding="utf-8")
            futures[n] = self.pool.submit(self.task, path, device=self.device, timeout=self.timeout,
                                          seed=self.settings.seed, stages=self.settings.screen_stages,
                                          timing=self.screen_plan, standby=True)
        self._progress("screen", candidate=f"{len(futures)} candidate(s) at once on {self.pool.size} worker(s)")
        screens: dict[int, EvalResult | AutokernelError] = {}
        try:
            for n, future in futures.items():
                try:
                    screens[n] = future.result()
                except AutokernelError as exc:  # the harness failed, not the candidate: an "error" row
                    screens[n] = exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(OSError):
                scratch.parent.rmdir()  # gone once empty: nothing of the round is left behind
        return screens

    def _experiment(self, n: int, candidate: Candidate, screen: EvalResult | AutokernelError | None = None,
                    screen_s: float = 0.0) -> Experiment:
        started, started_at = time.monotonic(), _now()
        sha = _sha(candidate.source)
        row = Experiment(n=n, task=self.task.name, verdict="error", description=candidate.description,
                         params=dict(candidate.params), proposer=candidate.proposer, candidate_sha256=sha,
                         branch=self.branch, started_at=started_at, threshold=self._threshold(),
                         representative=self.device != "cpu")
        invalid = self._invalid(candidate)
        if sha in self.tried_sources:
            row.verdict, row.message = "duplicate", "this exact kernel file was tried before; not run again"
        elif invalid:
            row.verdict, row.message = "invalid", invalid
        else:
            self.tried_sources.add(sha)
            try:
                self._try(n, candidate, row, screen)
            except AutokernelError as exc:
                row.verdict, row.message = "error", f"the harness failed: {exc}"
            finally:
                if not row.kept:
                    self._restore_kernel()
        row.duration_s = round(time.monotonic() - started + screen_s, 3)
        return row

    def _try(self, n: int, candidate: Candidate, row: Experiment,
             screened: EvalResult | AutokernelError | None = None) -> None:
        """Screen (unless a worker already did), gate what screened faster, keep what the gate confirms."""
        inc = self.incumbent
        if isinstance(screened, AutokernelError):
            raise screened
        if screened is None:
            self._write_kernel(candidate.source)
            self._progress("screen", candidate=candidate.description)
        screen = screened if screened is not None else \
            self._evaluate(stages=self.settings.screen_stages, plan=self.screen_plan)
        results = {"screen": screen}
        self._describe(row, screen, "screen")
        self._keep_failing_candidate(n, candidate, screen, row)
        if screen.passed:
            cmp = compare(inc.screen, screen, self._threshold(), seed=n)
            row.ratio, row.ratio_hi = cmp.ratio, cmp.hi
            row.score_us = score_us(screen)
            row.speedup_vs_start = self._on_start_scale(cmp.ratio)
            if not cmp.better:
                row.verdict = cmp.verdict()
                row.message = (f"{1 / cmp.ratio:.3f}× the incumbent's speed (lower bound {1 / cmp.hi:.3f}×); a gain "
                               f"must clear {cmp.threshold:.1%} noise")
            else:
                if screened is not None:
                    self._write_kernel(candidate.source)  # screened in a scratch copy: the gate runs the real file
                self._progress("gate", candidate=candidate.description)
                gate = self._evaluate(stages=None, plan=self.plan)
                results["gate"] = gate
                self._describe(row, gate, "gate")
                self._keep_failing_candidate(n, candidate, gate, row)
                if gate.passed:
                    cmp2 = compare(inc.gate, gate, self._threshold(), seed=n + 1)
                    row.gate_ratio, row.gate_score_us = cmp2.ratio, score_us(gate)
                    row.speedup_vs_start = self._on_start_scale(cmp2.ratio)
                    row.timings = _timing_rows(gate)
                    if cmp2.better:
                        row.speedup_vs_start = _speedup(self.start_result, gate) if self.start_result else None
                        row.verdict = "kept"
                        row.message = f"{1 / cmp2.ratio:.3f}× the incumbent in the full gate; {gate.message}"
                        row.commit = self.ws.commit_kernel(self._commit_message(n, candidate, gate, cmp2))
                        self.incumbent = _Incumbent(candidate.source, screen, gate, n)
                        results["screen_repeat"] = self._rescreen()
                    else:
                        row.verdict = "not-confirmed"
                        row.message = (f"screened {1 / cmp.ratio:.3f}× faster, but the full gate measured "
                                       f"{1 / cmp2.ratio:.3f}× (lower bound {1 / cmp2.hi:.3f}×; a gain must clear "
                                       f"{cmp2.threshold:.1%} noise)")
        self._save_results(n, results)

    def _keep_failing_candidate(self, n: int, candidate: Candidate, result: EvalResult, row: Experiment) -> None:
        """A FAIL keeps its candidate (the kernel file is put back after the experiment) beside the row, and
        the row's note says the `eval` command that runs the same failing cases on it again."""
        if not result.reproduce or result.plan_seed is None:
            return
        from autokernel_ci.harness.correctness import STAGES, reproduce_command

        path = self.out_dir / "experiments" / self.task.name / f"{n:04d}{self.task.path.suffix}"
        write_atomic(path, candidate.source)
        stages = tuple(self.settings.screen_stages) if row.stage == "screen" else STAGES
        row.note = "reproduce: " + reproduce_command(self.task, path, result.plan_seed, stages, self.device)

    def _rescreen(self) -> EvalResult:
        """Screen the new incumbent once more and hold later candidates to that: the screening run that
        got it kept was, by selection, a lucky one, and would make the next candidates look slow."""
        self._progress("screen", candidate="re-measuring the new best")
        again = self._evaluate(stages=self.settings.screen_stages, plan=self.screen_plan)
        if again.passed and again.timings:
            self.incumbent.screen = again
        return again

    def _describe(self, row: Experiment, result: EvalResult, stage: str) -> None:
        row.status, row.stage, row.message = result.status.value, stage, result.message
        if result.timings:
            row.representative = result.representative_timing
        if not result.passed:
            row.verdict = result.status.value.lower()
        else:
            row.pct_roofline = mean_pct_roofline(result)
            if not row.timings:
                row.timings = _timing_rows(result)

    def _invalid(self, candidate: Candidate) -> str | None:
        names = {t.name for t in self.task.spec.tunables}
        config = {k: v for k, v in candidate.params.items() if k in names}
        return self.task.spec.check_config(config) if config else None

    def _evaluate(self, stages: tuple[str, ...] | None, plan: TimingPlan) -> EvalResult:
        from autokernel_ci.harness.sandbox import evaluate

        if self.pool is not None:  # slot 0: every measurement that decides a keep comes from one GPU
            return self.pool.evaluate(self.task, self.task.path, slot=0, device=self.device, timeout=self.timeout,
                                      seed=self.settings.seed, stages=stages, timing=plan, standby=True)
        # One evaluation after another: a worker started during this one takes the next (harness.standby).
        return evaluate(self.task, self.task.path, device=self.device, timeout=self.timeout, seed=self.settings.seed,
                        stages=stages, timing=plan, standby=True)

    def _commit_message(self, n: int, candidate: Candidate, gate: EvalResult, cmp: Comparison) -> str:
        from autokernel_ci.report.markdown import correctness_line, roofline_line

        vs_start = _speedup(self.start_result, gate) if self.start_result else None
        shapes = len(cmp.per_shape)
        lines = [
            f"autokernel({self.task.name}): {candidate.description}"[:100],
            "",
            f"Task: {self.task.name} ({self.ws.rel}), experiment {n}, proposed by {candidate.proposer}",
            f"Speedup: {1 / cmp.ratio:.3f}x over the previous best"
            + (f", {vs_start:.3f}x over the start" if vs_start else "")
            + f" (geometric mean over {shapes} shape{'s' * (shapes != 1)}; noise threshold {cmp.threshold:.1%})",
            f"Roofline: {roofline_line(gate)}",
            f"Correctness: {correctness_line(gate)}",
            f"Timing: {gate.device}" + ("" if gate.representative_timing
                                        else ": NOT representative of GPU speed (Triton interpreter)"),
            "",
            f"Autokernel-Task: {self.task.name}",
            f"Autokernel-Experiment: {n}",
            f"Autokernel-Description: {candidate.description}",
            f"Autokernel-Params: {json.dumps(candidate.params, sort_keys=True, default=str)}",
        ]
        return "\n".join(lines) + "\n"

    # -- budgets and bookkeeping -----------------------------------------------------------------

    def _budget_spent(self) -> str:
        s = self.settings
        done = sum(1 for r in self.history if r.is_experiment)
        if done >= s.max_experiments:
            return f"reached the experiment budget ({s.max_experiments})"
        if self._elapsed() >= s.budget_minutes * 60:
            return f"reached the time budget ({s.budget_minutes:g} min)"
        since = self._since_improvement()
        if since >= s.patience:
            return f"no improvement in the last {since} experiments (patience {s.patience})"
        return ""

    def _since_improvement(self) -> int:
        count = 0
        for row in reversed(self.history):
            if row.is_incumbent:
                break
            count += 1
        return count

    def _elapsed(self) -> float:
        return self.prior_s + (time.monotonic() - self.session_start)

    def _threshold(self) -> float:
        return max(self.settings.min_gain, self.noise or 0.0)

    def _noise_text(self) -> str:
        if self.noise is not None:
            return f"run-to-run noise {self.noise:.1%}"
        spread = f" (two identical runs differed by {self.interpreter_spread:.1%})" \
            if self.interpreter_spread is not None else ""
        return ("no run-to-run noise on the CPU interpreter: its timings follow the machine's load" + spread
                + f"; a gain must clear {self.settings.min_gain:.1%} with its bootstrap bound below 1")

    def _on_start_scale(self, ratio: float | None) -> float | None:
        """Start ÷ a candidate, from what the loop compared: the incumbent's full-gate speed-up over the start
        times the candidate's speed-up over the incumbent. So a candidate judged slower than the incumbent
        always sits below it, whichever measurement (screen or full gate) judged it."""
        inc = self.incumbent
        base = _speedup(self.start_result, inc.gate) if inc is not None and self.start_result is not None else None
        return base / ratio if base and ratio else None

    def _next_n(self) -> int:
        return max((r.n for r in self.history), default=-1) + 1

    def _record(self, row: Experiment) -> None:
        self.log.append(row)
        self.history.append(row)
        self._progress("experiment", last=row)

    def _write_kernel(self, source: str) -> None:
        self.task.path.write_text(source, encoding="utf-8")

    def _restore_kernel(self) -> None:
        """Put the incumbent back into the kernel file (the loop only ever writes it once there is one)."""
        if self.incumbent is None:
            return
        try:
            current = self.task.path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != self.incumbent.source:
            self._write_kernel(self.incumbent.source)

    def _save_results(self, n: int, results: dict[str, EvalResult]) -> None:
        path = self.out_dir / "experiments" / self.task.name / f"{n:04d}.json"
        write_atomic(path, json.dumps({k: v.to_dict() for k, v in results.items()}, indent=1, default=str))

    def _load_result(self, n: int, which: str) -> EvalResult | None:
        from autokernel_ci.results import EvalResult

        path = self.out_dir / "experiments" / self.task.name / f"{n:04d}.json"
        try:
            data = json.loads(path.read_text())
            return EvalResult.from_dict(data[which]) if which in data else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_best(self, head: str) -> None:
        best_path = self.out_dir / "best.json"
        try:
            data = json.loads(best_path.read_text()) if best_path.is_file() else {}
        except ValueError:
            data = {}
        inc = self.incumbent
        row = next((r for r in reversed(self.history) if r.is_incumbent), None)
        data[self.task.name] = {
            "task": self.task.name, "kernel": self.ws.rel, "branch": self.branch, "start_commit": self.start_commit,
            "head_commit": head, "experiment": row.n if row else None, "description": row.description if row else "",
            "params": row.params if row else {}, "speedup_vs_start": _speedup(self.start_result, inc.gate)
            if inc and self.start_result else None, "noise": self.noise, "stop_reason": self.stop_reason,
            "representative": inc.gate.representative_timing if inc else False,
            "result": inc.gate.to_dict() if inc else None,
        }
        if self.out_dir.is_dir():
            write_atomic(best_path, json.dumps(data, indent=1, default=str))

    def _progress(self, phase: str, candidate: str = "", last: Experiment | None = None, message: str = "") -> None:
        if self.on_progress is None:
            return
        best = _speedup(self.start_result, self.incumbent.gate) if self.incumbent and self.start_result else None
        self.on_progress(LoopProgress(
            task=self.task.name, phase=phase, experiments_done=sum(1 for r in self.history if r.is_experiment),
            max_experiments=self.settings.max_experiments, best_speedup=best, elapsed_s=self._elapsed(),
            budget_s=self.settings.budget_minutes * 60, since_improvement=self._since_improvement(),
            patience=self.settings.patience, candidate=candidate, last=last, representative=self.device != "cpu",
            message=message))

    def _result(self, head: str) -> LoopResult:
        return LoopResult(
            task=self.task.name, kernel_path=self.ws.rel, repo=str(self.ws.root), branch=self.branch,
            start_commit=self.start_commit, head_commit=head, proposer=self.proposer.name, out_dir=self.out_dir,
            experiments=list(self.history), start_result=self.start_result,
            best_result=self.incumbent.gate if self.incumbent else None, stop_reason=self.stop_reason,
            elapsed_s=self._elapsed(), noise=self.noise,
            representative=bool(self.incumbent and self.incumbent.gate.representative_timing),
            device=self.incumbent.gate.device if self.incumbent else self.device, interrupted=self.interrupted,
            notes=list(self.notes))


def write_reports(results: list[LoopResult], out_dir: Path, command: str = "") -> dict[str, Path]:
    """summary.md and progress.png for a run of one or more tasks; returns their paths."""
    from autokernel_ci.report.markdown import render_run_summary
    from autokernel_ci.report.plots import plot_progress

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"results": out_dir / "results.jsonl"}
    plot = plot_progress(results, out_dir / "progress.png")
    if plot is not None:
        paths["plot"] = plot
    summary = out_dir / "summary.md"
    write_atomic(summary, render_run_summary(results, plot="progress.png" if plot else None, command=command))
    paths["summary"] = summary
    return paths


def _sha(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
