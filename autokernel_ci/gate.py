"""The pull-request gate: base vs head on the same machine, one verdict per kernel task.

    report = run_gate(repo, "origin/main", "HEAD")
    sys.exit(report.exit_code)

1. Both revisions (and their merge base) are checked out as detached git worktrees in a temporary
   folder, removed at the end (also on error). The policy is the base's `.autokernel.yml`: its tasks,
   references, inputs, KernelBench files, shapes, dtypes, tolerances, allow-lists, risk and `gate:`.
   A head config that sets any of it differently, or edits the code behind it, gets one blocking
   `policy-changed` verdict listing each key (`config.policy_changes`); a base task the head no longer
   lists is `removed` (blocking); both are lifted only by an approval (`GateReport.accept`, see
   `commands.gate`). A task is gated when its config entry, its kernel file or any repository file
   the kernel imports (`closure`, read statically, in both trees), or its policy's files changed
   since the merge base (`all_tasks`: every task); a task only the head has is new.
   The head's kernels are evaluated in a judged tree: the base's files with the head's changes to
   the gated kernels' import closures, the policy's files always the base's.
2. The head's kernel goes through the whole correctness gate (`harness.sandbox.evaluate`): a head
   that is not correct fails, whatever its speed.
3. On a GPU, base and head are timed against each other in one sandboxed worker process (the
   worker's "ab" mode): both imported as modules of that process and timed in interleaved rounds on
   the same inputs, so drift in clocks and temperature falls on both. The parent decides (`compare`),
   out of the candidates' reach; see `compare` for the rule.
4. On the CPU there is no performance verdict: the Triton interpreter's timings say nothing about
   GPU speed. The head is still gated on correctness, the base is still run once (so a base that
   crashes is reported), and every verdict says the timing was not measured.
5. With several workers (`workers`, default: one per visible GPU) the tasks are gated side by side,
   each task wholly on one GPU (its correctness run and every A/B process get `CUDA_VISIBLE_DEVICES`
   of that GPU alone), so base and head of a task are always timed on the same card. The verdicts
   come back in the config's order whatever finishes first.

Verdicts: pass, regression, improvement, fail (the head is not correct), new, removed, policy-changed,
inconclusive (the interval stayed too wide until the time cap, or a regression did not reproduce),
error (the task could not be checked). Regression, fail and error block the merge (`exit_code` 1), and
so do policy-changed and removed until accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci import stats
from autokernel_ci.errors import AutokernelError, ConfigError, GitError

if TYPE_CHECKING:
    from autokernel_ci.config import Config, KernelEntry, PolicyChange
    from autokernel_ci.harness.sandbox import TimingPlan
    from autokernel_ci.tasks import KernelTask

VERDICTS = ("pass", "regression", "improvement", "fail", "new", "removed", "policy-changed", "inconclusive",
            "error")
BLOCKING = ("regression", "fail", "error", "policy-changed", "removed")
POLICY_TASK = "(policy)"  # the verdict on the config as a whole; no task can be named so (config.NAME_RE)
# Blocking until a person with write access, other than the author, approves the head commit.
ACCEPTABLE = ("policy-changed", "removed")
EXIT_PASSED = 0
EXIT_BLOCKED = 1

NOT_MEASURED = "not measured (no GPU)"
# A cached A/A noise older than this is measured again: runners change (drivers, clocks, neighbours).
NOISE_MAX_AGE_S = 7 * 24 * 3600.0

MeasureRound = Callable[[], tuple[Sequence[float], Sequence[float]]]
OpenSession = Callable[[], MeasureRound]


@dataclass
class ABSettings:
    """How base and head are timed against each other; the defaults are the gate's.

    The timer settings travel to the worker (`ab_plan`); the round counts drive `compare`. A round is
    one block of base and one of head (`ABTimer.measure_round`), each `rep_ms` of repetitions.
    """

    warmup_ms: float = 25.0
    rep_ms: float = 50.0
    min_reps: int = 20
    max_reps: int = 1000
    flush_l2: bool = True
    cuda_graph: bool = False
    input_sets: int = 1
    min_rounds: int = 2  # rounds before the first decision (both orders: A B, then B A)
    max_rounds: int = 16  # per measurement; the time cap usually ends it sooner
    refill_rounds: int = 4  # rounds per extra worker process when the interval is still too wide
    aa_pairs: int = 4  # A/A comparisons (of min_rounds rounds each) behind a noise estimate
    confidence: float = 0.99
    worker_timeout_s: float = 600.0


@dataclass
class Measurement:
    """One interleaved measurement of base vs head, grown round by round until decided; every sample kept."""

    decision: dict[str, Any]  # stats.Decision.to_dict()
    base_us: list[list[float]] = field(default_factory=list)  # one list per round
    head_us: list[list[float]] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return len(self.base_us)


@dataclass
class ShapeComparison:
    """The verdict on one shape: the decision, the noise it allowed for, and the measurements behind it."""

    shape: dict[str, int]
    dtype: str
    verdict: str
    reason: str
    ratio: float | None
    ci_lo: float | None
    ci_hi: float | None
    effective_threshold: float
    noise: float
    noise_source: str  # "measured" (A/A in this run) or "cached"
    aa_ratios: list[float] = field(default_factory=list)
    confirmed: bool = False
    base_median_us: float | None = None
    head_median_us: float | None = None
    measurements: list[Measurement] = field(default_factory=list)  # the first, then the confirmation

    @property
    def rounds(self) -> list[int]:
        return [m.rounds for m in self.measurements]


@dataclass
class TaskVerdict:
    """The gate's verdict on one kernel task, with the evidence: samples, correctness, the reason in words."""

    task: str
    verdict: str
    reason: str
    path: str | None = None  # the kernel file, relative to the repository
    changed: bool = True
    timing_measured: bool = False
    ratio: float | None = None  # median(head) / median(base) of the shape that decided the verdict
    ci_lo: float | None = None
    ci_hi: float | None = None
    threshold: float = 0.0
    noise: float | None = None  # the largest noise among the shapes
    effective_threshold: float | None = None
    rounds: int = 0
    shapes: list[ShapeComparison] = field(default_factory=list)
    head_status: str | None = None  # the head's EvalResult status (PASS, FAIL, CRASH, TIMEOUT, REJECTED)
    head_message: str = ""
    base_status: str | None = None  # "ok", "crashed" or "missing"
    base_message: str = ""
    head_result: dict[str, Any] | None = None  # the head's whole EvalResult: stages, seeds, errors
    gpu: str | None = None  # the GPU this task was gated on (its CUDA_VISIBLE_DEVICES id), with several workers
    accepted_by: str = ""  # a policy change or removal approved on the head commit: by whom (`accept`)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def blocking(self) -> bool:
        return self.verdict in BLOCKING and not (self.verdict in ACCEPTABLE and self.accepted_by)


