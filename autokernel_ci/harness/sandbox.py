"""Sandboxed evaluation: run a candidate in a sandboxed worker and judge what it sends back.

Every worker runs inside bubblewrap (`harness.bwrap`): its own namespaces, no network, no view of
other processes or of the runner's files, an environment from an allowlist, one scratch folder.
The parent sends it each case just in time and reads its results as a stream of messages
(`harness.session`, `harness.stream`), watches it from /proc (`harness.watch`), and judges the
outputs against a float64 reference the worker never saw: computed here for the built-in ops, and
for a config task's or a KernelBench file's own reference (repository code) in a second sandboxed
worker that runs nothing but that reference. A hang, a crash, an `os._exit` or a late rewrite ends
as TIMEOUT or CRASH, never as the caller's failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import CandidateError, HarnessError, TaskError
from autokernel_ci.harness import bwrap, bytecode
from autokernel_ci.harness.session import EvaluationCancelled, Session, WorkerRun, spawn
from autokernel_ci.results import EvalResult, Finding, Status

if TYPE_CHECKING:
    from autokernel_ci.tasks import KernelTask

__all__ = ["EvaluationCancelled", "TimingPlan", "WorkerRun", "child_environment", "evaluate", "run_worker"]

DEFAULT_TIMEOUT_S = 600.0
# A time this far under the measured roofline is not a record, it is a measurement the candidate fooled.
IMPOSSIBLE_PCT = 110.0
# Wall time between whole-device synchronizes this much above the events' time: work hidden elsewhere.
HIDDEN_WORK_RATIO = 1.5
HIDDEN_WORK_MIN_US = 2.0
# Timed calls whose outputs are kept and judged like a correctness case, picked when timing starts.
TIMED_CHECKS = 3
# What the parent copies back from a worker's private caches (Triton's, load_inline's builds) at most.
CACHE_COPY_LIMIT = 512 * 1024**2


@dataclass
class TimingPlan:
    """Which shapes to time and how; travels to the worker as JSON."""

    shapes: list[dict[str, int]]
    dtype: str
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    min_reps: int = 20
    max_reps: int = 1000
    flush_l2: bool = True
    cuda_graph: bool = False
    # Two sets of inputs in turn: an output left in memory by the previous call (a kernel that skips its work
    # while timed and returns a reused buffer) belongs to the other set, and the judged timed calls see it.
    input_sets: int = 2
    seed: int = 1
    baselines: tuple[str, ...] = field(default=("eager", "vendor", "compile"))

    @classmethod
    def for_task(cls, task: KernelTask, device: str) -> TimingPlan:
        """The benchmark shapes in bf16 (when the task allows it) on a GPU; one small shape, briefly, on the
        CPU interpreter, where the numbers only show that timing works."""
        spec = task.spec
        dtype = "bf16" if "bf16" in spec.dtypes else spec.dtypes[0]
        if device == "cpu":
            return cls(shapes=[dict(spec.test_shapes[len(spec.test_shapes) // 2])], dtype=spec.dtypes[0],
                       warmup_ms=1.0, rep_ms=10.0, min_reps=3, max_reps=10, flush_l2=False, baselines=())
        return cls(shapes=[dict(s) for s in spec.bench_shapes], dtype=dtype)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


def child_environment(env: Mapping[str, str] | None = None, device: str = "cpu",
                      mode: str | None = None) -> dict[str, str]:
    """A worker's environment: the allowlisted variables of `env` (nothing else, whatever its name)
    plus the worker's settings. In the `process` mode (no OS sandbox) bytecode goes to a cache of
    ours; inside bubblewrap nothing is written, and the bytecode read is the interpreter's own or, where
    the packages were installed without it, the folder the parent filled (`harness.bytecode`)."""
    env = os.environ if env is None else env
    mode = mode or bwrap.sandbox_mode(env)
    clean = bwrap.allowed_environment(env)
    clean.setdefault("PATH", os.defpath)
    clean["PYTHONPATH"] = str(bwrap.package_root())
    clean["PYTHONUNBUFFERED"] = "1"
    clean["PYTHONNOUSERSITE"] = "1"
    clean.setdefault("OMP_NUM_THREADS", "1")  # no thread pool of torch's own that could hide a candidate's
    if mode == "process":
        # Not beside the sources (the user's repository, a candidate's folder), and not skipped either:
        # a worker that compiles torch from source every time spends seconds on it.
        clean["PYTHONPYCACHEPREFIX"] = env.get("PYTHONPYCACHEPREFIX") or str(_pycache_dir(env))
    else:
        clean["PYTHONDONTWRITEBYTECODE"] = "1"
        trusted = bytecode.folder(device, env)
        if trusted is not None:
            clean["PYTHONPYCACHEPREFIX"] = str(trusted)  # bound read-only by bwrap.command
    if device == "cpu":
        clean["TRITON_INTERPRET"] = "1"
    return clean


def _pycache_dir(env: Mapping[str, str]) -> Path:
    """Absolute: the worker runs in a temporary folder of its own."""
    from autokernel_ci.harness.device import CACHE_ENV, cache_root

    return (cache_root(env.get(CACHE_ENV)) / "pycache").absolute()


def mounts_for(request: dict[str, Any], device: str) -> bwrap.Mounts:
    """What a worker for `request` must see read-only: the task's repository or KernelBench folder and
    the folder of every candidate it imports."""
    wire = request.get("task") or {}
    paths: list[Any] = [wire.get("root")]
    if wire.get("kernelbench"):
        paths.append(Path(wire["kernelbench"]).parent)
    if request.get("candidate"):
        paths.append(Path(request["candidate"]).parent)
    for path in (request.get("candidates") or {}).values():
        paths.append(Path(path).parent)
    return bwrap.Mounts(scratch=Path("/"), read_only=bwrap.read_only_paths(paths), gpu=device == "cuda")


def run_worker(request: dict[str, Any], out_dir: Path | None, timeout: float, env: dict[str, str],
               on_progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
               standby: bool = False, cases: list[dict[str, Any]] | None = None,
               before_case: Callable[[dict[str, Any]], None] | None = None,
               after_cases: Callable[[bool], dict[str, Any] | None] | None = None,
               cache_key: str | None = None, mode: str | None = None) -> WorkerRun:
    """Start a sandboxed worker on `request` (or hand it to one started ahead, `standby`), feed it
    `cases` one at a time (`before_case(case)` first: the reference side), then the line
    `after_cases(all_clean)` returns (the timing plan), and collect what it sent. `out_dir`: the
    scratch folder to give it (None: one of its own, removed after). The time limit counts from the
    hand-over. Setting `cancel` kills the worker and raises `EvaluationCancelled`."""
    from autokernel_ci.harness import standby as standby_workers

    mode = mode or bwrap.sandbox_mode()
    device = request.get("device", "cpu")
    mounts = mounts_for(request, device)
    if env.get("AUTOKERNEL_WORKER_PROFILE"):  # the harness's own profiler output (benchmarks/eval_profile.py)
        mounts = bwrap.Mounts(scratch=mounts.scratch, read_only=mounts.read_only, gpu=mounts.gpu,
                              writable=(*mounts.writable, Path(env["AUTOKERNEL_WORKER_PROFILE"]).resolve()))
    handed = standby_workers.take(env, mounts, mode) if standby and standby_workers.enabled(env) else None
    process = handed or spawn(env, mounts, mode, scratch=Path(out_dir) if out_dir else None)
    if cache_key:
        _restore_cache(cache_key, process.scratch)
    eval_mode = request.get("mode") in (None, "eval") and request.get("candidate") is not None
    session = Session(process, request, timeout, cancel=cancel, watch=eval_mode)
    try:
        if eval_mode and session.wait("ready", 1):
            session.mark_ready()
        if cases is not None:
            clean = session.wait("imported", 1) and not (session.process.reader.messages
                                                         and _import_error(session.process.reader.messages))
            for i, case in enumerate(cases if clean else []):
                if before_case is not None:
                    before_case(case)
                session.send({"case": case})
                if not session.wait("case", i + 1):
                    clean = False
                    break
                report = session.process.reader.messages[-1].header.get("report") or {}
                clean = clean and not (report.get("error") or report.get("output_problem"))
                if on_progress is not None:
                    on_progress(i + 1)
            tail = after_cases(clean) if after_cases is not None else None
            session.send({"end": True, **(tail or {})})
        run = session.finish()
    except BaseException:
        session.cleanup()
        raise
    if cache_key and run.problem is None and not run.timed_out:
        _save_cache(cache_key, process.scratch)
    run.result = assemble(run)
    if out_dir is not None:  # where callers look for the steps, written by us after the worker is gone
        (Path(out_dir) / "progress.log").write_text("".join(f"{step}\n" for step in run.progress))
    session.cleanup()
    return run


def _import_error(messages) -> str | None:
    imported = next((m for m in messages if m.kind == "imported"), None)
    return imported.header.get("import_error") if imported is not None else None


def assemble(run: WorkerRun) -> dict[str, Any] | None:
    """The worker's messages as one report: what the judging below reads. None when nothing usable came."""
    if not run.messages:
        return None
    data: dict[str, Any] = {"protocol": 2, "cases": [], "module_state": [], "import_error": None, "timings": [],
                            "baselines": [], "gpu": None, "timed_outputs": [], "outputs": {}}
    for message in run.messages:
        h = message.header
        if message.kind == "ready":
            data["gpu"] = h.get("gpu")
        elif message.kind == "imported":
            data["import_error"] = h.get("import_error")
            data["module_state"] += list(h.get("module_state") or [])
        elif message.kind == "case":
            report = h.get("report") if isinstance(h.get("report"), dict) else {}
            data["cases"].append(report)
            data["outputs"][len(data["cases"]) - 1] = message.tensors if message.tensors else None
        elif message.kind == "timings":
            data["timings"] = list(h.get("timings") or [])
        elif message.kind == "timed_output":
            data["timed_outputs"].append({**h, "outputs": message.tensors})
        elif message.kind == "baselines":
            data["baselines"] = list(h.get("baselines") or [])
        elif message.kind == "state":
            data["module_state"] += list(h.get("module_state") or [])
        elif message.kind == "ab":
            return h.get("result") if isinstance(h.get("result"), dict) else None
        elif message.kind == "task_error":
            data["task_error"] = h.get("error")
        elif message.kind == "done":
            data["phases_s"] = h.get("phases_s", {})
    return data


