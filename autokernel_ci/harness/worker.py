"""The worker: the only process that imports and runs a candidate.

    python -m autokernel_ci.harness.worker REQUEST.json
    python -m autokernel_ci.harness.worker --standby     # imports first, then the request's path on stdin

It draws each case's inputs from the seed in the request, calls the candidate, and writes back the
outputs (`case_<i>.pt`) and what it observed (`result.json`): exceptions, inputs that changed, the
torch operators the call ran, any change to the module state the harness relies on, and, when asked,
timings. It decides nothing: the parent judges, out of the candidate's reach. Exit codes: 0 done,
3 the candidate failed to import; anything else (a signal, an early os._exit) is a crash.

With no candidate in the request it times the baselines instead (eager reference, vendor op,
`torch.compile` of the reference), in a process the candidate never touched.

With `"mode": "ab"` it times candidates against each other instead (`_run_ab`): the pull-request
gate's base and head, imported as two modules of this one process and timed in interleaved rounds
on the same inputs, so drift in clocks and temperature falls on both alike.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOL = 1
EXIT_IMPORT_FAILED = 3


@dataclass
class _Context:
    torch: Any
    anticheat: Any
    make_inputs: Any
    task_module: Any
    wire: dict[str, Any]
    device: str
    out_dir: Path


_STARTED = time.perf_counter()  # the interpreter is up: what came before is Python's own start


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    out_dir = Path(request["out_dir"])
    phases: dict[str, float] = {}
    mark = _Stopwatch(phases)

    import torch
    import triton  # noqa: F401 - imported here so its cost is counted apart from the candidate's

    from autokernel_ci.harness import anticheat
    from autokernel_ci.tasks import task_inputs_from_wire

    wire = request["task"]
    make_inputs, task_module = task_inputs_from_wire(wire)
    ctx = _Context(torch, anticheat, make_inputs, task_module, wire, request["device"], out_dir)
    mark("imports")
    if request.get("mode") == "ab":
        return _run_ab(ctx, request)
    result: dict[str, Any] = {"protocol": PROTOCOL, "cases": [], "module_state": [], "import_error": None,
                              "timings": [], "baselines": [], "gpu": _gpu_identity(torch, ctx.device),
                              "phases_s": phases}
    mark("cuda_init")
    if request.get("candidate") is None:
        result["baselines"] = _time_baselines(ctx, request.get("timing") or {})
        mark("baselines")
        _write_result(out_dir, result)
        return 0

    state_before = anticheat.snapshot_module_state()
    try:
        entry = _import_candidate(Path(request["candidate"]), wire["entry"])
    except BaseException as exc:  # noqa: BLE001 - anything at import is the candidate's failure
        result["import_error"] = _describe(exc)
        _write_result(out_dir, result)
        return EXIT_IMPORT_FAILED
    result["module_state"] += _state_changes(anticheat, state_before)
    mark("candidate_import")

    # Poison: with deterministic algorithms on, torch.empty fills new float memory with NaN, so an
    # element the candidate never writes shows up as NaN instead of stale data that happens to be right.
    if request.get("poison", True):
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True
    from autokernel_ci.harness.correctness import Case

    with open(out_dir / "progress.log", "a", buffering=1) as progress:
        for raw in request["cases"]:
            case = Case(**raw)
            progress.write(f"{case.index}\n")
            result["cases"].append(_run_case(ctx, case, entry))
    mark("cases")
    if request.get("timing") and not any(c["error"] or c["output_problem"] for c in result["cases"]):
        torch.use_deterministic_algorithms(False)
        result["timings"] = _time_candidate(ctx, entry, request["timing"])
        mark("timing")
    result["module_state"] += _state_changes(anticheat, state_before)
    mark("module_state")
    _write_result(out_dir, result)
    return 0


class _Stopwatch:
    """`mark(name)` records the seconds since the previous mark (the first: since the interpreter was up)
    under `name`: where a worker's time goes, for the loop's speed reports. Informational only."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.last = _STARTED

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self.last, 4)
        self.last = now