@dataclass
class GateReport:
    """Everything one gate run found, as data: the Markdown, the terminal table and the JSON come from this."""

    base: str
    base_sha: str
    head: str
    head_sha: str
    device: str
    timings_measured: bool
    threshold: float
    verdicts: list[TaskVerdict] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # tasks not gated because nothing of theirs changed
    exit_code: int = EXIT_PASSED
    duration_s: float = 0.0
    time_cap_s: float | None = None
    config: str | None = None  # the config file, relative to the repository
    started_at: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    workers: int = 1  # tasks gated at once (one per GPU)
    merge_base: str = ""  # the commit the changed tasks were found against (what the head changed since)
    policy_changes: list[dict[str, Any]] = field(default_factory=list)  # config.PolicyChange as data

    @property
    def needs_acceptance(self) -> list[TaskVerdict]:
        """The verdicts only a person's approval can lift (policy-changed, removed), not yet lifted."""
        return [v for v in self.verdicts if v.verdict in ACCEPTABLE and not v.accepted_by]

    def accept(self, by: str) -> None:
        """Lift the policy-changed and removed verdicts: `by` approved the head commit (see commands.gate)."""
        for v in self.verdicts:
            if v.verdict in ACCEPTABLE:
                v.accepted_by = by
        self.exit_code = exit_code_for(self.verdicts)

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_PASSED

    def counts(self) -> dict[str, int]:
        """How many tasks got each verdict, in VERDICTS order, zeros left out."""
        return {v: n for v in VERDICTS if (n := sum(t.verdict == v for t in self.verdicts))}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        data = dict(data)
        data["verdicts"] = [_task_verdict_from_dict(v) for v in data.get("verdicts", [])]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> GateReport:
        return cls.from_dict(json.loads(text))


def _task_verdict_from_dict(data: dict[str, Any]) -> TaskVerdict:
    data = dict(data)
    shapes = []
    for s in data.get("shapes", []):
        s = dict(s)
        s["measurements"] = [Measurement(**m) for m in s.get("measurements", [])]
        shapes.append(ShapeComparison(**s))
    data["shapes"] = shapes
    return TaskVerdict(**data)


def exit_code_for(verdicts: Sequence[TaskVerdict]) -> int:
    """1 when any verdict blocks the merge (regression, fail, error; policy-changed and removed unless
    accepted), else 0."""
    return EXIT_BLOCKED if any(v.blocking for v in verdicts) else EXIT_PASSED


# --- the decision ---------------------------------------------------------------------------------


def measure(open_session: OpenSession, threshold: float, noise: float, *, settings: ABSettings,
            time_cap_s: float = math.inf, clock: Callable[[], float] = time.monotonic) -> Measurement:
    """One fresh session, rounds added until `stats.decide` is decided or a cap is reached; samples kept.

    Samples are rounded to the nanosecond (far below what CUDA events resolve) before the decision,
    so the recorded samples reproduce the recorded decision exactly.
    """
    measure_round = open_session()
    record = Measurement(decision={})

    def recorded_round() -> tuple[list[float], list[float]]:
        a, b = measure_round()
        a = [round(float(x), 3) for x in a]
        b = [round(float(x), 3) for x in b]
        record.base_us.append(a)
        record.head_us.append(b)
        return a, b

    decision = stats.decide_in_rounds(recorded_round, threshold, noise, min_rounds=settings.min_rounds,
                                      max_rounds=settings.max_rounds, time_cap_s=time_cap_s, clock=clock,
                                      confidence=settings.confidence)
    record.decision = decision.to_dict()
    return record


def compare(open_session: OpenSession, threshold: float, noise: float = 0.0, *, settings: ABSettings | None = None,
            time_cap_s: float = math.inf,
            clock: Callable[[], float] = time.monotonic) -> tuple[stats.Decision, list[Measurement]]:
    """The gate's decision on one shape: (final decision, the measurements it came from).

    * The threshold is never below the noise: `stats.decide` uses max(threshold, noise), and its cut
      for the point estimate is never below the noise either.
    * A measurement grows round by round (`stats.decide_in_rounds`) until the interval is tight
      enough to decide or `time_cap_s` is spent; then it is "inconclusive", which does not block.
    * A first "regression" fails nothing by itself: a fresh session (`open_session()` again: in the
      gate a new worker process) measures again, and only a regression that reproduces stands
      (`stats.confirm`); one that does not becomes "inconclusive". The confirmation always gets its
      minimum rounds, even past the cap: the cap bounds how long the search grows, not whether a
      failing verdict is checked.
    """
    settings = settings or ABSettings()
    start = clock()
    first = measure(open_session, threshold, noise, settings=settings, time_cap_s=time_cap_s, clock=clock)
    decision = stats.Decision.from_dict(first.decision)
    measurements = [first]
    if decision.verdict == "regression":
        remaining = max(time_cap_s - (clock() - start), 0.0)
        second = measure(open_session, threshold, noise, settings=settings, time_cap_s=remaining, clock=clock)
        measurements.append(second)
        decision = stats.confirm(decision, stats.Decision.from_dict(second.decision))
    return decision, measurements


def noise_from_aa(rounds: Sequence[tuple[Sequence[float], Sequence[float]]], rounds_per_pair: int,
                  confidence: float = 0.99) -> tuple[float, list[float]]:
    """(noise, the A/A ratios): A/A rounds grouped into comparisons of `rounds_per_pair` rounds each, the
    way the gate groups base vs head rounds, then `stats.estimate_noise`."""
    if rounds_per_pair < 1 or len(rounds) < rounds_per_pair:
        raise ValueError(f"need at least {max(rounds_per_pair, 1)} A/A rounds, got {len(rounds)}")
    pairs = []
    for start in range(0, len(rounds) - rounds_per_pair + 1, rounds_per_pair):
        group = rounds[start:start + rounds_per_pair]
        pairs.append(([x for a, _ in group for x in a], [x for _, b in group for x in b]))
    ratios = [stats.median_ratio(a, b) for a, b in pairs]
    return stats.estimate_noise(pairs, confidence), ratios


def shape_comparison(shape: dict[str, int], dtype: str, decision: stats.Decision, measurements: list[Measurement],
                     noise: float, noise_source: str, aa_ratios: Sequence[float] = ()) -> ShapeComparison:
    """A shape's verdict with the medians of the measurement its final decision came from."""
    source = next((m for m in measurements if m.decision.get("ratio") == decision.ratio), measurements[-1])
    base = [x for r in source.base_us for x in r]
    head = [x for r in source.head_us for x in r]
    return ShapeComparison(
        shape=dict(shape), dtype=dtype, verdict=decision.verdict, reason=decision.reason, ratio=decision.ratio,
        ci_lo=decision.ci_lo, ci_hi=decision.ci_hi, effective_threshold=decision.effective_threshold,
        noise=noise, noise_source=noise_source, aa_ratios=[round(r, 6) for r in aa_ratios],
        confirmed=decision.confirmed, base_median_us=stats.median(base) if base else None,
        head_median_us=stats.median(head) if head else None, measurements=measurements)