def _cache_dir(key: str) -> Path:
    from autokernel_ci.harness.device import cache_root

    return cache_root() / "sandbox" / key


def _restore_cache(key: str, scratch: Path) -> None:
    """Copy what the last evaluation of these same files built (Triton binaries, load_inline builds)
    into this worker's scratch. The cache is keyed by the digest of the evaluated sources: a worker can
    only ever leave builds for the files it was given, so one candidate's build never stands in for
    another's."""
    src = _cache_dir(key)
    if src.is_dir():
        shutil.copytree(src, scratch / ".cache", symlinks=True, dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if os.path.islink(os.path.join(d, n))])


def _save_cache(key: str, scratch: Path) -> None:
    src = scratch / ".cache"
    if not src.is_dir():
        return
    size = sum(f.stat().st_size for f in src.rglob("*") if f.is_file() and not f.is_symlink())
    if size == 0 or size > CACHE_COPY_LIMIT:
        return
    dest = _cache_dir(key)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, symlinks=True,
                        ignore=lambda d, names: [n for n in names if os.path.islink(os.path.join(d, n))])
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def validate_worker_result(data: Any, n_cases: int) -> str | None:
    """Why the worker's report cannot be trusted as data, or None. A candidate could tamper with it."""
    if not isinstance(data, dict) or data.get("protocol") != 2:
        return "the worker's report is not a protocol-2 object"
    if data.get("import_error") is not None:
        return None if isinstance(data["import_error"], str) else "import_error is not a string"
    cases = data.get("cases")
    if not isinstance(cases, list) or len(cases) != n_cases:
        return f"the worker reported {len(cases) if isinstance(cases, list) else 'no'} cases, expected {n_cases}"
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or case.get("index") != i:
            return f"case {i} of the worker's report is malformed"
        if not isinstance(case.get("ops", {}), dict) or not isinstance(case.get("inputs_changed", []), list):
            return f"case {i} of the worker's report has malformed fields"
    if not isinstance(data.get("module_state", []), list):
        return "module_state is not a list"
    return None


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CandidateError("--device cuda was asked for, but no CUDA GPU is visible to torch")
    if device not in ("cpu", "cuda"):
        raise CandidateError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    return device


