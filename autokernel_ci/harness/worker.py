"""The worker: the only process that imports and runs a candidate, always inside the sandbox.

    python -m autokernel_ci.harness.worker      # the request comes on stdin, the results go out on fd 3

It imports what every worker needs first, then reads one request (a JSON line) on stdin; a worker
started ahead of time (`harness.standby`) waits there. It learns each case just in time: the parent
sends a case's shape, dtype and seed only after the previous case's result arrived, so nothing
about a future case can be read before it runs. Each result goes back as a message on fd 3
(`harness.stream`): the outputs as raw tensor bytes and what it observed (exceptions, inputs that
changed, the torch operators the call ran, changes to the module state the harness relies on,
timings). It decides nothing: the parent judges, out of the candidate's reach, what it received
before the last message; anything written afterwards (an `atexit` hook, a finalizer) makes the run a
crash, and no file the worker writes is ever read.

Modes (the request's `mode`):
- `eval` (default): the candidate on the cases it is sent, then the timing plan, if any.
- `baselines`: no candidate; times the eager reference, vendor op and `torch.compile` of the reference.
- `reference`: no candidate; the task's own reference and input factory (a config task's or a
  KernelBench file's: repository code, so it runs here and never in the parent) on each case it is
  sent, in float64, returning the reference outputs.
- `ab`: candidates against each other (`_run_ab`): the pull-request gate's base and head, imported as
  two modules of this one process and timed in interleaved rounds on the same inputs.
Exit codes: 0 done, 3 the candidate failed to import; anything else is a crash.
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

PROTOCOL = 2
EXIT_IMPORT_FAILED = 3
RESULT_FD = int(os.environ.get("AUTOKERNEL_RESULT_FD", "3"))


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


def send(header: dict[str, Any], tensors: tuple[Any, ...] = ()) -> None:
    from autokernel_ci.harness.stream import send as _send

    _send(RESULT_FD, header, tensors)


def _next_line() -> dict[str, Any] | None:
    line = sys.stdin.readline()
    if not line.strip():
        return None
    return json.loads(line)


def main() -> int:
    phases: dict[str, float] = {}
    mark = _Stopwatch(phases)
    import torch
    import triton  # noqa: F401 - imported here so its cost is counted apart from the candidate's
    import triton.language  # noqa: F401

    from autokernel_ci.harness import anticheat, correctness  # noqa: F401
    from autokernel_ci.tasks import task_inputs_from_wire

    anticheat.pin_autotune_under_interpreter()  # @triton.autotune: the first config, on the CPU interpreter
    mark("imports")
    waited = time.perf_counter()
    first = _next_line()
    if first is None:  # a standby worker told to leave
        return 0
    if time.perf_counter() - waited > 0.05:  # started ahead (harness.standby): the imports were done before
        phases["imported_ahead"] = phases.pop("imports")
        phases["imports"] = 0.0
    mark.last = time.perf_counter()  # phases count from the request, not from the wait
    request = first["request"]
    out_dir = Path.cwd()
    mode = request.get("mode") or ("baselines" if request.get("candidate") is None else "eval")
    wire = request["task"]
    try:
        make_inputs, task_module = task_inputs_from_wire(wire, reference=mode == "reference")
    except BaseException as exc:  # noqa: BLE001 - the task's own code failed: say where
        from autokernel_ci.errors import TaskError

        send({"type": "task_error", "error": str(exc) if isinstance(exc, TaskError) else _describe(exc, True)})
        send({"type": "done"})
        return 0
    ctx = _Context(torch, anticheat, make_inputs, task_module, wire, request["device"], out_dir)
    mark("task")
    if mode == "ab":
        return _run_ab(ctx, request)
    _warm_device(ctx)
    send({"type": "ready", "gpu": _gpu_identity(torch, ctx.device)})
    mark("cuda_init")
    if mode == "baselines":
        send({"type": "baselines", "baselines": _time_baselines(ctx, request.get("timing") or {})})
        mark("baselines")
        send({"type": "done", "phases_s": phases})
        return 0
    if mode == "reference":
        return _serve_reference(ctx)

    state_before = anticheat.snapshot_module_state()
    try:
        entry = _import_candidate(Path(request["candidate"]), wire["entry"])
    except BaseException as exc:  # noqa: BLE001 - anything at import is the candidate's failure
        send({"type": "imported", "import_error": _describe(exc)})
        send({"type": "done"})
        return EXIT_IMPORT_FAILED
    send({"type": "imported", "import_error": None, "module_state": _state_changes(anticheat, state_before)})
    mark("candidate_import")

    # Poison: with deterministic algorithms on, torch.empty fills new float memory with NaN, so an
    # element the candidate never writes shows up as NaN instead of stale data that happens to be right.
    if request.get("poison", True):
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True
    from autokernel_ci.harness.correctness import Case

    clean = True
    while True:
        line = _next_line()
        if line is None or "case" not in line:
            break
        case = Case(**line["case"])
        report, outs = _run_case(ctx, case, entry)
        clean = clean and not (report["error"] or report["output_problem"])
        send({"type": "case", "report": report}, outs)
    mark("cases")
    timing = line.get("timing") if line else None
    if timing and clean:
        torch.use_deterministic_algorithms(False)
        rows, checked = _time_candidate(ctx, entry, timing)
        for sample in checked:
            send({"type": "timed_output", **{k: v for k, v in sample.items() if k != "outputs"}}, sample["outputs"])
        send({"type": "timings", "timings": rows})
        mark("timing")
    send({"type": "state", "module_state": _state_changes(anticheat, state_before)})
    mark("module_state")
    send({"type": "done", "phases_s": phases})
    return 0


def _warm_device(ctx: _Context) -> None:
    """Touch the device before any candidate runs, so that the threads CUDA starts are in the baseline
    the parent takes when the worker says it is ready."""
    torch = ctx.torch
    if ctx.device == "cuda":
        x = torch.ones(16, device="cuda")
        (x * 2).sum().item()
        torch.cuda.synchronize()


def _serve_reference(ctx: _Context) -> int:
    """Each case: the task's inputs from its seed, the reference on float64 copies, the outputs back."""
    from autokernel_ci.harness.correctness import Case, make_case_inputs, to_float64

    torch = ctx.torch
    recorded = False
    while True:
        line = _next_line()
        if line is None or "case" not in line:
            break
        case = Case(**line["case"])
        header: dict[str, Any] = {"type": "reference", "index": case.index, "error": None, "ops": None}
        outs: tuple[Any, ...] = ()
        try:
            args = make_case_inputs(ctx.make_inputs, case, ctx.device)
        except BaseException as exc:  # noqa: BLE001 - the user's input factory failed: say where
            header["error"] = f"the task's input factory raised {_describe(exc, user_code=True)}"
            send(header)
            continue
        header["in_dtype"] = next((str(a.dtype).removeprefix("torch.") for a in args
                                   if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
        header["input_bytes"] = sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))
        header["kind_problem"] = _kind_problem(case.kind, args)
        try:
            recorder = ctx.anticheat.OpRecorder()
            try:
                with torch.no_grad(), recorder:
                    out = _reference_call(ctx, case, to_float64(args))
            except torch.OutOfMemoryError:  # the float64 copies do not fit on the card: on the host instead
                if ctx.device != "cuda":
                    raise
                torch.cuda.empty_cache()
                host = tuple(a.cpu() if isinstance(a, torch.Tensor) else a for a in args)
                with torch.no_grad(), recorder:
                    out = _reference_call(ctx, case, to_float64(host))
            if not recorded:  # what the reference runs: a KernelBench ModelNew may not run the same
                header["ops"] = sorted(recorder.counts())
                recorded = True
            outs = tuple(o.detach() for o in (out if isinstance(out, tuple) else (out,)))
        except BaseException as exc:  # noqa: BLE001 - the user's reference failed: say where
            from autokernel_ci.harness.correctness import is_out_of_memory

            if is_out_of_memory(exc):  # the harness's work did not fit: not the reference's fault
                gib = header["input_bytes"] * 2 / 2**30  # float64: at most twice the inputs' bytes
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                header["error"] = (f"the float64 reference of case {case.index} did not fit on the host: its "
                                   f"float64 inputs alone are {gib:.1f} GiB ({first})")
                header["oom"] = True
            else:
                header["error"] = f"the task's reference raised {_describe(exc, user_code=True)}"
            outs = ()
        send(header, outs)
    send({"type": "done"})
    return 0