def combine_shapes(shapes: Sequence[ShapeComparison]) -> tuple[str, ShapeComparison]:
    """(task verdict, the shape that decided it): a confirmed regression in any shape is a regression;
    else any inconclusive shape makes the task inconclusive; else an improvement anywhere is one; else pass."""
    if not shapes:
        raise ValueError("combine_shapes needs at least one shape")
    for verdict in ("regression", "inconclusive", "improvement"):
        hits = [s for s in shapes if s.verdict == verdict]
        if hits:
            worst = max(hits, key=lambda s: s.ratio if s.ratio is not None else math.inf)
            return verdict, worst
    return "pass", max(shapes, key=lambda s: s.ratio if s.ratio is not None else -math.inf)


def timed_verdict(base: TaskVerdict, shapes: list[ShapeComparison]) -> TaskVerdict:
    """Fill a task's verdict from its shapes' comparisons."""
    verdict, decider = combine_shapes(shapes)
    label = _shape_label(decider.shape)
    reason = decider.reason if len(shapes) == 1 else f"{label}: {decider.reason}"
    return replace(base, verdict=verdict, reason=reason, timing_measured=True, ratio=decider.ratio,
                   ci_lo=decider.ci_lo, ci_hi=decider.ci_hi, noise=max(s.noise for s in shapes),
                   effective_threshold=decider.effective_threshold, shapes=shapes,
                   rounds=sum(sum(s.rounds) for s in shapes))


def _shape_label(shape: dict[str, int]) -> str:
    return "×".join(str(v) for v in shape.values()) or "default inputs"


# --- noise cache ----------------------------------------------------------------------------------


def noise_cache_path(device_name: str, task: KernelTask, shape: dict[str, int], dtype: str,
                     settings: ABSettings) -> Path:
    """Where the A/A noise of one task and shape on one device is kept (`cache_root()/noise/`)."""
    from autokernel_ci.harness.device import cache_root

    timer = {k: getattr(settings, k) for k in ("warmup_ms", "rep_ms", "min_reps", "max_reps", "flush_l2",
                                                "cuda_graph", "input_sets", "min_rounds", "aa_pairs")}
    ident = json.dumps([device_name, task.name, task.kind, task.op, sorted(shape.items()), dtype, timer],
                       sort_keys=True)
    return cache_root() / "noise" / (hashlib.sha256(ident.encode()).hexdigest()[:24] + ".json")


def load_noise(path: Path, now: float | None = None) -> tuple[float, list[float]] | None:
    """(noise, A/A ratios) from the cache, or None when absent, unreadable or too old."""
    try:
        data = json.loads(path.read_text())
        noise, ratios, measured = float(data["noise"]), [float(r) for r in data["aa_ratios"]], float(data["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = time.time() if now is None else now
    if not math.isfinite(noise) or noise < 0 or now - measured > NOISE_MAX_AGE_S:
        return None
    return noise, ratios


def save_noise(path: Path, noise: float, ratios: Sequence[float]) -> None:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"noise": noise, "aa_ratios": list(ratios), "time": time.time()}))
        os.replace(tmp, path)


# --- timing in the sandbox ------------------------------------------------------------------------


class TimingError(AutokernelError):
    """Base vs head could not be timed; `side` says whose fault it was ("base", "head" or None: unknown)."""

    def __init__(self, side: str | None, message: str) -> None:
        super().__init__(message)
        self.side = side


def ab_plan(task: KernelTask, device: str, settings: ABSettings) -> TimingPlan:
    """The shapes and timer settings of the A/B comparison: the benchmark shapes with the gate's timer on
    a GPU; on the CPU, the small shape the interpreter can run quickly (never timed for a verdict)."""
    from autokernel_ci.harness.sandbox import TimingPlan

    plan = TimingPlan.for_task(task, device)
    if device == "cpu":
        return plan
    return replace(plan, warmup_ms=settings.warmup_ms, rep_ms=settings.rep_ms, min_reps=settings.min_reps,
                   max_reps=settings.max_reps, flush_l2=settings.flush_l2, cuda_graph=settings.cuda_graph,
                   input_sets=settings.input_sets, baselines=())


def timer_options(plan: TimingPlan) -> dict[str, Any]:
    """The keyword arguments `ABTimer` gets in the worker for this plan (for measuring the same way elsewhere)."""
    return {"warmup_ms": plan.warmup_ms, "rep_ms": plan.rep_ms, "min_reps": plan.min_reps,
            "max_reps": plan.max_reps, "flush_l2": plan.flush_l2, "cuda_graph": plan.cuda_graph}


Round = tuple[list[float], list[float]]