def evaluate(task: KernelTask, candidate: str | Path, *, device: str | None = None,
             timeout: float = DEFAULT_TIMEOUT_S, seed: int | None = None, stages: tuple[str, ...] | None = None,
             include_bench_shapes: bool | None = None, work_dir: Path | None = None,
             timing: TimingPlan | None = None,
             on_progress: Callable[[int, int], None] | None = None,
             env_overrides: Mapping[str, str] | None = None,
             cancel: threading.Event | None = None, standby: bool = False,
             sandbox: str | None = None) -> EvalResult:
    """Static checks, then the sandboxed worker, then judgement: the whole correctness gate for one candidate.

    `env_overrides` are added to the worker's environment before it is filtered (a pool pins each
    worker to its GPU with `CUDA_VISIBLE_DEVICES`); `cancel` is passed to `run_worker`. `standby`: for
    callers that evaluate one candidate after another (the loop): the worker is taken from, and the
    next one started into, `harness.standby`. `sandbox`: the mode, for the harness's own trusted runs
    (`harness.bytecode`); otherwise `bwrap.sandbox_mode()` decides."""
    from autokernel_ci.harness import anticheat
    from autokernel_ci.harness.correctness import STAGES, plan_cases

    started = time.monotonic()
    path = Path(candidate)
    if not path.is_file():
        raise CandidateError(f"candidate file not found: {path}")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CandidateError(f"cannot read candidate {path}: {exc}") from None
    device = resolve_device(device)
    mode = sandbox or bwrap.sandbox_mode()
    result = EvalResult(status=Status.PASS, task=task.name, candidate=str(path),
                        candidate_sha256=hashlib.sha256(source.encode()).hexdigest(),
                        device=_device_label(device), representative_timing=False, environment=_environment(),
                        sandbox=bwrap.label(mode))

    findings = anticheat.scan_candidate(path, source, allow=task.allow, entry=task.entry)
    syntax = [f for f in findings if f.rule == "static.syntax"]
    if syntax:
        return _finish(result, Status.CRASH, f"the candidate does not compile ({syntax[0].where()}): "
                       f"{syntax[0].message}", started, findings=syntax)
    if findings:
        return _finish(result, Status.REJECTED, _findings_message(findings), started, findings=findings)

    if seed is None:  # a fresh plan seed, recorded, so that a failure can be reproduced from it
        seed = random.SystemRandom().randrange(1, 2**31 - 1)
    cases, plan_notes = plan_cases(task.spec, device, seed=seed, stages=stages or STAGES,
                                   include_bench_shapes=include_bench_shapes)
    if device == "cpu":
        plan_notes += anticheat.interpreter_notes(source)
    result.seeds, result.plan_seed = [c.seed for c in cases], seed
    # The worker learns a case (its shape, dtype and seed) only when the parent sends it.
    request = {"task": task.to_wire(), "candidate": str(path.resolve()), "device": device, "poison": True,
               "n_cases": len(cases)}
    env = child_environment({**os.environ, **env_overrides} if env_overrides else None, device=device, mode=mode)
    reference = _ReferenceSide(task, device, env, timeout, mode, cancel, work_dir)

    def after_cases(clean: bool) -> dict[str, Any] | None:
        if timing is None or not clean:
            return None
        # Which timed calls are kept and judged: drawn now, from the OS, never from the case seeds.
        picks = random.SystemRandom().sample(range(1, max(timing.min_reps, TIMED_CHECKS) + 1), TIMED_CHECKS)
        return {"timing": {**timing.to_wire(), "check_calls": picks}}

    progress = (lambda done: on_progress(done, len(cases))) if on_progress else None
    # `cancel` and `standby` only when given: wrappers of run_worker (benchmarks/) keep working.
    extra = {**({"cancel": cancel} if cancel else {}), **({"standby": True} if standby else {})}
    try:
        run = run_worker(request, None, timeout, env, progress, cases=[c.to_wire() for c in cases],
                         before_case=reference.prepare, after_cases=after_cases,
                         cache_key=_cache_key([source], task, device, mode), mode=mode, **extra)
        result.worker_log = run.log_tail[-2000:]
        verdict = _verdict(task, cases, run, device, plan_notes, result, started, reference, timeout, anticheat)
        if verdict is not None:
            if verdict.status is Status.FAIL and include_bench_shapes is None:
                from autokernel_ci.harness.correctness import reproduce_command

                verdict.reproduce = reproduce_command(task, path, seed, tuple(stages or STAGES), device)
            return verdict
        data = run.result or {}
        timed = _judge_timed_outputs(task, data, timing, device, reference) if timing is not None else None
    finally:
        reference.close()
    if timed:
        return _finish(result, Status.FAIL, timed, started)
    if result.status is Status.PASS and timing is not None:
        result.environment["timed_calls_checked"] = str(len(data.get("timed_outputs", [])))
        result = _attach_timings(task, data, timing, device, result, work_dir, env_overrides)
        suspicious = timing_findings(result)
        if suspicious:
            return _finish(result, Status.REJECTED, _findings_message(suspicious), started, findings=suspicious)
        result.duration_s = round(time.monotonic() - started, 3)
    return result


