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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import HarnessError, TaskError
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

    wide = to_float64(args)
    with torch.no_grad():
        if task.kind == "kernelbench":
            out = task.spec.reference(*wide, seed=case.seed)
        else:
            out = task.spec.reference(*wide)
    outs = out if isinstance(out, tuple) else (out,)
    # A copy only of an output that shares memory with an input: a full-size float64 copy of every
    # output would double the reference's footprint.
    shared = {a.untyped_storage().data_ptr() for a in (*wide, *args) if isinstance(a, torch.Tensor)}
    return tuple(o.detach().clone() if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() in shared
                 else o.detach() for o in outs)


def reference_outputs_within_memory(task: KernelTask, case: Case, args: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
    """`reference_outputs` on the inputs' device; when the float64 copies do not fit there beside what the
    card already holds (the candidate's outputs), the same on the host. Out of memory on both: a
    `HarnessError` saying what did not fit, never the allocator's traceback."""
    import torch

    device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    if device.type != "cpu":
        try:
            return reference_outputs(task, case, args)
        except torch.OutOfMemoryError as exc:
            reason = _first_line(exc)
        torch.cuda.empty_cache()
        args = tuple(a.cpu() if isinstance(a, torch.Tensor) else a for a in args)
    else:
        reason = ""
    try:
        return reference_outputs(task, case, args)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        inputs = sum(a.numel() * 8 for a in args if isinstance(a, torch.Tensor))
        where = f"on {device} ({reason}) nor on the host" if reason else "on the host"
        raise HarnessError(f"the float64 reference of case {case.index} did not fit {where}: its float64 inputs "
                           f"alone are {inputs / 2**30:.1f} GiB ({_first_line(exc)})") from None


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError on a GPU, MemoryError, or the host allocator's RuntimeError."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def raise_if_out_of_memory(exc: BaseException, doing: str) -> None:
    """A `HarnessError` saying what did not fit, when `exc` is running out of memory in the harness's own
    work (`doing`); otherwise nothing, and the caller re-raises."""
    if is_out_of_memory(exc):
        raise HarnessError(f"the harness ran out of memory {doing}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _gib(t: torch.Tensor) -> str:
    return f"{t.numel() * t.element_size() / 2**30:.1f}"


def kernelbench_out_dtype(args: tuple[Any, ...], ref: torch.Tensor) -> torch.dtype:
    """A KernelBench output keeps the inputs' float dtype (the reference ran in float64 only to be exact);
    a non-float output (argmax's indices, a comparison's booleans) keeps the reference's own dtype."""
    import torch

    if not ref.is_floating_point():
        return ref.dtype
    first = next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    return first.dtype if first is not None else torch.float32


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


# Elements per chunk in `compare`: its working set is about ten float64 tensors of this size (~1.3 GiB
# at 2**24), whatever the size of the output. Tests lower it to put a case across several chunks.
COMPARE_CHUNK_ELEMENTS = 1 << 24


@dataclass
class _Tally:
    """What `compare` accumulates over the chunks, so that counts and maxima are the whole tensor's."""

    nan_where_finite: int = 0
    finite_where_nan: int = 0
    inf_disagree: int = 0
    any_finite: bool = False
    bad: int = 0
    first_bad: tuple[int, float, float] | None = None  # flat index, got, expected
    max_abs: float = 0.0
    max_rel: float = 0.0


def compare(out: torch.Tensor, ref: torch.Tensor, out_dtype: torch.dtype, atol: float, rtol: float,
            chunk_elements: int | None = None) -> Comparison:
    """Element by element: |out − ref| ≤ atol · rms(ref row) + rtol · |ref|, NaN and ±inf only where the
    reference (rounded to the output dtype) has them.

    Rows are the last dim. The work runs in chunks of whole rows (of `chunk_elements`, default
    `COMPARE_CHUNK_ELEMENTS`; a row longer than that is taken in pieces, its RMS summed over them
    first), on `out`'s device, each chunk of `ref` moved there as it is needed: the working set is a
    small multiple of one chunk, never of the output, and `ref` may live elsewhere (the host). Counts
    and maxima are over the whole tensor."""
    import torch

    if tuple(out.shape) != tuple(ref.shape):
        return Comparison(False, None, None, f"shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    budget = max(1, int(chunk_elements or COMPARE_CHUNK_ELEMENTS))
    total = out.numel()
    shape = tuple(out.shape)
    cols = shape[-1] if shape else 1
    rows = total // cols if cols else 0
    tally = _Tally()
    if total:
        got2, ref2 = out.reshape(rows, cols), ref.reshape(rows, cols)
        device = out.device
        if cols <= budget:
            step = max(1, budget // cols)
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                _compare_block(tally, got2[r0:r1], ref2[r0:r1], None, r0 * cols, cols, out_dtype, atol, rtol,
                               device, scalar=not shape)
        else:  # rows longer than a chunk: each row's sum of squares first, then the row piece by piece
            for r in range(rows):
                pieces = [(c0, min(cols, c0 + budget)) for c0 in range(0, cols, budget)]
                sumsq = torch.zeros((1, 1), dtype=torch.float64, device=device)
                for c0, c1 in pieces:
                    expected = _expected(ref2[r:r + 1, c0:c1], out_dtype, device)
                    sumsq += torch.where(expected.isfinite(), expected, 0.0).pow(2).sum(-1, keepdim=True)
                scale = (sumsq / cols).sqrt()
                for c0, c1 in pieces:
                    _compare_block(tally, got2[r:r + 1, c0:c1], ref2[r:r + 1, c0:c1], scale, r * cols + c0, cols,
                                   out_dtype, atol, rtol, device)
    if tally.nan_where_finite:
        return Comparison(False, None, None, f"{tally.nan_where_finite} of {total} elements are NaN where the "
                                             "reference is finite (unwritten or uninitialised output?)")
    if tally.finite_where_nan:
        return Comparison(False, None, None,
                          f"{tally.finite_where_nan} of {total} elements are finite where the reference is NaN")
    if tally.inf_disagree:
        return Comparison(False, None, None, f"{tally.inf_disagree} of {total} elements disagree with the "
                                             "reference on ±inf")
    if not tally.any_finite:
        return Comparison(True, 0.0, 0.0)
    max_abs, max_rel = finite_or_none(tally.max_abs), finite_or_none(tally.max_rel)
    if tally.bad:
        flat, got_v, exp_v = tally.first_bad or (0, float("nan"), float("nan"))
        first = _unravel(flat, shape)
        return Comparison(False, max_abs, max_rel,
                          f"{tally.bad} of {total} elements outside tolerance (first at index {first}, "
                          f"got {got_v:.6g}, expected {exp_v:.6g})")
    return Comparison(True, max_abs, max_rel)


def _expected(ref_chunk: torch.Tensor, out_dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The reference chunk rounded to the output dtype, then widened to float64, on `device`."""
    import torch

    return ref_chunk.to(device=device).to(out_dtype).to(torch.float64)


def _compare_block(tally: _Tally, got_chunk: torch.Tensor, ref_chunk: torch.Tensor, scale: torch.Tensor | None,
                   flat_start: int, cols: int, out_dtype: torch.dtype, atol: float, rtol: float,
                   device: torch.device, scalar: bool = False) -> None:
    """One chunk of rows (or one piece of a row, with its row's `scale` given) into the tally."""
    import torch

    expected = _expected(ref_chunk, out_dtype, device)
    got = got_chunk.to(device=device, dtype=torch.float64)
    exp_nan, got_nan = expected.isnan(), got.isnan()
    tally.nan_where_finite += int((got_nan & ~exp_nan).sum())
    tally.finite_where_nan += int((exp_nan & ~got_nan).sum())
    del got_nan
    exp_inf, got_inf = expected.isinf(), got.isinf()
    tally.inf_disagree += int((got_inf != exp_inf).sum()) + int((exp_inf & got_inf & (got != expected)).sum())
    finite = ~(exp_nan | exp_inf)
    del exp_nan, exp_inf, got_inf
    if not bool(finite.any()):
        return
    tally.any_finite = True
    clean = torch.where(finite, expected, 0.0)
    del expected
    if scale is None:
        scale = clean.abs() if scalar else clean.pow(2).sum(-1, keepdim=True).div_(cols).sqrt_()
    err = (got - clean).abs_()
    err.masked_fill_(~finite, 0.0)  # where the reference is not finite the checks above decided
    del got
    magnitude = clean.abs_()
    bad = finite & (err > atol * scale + rtol * magnitude)
    tally.max_abs = max(tally.max_abs, float(err.max()))
    rel = torch.where(finite & (magnitude != 0), err / magnitude.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    tally.max_rel = max(tally.max_rel, float(rel.max()))
    del rel
    n_bad = int(bad.sum())
    if n_bad:
        if tally.first_bad is None:
            r, c = (int(i) for i in bad.nonzero()[0])
            expected_v = float(_expected(ref_chunk[r:r + 1, c:c + 1], out_dtype, device))
            got_v = float(got_chunk[r, c].to(torch.float64))
            tally.first_bad = (flat_start + r * cols + c, got_v, expected_v)
        tally.bad += n_bad


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))


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
            refs = reference_outputs_within_memory(task, case, args)
        except HarnessError:  # what did not fit, said by the harness
            raise
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
        want = out_dtype if task.kind != "kernelbench" else (ref.dtype if not ref.is_floating_point() else first_dtype)
        if out.dtype != want:
            evidence.message = f"output {i} has dtype {out.dtype}, expected {want}"
            return evidence
        try:
            result = compare(out, ref, want, atol, rtol)
        except torch.OutOfMemoryError as exc:
            raise HarnessError(f"the harness ran out of memory comparing output {i} of case {case.index} "
                               f"({_gib(out)} GiB) in chunks of {COMPARE_CHUNK_ELEMENTS} elements: "
                               f"{_first_line(exc)}") from None
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
            isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and _same_bits(a, b)
            for a, b in zip(first, again)
        )
        if not same:
            notes.append(f"not deterministic: the same inputs (seed {case.seed}) gave different bits on a second call")
    return notes


def _same_bits(a: torch.Tensor, b: torch.Tensor, chunk_elements: int | None = None) -> bool:
    """Equal values, NaN where NaN, chunk by chunk (a float copy of a whole large output would not fit)."""
    import torch

    step = max(1, int(chunk_elements or COMPARE_CHUNK_ELEMENTS))
    fa, fb = a.reshape(-1), b.reshape(-1)
    for start in range(0, fa.numel(), step):
        x = fa[start:start + step].to(b.device).float()
        y = fb[start:start + step].float()
        if not torch.equal(torch.nan_to_num(x), torch.nan_to_num(y)) or not torch.equal(x.isnan(), y.isnan()):
            return False
    return True


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