class ABWorker:
    """Base vs head in sandboxed worker processes: each imports both kernels and times them interleaved.

    `first` runs every shape once (the A/B rounds, and an A/A of the head against a second copy of
    itself where the noise is not known); `session` hands `compare` its rounds one by one, and
    starts another process when it needs more; a fresh session (the confirmation) is a new process.
    """

    def __init__(self, task: KernelTask, base_path: Path, head_path: Path, device: str, settings: ABSettings,
                 work_dir: Path | None = None, env_overrides: dict[str, str] | None = None) -> None:
        self.task, self.device, self.settings, self.work_dir = task, device, settings, work_dir
        self.env_overrides = dict(env_overrides or {})  # a pool's slot: its GPU alone
        self.paths = {"base": Path(base_path).resolve(), "head": Path(head_path).resolve()}
        self.plan = ab_plan(task, device, settings)
        self.processes = 0

    def run(self, shape_indices: Sequence[int], comparisons: list[dict[str, Any]],
            head_copy: bool = False) -> list[dict[str, Any]]:
        """One worker process; per shape its record (errors by side, rounds by comparison), checked."""
        from autokernel_ci.harness.sandbox import child_environment, run_worker

        candidates = {label: str(path) for label, path in self.paths.items()}
        if head_copy:
            candidates["head_copy"] = str(self.paths["head"])
        shapes = [self.plan.shapes[i] for i in shape_indices]
        request = {"mode": "ab", "task": self.task.to_wire(), "device": self.device, "candidates": candidates,
                   "comparisons": comparisons, "timing": {**self.plan.to_wire(), "shapes": shapes}}
        timeout = self.settings.worker_timeout_s
        self.processes += 1
        with tempfile.TemporaryDirectory(prefix="autokernel-ab-", dir=self.work_dir) as tmp:
            env = child_environment({**os.environ, **self.env_overrides} if self.env_overrides else None,
                                    device=self.device)
            run = run_worker(request, Path(tmp), timeout, env)
            step = _last_line(Path(tmp) / "progress.log")
        side = _side_of(step)
        if run.timed_out:
            raise TimingError(side, f"the A/B timing process ran past its {timeout:g} s limit ({_doing(step)})")
        if run.returncode != 0 or run.result is None:
            last = next((ln for ln in reversed(run.log_tail.strip().splitlines()) if ln.strip()), "")
            how = (f"was killed by signal {-run.returncode}" if run.returncode and run.returncode < 0
                   else f"exited with status {run.returncode}")
            raise TimingError(side, f"the A/B timing process {how} ({_doing(step)})"
                              + (f"; last output: {last[:200]}" if last else ""))
        import_errors = run.result.get("import_errors") if isinstance(run.result, dict) else None
        for label in ("base", "head", "head_copy"):
            error = import_errors.get(label) if isinstance(import_errors, dict) else None
            if error:
                raise TimingError("head" if label == "head_copy" else label, f"{label} failed to import: {error}")
        return _checked_ab_result(run.result, len(shapes), [c["name"] for c in comparisons])

    def raise_side_errors(self, record: dict[str, Any]) -> None:
        """A TimingError naming the side that raised when called on this shape, if one did."""
        for label in ("base", "head", "head_copy"):
            error = record["errors"].get(label)
            if error:
                where = f"{_shape_label(record['shape'])} {record['dtype']}"
                raise TimingError("head" if label == "head_copy" else label, f"{label} raised on {where}: {error}")

    def rounds_of(self, record: dict[str, Any], name: str) -> list[Round]:
        """A comparison's rounds from a shape's record; a side that raised is blamed by name."""
        self.raise_side_errors(record)
        entry = record["comparisons"].get(name)
        if entry is None:
            raise TimingError(None, f"the A/B timing process returned no {name!r} rounds")
        if "error" in entry:
            raise TimingError(None, f"timing failed: {entry['error']}")
        return [(r["a"], r["b"]) for r in entry["rounds"]]

    def more_rounds(self, index: int, count: int) -> list[Round]:
        comparisons = [{"name": "ab", "a": "base", "b": "head", "rounds": count}]
        record = self.run([index], comparisons)[0]
        return self.rounds_of(record, "ab")

    def session(self, index: int, first_rounds: Sequence[Round] | None = None) -> MeasureRound:
        """Rounds of shape `index` one at a time: `first_rounds` first, then from new processes."""
        buffer = list(first_rounds or [])
        fetched = [first_rounds is not None]

        def measure_round() -> Round:
            if not buffer:
                count = self.settings.refill_rounds if fetched[0] else self.settings.min_rounds
                buffer.extend(self.more_rounds(index, count))
                fetched[0] = True
            return buffer.pop(0)

        return measure_round


def _checked_ab_result(data: Any, n_shapes: int, names: Sequence[str]) -> list[dict[str, Any]]:
    """The worker's A/B report as data, or a TimingError saying what is wrong with it."""

    def bad(why: str) -> TimingError:
        return TimingError(None, f"the A/B timing process's report is malformed: {why}")

    from autokernel_ci.harness.worker import PROTOCOL

    if not isinstance(data, dict) or data.get("protocol") != PROTOCOL or data.get("mode") != "ab":
        raise bad(f"not a protocol-{PROTOCOL} A/B report")
    shapes = data.get("shapes")
    if not isinstance(shapes, list) or len(shapes) != n_shapes:
        raise bad(f"expected {n_shapes} shapes")
    for record in shapes:
        if not isinstance(record, dict) or not isinstance(record.get("errors"), dict) \
                or not isinstance(record.get("comparisons"), dict):
            raise bad("a shape's record is not a mapping of errors and comparisons")
        for name in names:
            entry = record["comparisons"].get(name)
            if entry is None or "error" in entry:
                continue
            rounds = entry.get("rounds")
            if not isinstance(rounds, list) or not all(_samples_ok(r.get("a")) and _samples_ok(r.get("b"))
                                                       for r in rounds if isinstance(r, dict)) \
                    or not all(isinstance(r, dict) for r in rounds):
                raise bad(f"the {name!r} rounds are not lists of positive finite samples")
    return shapes


def _samples_ok(samples: Any) -> bool:
    return (isinstance(samples, list) and len(samples) > 0
            and all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in samples))


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _side_of(step: str) -> str | None:
    """Whose code ran at a progress step: "import base", "call head 0" → that side; "time ab 0" → unknown."""
    parts = step.split()
    if len(parts) >= 2 and parts[0] in ("import", "call"):
        return "head" if parts[1] == "head_copy" else parts[1]
    return None


def _doing(step: str) -> str:
    parts = step.split()
    if not parts:
        return "before it imported anything"
    if parts[0] == "import":
        return f"while importing {parts[1]}"
    if parts[0] == "call":
        return f"while running {parts[1]} once, untimed"
    return "while timing base and head"


# --- git ------------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH); the gate needs it to check out base and head") from None
    except NotADirectoryError:
        raise GitError(f"not a directory: {cwd}") from None
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        raise GitError(f"git {args[0]} failed: {lines[-1]}")
    return out.stdout


def repository_root(repo: str | Path) -> Path:
    """The top folder of the git repository that holds `repo`."""
    path = Path(repo)
    if not path.is_dir():
        raise GitError(f"not a directory: {repo}")
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip()).resolve()
    except GitError:
        raise GitError(f"not a git repository: {repo}") from None


def resolve_revision(root: Path, rev: str) -> str:
    """The commit SHA `rev` names, or GitError "unknown revision 'REV'"."""
    if not rev or rev.startswith("-"):
        raise GitError(f"unknown revision '{rev}'")
    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise GitError(f"unknown revision '{rev}'")
    return out.stdout.strip()


def changed_files(root: Path, base_sha: str, head_sha: str) -> set[str]:
    """Paths (relative to the repository, with /) that differ between two commits; a rename counts twice."""
    out = _git(root, "diff", "--name-only", "--no-renames", "-z", base_sha, head_sha)
    return {p for p in out.split("\0") if p}


@contextlib.contextmanager
def worktrees(root: Path, commits: dict[str, str], work_dir: Path | None = None) -> Iterator[dict[str, Path]]:
    """Each commit checked out (detached) in its own worktree under one temporary folder; all removed after."""
    tmp = Path(tempfile.mkdtemp(prefix="autokernel-gate-", dir=work_dir))
    added: list[Path] = []
    try:
        paths = {}
        for label, sha in commits.items():
            path = tmp / label
            _git(root, "worktree", "add", "--detach", "--quiet", str(path), sha)
            added.append(path)
            paths[label] = path
        yield paths
    finally:
        for path in added:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=root, capture_output=True,
                           check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True, check=False)


