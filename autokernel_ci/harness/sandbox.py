"""Sandboxed evaluation: run a candidate in a child process and judge what it sends back.

The child gets a time limit, an environment with no tokens or keys, its own CUDA context and a
process group of its own, so a hang, a segfault, an abort or an `os._exit` ends the child and never
the caller. What it reports is data: parsed, validated, and judged here against a float64 reference
it never saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import CandidateError, HarnessError
from autokernel_ci.results import EvalResult, Finding, Status

if TYPE_CHECKING:
    from autokernel_ci.tasks import KernelTask

SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
SECRET_PREFIXES = ("GITHUB_", "ACTIONS_", "RUNNER_", "AWS_", "AZURE_", "GOOGLE_", "OPENAI_", "ANTHROPIC_")
DEFAULT_TIMEOUT_S = 600.0
# A time this far under the measured roofline is not a record, it is a measurement the candidate fooled.
IMPOSSIBLE_PCT = 110.0
# Wall time between whole-device synchronizes this much above the events' time: work hidden elsewhere.
HIDDEN_WORK_RATIO = 1.5
HIDDEN_WORK_MIN_US = 2.0


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
    input_sets: int = 1
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


def child_environment(env: Mapping[str, str] | None = None, device: str = "cpu") -> dict[str, str]:
    """The parent's environment less anything that looks like a credential, plus the worker's settings."""
    env = os.environ if env is None else env
    clean = {k: v for k, v in env.items() if not SECRET_NAME.search(k) and not k.startswith(SECRET_PREFIXES)}
    package_root = str(Path(__file__).resolve().parents[2])
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, clean.get("PYTHONPATH", "")) if p)
    # Bytecode goes to a cache of ours, never beside the sources: not into the user's repository or a
    # candidate's folder, and not skipped either, since a worker that compiles torch's modules from
    # source on a machine without .pyc files (a --no-compile install, PYTHONDONTWRITEBYTECODE in a
    # container) spends ~6 s on it every evaluation (on an H100 runner: 6.2 s of a worker's 11.9 s;
    # benchmarks/RESULTS.md, run 5).
    # Candidates are always compiled from source (tasks.load_module_from_path).
    clean.pop("PYTHONDONTWRITEBYTECODE", None)
    clean.setdefault("PYTHONPYCACHEPREFIX", str(_pycache_dir(env)))
    clean["PYTHONUNBUFFERED"] = "1"
    if device == "cpu":
        clean["TRITON_INTERPRET"] = "1"
    else:
        clean.pop("TRITON_INTERPRET", None)
    return clean


def _pycache_dir(env: Mapping[str, str]) -> Path:
    """Absolute: the worker runs in a temporary folder of its own."""
    from autokernel_ci.harness.device import CACHE_ENV, cache_root

    return (cache_root(env.get(CACHE_ENV)) / "pycache").absolute()


class EvaluationCancelled(HarnessError):
    """The evaluation was cancelled before the worker finished (the caller is shutting down)."""


@dataclass
class WorkerRun:
    returncode: int | None
    timed_out: bool
    seconds: float
    log_tail: str
    result: dict[str, Any] | None
    out_dir: Path


def run_worker(request: dict[str, Any], out_dir: Path, timeout: float, env: dict[str, str],
               on_progress: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None, standby: bool = False) -> WorkerRun:
    """Start the worker on `request`, wait at most `timeout` seconds, and collect what it wrote.

    Setting `cancel` (from another thread: a pool shutting down) kills the worker and raises
    `EvaluationCancelled`; the worker lives in its own session and would otherwise outlive the caller.
    `standby`: hand the request to a worker started ahead with the same environment, if there is one,
    and start the next (`harness.standby`); the time limit counts from the hand-over."""
    from autokernel_ci.harness import standby as standby_workers

    request = {**request, "out_dir": str(out_dir)}
    request_path = out_dir / "request.json"
    request_path.write_text(json.dumps(request))
    log_path = out_dir / "worker.log"
    handed = standby_workers.take(env, request_path) if standby and standby_workers.enabled(env) else None
    start = time.monotonic()
    with open(log_path, "ab") as log:
        if handed is not None:
            proc = handed.proc
        else:
            proc = subprocess.Popen(
                [sys.executable, "-m", "autokernel_ci.harness.worker", str(request_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out_dir,
                start_new_session=True,
            )
        timed_out = False
        seen = 0
        try:
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if cancel is not None and cancel.is_set():
                        raise EvaluationCancelled("the evaluation was cancelled") from None
                    if time.monotonic() - start > timeout:
                        timed_out = True
                        _kill_group(proc)
                        break
                if on_progress is not None:
                    done = _count_lines(out_dir / "progress.log")
                    if done != seen:
                        seen = done
                        on_progress(done)
        except BaseException:
            # Ctrl-C or SIGTERM in the caller: the worker has its own session and would outlive us.
            _kill_group(proc)
            raise
        finally:
            if handed is not None:
                shutil.rmtree(handed.home, ignore_errors=True)
    seconds = time.monotonic() - start
    result = None
    result_path = out_dir / "result.json"
    if result_path.is_file() and not timed_out:
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            result = None
    tail = log_path.read_bytes()[-4000:].decode("utf-8", "replace") if log_path.is_file() else ""
    return WorkerRun(proc.returncode, timed_out, seconds, tail, result, out_dir)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def validate_worker_result(data: Any, n_cases: int) -> str | None:
    """Why the worker's report cannot be trusted as data, or None. A candidate could tamper with it."""
    if not isinstance(data, dict) or data.get("protocol") != 1:
        return "the worker's report is not a protocol-1 JSON object"
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
             cancel: threading.Event | None = None, standby: bool = False) -> EvalResult:
    """Static checks, then the worker, then judgement: the whole correctness gate for one candidate.

    `env_overrides` are added to the worker's environment before credentials are stripped (a pool
    pins each worker to its GPU with `CUDA_VISIBLE_DEVICES`); `cancel` is passed to `run_worker`.
    `standby`: for callers that evaluate one candidate after another (the loop): the worker is taken
    from, and the next one started into, `harness.standby`."""
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
    result = EvalResult(status=Status.PASS, task=task.name, candidate=str(path),
                        candidate_sha256=hashlib.sha256(source.encode()).hexdigest(),
                        device=_device_label(device), representative_timing=False, environment=_environment())

    findings = anticheat.scan_source(source, allow=task.allow, entry=task.entry)
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
    result.seeds, result.plan_seed = [c.seed for c in cases], seed
    request = {"task": task.to_wire(), "candidate": str(path.resolve()), "device": device,
               "cases": [c.to_wire() for c in cases], "poison": True,
               "timing": timing.to_wire() if timing else None}
    with tempfile.TemporaryDirectory(prefix="autokernel-eval-", dir=work_dir) as tmp:
        progress = (lambda done: on_progress(done, len(cases))) if on_progress else None
        env = child_environment({**os.environ, **env_overrides} if env_overrides else None, device=device)
        # `cancel` and `standby` only when given: wrappers of run_worker (benchmarks/) keep working.
        extra = {**({"cancel": cancel} if cancel else {}), **({"standby": True} if standby else {})}
        run = run_worker(request, Path(tmp), timeout, env, progress, **extra)
        result.worker_log = run.log_tail[-2000:]
        if run.timed_out:
            return _finish(result, Status.TIMEOUT, f"the candidate ran past the {timeout:g} s limit "
                           f"(during case {_count_lines(Path(tmp) / 'progress.log')} of {len(cases)})", started)
        data = run.result
        if data is not None and data.get("import_error"):
            return _finish(result, Status.CRASH, f"the candidate failed to import: {data['import_error']}", started)
        if run.returncode != 0 or data is None:
            return _finish(result, Status.CRASH, _crash_message(run, len(cases)), started)
        problem = validate_worker_result(data, len(cases))
        if problem:
            return _finish(result, Status.CRASH, problem, started)
        gpu = data.get("gpu")
        if isinstance(gpu, dict):  # informational: which card the worker saw (a pool pins one per worker)
            result.environment.update({f"gpu_{k}": str(gpu[k])[:80] for k in ("uuid", "visible") if k in gpu})
        dynamic = _dynamic_findings(task, data, anticheat, cases, device)
        if dynamic:
            return _finish(result, Status.REJECTED, _findings_message(dynamic), started, findings=dynamic)
        result = _judge(task, cases, data, Path(tmp), device, plan_notes, result, started)
        if result.status is Status.FAIL and include_bench_shapes is None:
            from autokernel_ci.harness.correctness import reproduce_command

            result.reproduce = reproduce_command(task, path, seed, tuple(stages or STAGES), device)
    if result.status is Status.PASS and timing is not None:
        result = _attach_timings(task, data, timing, device, result, work_dir, env_overrides)
        suspicious = timing_findings(result)
        if suspicious:
            return _finish(result, Status.REJECTED, _findings_message(suspicious), started, findings=suspicious)
        result.duration_s = round(time.monotonic() - started, 3)
    return result


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
    pct, source = (None, None)
    if raw["median_us"] > 0:
        kind = "tf32" if raw["dtype"] == "fp32" and spec.bound == "compute" else raw["dtype"]
        pct, source = pct_of_roofline(nbytes, nflops, kind, raw["median_us"] * 1e-6, ceilings, spec.bound)
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
    request = {"task": task.to_wire(), "candidate": None, "device": device, "cases": [], "timing": plan.to_wire()}
    with tempfile.TemporaryDirectory(prefix="autokernel-baselines-", dir=work_dir) as tmp:
        env = child_environment({**os.environ, **env_overrides} if env_overrides else None, device=device)
        run = run_worker(request, Path(tmp), DEFAULT_TIMEOUT_S, env)
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