def _verdict(task, cases, run: WorkerRun, device: str, plan_notes: list[str], result: EvalResult, started: float,
             reference: _ReferenceSide, timeout: float, anticheat) -> EvalResult | None:
    """The result for everything but timing; None only on a PASS with timing still to attach."""
    data = run.result
    received = len((data or {}).get("cases", []))
    if run.timed_out:
        doing = f"during case {received + 1} of {len(cases)}" if received < len(cases) else "while being timed"
        return _finish(result, Status.TIMEOUT, f"the candidate ran past the {timeout:g} s limit ({doing})", started)
    if data is not None and data.get("task_error"):
        raise TaskError(str(data["task_error"]))
    if data is not None and data.get("import_error"):
        return _finish(result, Status.CRASH, f"the candidate failed to import: {data['import_error']}", started)
    if run.problem is not None or data is None:
        return _finish(result, Status.CRASH, _crash_message(run, len(cases)), started)
    problem = validate_worker_result(data, len(cases))
    if problem:
        return _finish(result, Status.CRASH, problem, started)
    gpu = data.get("gpu")
    if isinstance(gpu, dict):  # informational: which card the worker saw (a pool pins one per worker)
        result.environment.update({f"gpu_{k}": str(gpu[k])[:80] for k in ("uuid", "visible") if k in gpu})
    dynamic = list(run.findings) + _dynamic_findings(task, data, anticheat, reference)
    if dynamic:
        return _finish(result, Status.REJECTED, _findings_message(dynamic), started, findings=dynamic)
    judged = _judge(task, cases, data, device, plan_notes, result, started, reference)
    return judged if judged.status is not Status.PASS or not data.get("timings") else None