def _reference_call(ctx: _Context, case: Any, args: tuple[Any, ...]):
    if ctx.wire["kind"] == "kernelbench":
        from autokernel_ci.tasks import kernelbench_reference

        return kernelbench_reference(ctx.task_module)(*args, seed=case.seed)
    return ctx.task_module(*args)


def _kind_problem(kind: str, args: tuple[Any, ...]) -> str | None:
    """Whether the inputs look like their kind (harness.correctness.input_kind_problem, where it exists)."""
    from autokernel_ci.harness import correctness

    check = getattr(correctness, "input_kind_problem", None)
    return check(kind, args) if check is not None else None


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


def _run_case(ctx: _Context, case: Any, entry: Any) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """One case: its report and, when the call returned plain tensors on the right device, its outputs."""
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
            outs = out if type(out) is tuple else (out,)
            # Read the result through the class, never through its instance: a tensor whose instance
            # attribute `detach` computes the answer after the recorder closed gets no say here.
            problems = _output_problems(ctx, outs)
            copies = () if problems else tuple(_copy(torch, o) for o in outs)
        if ctx.device == "cuda":
            torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - the candidate's exception is evidence, not our failure
        report["error"] = _describe(exc)
        return report, ()
    finally:
        report["seconds"] = time.perf_counter() - start
        report["ops"] = dict(recorder.counts())
    report["inputs_changed"] = [i for i, (a, p) in enumerate(zip(args, pristine))
                                if isinstance(a, torch.Tensor) and not _same_bits(torch, a, p)]
    if problems:
        report["output_problem"] = "; ".join(problems)
        return report, ()
    return report, copies


