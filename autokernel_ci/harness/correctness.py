"""The correctness gate, stage by stage, decided in the parent process.

The worker process (see `worker.py`) imports the candidate and runs it on inputs it draws from the
seeds in the plan; it sends back only the outputs and what it observed. Here, out of the
candidate's reach, the same inputs are drawn again from the same seeds, the reference runs in
float64, and every output is compared element by element.

Stages: smoke → shapes (powers of two, odd sizes, size-1 dims, the task's real shapes) → dtypes →
stability (large and tiny magnitudes, mixed scales, rows of equal values) → determinism (same
inputs twice must give bitwise-equal outputs, or the result is flagged).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import TaskError
from autokernel_ci.results import CaseEvidence, StageEvidence, finite_or_none

if TYPE_CHECKING:
    import torch

    from autokernel_ci.ops.base import OpSpec
    from autokernel_ci.tasks import KernelTask

STAGES = ("smoke", "shapes", "dtypes", "stability", "determinism")


@dataclass
class Case:
    index: int
    stage: str
    shape: dict[str, int]
    dtype: str
    seed: int
    kind: str = "normal"
    repeat_of: int | None = None  # determinism: the case whose inputs this one repeats

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


def plan_cases(spec: OpSpec, device: str, seed: int | None = None, stages: tuple[str, ...] = STAGES,
               include_bench_shapes: bool | None = None) -> tuple[list[Case], list[str]]:
    """The cases to run, with fresh seeds (recorded in each case), and notes on what was left out."""
    rng = random.Random(seed)
    notes: list[str] = []
    cases: list[Case] = []
    primary = spec.dtypes[0]
    shapes = list(spec.test_shapes)
    odd = _pick_odd(shapes)

    def add(stage: str, shape: dict[str, int], dtype: str, kind: str = "normal", repeat_of: int | None = None):
        case_seed = cases[repeat_of].seed if repeat_of is not None else rng.randrange(1, 2**31 - 1)
        cases.append(Case(len(cases), stage, dict(shape), dtype, case_seed, kind, repeat_of))

    if "smoke" in stages:
        add("smoke", shapes[len(shapes) // 2], primary)
    if "shapes" in stages:
        for shape in shapes:
            add("shapes", shape, primary)
        bench = include_bench_shapes if include_bench_shapes is not None else device != "cpu"
        if bench:
            bench_dtype = "bf16" if "bf16" in spec.dtypes else primary
            for shape in (*spec.decode_shapes, *spec.bench_shapes):
                add("shapes", shape, bench_dtype)
        elif spec.bench_shapes and spec.bench_shapes != ({},):
            notes.append("benchmark shapes not checked on the CPU interpreter (too slow); the GPU run checks them")
    if "dtypes" in stages:
        for dtype in spec.dtypes[1:]:
            for shape in _dedupe([odd, shapes[-1]]):
                add("dtypes", shape, dtype)
    if "stability" in stages:
        for kind in spec.stability_kinds:
            add("stability", odd, primary, kind)
            low = next((d for d in spec.dtypes if d in ("bf16", "fp16")), None)
            if low and low != primary:
                add("stability", odd, low, kind)
    if "determinism" in stages:
        add("determinism", odd, primary)
        add("determinism", odd, primary, repeat_of=len(cases) - 1)
    return cases, notes


def reproduce_command(task: KernelTask, candidate: str | Path, seed: int, stages: tuple[str, ...],
                      device: str) -> str:
    """The `autokernel-ci eval` command that plans the same cases again: `plan_cases` draws every case's
    seed from `seed`, in order, so the same seed, stages and device give the same cases (and inputs)."""
    import shlex

    if task.kind == "kernelbench" and task.kernelbench is not None and task.root is not None \
            and not (task.root / ".autokernel.yml").is_file():
        name = str(task.kernelbench)
    else:
        name = task.name
    parts = ["autokernel-ci", "eval", "--task", name, "--candidate", str(candidate), "--seed", str(seed),
             "--device", device]
    config = task.root / ".autokernel.yml" if task.root is not None else None
    if config is not None and config.is_file() and name == task.name:
        parts += ["--config", str(config)]
    if tuple(stages) != STAGES:
        parts += ["--stages", ",".join(stages)]
    return " ".join(shlex.quote(x) for x in parts)


def _pick_odd(shapes: list[dict[str, int]]) -> dict[str, int]:
    """A shape with odd sizes > 1 (where masking bugs show), else the largest."""
    odd = [s for s in shapes if any(v > 1 and v % 2 for v in s.values())]
    return odd[-1] if odd else shapes[-1]


def _dedupe(shapes: list[dict[str, int]]) -> list[dict[str, int]]:
    out: list[dict[str, int]] = []
    for s in shapes:
        if s not in out:
            out.append(s)
    return out


def make_case_inputs(make_inputs: Any, case: Case, device: str, kind: str | None = None) -> tuple[Any, ...]:
    """Draw a case's inputs from its seed. The same call in two processes gives bitwise-equal inputs."""
    import torch

    from autokernel_ci.ops.base import DTYPES

    generator = torch.Generator(device=device)
    generator.manual_seed(case.seed)
    return tuple(make_inputs(case.shape, DTYPES[case.dtype], generator, kind or case.kind))