def _judge(task, cases, data, out_dir: Path, device: str, plan_notes: list[str], result: EvalResult,
           started: float) -> EvalResult:
    import torch

    from autokernel_ci.harness.correctness import judge_case, judge_determinism, stage_evidence

    outputs: dict[int, tuple[Any, ...] | None] = {}
    evidence = []
    for case, report in zip(cases, data["cases"]):
        path = out_dir / f"case_{case.index}.pt"
        out = None
        if path.is_file():
            try:
                out = torch.load(path, map_location=device, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a corrupt output file is the candidate's failure
                report = {**report, "output_problem": f"its outputs could not be read back ({type(exc).__name__})"}
        outputs[case.index] = out
        evidence.append(judge_case(task, case, out, report, device))
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


def _dynamic_findings(task, data: dict[str, Any], anticheat, cases, device: str) -> list[Finding]:
    findings = [Finding(**f) for f in data.get("module_state", []) if isinstance(f, dict)]
    ops: set[str] = set()
    for case in data["cases"]:
        ops.update(str(op) for op in case.get("ops", {}))
    allowed = tuple(task.allow)
    if task.kind == "kernelbench":
        # A KernelBench ModelNew may keep some of Model's layers in PyTorch; what it may not do is run
        # the operators the reference itself runs (that is the work it claims to have replaced).
        allowed += tuple(sorted(ops - _reference_ops(task, cases[0], device, anticheat)))
    findings += anticheat.classify_ops(sorted(ops), allowed=allowed)
    return findings


def _reference_ops(task, case, device: str, anticheat) -> set[str]:
    from autokernel_ci.harness.correctness import make_case_inputs
    args = make_case_inputs(task.spec.make_inputs, case, device)
    recorder = anticheat.OpRecorder()
    with recorder:
        task.spec.reference(*args, seed=case.seed)
    return set(recorder.counts())


def _findings_message(findings: list[Finding]) -> str:
    first = findings[0]
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return f"{first.rule} at {first.where()}: {first.message}{more}"


def _crash_message(run: WorkerRun, n_cases: int) -> str:
    code = run.returncode
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with status {code} before reporting"
    done = _count_lines(run.out_dir / "progress.log")
    where = f" during case {done} of {n_cases}" if done else " before the first case (at import?)"
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
