"""The worker: the only process that imports and runs a candidate.

    python -m autokernel_ci.harness.worker REQUEST.json

It draws each case's inputs from the seed in the request, calls the candidate, and writes back the
outputs (`case_<i>.pt`) and what it observed (`result.json`): exceptions, inputs that changed, the
torch operators the call ran, and any change to the module state the harness relies on. It decides
nothing: the parent judges, out of the candidate's reach. Exit codes: 0 done, 3 the candidate failed
to import, anything else (a signal, os._exit) is a crash.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PROTOCOL = 1
EXIT_IMPORT_FAILED = 3


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    out_dir = Path(request["out_dir"])
    progress = open(out_dir / "progress.log", "a", buffering=1)  # noqa: SIM115 - lives as long as the worker

    import torch

    from autokernel_ci.harness import anticheat
    from autokernel_ci.harness.correctness import Case, make_case_inputs
    from autokernel_ci.tasks import kernelbench_model, load_module_from_path, task_inputs_from_wire

    device = request["device"]
    wire = request["task"]
    make_inputs, task_module = task_inputs_from_wire(wire)
    result: dict[str, Any] = {"protocol": PROTOCOL, "cases": [], "module_state": [], "import_error": None}

    state_before = anticheat.snapshot_module_state()
    try:
        sys.path.insert(0, str(Path(request["candidate"]).resolve().parent))
        candidate = load_module_from_path(Path(request["candidate"]), name="autokernel_candidate")
        entry = getattr(candidate, wire["entry"], None)
        if entry is None or not callable(entry):
            raise AttributeError(f"the candidate defines no callable {wire['entry']!r}")
    except BaseException as exc:  # noqa: BLE001 - anything at import is the candidate's failure
        result["import_error"] = _describe(exc)
        _write_result(out_dir, result)
        return EXIT_IMPORT_FAILED
    result["module_state"] += _state_changes(anticheat, state_before)

    # Poison: with deterministic algorithms on, torch.empty fills new float memory with NaN, so an
    # element the candidate never writes shows up as NaN instead of stale data that happens to be right.
    if request.get("poison", True):
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True

    for raw in request["cases"]:
        case = Case(**raw)
        progress.write(f"{case.index}\n")
        result["cases"].append(_run_case(case, entry, make_inputs, task_module, wire, device, out_dir,
                                         torch, anticheat, kernelbench_model, make_case_inputs))
    result["module_state"] += _state_changes(anticheat, state_before)
    _write_result(out_dir, result)
    return 0


def _run_case(case, entry, make_inputs, task_module, wire, device, out_dir, torch, anticheat, kernelbench_model,
              make_case_inputs) -> dict[str, Any]:
    report: dict[str, Any] = {"index": case.index, "error": None, "inputs_changed": [], "output_problem": None,
                              "ops": {}, "seconds": 0.0}
    args = make_case_inputs(make_inputs, case, device)
    pristine = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    fn = entry
    if wire["kind"] == "kernelbench":
        fn = kernelbench_model(task_module, entry, case.seed, device)
    recorder = anticheat.OpRecorder()
    start = time.perf_counter()
    try:
        with torch.no_grad(), recorder:
            out = fn(*args)
        if device == "cuda":
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
        elif o.device.type != torch.device(device).type:
            problems.append(f"output {i} is on {o.device}, expected {device}")
    if problems:
        report["output_problem"] = "; ".join(problems)
        return report
    torch.save(tuple(o.detach().to("cpu", copy=True) for o in outs), out_dir / f"case_{case.index}.pt")
    return report


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
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out_dir / "result.json")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