# What the stability kinds must look like in at least one floating-point input (see `input_kind_problem`).
LARGE_RMS = 10.0  # "large": some tensor's RMS at least this (standard normal data: about 1)
TINY_MAX = 1e-2  # "tiny": some non-zero tensor with every |x| at most this
# "mixed": the largest row RMS at least this many times the smallest. The built-in factories give 2.3× or
# more even on 5 rows; ordinary normal rows of 33 or more elements stay under 1.9× (rows of a few
# elements vary more by chance, so there a factory that ignores "mixed" can go unnoticed).
MIXED_SPREAD = 2.0


def input_kind_problem(kind: str, args: tuple[Any, ...]) -> str | None:
    """Why the inputs an input factory drew for `kind` do not look like that kind, or None when they do.

    Pure: it reads only the tensors. At least one floating-point input must show the kind (the others,
    weights and tables, may stay ordinary): "large", an RMS of at least 10; "tiny", non-zero with every
    magnitude at most 1e-2; "mixed", rows (along the last dim) whose RMS differ by 2× or more; "equal",
    every row constant along a last dim of 2 or more. "normal" is anything. A factory that ignores
    `kind` returns ordinary data for every kind, and the stability stage did not test what it claims.
    """
    import torch

    if kind == "normal":
        return None
    floats = [a.detach().double() for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()
              and a.numel() > 0]
    if not floats:
        return f"{kind!r} inputs: the factory returned no floating-point tensor"
    floats = [torch.where(torch.isfinite(t), t, torch.zeros_like(t)) for t in floats]
    if kind == "large":
        rms = max(float(t.square().mean().sqrt()) for t in floats)
        return None if rms >= LARGE_RMS else \
            f"'large' inputs have an RMS of at most {rms:.3g} (large magnitudes mean {LARGE_RMS:g} or more)"
    if kind == "tiny":
        peaks = [float(t.abs().max()) for t in floats]
        if any(0 < peak <= TINY_MAX for peak in peaks):
            return None
        return (f"'tiny' inputs reach magnitudes of {min(peaks):.3g} at the least (tiny means non-zero and "
                f"at most {TINY_MAX:g})")
    rows = [t.reshape(-1, t.shape[-1]) for t in floats if t.dim() >= 1 and t.shape[-1] >= 2]
    if kind == "mixed":
        spreads = []
        for r in rows:
            rms = r.square().mean(-1).sqrt()
            rms = rms[rms > 0]
            if rms.numel() >= 2:
                spreads.append(float(rms.max() / rms.min()))
        if any(s >= MIXED_SPREAD for s in spreads):
            return None
        best = f"{max(spreads):.3g}×" if spreads else "no two non-zero rows"
        return f"'mixed' inputs have rows within {best} of each other in scale (mixed means {MIXED_SPREAD:g}× or more)"
    if kind == "equal":
        if any(bool((r == r[:, :1]).all()) for r in rows):
            return None
        return "'equal' inputs have no tensor whose rows are each one repeated value"
    return f"unknown input kind {kind!r}"