def _cache_key(sources: list[str], task: KernelTask, device: str, mode: str) -> str:
    """The private build cache of exactly these sources, on this device, with this torch, in this sandbox
    mode (an unsandboxed worker could write anything there: its cache is never a sandboxed worker's)."""
    import torch

    ident = json.dumps([sources, task.name, device, mode, torch.__version__,
                        os.environ.get("TORCH_CUDA_ARCH_LIST", "")])
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


class _ReferenceSide:
    """The float64 reference of each case. For a built-in op it is computed here (package code); for a
    config task's or a KernelBench file's own reference, which is repository code, a second sandboxed
    worker runs it, case by case, and sends its outputs back. That worker never sees a candidate."""

    def __init__(self, task: KernelTask, device: str, env: dict[str, str], timeout: float, mode: str,
                 cancel: threading.Event | None, work_dir: Path | None) -> None:
        self.task, self.device = task, device
        self.remote = task.kind in ("config", "kernelbench")
        self.results: dict[int, Any] = {}
        self.ops: set[str] | None = None
        self.session: Session | None = None
        self._sent = 0
        if self.remote:
            request = {"mode": "reference", "task": task.to_wire(), "device": device}
            process = spawn(env, mounts_for(request, device), mode, work_dir=work_dir)
            self.session = Session(process, request, timeout, cancel=cancel, watch=False)

    def prepare(self, case: dict[str, Any]) -> None:
        if not self.remote or case["index"] in self.results:
            return
        assert self.session is not None
        self.session.send({"case": case})
        self._sent += 1
        if not self.session.wait("reference", self._sent):
            run_tail = self.session.process.log_tail().strip().splitlines()
            reason = self.session.process.reader.problem or (run_tail[-1][:200] if run_tail else "no output")
            first = next((m for m in self.session.process.reader.messages if m.kind == "task_error"), None)
            if first is not None:
                raise TaskError(str(first.header.get("error")))
            raise TaskError(f"{self.task.name}: the task's reference process stopped before case "
                            f"{case['index']} ({reason})")
        message = self.session.process.reader.messages[-1]
        if message.header.get("oom"):
            raise HarnessError(str(message.header["error"]))
        if message.header.get("error"):
            raise TaskError(f"{self.task.name}: {message.header['error']} (case {case['index']}, seed {case['seed']})")
        if self.ops is None and isinstance(message.header.get("ops"), list):
            self.ops = {str(op) for op in message.header["ops"]}
        self.results[case["index"]] = message

    def given(self, index: int) -> tuple[Any, ...] | None:
        """(reference outputs, inputs' floating dtype, kind problem) for judge_case, or None: computed there."""
        if not self.remote:
            return None
        import torch

        message = self.results[index]
        name = message.header.get("in_dtype")
        dtype = getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else None
        return tuple(t.to(self.device) for t in message.tensors), dtype, message.header.get("kind_problem")

    def close(self) -> None:
        if self.session is not None:
            self.session.close_input()
            self.session.cleanup()