def _copy(torch: Any, out: Any) -> Any:
    base = torch._C.TensorBase
    return base.clone(base.detach(out))


def _output_problems(ctx: _Context, outs: tuple[Any, ...]) -> list[str]:
    torch = ctx.torch
    problems = []
    for i, o in enumerate(outs):
        if type(o) is not torch.Tensor:
            problems.append(f"output {i} is a {type(o).__module__}.{type(o).__name__}, not a plain torch.Tensor")
        elif torch._C.TensorBase.__dict__["device"].__get__(o).type != torch.device(ctx.device).type:
            problems.append(f"output {i} is on {o.device}, expected {ctx.device}")
    return problems


def _input_sets(ctx: _Context, shape: dict[str, int], dtype: str, seed: int, count: int) -> list[tuple[Any, ...]]:
    from autokernel_ci.harness.correctness import Case, make_case_inputs

    return [make_case_inputs(ctx.make_inputs, Case(-1, "timing", shape, dtype, seed + k), ctx.device)
            for k in range(count)]


def _timing_options(plan: dict[str, Any]) -> dict[str, Any]:
    keys = ("warmup_ms", "rep_ms", "min_reps", "max_reps", "flush_l2", "cuda_graph")
    return {k: plan[k] for k in keys if k in plan}


def _time_candidate(ctx: _Context, entry: Any, plan: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict]]:
    """The timings per shape, and the outputs of the timed calls the parent picked (`check_calls`, sent
    only when timing starts): a candidate that is right while checked and wrong while timed is caught."""
    from autokernel_ci.harness.timing import time_fn

    out, checked = [], []
    picks = set(int(k) for k in plan.get("check_calls", ()))
    for index, shape in enumerate(plan["shapes"]):
        sets = _input_sets(ctx, shape, plan["dtype"], plan.get("seed", 1), plan.get("input_sets", 1))
        fn = _callable_for(ctx, entry, plan.get("seed", 1))
        io = _io_bytes(ctx, fn, sets[0])
        sampled = _Sampled(ctx, fn, sets, picks, index, checked)
        samples = time_fn(sampled, input_sets=sets, device=ctx.device, **_timing_options(plan))
        if sampled.last is not None and plan.get("check_calls") and not _output_problems(ctx, sampled.last[1]):
            which, outs, call = sampled.last  # and the last timed call, whichever it was
            checked.append({"shape_index": index, "input_set": which, "call": call,
                            "outputs": tuple(_copy(ctx.torch, o) for o in outs)})
        out.append({"shape": shape, "dtype": plan["dtype"], **samples.to_dict(), **io})
    return out, checked