def user_code_error(what: str, exc: BaseException) -> str:
    """'the input factory refs:make_inputs raised ValueError: … (at /repo/refs.py, line 7)': an exception in
    the user's own code (reference, input factory), named with the innermost frame outside this package."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "autokernel_ci" not in Path(f.filename).parts and "torch" not in Path(f.filename).parts]
    where = f" (at {frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{what} raised {type(exc).__name__}: {text}{where}"[:600]


def _factory_name(task: KernelTask) -> str:
    if task.kind == "config" and task.inputs:
        return f"the input factory {task.inputs}"
    if task.kind == "kernelbench":
        return f"get_inputs() of {task.kernelbench or task.name}"
    return f"the input factory of {task.name}"


def _reference_name(task: KernelTask) -> str:
    if task.kind == "kernelbench":
        return f"the reference Model of {task.kernelbench or task.name}"
    return f"the reference of {task.name}"


def to_float64(args: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def reference_outputs(task: KernelTask, case: Case, args: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
    """The reference on float64 copies of the inputs: never the tensors the candidate saw."""
    import torch

    with torch.no_grad():
        if task.kind == "kernelbench":
            out = task.spec.reference(*to_float64(args), seed=case.seed)
        else:
            out = task.spec.reference(*to_float64(args))
    outs = out if isinstance(out, tuple) else (out,)
    return tuple(o.detach().clone() for o in outs)


def expected_dtype(spec: OpSpec, args: tuple[Any, ...]) -> torch.dtype:
    import torch

    first = next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    in_dtype = first.dtype if first is not None else torch.float32
    return spec.out_dtype(in_dtype) if spec.out_dtype else in_dtype


@dataclass
class Comparison:
    passed: bool
    max_abs_err: float | None
    max_rel_err: float | None
    message: str = ""


def compare(out: torch.Tensor, ref: torch.Tensor, out_dtype: torch.dtype, atol: float, rtol: float) -> Comparison:
    """Element by element: |out − ref| ≤ atol · rms(ref row) + rtol · |ref|, NaN and ±inf only where the
    reference (rounded to the output dtype) has them."""
    import torch

    expected = ref.to(out_dtype).to(torch.float64)
    got = out.to(device=expected.device, dtype=torch.float64)
    total = expected.numel()
    exp_nan, got_nan = expected.isnan(), got.isnan()
    if (got_nan & ~exp_nan).any():
        n = int((got_nan & ~exp_nan).sum())
        return Comparison(False, None, None, f"{n} of {total} elements are NaN where the reference is finite "
                                             "(unwritten or uninitialised output?)")
    if (exp_nan & ~got_nan).any():
        n = int((exp_nan & ~got_nan).sum())
        return Comparison(False, None, None, f"{n} of {total} elements are finite where the reference is NaN")
    exp_inf, got_inf = expected.isinf(), got.isinf()
    if (got_inf != exp_inf).any() or (exp_inf.any() and not torch.equal(got[exp_inf], expected[exp_inf])):
        n = int((got_inf != exp_inf).sum())
        return Comparison(False, None, None, f"{n} of {total} elements disagree with the reference on ±inf")
    finite = ~(exp_nan | exp_inf)
    if not finite.any():
        return Comparison(True, 0.0, 0.0)
    clean = torch.where(finite, expected, torch.zeros_like(expected))
    if clean.dim() == 0:
        scale = clean.abs()
    else:
        scale = clean.pow(2).mean(-1, keepdim=True).sqrt().expand_as(clean)
    err = (got - expected).abs()
    bound = atol * scale + rtol * clean.abs()
    bad = finite & (err > bound)
    err_f = torch.where(finite, err, torch.zeros_like(err))
    rel = err_f / clean.abs().clamp_min(torch.finfo(torch.float64).tiny)
    max_abs = finite_or_none(float(err_f.max()))
    max_rel = finite_or_none(float(torch.where(finite & (clean != 0), rel, torch.zeros_like(rel)).max()))
    if bad.any():
        n = int(bad.sum())
        first = tuple(int(i) for i in bad.nonzero()[0]) if bad.dim() else ()
        return Comparison(False, max_abs, max_rel,
                          f"{n} of {total} elements outside tolerance (first at index {first}, "
                          f"got {float(got[first]):.6g}, expected {float(expected[first]):.6g})")
    return Comparison(True, max_abs, max_rel)


def judge_case(task: KernelTask, case: Case, outputs: tuple[Any, ...] | None, report: dict[str, Any],
               device: str, reference: tuple[Any, ...] | None = None) -> CaseEvidence:
    """Compare one case's outputs (from the worker) with the float64 reference: computed here for the
    built-in ops, or given (`reference`: the outputs, the inputs' floating dtype and, optionally, what
    `input_kind_problem` said of the inputs) by the sandboxed reference worker for a task whose reference
    is repository code."""
    import torch

    spec = task.spec
    atol, rtol = spec.tolerance(case.shape, case.dtype)
    evidence = CaseEvidence(stage=case.stage, shape=dict(case.shape), dtype=case.dtype, seed=case.seed,
                            kind=case.kind, atol=atol, rtol=rtol)
    if report.get("error"):
        evidence.message = f"raised {report['error']}"
        return evidence
    if report.get("output_problem"):
        evidence.message = report["output_problem"]
        return evidence
    if report.get("inputs_changed"):
        evidence.message = f"modified its inputs (argument {', '.join(map(str, report['inputs_changed']))})"
        return evidence
    if report.get("input_error"):
        # The reference side drew the same inputs (the sandboxed reference worker, or here for a built-in op):
        # if that fails too, it is the factory's error; if not, the candidate's process made the report up.
        if reference is None:
            try:
                make_case_inputs(spec.make_inputs, case, device)
            except Exception as exc:  # noqa: BLE001 - the factory failed here too: reported as the factory's
                raise TaskError(user_code_error(_factory_name(task), exc) + f"; case {case.index} "
                                f"({case.stage}, {case.kind} inputs, seed {case.seed})") from None
        evidence.message = f"its process reported an input-factory error that does not happen here: " \
                           f"{str(report['input_error'])[:200]}"
        return evidence
    if reference is None:
        try:
            args = make_case_inputs(spec.make_inputs, case, device)
        except Exception as exc:  # the factory, not the candidate: say so, with its file and line
            raise TaskError(user_code_error(_factory_name(task), exc) + f"; case {case.index} ({case.stage}, "
                            f"{case.kind} inputs, seed {case.seed})") from None
        if case.stage == "stability":
            evidence.kind_problem = input_kind_problem(case.kind, args)
        try:
            refs = reference_outputs(task, case, args)
        except Exception as exc:
            raise TaskError(user_code_error(_reference_name(task), exc) + f"; case {case.index} ({case.stage}, "
                            f"{case.kind} inputs, seed {case.seed})") from None
        out_dtype = expected_dtype(spec, args)
        first_dtype = args[0].dtype if args and hasattr(args[0], "dtype") else out_dtype
    else:
        import torch

        refs, in_dtype = reference[0], reference[1]
        if case.stage == "stability" and len(reference) > 2:
            evidence.kind_problem = reference[2]  # checked by the reference worker, on the inputs it drew
        in_dtype = in_dtype or torch.float32
        out_dtype = spec.out_dtype(in_dtype) if spec.out_dtype else in_dtype
        first_dtype = in_dtype
    if outputs is None or len(outputs) != len(refs):
        n = 0 if outputs is None else len(outputs)
        evidence.message = f"returned {n} tensor(s); the reference returns {len(refs)}"
        return evidence
    worst_abs: float | None = 0.0
    worst_rel: float | None = 0.0
    for i, (out, ref) in enumerate(zip(outputs, refs)):
        if type(out) is not torch.Tensor:
            evidence.message = f"output {i} is a {type(out).__name__}, not a plain torch.Tensor"
            return evidence
        if tuple(out.shape) != tuple(ref.shape):
            evidence.message = f"output {i} has shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
            return evidence
        want = out_dtype if task.kind != "kernelbench" else first_dtype
        if out.dtype != want:
            evidence.message = f"output {i} has dtype {out.dtype}, expected {want}"
            return evidence
        result = compare(out, ref.to(out.device) if out.device != ref.device else ref, want, atol, rtol)
        worst_abs = _worst(worst_abs, result.max_abs_err)
        worst_rel = _worst(worst_rel, result.max_rel_err)
        if not result.passed:
            evidence.max_abs_err, evidence.max_rel_err = worst_abs, worst_rel
            evidence.message = (f"output {i}: " if len(refs) > 1 else "") + result.message
            return evidence
    evidence.passed = True
    evidence.max_abs_err, evidence.max_rel_err = worst_abs, worst_rel
    return evidence


def _worst(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return max(a, b)


def judge_determinism(cases: list[Case], outputs: dict[int, tuple[Any, ...] | None]) -> list[str]:
    """Notes for cases whose repeat on the same inputs was not bitwise equal."""
    import torch

    notes = []
    for case in cases:
        if case.repeat_of is None:
            continue
        first, again = outputs.get(case.repeat_of), outputs.get(case.index)
        if first is None or again is None:
            continue
        same = len(first) == len(again) and all(
            isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.equal(torch.nan_to_num(a.float()), torch.nan_to_num(b.float()))
            for a, b in zip(first, again)
        )
        if not same:
            notes.append(f"not deterministic: the same inputs (seed {case.seed}) gave different bits on a second call")
    return notes


def stage_evidence(cases: list[Case], evidence: list[CaseEvidence], notes: dict[str, list[str]]) -> list[StageEvidence]:
    stages = []
    for name in STAGES:
        stage_cases = [e for c, e in zip(cases, evidence) if c.stage == name]
        if not stage_cases and not notes.get(name):
            continue
        stage = StageEvidence(name=name, passed=all(e.passed for e in stage_cases), cases=stage_cases,
                              notes=list(notes.get(name, [])))
        problems = list(dict.fromkeys(e.kind_problem for e in stage_cases if e.kind_problem))
        if problems:
            # The cases ran, but not on the inputs the stage is named for: it tested nothing it claims.
            stage.exercised = False
            stage.notes.append("not exercised: the input factory does not produce these kinds of input ("
                               + "; ".join(problems) + ")")
        stages.append(stage)
    return stages