def _judge_timed_outputs(task: KernelTask, data: dict[str, Any], timing: TimingPlan, device: str,
                         reference: _ReferenceSide) -> str | None:
    """Why a kept timed call's outputs are wrong (a FAIL message), or None when every one is right."""
    from autokernel_ci.harness.correctness import Case, judge_case

    for j, sample in enumerate(data.get("timed_outputs", [])):
        try:
            shape = timing.shapes[int(sample["shape_index"])]
            k = int(sample["input_set"])
        except (KeyError, IndexError, TypeError, ValueError):
            return "a timed call's outputs came back malformed"
        case = Case(100000 + j, "timing", dict(shape), timing.dtype, timing.seed + k)
        reference.prepare(case.to_wire())
        evidence = judge_case(task, case, tuple(sample["outputs"]) or None, {}, device, reference.given(case.index))
        if not evidence.passed:
            label = task.spec.shape_label(shape) if shape else "default inputs"
            return (f"a timed call (call {sample.get('call')}, {label} {timing.dtype}) returned a wrong result while "
                    f"its correctness checks passed: {evidence.message}")
    return None


def _attach_timings(task: KernelTask, data: dict[str, Any], plan: TimingPlan, device: str, result: EvalResult,
                    work_dir: Path | None, env_overrides: Mapping[str, str] | None = None) -> EvalResult:
    """ShapeTimings with bytes, flops and % of roofline, and the baselines measured in a clean process."""
    from autokernel_ci.harness.device import get_ceilings

    ceilings = get_ceilings() if device == "cuda" else None
    baselines = measure_baselines(task, plan, device, work_dir, env_overrides) if plan.baselines else {}
    result.representative_timing = device == "cuda"
    for raw in data.get("timings", []):
        timing = _shape_timing(task, raw, ceilings)
        key = _shape_key(raw["shape"], raw["dtype"])
        timing.baselines_us = {name: t for (k, name), t in baselines.items() if k == key}
        result.timings.append(timing)
    return result