# --- which tasks ----------------------------------------------------------------------------------


@dataclass
class TaskPlan:
    """One task of the gate: its entries in both configs, its files, and whether anything of it changed.

    `policy_entry` is what the head is judged by: the base's entry (its reference, inputs, KernelBench
    file, shapes, dtypes, tolerances, allow-list, risk) with the head's `path` and `entry`, since where
    the kernel lives is the pull request's to change. For a task only the head has, the head's entry.
    """

    name: str
    head_entry: KernelEntry | None
    base_entry: KernelEntry | None
    head_path: Path | None  # the kernel file the head is judged by (in the judged tree)
    base_path: Path | None  # the kernel file in the base worktree, None when the base has none
    path: str | None  # the kernel file relative to the repository (the head's, or the base's when removed)
    changed: bool
    status: str  # "gate", "new", "removed"
    note: str = ""
    policy_entry: KernelEntry | None = None
    policy_cfg: Config | None = None  # the config whose root the task's reference and inputs come from


def _load_config_of(tree: Path, config_rel: Path, label: str, which: str) -> Config:
    from autokernel_ci.config import load_config

    path = tree / config_rel
    if not path.is_file():
        if which == "base":
            raise _config_error(
                config_rel, f"the base ({label}) has no {config_rel.as_posix()}: the gate takes its policy (tasks, "
                "references, tolerances, threshold) from the branch the pull request merges into, so merge a "
                "config there first (`autokernel-ci init`), or pass --config")
        raise AutokernelError(f"no {config_rel.as_posix()} in head ({label}): nothing to gate; add a config "
                              "listing the kernels, or pass --config")
    try:
        return load_config(path)
    except ConfigError as exc:
        text = str(exc).replace(str(tree) + os.sep, "").replace(str(tree), ".")
        missing_file = any(msg.startswith("file not found") for _, msg in getattr(exc, "problems", []))
        message = f"the {which}'s config is invalid ({label}): {text}"
        if missing_file and which == "head":
            message += ("\n(a kernel file listed in the config is missing in head: if it was deleted on purpose, "
                        "remove its entry from the config too)")
        raise _config_error(config_rel, message) from None


def _config_error(config_rel: Path, message: str) -> ConfigError:
    err = ConfigError(config_rel.as_posix(), "", "invalid")
    err.args = (message,)
    return err


def _load_head_config(head_root: Path, config_rel: Path, head_label: str) -> Config:
    return _load_config_of(head_root, config_rel, head_label, "head")


def _repo_rel(path: Path, tree: Path) -> str:
    return path.resolve().relative_to(tree.resolve()).as_posix()


def kernel_closure(entry: KernelEntry, tree: Path, config_dir: Path) -> set[str]:
    """The kernel file of a task and every repository file it imports (statically), repository-relative."""
    from autokernel_ci.closure import import_closure

    kernel = tree / config_dir / entry.path
    files = import_closure([kernel], tree, search=[kernel.parent, tree / config_dir])
    return {_repo_rel(f, tree) for f in files} | {os.path.normpath(config_dir / entry.path).replace(os.sep, "/")}


def policy_closure(entry: KernelEntry, tree: Path, config_dir: Path) -> set[str]:
    """The files behind a task's policy: its reference and inputs modules, its KernelBench file, and every
    repository file they import (statically), repository-relative."""
    from autokernel_ci.closure import import_closure
    from autokernel_ci.config import module_source

    root = tree / config_dir
    starts: list[Path] = []
    for target in (entry.reference, entry.inputs):
        if target:
            origin = module_source(target.split(":")[0], root)
            if origin and origin.endswith(".py"):
                starts.append(Path(origin))
            parts = target.split(":")[0].split(".")
            starts += [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    search = [root]
    if entry.kernelbench:
        starts.append(root / entry.kernelbench)
        search = [(root / entry.kernelbench).parent, root]
    return {_repo_rel(f, tree) for f in import_closure(starts, tree, search=search)}


def plan_tasks(head_cfg: Config, base_cfg: Config | None, head_root: Path, base_root: Path, config_rel: Path,
               changed: set[str], since_cfg: Config | None = None, judged_root: Path | None = None) -> list[TaskPlan]:
    """Every task of the base's config (changed or not) judged by the base's policy, then the head's new tasks.

    A base task the head no longer lists is removed; one the base gained after the head branched
    (absent from `since_cfg`, the merge base's config) is not the head's doing and is left out. A task
    is changed when its config entry or any file of its kernel's or its policy's import closure, in
    either tree, is in `changed`."""
    config_dir = config_rel.parent
    judged_root = judged_root or head_root
    base_cfg = base_cfg if base_cfg is not None else head_cfg
    policy_cfg = replace(base_cfg, root=(judged_root / config_dir).resolve())
    plans = []
    for base_entry in base_cfg.kernels:
        entry = head_cfg.kernel(base_entry.name)
        base_file = base_root / config_dir / base_entry.path
        if entry is None:
            if since_cfg is not None and since_cfg.kernel(base_entry.name) is None:
                continue  # added to the base after the head branched
            path = os.path.normpath(config_dir / base_entry.path).replace(os.sep, "/")
            still = (head_root / config_dir / base_entry.path).is_file()
            note = (f"its kernel file {path} is still in head but no longer listed" if still
                    else f"its kernel file {path} was deleted in head")
            plans.append(TaskPlan(base_entry.name, None, base_entry, None, base_file, path, True, "removed", note))
            continue
        since_entry = since_cfg.kernel(entry.name) if since_cfg is not None else base_entry
        files = (kernel_closure(entry, head_root, config_dir) | policy_closure(base_entry, base_root, config_dir)
                 | (kernel_closure(base_entry, base_root, config_dir) if base_file.is_file() else set()))
        differs = (since_entry is None or asdict(since_entry) != asdict(entry) or bool(files & changed))
        policy_entry = replace(base_entry, path=entry.path, entry=entry.entry)
        path = os.path.normpath(config_dir / entry.path).replace(os.sep, "/")
        plans.append(TaskPlan(entry.name, entry, base_entry, judged_root / config_dir / entry.path,
                              base_file if base_file.is_file() else None, path, differs, "gate",
                              policy_entry=policy_entry, policy_cfg=policy_cfg))
    for entry in head_cfg.kernels:
        if base_cfg.kernel(entry.name) is None:
            path = os.path.normpath(config_dir / entry.path).replace(os.sep, "/")
            plans.append(TaskPlan(entry.name, entry, None, head_root / config_dir / entry.path, None, path, True,
                                  "new", policy_entry=entry, policy_cfg=head_cfg))
    return plans


def judged_tree(base_root: Path, head_root: Path, dest: Path, overlay: set[str]) -> Path:
    """The tree the head's kernels are evaluated in: the base's files, with the head's version of each file
    in `overlay` (the pull request's changes to the kernels' import closures). Policy files stay the base's."""
    shutil.copytree(base_root, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    for rel in sorted(overlay):
        source, target = head_root / rel, dest / rel
        if source.is_file() and not source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_dir():
                continue
            shutil.copyfile(source, target)
    return dest


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def _policy_file_changes(base_cfg: Config, base_root: Path, head_root: Path, judged_root: Path,
                         config_dir: Path, changed: set[str]) -> list[PolicyChange]:
    """The code behind the base's policy that the head changed: a reference, inputs or KernelBench file (or a
    file one of them imports) edited or deleted, and any file of the head's that the policy's code would now
    import in the judged tree (a module shadowing one the reference imports)."""
    from autokernel_ci.config import PolicyChange

    out: list[PolicyChange] = []
    for entry in base_cfg.kernels:
        if not (entry.reference or entry.inputs or entry.kernelbench):
            continue
        files = policy_closure(entry, base_root, config_dir)
        for rel in sorted(files & changed):
            head_digest = _digest(head_root / rel)
            out.append(PolicyChange(key=f"kernels.{entry.name} policy code {rel}",
                                    base=f"sha256 {_digest(base_root / rel)}",
                                    head=f"sha256 {head_digest}" if head_digest else "deleted", task=entry.name))
        for rel in sorted(policy_closure(entry, judged_root, config_dir) - files):
            out.append(PolicyChange(key=f"kernels.{entry.name} policy code {rel}", base="not imported",
                                    head=f"imported from the head (sha256 {_digest(judged_root / rel)})",
                                    task=entry.name))
    return out


def policy_verdict(changes: Sequence[PolicyChange], config_rel: Path, head_sha: str) -> TaskVerdict:
    keys = "; ".join(f"{c.key}: {_value(c.base)} → {_value(c.head)}" for c in changes)
    at = f" {head_sha[:12]}" if head_sha else ""
    return TaskVerdict(task=POLICY_TASK, verdict="policy-changed", path=config_rel.as_posix(),
                       reason=f"the head changes the gate's policy ({len(changes)} key{'s' * (len(changes) != 1)}): "
                              f"{keys}. The head was judged by the base's policy; this blocks until someone with "
                              f"write access, other than the author, approves the head commit{at}")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": ")) if value is not None else "(not set)"


