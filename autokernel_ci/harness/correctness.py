"""The correctness gate, stage by stage, decided in the parent process.

The worker process (see `worker.py`) imports the candidate and runs it on inputs it draws from the
seeds in the plan; it sends back only the outputs and what it observed. Here, out of the
candidate's reach, the same inputs are drawn again from the same seeds, the reference runs in
float64, and every output is compared element by element.

Stages: smoke → shapes (powers of two, odd sizes, size-1 dims, the task's real shapes, and hidden
shapes drawn at random for this evaluation from the op's shape family) → dtypes → stability (large
and tiny magnitudes, mixed scales, rows of equal values) → determinism (same inputs twice must give
bitwise-equal outputs, or the result is flagged).
"""

from __future__ import annotations

import random
import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

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
    """The cases to run, with fresh seeds (recorded in each case), and notes on what was left out.

    The shapes stage adds hidden shapes (`hidden_shapes`) drawn from a seed made for this evaluation
    (from `seed` when one is given, so a run can be replayed) and named in a note."""
    rng = random.Random(seed if seed is not None else secrets.randbits(62))
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
        if spec.dims and spec.family == "custom" and spec.shape_family is None:
            notes.append("no hidden shapes: a custom task's input factory may not accept every shape")
        elif spec.dims:
            hidden_seed = rng.randrange(1, 2**31 - 1)
            hidden = hidden_shapes(spec, hidden_seed, device)
            for shape in hidden:
                add("shapes", shape, primary)
            labels = ", ".join(spec.shape_label(s) for s in hidden)
            notes.append(f"{len(hidden)} hidden shapes drawn from the op's shape family (seed {hidden_seed}): {labels}")
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


# Hidden shapes on the CPU interpreter stay under this many elements per input (its time budget).
CPU_HIDDEN_ELEMENTS = 1 << 18
_SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def shape_family(spec: OpSpec) -> dict[str, str]:
    """dim -> "width" or "count": the spec's own, else the last dim is the width and the others counts."""
    if spec.shape_family is not None:
        return {d: spec.shape_family.get(d, "count") for d in spec.dims}
    return {d: "width" if i == len(spec.dims) - 1 else "count" for i, d in enumerate(spec.dims)}


def hidden_shapes(spec: OpSpec, seed: int, device: str) -> list[dict[str, int]]:
    """Shapes no candidate can know in advance, drawn from `seed` and the op's shape family.

    Three on any device: a prime width past 4096 (up to the widest benchmark width) with every count 1;
    a width beyond the widest benchmark width, with counts of 2 or 3; a prime width under 4096 with
    small prime counts. On a GPU two more, whose counts reach the benchmark's. On the CPU interpreter
    the counts shrink until an input holds at most `CPU_HIDDEN_ELEMENTS` elements.
    """
    rng = random.Random(seed)
    family = shape_family(spec)
    declared = [*spec.test_shapes, *spec.bench_shapes, *spec.decode_shapes]
    declared = [s for s in declared if s]
    top = {d: max([s.get(d, 1) for s in declared] or [1]) for d in spec.dims}
    even = {d for d in spec.dims if declared and all(s.get(d, 2) % 2 == 0 for s in declared)}
    counts = [d for d, kind in family.items() if kind != "width"]

    def width(low: int, high: int, prime: bool) -> int:
        value = rng.randint(low, max(low, high))
        if prime:
            value = _next_prime(value)
        elif value % 2 == 0:
            value += 1
        return value

    def shape(widths: dict[str, int], count_of) -> dict[str, int]:
        out = {d: widths[d] if family[d] == "width" else count_of(d) for d in spec.dims}
        for d in even:
            out[d] += out[d] % 2
        return out

    bench_w = {d: top[d] for d in spec.dims if family[d] == "width"}
    shapes = [
        shape({d: width(4097, max(w, 6144), True) for d, w in bench_w.items()}, lambda d: 1),
        shape({d: width(w + 1, w + max(w // 2, 2048), False) for d, w in bench_w.items()},
              lambda d: rng.choice((2, 3))),
        shape({d: width(3, 4095, True) for d in bench_w}, lambda d: rng.choice(_SMALL_PRIMES)),
    ]
    if device != "cpu":
        shapes += [shape({d: width(3, 2 * w, rng.random() < 0.5) for d, w in bench_w.items()},
                         lambda d: _next_prime(rng.randint(2, max(2, top[d])))) for _ in range(2)]
    else:
        for s in shapes:
            while _largest_input(s, family) > CPU_HIDDEN_ELEMENTS and any(s[d] > 1 for d in counts):
                d = max(counts, key=lambda c: s[c])
                s[d] = max(1, s[d] // 2) if d not in even else max(2, s[d] // 2 + s[d] // 2 % 2)
    return shapes


def _largest_input(shape: dict[str, int], family: dict[str, str]) -> int:
    """An upper bound on one input's elements: every count times the largest width (an input holds at most
    one width per dim; two widths, as a matmul's K and N, give the product)."""
    product = 1
    for value in shape.values():
        product *= value
    widths = sorted((shape[d] for d, kind in family.items() if kind == "width"), reverse=True)
    return product // max(1, widths[-1]) if len(widths) > 1 else product


def _next_prime(n: int) -> int:
    n = max(n, 2)
    while any(n % p == 0 for p in range(2, int(n ** 0.5) + 1)):
        n += 1
    return n


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
               device: str) -> CaseEvidence:
    """Compare one case's outputs (from the worker) with the float64 reference computed here."""
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
    args = make_case_inputs(spec.make_inputs, case, device)
    refs = reference_outputs(task, case, args)
    out_dtype = expected_dtype(spec, args)
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
        want = out_dtype if task.kind != "kernelbench" else args[0].dtype
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
        stages.append(StageEvidence(name=name, passed=all(e.passed for e in stage_cases), cases=stage_cases,
                                    notes=list(notes.get(name, []))))
    return stages