def _shape_timing(task: KernelTask, raw: dict[str, Any], ceilings: Any):
    from autokernel_ci.harness.device import pct_of_roofline
    from autokernel_ci.ops.base import DTYPES
    from autokernel_ci.results import ShapeTiming

    spec = task.spec
    dtype = DTYPES[raw["dtype"]]
    nbytes = spec.bytes_moved(raw["shape"], dtype)
    nflops = spec.flops(raw["shape"], dtype)
    lower_bound = nbytes is None and nflops is None  # no cost model: the tensors' own bytes (harness/roofline.py)
    if lower_bound:
        from autokernel_ci.harness.roofline import LOWER_BOUND_LABEL, bytes_from_record

        nbytes = bytes_from_record(raw)
    pct, source = (None, None)
    if raw["median_us"] > 0:
        kind = "tf32" if raw["dtype"] == "fp32" and spec.bound == "compute" else raw["dtype"]
        bound = "memory" if lower_bound else spec.bound
        pct, source = pct_of_roofline(nbytes, nflops, kind, raw["median_us"] * 1e-6, ceilings, bound)
        if lower_bound and source:
            source = f"{source}, {LOWER_BOUND_LABEL}"
    return ShapeTiming(shape=dict(raw["shape"]), dtype=raw["dtype"], median_us=raw["median_us"],
                       iqr_us=raw["iqr_us"], count=raw["count"], samples_us=list(raw["samples_us"]),
                       bytes_moved=nbytes, flops=nflops, pct_roofline=pct, roofline_source=source,
                       sync_us=raw.get("sync_us"), batch_events_us=raw.get("batch_events_us"),
                       representative=bool(raw.get("representative")),
                       late_launches=int(raw.get("late_launches") or 0))


def _shape_key(shape: dict[str, int], dtype: str) -> str:
    return json.dumps([sorted(shape.items()), dtype])


def timing_findings(result: EvalResult) -> list[Finding]:
    """REJECTED, not a record: faster than the measured roofline allows, or work the events did not see."""
    findings = []
    for t in result.timings:
        if not t.representative:
            continue
        label = "×".join(map(str, t.shape.values())) + f" {t.dtype}"
        if t.pct_roofline is not None and t.pct_roofline > IMPOSSIBLE_PCT:
            findings.append(Finding(
                rule="timing.impossible", operator=label,
                message=f"measured {t.median_us:.2f} µs is {t.pct_roofline:.0f}% of the {t.roofline_source} roofline: "
                        "faster than the hardware allows, so the timing was fooled, not beaten"))
        if t.sync_us and t.batch_events_us and t.sync_us > HIDDEN_WORK_RATIO * t.batch_events_us \
                and t.sync_us - t.batch_events_us > HIDDEN_WORK_MIN_US:
            findings.append(Finding(
                rule="timing.side-stream", operator=label,
                message=f"a whole-device synchronize saw {t.sync_us:.2f} µs per call where the stream's events saw "
                        f"{t.batch_events_us:.2f} µs: work runs outside the timed stream"))
    return findings


def measure_baselines(task: KernelTask, plan: TimingPlan, device: str, work_dir: Path | None = None,
                      env_overrides: Mapping[str, str] | None = None) -> dict[tuple[str, str], float]:
    """{(shape key, baseline name): median µs}, timed in a worker with no candidate; cached per device,
    torch version, task and shape, since none of those changes between experiments. `env_overrides`:
    as for `evaluate` (a pool's worker times the baselines on its own GPU)."""
    import torch

    from autokernel_ci.harness.device import cache_root

    device_name = _device_label(device)
    ident = json.dumps([device_name, torch.__version__, task.to_wire(), asdict(plan)], sort_keys=True)
    cache = cache_root() / "baselines" / (hashlib.sha256(ident.encode()).hexdigest()[:24] + ".json")
    if cache.is_file():
        try:
            rows = json.loads(cache.read_text())
            return {(r[0], r[1]): float(r[2]) for r in rows}
        except (OSError, ValueError, IndexError, TypeError):
            pass
    request = {"mode": "baselines", "task": task.to_wire(), "candidate": None, "device": device,
               "timing": plan.to_wire()}
    env = child_environment({**os.environ, **env_overrides} if env_overrides else None, device=device)
    run = run_worker(request, None, DEFAULT_TIMEOUT_S, env)
    rows = []
    for raw in (run.result or {}).get("baselines", []):
        if isinstance(raw, dict) and isinstance(raw.get("median_us"), (int, float)):
            rows.append([_shape_key(raw["shape"], raw["dtype"]), raw["baseline"], float(raw["median_us"])])
    if rows:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(rows))
        except OSError:
            pass
    return {(r[0], r[1]): r[2] for r in rows}