# --- the gate -------------------------------------------------------------------------------------


def merge_base(root: Path, base_sha: str, head_sha: str, base: str = "base", head: str = "head") -> str:
    """The commit the head branched from the base at (`git merge-base`), or GitError when they share none."""
    out = subprocess.run(["git", "merge-base", base_sha, head_sha], cwd=root, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise GitError(f"base '{base}' ({base_sha[:12]}) is not an ancestor of head '{head}' ({head_sha[:12]}) "
                       "and they share no history: pass the branch the pull request merges into as --base")
    return out.stdout.strip()


def run_gate(repo: str | Path, base: str, head: str = "HEAD", *, threshold: float | None = None,
             all_tasks: bool | None = None, device: str | None = None, time_cap_s: float | None = None,
             config: str | Path | None = None, stages: tuple[str, ...] | None = None,
             settings: ABSettings | None = None, work_dir: Path | None = None,
             on_event: Callable[[str], None] | None = None,
             clock: Callable[[], float] = time.monotonic, workers: int | None = None) -> GateReport:
    """Gate `head` against `base` in the git repository at `repo`; see the module docstring.

    The policy (tasks, references, inputs, shapes, dtypes, tolerances, allow-lists, `gate:`) is the
    base's config; `threshold` and `time_cap_s` may only tighten the base's, `all_tasks` only widen.
    Which tasks changed is decided against the merge base of base and head (three dots: what the head
    changed), timing compares base and head. `stages` narrows the correctness gate (tests only; the
    gate's default is every stage). `workers`: tasks gated at once, one per GPU (None: every visible GPU;
    1 on the CPU). Raises GitError for an unknown revision or unrelated histories and ConfigError for a
    base without a config or an invalid config; a problem with one task becomes that task's verdict.
    """
    from autokernel_ci.config import find_config

    started = clock()
    root = repository_root(repo)
    base_sha, head_sha = resolve_revision(root, base), resolve_revision(root, head)
    since = merge_base(root, base_sha, head_sha, base, head)
    config_rel = _config_relative(root, repo, config)
    commits = {"base": base_sha, "head": head_sha, **({"since": since} if since != base_sha else {})}
    with worktrees(root, commits, work_dir) as trees:
        if config_rel is None:
            subdir = Path(repo).resolve().relative_to(root) if Path(repo).resolve() != root else Path()
            found = find_config(trees["base"] / subdir) or find_config(trees["base"])
            config_rel = found.relative_to(trees["base"]) if found else subdir / ".autokernel.yml"
        report = gate_trees(trees["base"], trees["head"], config_rel, changed=changed_files(root, since, head_sha),
                            base=base, base_sha=base_sha, head=head, head_sha=head_sha, threshold=threshold,
                            all_tasks=all_tasks, device=device, time_cap_s=time_cap_s, stages=stages,
                            settings=settings, work_dir=work_dir, on_event=on_event, clock=clock, started=started,
                            workers=workers, since_root=trees.get("since"), merge_base_sha=since)
    report.duration_s = round(clock() - started, 2)
    return report


def gate_trees(base_root: Path, head_root: Path, config_rel: str | Path = ".autokernel.yml", *,
               changed: set[str] | None = None, base: str = "base", base_sha: str = "", head: str = "head",
               head_sha: str = "", threshold: float | None = None, all_tasks: bool | None = None,
               device: str | None = None, time_cap_s: float | None = None, stages: tuple[str, ...] | None = None,
               settings: ABSettings | None = None, work_dir: Path | None = None,
               on_event: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
               started: float | None = None, workers: int | None = None, since_root: Path | None = None,
               merge_base_sha: str = "") -> GateReport:
    """The gate on two checked-out trees (what `run_gate` does once its worktrees exist).

    `changed` holds the repository-relative paths the head changed (`git diff` from the merge base);
    None compares the files the tasks depend on byte by byte, for trees that are not git checkouts.
    `since_root` is the merge base's tree when it is not the base's.
    """
    from autokernel_ci.config import policy_changes
    from autokernel_ci.harness.sandbox import resolve_device

    started = clock() if started is None else started
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    say = on_event or (lambda message: None)
    settings = settings or ABSettings()
    base_root, head_root, config_rel = Path(base_root), Path(head_root), Path(config_rel)
    device = resolve_device(device)
    measured = _timings_possible(device)
    base_label = f"{base} = {base_sha[:12]}" if base_sha else base
    head_label = f"{head} = {head_sha[:12]}" if head_sha else head
    base_cfg = _load_config_of(base_root, config_rel, base_label, "base")
    head_cfg = _load_config_of(head_root, config_rel, head_label, "head")
    notes: list[str] = []
    since_cfg = None
    if since_root is not None:
        try:
            since_cfg = _load_config_of(Path(since_root), config_rel, merge_base_sha[:12], "merge base")
        except AutokernelError:
            notes.append(f"the merge base {merge_base_sha[:12]} has no valid {config_rel.as_posix()}: policy "
                         "changes are those of the head against the base")
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise AutokernelError(f"the threshold must be a fraction between 0 and 1 (0.03 is 3 %), got {threshold}")
    policy_threshold = base_cfg.gate.threshold
    if threshold is not None and threshold > policy_threshold:
        notes.append(f"a threshold of {threshold:g} was asked for, looser than the base's gate.threshold "
                     f"{policy_threshold:g}: the base's was used (a threshold may only be tightened)")
    threshold = policy_threshold if threshold is None else min(threshold, policy_threshold)
    all_tasks = bool(all_tasks) or base_cfg.gate.all_tasks
    policy_cap = base_cfg.gate.max_minutes * 60.0
    time_cap_s = policy_cap if time_cap_s is None else min(time_cap_s, policy_cap)
    config_dir = config_rel.parent
    if changed is None:
        changed = _changed_by_content(base_root, head_root, config_rel, head_cfg, base_cfg)
    changes = policy_changes(base_cfg, head_cfg, since_cfg)
    scratch = Path(tempfile.mkdtemp(prefix="autokernel-judged-", dir=work_dir))
    try:
        plans = plan_tasks(head_cfg, base_cfg, head_root, base_root, config_rel, changed, since_cfg,
                           judged_root=scratch / "judged")
        todo = [p for p in plans if p.changed or all_tasks]
        protected: set[str] = set()
        for entry in base_cfg.kernels:
            protected |= policy_closure(entry, base_root, config_dir)
        overlay: set[str] = set()
        for plan in todo:
            if plan.status == "gate" and plan.head_entry is not None:
                overlay |= kernel_closure(plan.head_entry, head_root, config_dir) & changed
        judged_tree(base_root, head_root, scratch / "judged", overlay - protected)
        changes += _policy_file_changes(base_cfg, base_root, head_root, scratch / "judged", config_dir, changed)
        report = GateReport(base=base, base_sha=base_sha, head=head, head_sha=head_sha,
                            device=_device_label(device), timings_measured=measured, threshold=threshold,
                            time_cap_s=time_cap_s, config=config_rel.as_posix(), started_at=started_at,
                            environment=_environment(), merge_base=merge_base_sha,
                            policy_changes=[asdict(c) for c in changes])
        report.notes += notes
        if not measured:
            report.notes.append("timings not measured: no GPU on this machine. Kernels ran under the Triton "
                                "interpreter for correctness only; no performance verdict was given.")
        slots = gate_slots(device, workers)
        gate = _TaskGate(base_cfg, device, measured, threshold, settings, stages, work_dir, started + time_cap_s,
                         clock, say)
        report.unchanged = [p.name for p in plans if p not in todo]
        report.workers = min(len(slots), max(len(todo), 1))

        def gate_one(plan: TaskPlan, slot: dict[str, str]) -> TaskVerdict:
            where = f" on GPU {slot['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in slot else ""
            say(f"{plan.name}: " + {"new": "new in head", "removed": "removed in head"}.get(plan.status, "gating")
                + where)
            verdict = replace(gate.verdict(plan, slot), gpu=slot.get("CUDA_VISIBLE_DEVICES"))
            say(f"{plan.name}: {verdict.verdict}: {verdict.reason}")
            return verdict

        report.verdicts = run_on_slots(todo, slots[:report.workers], gate_one)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if changes:
        report.verdicts.insert(0, policy_verdict(changes, config_rel, head_sha))
    report.exit_code = exit_code_for(report.verdicts)
    report.duration_s = round(clock() - started, 2)
    return report


def gate_slots(device: str, workers: int | None) -> list[dict[str, str]]:
    """What each of the gate's workers adds to its processes' environment: on a GPU machine one slot per
    GPU (`workers` of them; None: every visible GPU), pinned with CUDA_VISIBLE_DEVICES when there are
    several; on the CPU `workers` unpinned slots (default 1)."""
    from autokernel_ci.pool import first_gpus

    if workers is not None and workers < 1:
        raise AutokernelError(f"the gate needs at least one worker, got {workers}")
    if device == "cpu":
        return [{} for _ in range(workers or 1)]
    chosen = first_gpus(workers)
    return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in chosen] if len(chosen) > 1 else [{}]