def _gpu_identity(torch: Any, device: str) -> dict[str, str] | None:
    """Which physical GPU this worker got (its UUID) and what CUDA_VISIBLE_DEVICES said: how a pool's
    caller can check that every worker ran on its own card."""
    if device != "cuda":
        return None
    return {"uuid": str(torch.cuda.get_device_properties(0).uuid),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def _import_candidate(path: Path, entry_name: str, name: str = "autokernel_candidate"):
    from autokernel_ci.tasks import load_module_from_path

    sys.path.insert(0, str(path.resolve().parent))
    candidate = load_module_from_path(path, name=name)
    entry = getattr(candidate, entry_name, None)
    if entry is None or not callable(entry):
        raise AttributeError(f"the candidate defines no callable {entry_name!r}")
    return entry


def _callable_for(ctx: _Context, entry: Any, seed: int):
    """kernel_fn as it is; a KernelBench class instantiated the way the reference model is."""
    if ctx.wire["kind"] != "kernelbench":
        return entry
    from autokernel_ci.tasks import kernelbench_model

    return kernelbench_model(ctx.task_module, entry, seed, ctx.device)


def _run_case(ctx: _Context, case: Any, entry: Any) -> dict[str, Any]:
    from autokernel_ci.harness.correctness import make_case_inputs

    torch = ctx.torch
    report: dict[str, Any] = {"index": case.index, "error": None, "inputs_changed": [], "output_problem": None,
                              "ops": {}, "seconds": 0.0}
    try:
        args = make_case_inputs(ctx.make_inputs, case, ctx.device)
    except Exception as exc:  # noqa: BLE001 - the task's input factory failed, not the candidate (parent checks)
        report["input_error"] = _describe(exc)
        return report
    pristine = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    recorder = ctx.anticheat.OpRecorder()
    start = time.perf_counter()
    try:
        fn = _callable_for(ctx, entry, case.seed)
        with torch.no_grad(), recorder:
            out = fn(*args)
        if ctx.device == "cuda":
            torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - the candidate's exception is evidence, not our failure
        report["error"] = _describe(exc)
        return report
    finally:
        report["seconds"] = time.perf_counter() - start
        report["ops"] = dict(recorder.counts())
    report["inputs_changed"] = [i for i, (a, p) in enumerate(zip(args, pristine))
                                if isinstance(a, torch.Tensor) and not _same_bits(torch, a, p)]
    outs = out if isinstance(out, tuple) else (out,)
    problems = []
    for i, o in enumerate(outs):
        if type(o) is not torch.Tensor:
            problems.append(f"output {i} is a {type(o).__module__}.{type(o).__name__}, not a plain torch.Tensor")
        elif o.device.type != torch.device(ctx.device).type:
            problems.append(f"output {i} is on {o.device}, expected {ctx.device}")
    if problems:
        report["output_problem"] = "; ".join(problems)
        return report
    torch.save(tuple(o.detach().to("cpu", copy=True) for o in outs), ctx.out_dir / f"case_{case.index}.pt")
    return report


def _input_sets(ctx: _Context, shape: dict[str, int], dtype: str, seed: int, count: int) -> list[tuple[Any, ...]]:
    from autokernel_ci.harness.correctness import Case, make_case_inputs

    return [make_case_inputs(ctx.make_inputs, Case(-1, "timing", shape, dtype, seed + k), ctx.device)
            for k in range(count)]


def _timing_options(plan: dict[str, Any]) -> dict[str, Any]:
    keys = ("warmup_ms", "rep_ms", "min_reps", "max_reps", "flush_l2", "cuda_graph")
    return {k: plan[k] for k in keys if k in plan}


def _time_candidate(ctx: _Context, entry: Any, plan: dict[str, Any]) -> list[dict[str, Any]]:
    from autokernel_ci.harness.timing import time_fn

    out = []
    for shape in plan["shapes"]:
        sets = _input_sets(ctx, shape, plan["dtype"], plan.get("seed", 1), plan.get("input_sets", 1))
        fn = _callable_for(ctx, entry, plan.get("seed", 1))
        samples = time_fn(fn, input_sets=sets, device=ctx.device, **_timing_options(plan))
        out.append({"shape": shape, "dtype": plan["dtype"], **samples.to_dict()})
    return out


def _time_baselines(ctx: _Context, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Eager reference, vendor op and torch.compile of the reference, each timed like a candidate."""
    from autokernel_ci.harness.timing import time_fn

    torch = ctx.torch
    fns = _baseline_functions(ctx)
    out = []
    for shape in plan.get("shapes", []):
        sets = _input_sets(ctx, shape, plan["dtype"], plan.get("seed", 1), plan.get("input_sets", 1))
        for name in plan.get("baselines", ("eager", "vendor", "compile")):
            fn = fns.get(name)
            if fn is None:
                continue
            try:
                with torch.no_grad():
                    samples = time_fn(fn, input_sets=sets, device=ctx.device, **_timing_options(plan))
            except Exception as exc:  # noqa: BLE001 - a baseline that cannot run is reported, not fatal
                out.append({"shape": shape, "dtype": plan["dtype"], "baseline": name, "error": _describe(exc)})
                continue
            out.append({"shape": shape, "dtype": plan["dtype"], "baseline": name, **samples.to_dict()})
    return out


def _baseline_functions(ctx: _Context) -> dict[str, Any]:
    torch = ctx.torch
    if ctx.wire["kind"] == "kernelbench":
        from autokernel_ci.tasks import kernelbench_model

        model = kernelbench_model(ctx.task_module, ctx.task_module.Model, 1, ctx.device)
        return {"eager": model, "compile": torch.compile(model)}
    if ctx.wire.get("op"):
        from autokernel_ci.ops import get_op

        spec = get_op(ctx.wire["op"])
        fns = {"eager": spec.reference, "compile": torch.compile(spec.reference)}
        if spec.vendor is not None:
            fns["vendor"] = spec.vendor
        return fns
    return {}


def _run_ab(ctx: _Context, request: dict[str, Any]) -> int:
    """Time candidates against each other in this one process, in interleaved rounds on the same inputs.

    The request names the candidates (`candidates`: label → file, each imported as its own module,
    so "head" and "head_copy" of one file make an A/A pair), the comparisons (`comparisons`: name, a,
    b and the number of rounds) and the timing plan (`timing`). Per shape, every candidate is first
    called once untimed; one that fails to import or raises is reported under its label and left out,
    the others go on. Every round's samples go back: the parent decides, out of the candidates' reach.
    `progress.log` names each step as it starts, so a crash that kills the process can be blamed.
    """
    from autokernel_ci.harness.timing import ABTimer

    torch = ctx.torch
    result: dict[str, Any] = {"protocol": PROTOCOL, "mode": "ab", "import_errors": {}, "shapes": []}
    plan = request["timing"]
    seed = plan.get("seed", 1)
    with open(ctx.out_dir / "progress.log", "a", buffering=1) as progress:
        entries = {}
        for label, path in request["candidates"].items():
            progress.write(f"import {label}\n")
            try:
                before = set(sys.modules)
                entries[label] = _import_candidate(Path(path), ctx.wire["entry"], name=f"autokernel_candidate_{label}")
                _forget_sibling_modules(Path(path).resolve().parent, before)
            except BaseException as exc:  # noqa: BLE001 - anything at import is that candidate's failure
                result["import_errors"][label] = _describe(exc)
        for index, shape in enumerate(plan["shapes"]):
            sets = _input_sets(ctx, shape, plan["dtype"], seed, plan.get("input_sets", 1))
            record: dict[str, Any] = {"shape": shape, "dtype": plan["dtype"], "errors": {}, "comparisons": {}}
            fns = {}
            for label, entry in entries.items():
                progress.write(f"call {label} {index}\n")
                try:
                    fn = _callable_for(ctx, entry, seed)
                    fn(*sets[0])
                    if ctx.device == "cuda":
                        torch.cuda.synchronize()
                    fns[label] = fn
                except Exception as exc:  # noqa: BLE001 - the candidate's exception is evidence
                    record["errors"][label] = _describe(exc)
            for comparison in request.get("comparisons", []):
                a, b, name = comparison["a"], comparison["b"], comparison["name"]
                if a not in fns or b not in fns or comparison["rounds"] < 1:
                    continue
                progress.write(f"time {name} {index}\n")
                try:
                    timer = ABTimer(fns[a], fns[b], input_sets_a=sets, input_sets_b=sets, device=ctx.device,
                                    **_timing_options(plan))
                    rounds = [timer.measure_round() for _ in range(comparison["rounds"])]
                    record["comparisons"][name] = {"rounds": [{"a": ra, "b": rb} for ra, rb in rounds]}
                except Exception as exc:  # noqa: BLE001 - reported; the parent cannot tell which side
                    record["comparisons"][name] = {"error": _describe(exc)}
            result["shapes"].append(record)
            del sets, fns
    _write_result(ctx.out_dir, result)
    return 0


def _forget_sibling_modules(folder: Path, before: set[str]) -> None:
    """Drop modules a candidate imported from its own folder, so the next candidate imports its own copy."""
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules[name], "__file__", None)
        if origin and not name.startswith("autokernel_candidate") and Path(origin).resolve().is_relative_to(folder):
            del sys.modules[name]


def _state_changes(anticheat, before) -> list[dict[str, Any]]:
    return [vars(f) for f in anticheat.diff_module_state(before, anticheat.snapshot_module_state())]


def _same_bits(torch, a, b) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(a.isnan(), b.isnan())) and bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
    return bool(torch.equal(a, b))


def _describe(exc: BaseException) -> str:
    """One line naming the exception and where in the candidate it came from."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "autokernel_ci" not in f.filename]
    where = f" (line {frames[-1].lineno} of {Path(frames[-1].filename).name})" if frames else ""
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}{where}"[:500]


def _write_result(out_dir: Path, result: dict[str, Any]) -> None:
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, allow_nan=True))
    os.replace(tmp, out_dir / "result.json")