def _judge(task, cases, data, device: str, plan_notes: list[str], result: EvalResult, started: float,
           reference: _ReferenceSide) -> EvalResult:
    from autokernel_ci.harness.correctness import judge_case, judge_determinism, stage_evidence

    outputs: dict[int, tuple[Any, ...] | None] = {}
    evidence = []
    for case, report in zip(cases, data["cases"]):
        host = data["outputs"].get(case.index)
        outputs[case.index] = host or None  # on the host: only the determinism pair is compared again
        out = tuple(t.to(device) for t in host) if host else None
        evidence.append(judge_case(task, case, out, report, device, reference.given(case.index)))
        del out
    notes: dict[str, list[str]] = {"shapes": list(plan_notes), "determinism": judge_determinism(cases, outputs)}
    result.stages = stage_evidence(cases, evidence, notes)
    failed = [e for e in evidence if not e.passed]
    if failed:
        first = failed[0]
        label = task.spec.shape_label(first.shape) if first.shape else "default inputs"
        message = (f"{len(failed)} of {len(evidence)} checks failed; first: stage {first.stage}, "
                   f"{label} {first.dtype} ({first.kind} inputs, seed {first.seed}): {first.message}")
        return _finish(result, Status.FAIL, message, started)
    flagged = notes["determinism"]
    message = f"all {len(evidence)} checks passed in {len(result.stages)} stages"
    if flagged:
        message += " (flagged: not bitwise deterministic)"
    return _finish(result, Status.PASS, message, started)


def _dynamic_findings(task, data: dict[str, Any], anticheat, reference: _ReferenceSide) -> list[Finding]:
    findings = [Finding(**f) for f in data.get("module_state", []) if isinstance(f, dict)]
    ops: set[str] = set()
    for case in data["cases"]:
        ops.update(str(op) for op in case.get("ops", {}))
    allowed = tuple(task.allow)
    if task.kind == "kernelbench":
        # A KernelBench ModelNew may keep some of Model's layers in PyTorch; what it may not do is run
        # the operators the reference itself runs (that is the work it claims to have replaced).
        allowed += tuple(sorted(ops - (reference.ops or set())))
    findings += anticheat.classify_ops(sorted(ops), allowed=allowed)
    return findings


def _findings_message(findings: list[Finding]) -> str:
    first = findings[0]
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return f"{first.rule} at {first.where()}: {first.message}{more}"


def _crash_message(run: WorkerRun, n_cases: int) -> str:
    code = run.returncode
    if code is not None and code > 128 and run.sandbox == bwrap.SANDBOXED:
        code = 128 - code  # bubblewrap reports a child killed by signal N as 128 + N
    if run.problem and run.problem != "the worker ended without sending its last message":
        how = f"broke the result stream: {run.problem}"
    elif code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with status {code} before reporting"
    done = len((run.result or {}).get("cases", []))
    imported = any(m.kind == "imported" for m in run.messages)
    where = f" during case {done + 1} of {n_cases}" if imported else " before the first case (at import?)"
    last = next((ln for ln in reversed(run.log_tail.strip().splitlines()) if ln.strip()), "")
    return f"the candidate process {how}{where}" + (f"; last output: {last[:200]}" if last else "")


def _finish(result: EvalResult, status: Status, message: str, started: float,
            findings: list[Finding] | None = None) -> EvalResult:
    result.status = status
    result.message = message
    if findings:
        result.findings = findings
    result.duration_s = round(time.monotonic() - started, 3)
    return result


def _device_label(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return "cpu (Triton interpreter)"


def _environment() -> dict[str, str]:
    import platform

    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:  # pragma: no cover - triton is a dependency
        env["triton"] = "missing"
    if torch.cuda.is_available():
        env["cuda"] = str(torch.version.cuda)
    return env