def run_on_slots(items: Sequence[Any], slots: Sequence[dict[str, str]],
                 work: Callable[[Any, dict[str, str]], Any]) -> list[Any]:
    """`work(item, slot)` for every item, as many at once as there are slots, each slot used by one item
    at a time; the results in the items' order. One slot: in this thread, one after another."""
    if len(slots) <= 1 or len(items) <= 1:
        slot = slots[0] if slots else {}
        return [work(item, slot) for item in items]
    import queue
    from concurrent.futures import ThreadPoolExecutor

    free: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)

    def on_a_free_slot(item: Any) -> Any:
        slot = free.get()
        try:
            return work(item, slot)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="autokernel-gate") as pool:
        return list(pool.map(on_a_free_slot, items))


def _changed_by_content(base_root: Path, head_root: Path, config_rel: Path, head_cfg: Config,
                        base_cfg: Config | None) -> set[str]:
    """The tasks' files (their kernels' and policies' import closures, repository-relative) whose bytes
    differ between two trees, or that exist in one only."""
    config_dir = config_rel.parent
    files = {config_rel.as_posix()}
    for tree, cfg in ((head_root, head_cfg), (base_root, base_cfg)):
        for entry in cfg.kernels if cfg is not None else []:
            if (tree / config_dir / entry.path).is_file():
                files |= kernel_closure(entry, tree, config_dir)
            files |= policy_closure(entry, tree, config_dir)
    changed = set()
    for rel in files:
        a, b = base_root / rel, head_root / rel
        if a.is_file() != b.is_file() or (a.is_file() and a.read_bytes() != b.read_bytes()):
            changed.add(rel)
    return changed


def _timings_possible(device: str) -> bool:
    """Only a GPU gives timings a performance verdict may rest on."""
    return device != "cpu"