class _Sampled:
    """The candidate as the timer calls it, keeping a copy of the outputs of the picked calls."""

    def __init__(self, ctx: _Context, fn: Any, sets: list[tuple[Any, ...]], picks: set[int], shape_index: int,
                 into: list[dict]) -> None:
        self.ctx, self.fn, self.sets, self.picks, self.shape_index, self.into = ctx, fn, sets, picks, shape_index, into
        self.calls = 0
        self.last: tuple[int, tuple[Any, ...], int] | None = None

    def __call__(self, *args: Any) -> Any:
        out = self.fn(*args)
        self.calls += 1
        torch = self.ctx.torch
        capturing = self.ctx.device == "cuda" and torch.cuda.is_current_stream_capturing()
        if capturing:
            return out
        outs = out if type(out) is tuple else (out,)
        which = next((k for k, s in enumerate(self.sets) if s and args and s[0] is args[0]), None)
        if which is not None:
            self.last = (which, outs, self.calls)
        if self.calls in self.picks:
            if which is not None and not _output_problems(self.ctx, outs):
                self.into.append({"shape_index": self.shape_index, "input_set": which, "call": self.calls,
                                  "outputs": tuple(_copy(torch, o) for o in outs)})
        return out


def _io_bytes(ctx: _Context, fn: Any, args: tuple[Any, ...]) -> dict[str, int]:
    """The bytes of one call's inputs and outputs (harness/roofline.py): the roofline of a task with no
    bytes model. The call is one more warm-up call."""
    from autokernel_ci.harness.roofline import io_bytes

    with ctx.torch.no_grad():
        return io_bytes(args, fn(*args))


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
    A `progress` message names each step as it starts, so a crash that kills the process can be blamed.
    """
    from autokernel_ci.harness.timing import ABTimer

    torch = ctx.torch
    result: dict[str, Any] = {"protocol": PROTOCOL, "mode": "ab", "import_errors": {}, "shapes": []}
    plan = request["timing"]
    seed = plan.get("seed", 1)
    if True:
        progress = _Progress()
        entries = {}
        for label, path in request["candidates"].items():
            progress.write(f"import {label}\n")
            try:
                before = set(sys.modules)
                # Under the name the correctness worker gives it: nothing tells a timed round from a check.
                entries[label] = _import_candidate(Path(path), ctx.wire["entry"])
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
    send({"type": "ab", "result": result})
    send({"type": "done"})
    return 0


class _Progress:
    def write(self, text: str) -> None:
        send({"type": "progress", "step": text.strip()})


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
    tensor = torch.Tensor  # through the class: the candidate held `a` and may have set attributes on it
    if tensor.is_floating_point(a):
        return bool(torch.equal(tensor.isnan(a), tensor.isnan(b))) and bool(
            torch.equal(tensor.nan_to_num(a), tensor.nan_to_num(b)))
    return bool(torch.equal(a, b))


def _describe(exc: BaseException, user_code: bool = False) -> str:
    """One line naming the exception and where in the candidate (or, `user_code`, in the task's own
    reference or input factory: then with the file's path) it came from."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "autokernel_ci" not in f.filename and "site-packages" not in f.filename
              and not f.filename.startswith("<")]
    name = (lambda f: f.filename) if user_code else (lambda f: Path(f.filename).name)
    where = f" (line {frames[-1].lineno} of {name(frames[-1])})" if frames else ""
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}{where}"[:500]


def _entry(argv: list[str]) -> int:
    if argv:
        print("usage: python -m autokernel_ci.harness.worker  (the request comes on stdin)", file=sys.stderr)
        return 2
    return main()


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