def standby() -> int:
    """`--standby` (harness.standby): import what every worker imports, then wait for one request's path
    on stdin and serve it as `main` would, with its output in the request's worker.log. EOF: exit."""
    global _STARTED
    import torch  # noqa: F401
    import triton  # noqa: F401
    import triton.language  # noqa: F401

    from autokernel_ci.harness import anticheat, correctness  # noqa: F401
    from autokernel_ci.tasks import task_inputs_from_wire  # noqa: F401

    line = sys.stdin.readline().strip()
    if not line:
        return 0
    request_path = Path(line)
    out_dir = Path(json.loads(request_path.read_text())["out_dir"])
    home = os.getcwd()
    os.chdir(out_dir)
    sys.path[:] = [str(out_dir) if entry == home else entry for entry in sys.path]  # as if started there
    log = os.open(out_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _STARTED = time.perf_counter()  # its phases count from the request, not from the wait
    return main([str(request_path)])


def _entry(argv: list[str]) -> int:
    if argv == ["--standby"]:
        return standby()
    return main(argv)


def _profiled(argv: list[str], where: str) -> int:
    """main under cProfile, the stats written to `where` (AUTOKERNEL_WORKER_PROFILE): why is a worker slow?"""
    import cProfile

    profile = cProfile.Profile()
    try:
        return profile.runcall(_entry, argv)
    finally:
        Path(where).mkdir(parents=True, exist_ok=True)
        profile.dump_stats(str(Path(where) / f"worker-{os.getpid()}.prof"))


if __name__ == "__main__":
    _where = os.environ.get("AUTOKERNEL_WORKER_PROFILE")
    sys.exit(_profiled(sys.argv[1:], _where) if _where else _entry(sys.argv[1:]))