def _config_relative(root: Path, repo: str | Path, config: str | Path | None) -> Path | None:
    if config is None:
        return None
    path = Path(config)
    if not path.is_absolute():
        path = Path(repo).resolve() / path
    try:
        return path.resolve().relative_to(root)
    except ValueError:
        raise AutokernelError(f"--config {config} is not inside the repository {root}") from None


@dataclass
class _TaskGate:
    """The per-task steps of one gate run, with what they share."""

    policy_cfg: Config  # the base's config: the policy every task is judged by
    device: str
    measured: bool
    threshold: float
    settings: ABSettings
    stages: tuple[str, ...] | None
    work_dir: Path | None
    deadline: float
    clock: Callable[[], float]
    say: Callable[[str], None]

    def verdict(self, plan: TaskPlan, env: dict[str, str] | None = None) -> TaskVerdict:
        """The task's verdict; `env` is what its processes add to their environment (a slot's GPU)."""
        blank = TaskVerdict(task=plan.name, verdict="error", reason="", path=plan.path, changed=plan.changed,
                            threshold=self.threshold)
        if plan.status == "removed":
            return replace(blank, verdict="removed",
                           reason=f"removed from the config in head; {plan.note}. The base gates it, so this "
                                  "blocks until someone with write access, other than the author, approves the "
                                  "head commit (a task renamed is this one removed and a new one added)")
        try:
            return self._gate(plan, blank, dict(env or {}))
        except AutokernelError as exc:
            return replace(blank, reason=f"could not be checked: {exc}")
        except Exception as exc:  # noqa: BLE001 - one task's surprise must not hide the other verdicts
            return replace(blank, reason=f"could not be checked: internal error {type(exc).__name__}: {exc}")

    def _gate(self, plan: TaskPlan, blank: TaskVerdict, env: dict[str, str]) -> TaskVerdict:
        from autokernel_ci.harness.sandbox import evaluate
        from autokernel_ci.tasks import config_task

        # The base's policy (reference, inputs, KernelBench file, shapes, tolerances, allow-list) from the
        # judged tree, where those files are the base's; the head's kernel at its head path.
        assert plan.policy_entry is not None and plan.policy_cfg is not None
        task = config_task(plan.policy_entry, plan.policy_cfg)
        self.say(f"{plan.name}: correctness of head ({plan.path})")
        result = evaluate(task, plan.head_path, device=self.device, stages=self.stages, work_dir=self.work_dir,
                          env_overrides=env or None)
        verdict = replace(blank, head_status=result.status.value, head_message=result.message,
                          head_result=result.to_dict())
        if not result.passed:
            return replace(verdict, verdict="fail", reason=f"head is not correct ({result.status.value}): "
                                                           f"{result.message}")
        if plan.status == "new":
            return replace(verdict, verdict="new", base_status="missing",
                           reason=f"new in head; passed correctness ({result.message}); nothing to time against")
        not_timed = "" if self.measured else f"; timing {NOT_MEASURED}"
        worker = ABWorker(task, plan.base_path, plan.head_path, self.device, self.settings, self.work_dir, env)
        try:
            if not self.measured:
                for record in worker.run(range(len(worker.plan.shapes)), []):  # each runs once: a crash?
                    worker.raise_side_errors(record)
                return replace(verdict, verdict="pass", base_status="ok",
                               reason=f"head passed correctness ({result.message}){not_timed}")
            if self.clock() >= self.deadline:
                return replace(verdict, verdict="inconclusive",
                               reason=f"head passed correctness ({result.message}); the time cap was reached "
                                      "before its timing started")
            self.say(f"{plan.name}: timing base vs head")
            shapes = self._time(task, worker)
        except TimingError as exc:
            return self._timing_failed(verdict, exc, result.message, not_timed)
        return timed_verdict(replace(verdict, base_status="ok"), shapes)

    def _time(self, task: KernelTask, worker: ABWorker) -> list[ShapeComparison]:
        device_name = _device_label(self.device)
        plan = worker.plan
        cached = {}
        for i, shape in enumerate(plan.shapes):
            hit = load_noise(noise_cache_path(device_name, task, shape, plan.dtype, self.settings))
            if hit is not None:
                cached[i] = hit
        indices = range(len(plan.shapes))
        comparisons = [{"name": "ab", "a": "base", "b": "head", "rounds": self.settings.min_rounds}]
        need_aa = len(cached) < len(plan.shapes)
        if need_aa:
            aa_rounds = self.settings.aa_pairs * self.settings.min_rounds
            comparisons.insert(0, {"name": "aa", "a": "head", "b": "head_copy", "rounds": aa_rounds})
        records = worker.run(indices, comparisons, head_copy=need_aa)
        shapes = []
        for i, (shape, record) in enumerate(zip(plan.shapes, records)):
            first_rounds = worker.rounds_of(record, "ab")
            if i in cached:
                (noise, ratios), source = cached[i], "cached"
            else:
                noise, ratios = noise_from_aa(worker.rounds_of(record, "aa"), self.settings.min_rounds,
                                              self.settings.confidence)
                source = "measured"
                save_noise(noise_cache_path(device_name, task, shape, plan.dtype, self.settings), noise, ratios)
            pending = [first_rounds]

            def open_session(index: int = i, pending: list = pending) -> MeasureRound:
                return worker.session(index, pending.pop() if pending else None)

            remaining = max(self.deadline - self.clock(), 0.0)
            decision, measurements = compare(open_session, self.threshold, noise, settings=self.settings,
                                             time_cap_s=remaining, clock=self.clock)
            shapes.append(shape_comparison(shape, plan.dtype, decision, measurements, noise, source, ratios))
        return shapes

    def _timing_failed(self, verdict: TaskVerdict, exc: TimingError, head_message: str, not_timed: str) -> TaskVerdict:
        if exc.side == "base":
            return replace(verdict, verdict="pass", base_status="crashed", base_message=str(exc),
                           reason=f"base crashed ({exc}); nothing to time against. Head passed correctness "
                                  f"({head_message}){not_timed}")
        if exc.side == "head":
            return replace(verdict, verdict="fail", base_status="ok",
                           reason=f"head crashed while being timed against base: {exc}")
        return replace(verdict, verdict="error", reason=f"base vs head could not be timed: {exc}")


def _device_label(device: str) -> str:
    if device == "cpu":
        return "cpu (Triton interpreter)"
    import torch

    return torch.cuda.get_device_name()


def _environment() -> dict[str, str]:
    import platform

    env = {"python": platform.python_version()}
    try:
        import torch

        env["torch"] = torch.__version__
        if torch.cuda.is_available():
            env["cuda"] = str(torch.version.cuda)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:  # pragma: no cover - triton is a dependency
        pass
    return env
