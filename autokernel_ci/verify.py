"""Verify a model end to end with the optimized kernels swapped in: same outputs, and how much faster.

`verify_model` builds the model from its factory, makes a copy and swaps the kernels into it with
`runtime.apply`, then:

1. **Outputs.** On the factory's example inputs and on fresh random ones (new token ids, new
   activations), the patched model's outputs are compared with the original model's. A case passes
   when ‖patched − original‖₂ ≤ rtol · ‖original‖₂ + atol · √n (the model's `tolerance`, else
   `DEFAULT_TOLERANCES` for its dtype) and no output is NaN or infinite where the original's is
   finite; or, for a 16-bit model, when the patched model is no further from an fp32 copy of the
   original than the original itself is (× `NOISE_FACTOR`): both are then within the dtype's own
   rounding of the true answer. The patched model under `torch.compile` is checked the same way.
2. **Time.** Eager, `torch.compile`, patched eager and patched under `torch.compile`, each timed
   with `harness.timing.time_fn` on the example inputs. On a CPU the kernels run in Triton's
   interpreter and the timings are marked as not representative.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autokernel_ci.errors import AutokernelError
from autokernel_ci.tasks import ModelTarget

# (atol, rtol) for whole-model outputs: ‖Δ‖₂ ≤ rtol · ‖ref‖₂ + atol · √n.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-5, 1e-4),
    "fp16": (1e-3, 1e-2),
    "bf16": (1e-3, 2e-2),
}
NOISE_FACTOR = 1.5
COMPARE_CHUNK = 1 << 24
VARIANTS = ("eager", "compile", "patched", "patched+compile")


@dataclass
class OutputCheck:
    """One comparison of a variant's outputs with the original model's, on one set of inputs."""

    inputs: str  # "example" or "seed N"
    variant: str  # "patched", "patched+compile" or "compile" (the last is informative only)
    rel_l2: float
    max_abs: float
    passed: bool
    nonfinite: bool = False
    rel_l2_vs_fp32: float | None = None  # this variant against the fp32 model
    eager_vs_fp32: float | None = None  # the original model against the fp32 model
    gating: bool = True  # False: recorded, but it does not decide the verdict
    error: str = ""


@dataclass
class VariantTiming:
    name: str
    median_us: float | None
    iqr_us: float | None = None
    count: int = 0
    samples_us: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class VerifyResult:
    model: str
    device: str
    dtype: str
    tolerance: tuple[float, float]
    passed: bool
    swaps: list[dict[str, Any]]
    kernels: dict[str, str]
    checks: list[OutputCheck]
    timings: dict[str, VariantTiming]
    fallbacks: dict[str, dict[str, int]]
    kernel_calls: dict[str, int]
    representative: bool
    compile_backend: str
    message: str = ""
    notes: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    created_at: str = ""
    duration_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    # under torch.compile: graph breaks and recompiles per compiled variant, and the swap set decided there
    compile_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    compile_choice: dict[str, Any] = field(default_factory=dict)

    def speedup(self, variant: str, baseline: str) -> float | None:
        a, b = self.timings.get(variant), self.timings.get(baseline)
        if a is None or b is None or not a.median_us or not b.median_us:
            return None
        return b.median_us / a.median_us

    @property
    def speedups(self) -> dict[str, float | None]:
        return {
            "patched vs eager": self.speedup("patched", "eager"),
            "compile vs eager": self.speedup("compile", "eager"),
            "patched+compile vs compile": self.speedup("patched+compile", "compile"),
            "patched+compile vs eager": self.speedup("patched+compile", "eager"),
            "chosen swap set + compile vs compile": self._chosen_speedup(),
        }

    def _chosen_speedup(self) -> float | None:
        base, chosen = self.timings.get("compile"), self.compile_choice.get("median_us")
        return base.median_us / chosen if base is not None and base.median_us and chosen else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speedups"] = self.speedups
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)


@dataclass
class TimingOptions:
    warmup_ms: float = 100.0
    rep_ms: float = 500.0
    min_reps: int = 10
    max_reps: int = 200


# -- comparing outputs ----------------------------------------------------------------------------------


def _tensors(out: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_flatten

    if hasattr(out, "to_tuple"):  # HF ModelOutput
        out = out.to_tuple()
    leaves, _ = tree_flatten(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def compare_outputs(out: Any, ref: Any, tolerance: tuple[float, float]) -> tuple[float, float, bool, bool]:
    """(relative L2 error, max abs error, passed, non-finite where ref is finite) over all output tensors."""
    import torch

    outs, refs = _tensors(out), _tensors(ref)
    if len(outs) != len(refs) or any(o.shape != r.shape for o, r in zip(outs, refs)):
        return math.inf, math.inf, False, False
    atol, rtol = tolerance
    diff_sq = ref_sq = max_abs = 0.0
    n = 0
    nonfinite = False
    for o, r in zip(outs, refs):
        if not r.is_floating_point():
            if not torch.equal(o, r):
                return math.inf, math.inf, False, False
            continue
        n += r.numel()
        # In float64, a slice at a time: logits of a large batch would not fit in memory at once.
        for oc, rc in zip(o.reshape(-1).split(COMPARE_CHUNK), r.reshape(-1).split(COMPARE_CHUNK)):
            o64, r64 = oc.double(), rc.double()
            finite = torch.isfinite(r64)
            bad = finite & ~torch.isfinite(o64)
            nonfinite = nonfinite or bool(bad.any()) or bool((~finite & (o64.isnan() != r64.isnan())).any())
            d = torch.where(finite & ~bad, o64 - r64, 0.0)
            diff_sq += float(d.square().sum())
            ref_sq += float(torch.where(finite, r64, 0.0).square().sum())
            max_abs = max(max_abs, float(d.abs().max()) if d.numel() else 0.0)
    diff, norm = math.sqrt(diff_sq), math.sqrt(ref_sq)
    rel = diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)
    passed = not nonfinite and diff <= rtol * norm + atol * math.sqrt(max(n, 1))
    return rel, max_abs, passed, nonfinite


def relative_l2(out: Any, ref: Any) -> float:
    return compare_outputs(out, ref, (0.0, 0.0))[0]


def fresh_inputs(args: list[Any], kwargs: dict[str, Any], seed: int) -> tuple[list[Any], dict[str, Any]]:
    """New random inputs shaped like the examples: integers drawn from the examples' range, floats
    from a normal distribution, everything else unchanged."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def fresh(a: Any) -> Any:
        if not isinstance(a, torch.Tensor) or a.numel() == 0:
            return a
        if a.is_floating_point():
            return torch.randn(a.shape, generator=generator).to(device=a.device, dtype=a.dtype)
        if a.dtype == torch.bool:
            return a
        low, high = int(a.min()), int(a.max())
        return torch.randint(low, high + 1, a.shape, generator=generator).to(device=a.device, dtype=a.dtype)

    return [fresh(a) for a in args], {k: fresh(v) for k, v in kwargs.items()}


# -- the verification ------------------------------------------------------------------------------------


def verify_model(target: ModelTarget, *, kernels: Mapping[str, Any] | None = None, ops: Iterable[str] | None = None,
                 config_path: str | Path | None = None, device: Any = None, seeds: Iterable[int] = (1, 2),
                 time_variants: bool = True, timing: TimingOptions | None = None, compile: bool = True,
                 compile_backend: str = "inductor", fp32_reference: bool = True,
                 factory_kwargs: dict[str, Any] | None = None, custom: Mapping[str, str] | None = None,
                 compile_swaps: str = "auto",
                 on_step: Callable[[str], None] | None = None) -> VerifyResult:
    """Swap the kernels into the target model and check it; see the module docstring.

    `kernels` maps an op to a kernel file (or callable); ops without one take the config's kernel
    entry for the op (`config_path`), else the built-in starter. `ops` defaults to the target's
    `swap` list, else `runtime.DEFAULT_OPS`. `time_variants=False` skips the timing. `custom` maps a kernel
    task of the config (your own kernel included) to the `module:attr` of the model's code it replaces:
    a module class (each instance's forward becomes the task's entry function) or a function.
    `compile_swaps`: "measure" decides the swap set under compile by timing (`compile_check.decide`),
    "all" keeps every swapped op, "auto" measures on a GPU only.
    """
    import torch

    from autokernel_ci import compile_check, runtime
    from autokernel_ci.harness.device import device_info
    from autokernel_ci.profiling import build_model

    started = time.monotonic()
    step = on_step or (lambda message: None)
    step(f"building {target.name} from {target.factory}")
    model, args, kwargs = build_model(target, device, factory_kwargs)
    on_gpu = next(model.parameters()).device.type == "cuda"
    tolerance = tuple(target.tolerance) if target.tolerance else DEFAULT_TOLERANCES[target.dtype]
    wanted = tuple(ops) if ops is not None else (tuple(target.swap) or runtime.DEFAULT_OPS)
    sources: dict[str, Any] = {}
    if config_path is not None:
        sources.update({op: p for op, p in runtime.kernels_from_config(config_path).items() if op in wanted})
    sources.update({op: k for op, k in (kernels or {}).items() if op in wanted})
    patched = copy.deepcopy(model)
    report = runtime.apply(patched, kernels={op: sources.get(op) for op in wanted}, ops=wanted)
    notes: list[str] = []
    extra = [swap_custom(patched, task, where, config_path, target.root) for task, where in (custom or {}).items()]
    if any(x.kind == "function" for x in extra) and compile:
        notes.append("a swapped function runs in the eager patched model only; the compiled variants call the "
                     "original function")
    if not report.swaps and not extra:
        notes.append(f"no module of {target.name} matched the ops {', '.join(wanted)}: nothing was swapped")
    if not on_gpu:
        notes.append("no GPU: the kernels ran in Triton's interpreter and the timings are not representative")
    reference32 = None
    if fp32_reference and target.dtype != "fp32":
        reference32 = copy.deepcopy(model).float()

    compiled: dict[str, Any] = {}
    if compile:
        compiled = {"compile": compile_check.CompileWatch(torch.compile(model, backend=compile_backend), "compile"),
                    "patched+compile": compile_check.CompileWatch(torch.compile(patched, backend=compile_backend),
                                                                  "patched+compile")}
    cases = [("example", args, kwargs)] + [(f"seed {s}", *fresh_inputs(args, kwargs, s)) for s in seeds]
    checks: list[OutputCheck] = []
    compile_errors: dict[str, str] = {}
    with torch.inference_mode():
        for label, a, kw in cases:
            step(f"comparing outputs on the {label} inputs")
            ref = model(*a, **kw)
            ref32 = reference32(*_as_fp32(a), **_as_fp32_kw(kw)) if reference32 is not None else None
            eager32 = relative_l2(ref, ref32) if ref32 is not None else None
            with _active(extra):
                checks.append(_check(label, "patched", patched, a, kw, ref, ref32, eager32, tolerance))
            for name, fn in compiled.items():
                if name in compile_errors:
                    continue
                check = _check(label, name, fn, a, kw, ref, ref32, eager32, tolerance)
                check.gating = name != "compile"
                if check.error:
                    compile_errors[name] = check.error
                checks.append(check)
            del ref, ref32
    if "compile" in compile_errors:
        # torch.compile fails on the original model too: not the kernels' doing.
        for c in checks:
            if c.variant == "patched+compile":
                c.gating = False
        notes.append(f"torch.compile failed on the original model ({compile_errors['compile']}); the compiled "
                     "variants are not judged")
    kernel_calls = {**report.kernel_calls(), **{x.task: x.kernel_calls for x in extra}}
    swapped = {**report.ops(), **{x.task: x.replaced for x in extra}}
    timings: dict[str, VariantTiming] = {}
    if time_variants:
        timing = timing or TimingOptions()
        callables = {"eager": model, "patched": _with_active(patched, extra), **compiled}
        for name in VARIANTS:
            if name not in callables:
                continue
            if name in compile_errors:
                timings[name] = VariantTiming(name, None, error=compile_errors[name])
                continue
            step(f"timing {name}")
            fn = callables[name]
            snapshot = fn.snapshot() if isinstance(fn, compile_check.CompileWatch) else None
            timings[name] = _time(name, getattr(fn, "fn", fn), args, kwargs, timing, "cuda" if on_gpu else "cpu")
            if snapshot is not None:
                fn.add(snapshot, calls=max(timings[name].count, 1))
            step(_timing_line(timings[name]))
    compile_choice: dict[str, Any] = {}
    measure = compile_swaps == "measure" or (compile_swaps == "auto" and on_gpu)
    if compile and time_variants and report.swaps and not compile_errors and measure:
        step("deciding the swap set under torch.compile, one op at a time")
        choice = compile_check.decide(
            model, list(report.ops()), sources, args, kwargs, timings["compile"], timings["patched+compile"],
            lambda m: torch.compile(m, backend=compile_backend),
            lambda label, fn: _timed_step(step, _time(label, fn, args, kwargs, timing, "cuda" if on_gpu else "cpu")))
        compile_choice = choice.to_dict()
        notes.extend(compile_check.describe(choice.decisions, True, report.ops()))
        notes.extend([choice.note] if choice.note else [])
    elif compile and report.swaps:
        notes.extend(compile_check.describe([], False, report.ops()))
    compile_stats = {name: asdict(fn.stats) for name, fn in compiled.items()}
    compile_stats.update({s.variant: asdict(s) for s in (choice.stats if compile_choice else [])})
    notes.extend(f"under torch.compile, {watch.stats.summary()}" for watch in compiled.values())
    failed = [c for c in checks if c.gating and not c.passed]
    never_called = never_called_ops(swapped, kernel_calls, report.fallbacks())
    if failed:
        worst = max(failed, key=lambda c: c.rel_l2)
        message = (f"{len(failed)} of {sum(c.gating for c in checks)} output checks failed; worst: {worst.variant} "
                   f"on the {worst.inputs} inputs, relative L2 error {worst.rel_l2:.3g} (tolerance rtol "
                   f"{tolerance[1]:g}, atol {tolerance[0]:g})" + (f": {worst.error}" if worst.error else ""))
    elif never_called:
        message = "; ".join(never_called) + " (the outputs matched only because the original ops ran)"
    else:
        message = (f"outputs match the original model on {len(cases)} input sets; kernel calls: "
                   f"{calls_summary(swapped, kernel_calls)}")
    for x in extra:
        if x.restore is not None:
            x.restore()
    info = device_info()
    return VerifyResult(
        model=target.name, device=info.label, dtype=target.dtype, tolerance=tolerance,
        passed=not failed and not never_called,
        swaps=[asdict(s) for s in report.swaps] + [x.to_swap() for x in extra],
        kernels={**report.kernels, **{x.task: x.origin for x in extra}}, checks=checks, timings=timings,
        fallbacks=report.fallbacks(), kernel_calls=kernel_calls, representative=on_gpu,
        compile_backend=compile_backend if compile else "", message=message, notes=notes,
        inputs=[_describe(x) for x in args], created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=time.monotonic() - started, environment=info.to_dict(), compile_stats=compile_stats,
        compile_choice=compile_choice,
    )


@dataclass
class CustomSwap:
    """A config task's kernel in place of a module class or a function of the model's code, with its calls."""

    task: str
    target: str  # module:attr
    kind: str  # "module" (each instance's forward) or "function" (the module attribute, while active)
    origin: str  # the kernel file and entry
    replaced: int = 0
    kernel_calls: int = 0
    active: bool = False
    restore: Callable[[], None] | None = None

    def to_swap(self) -> dict[str, Any]:
        return {"path": self.target, "op": self.task, "module_class": self.kind, "slot": -1}


def swap_custom(model: Any, task_name: str, where: str, config_path: str | Path | None,
                root: Path | None) -> CustomSwap:
    """Put config task `task_name`'s entry function in place of `where` (module:attr) in `model`."""
    import torch

    from autokernel_ci.tasks import load_callable, load_module_from_path, resolve_task

    task = resolve_task(task_name, Path(config_path) if config_path else None)
    if task.path is None or task.kind == "kernelbench":
        raise AutokernelError(f"--swap {task_name}=…: the task needs a kernel file with an entry function")
    module = load_module_from_path(task.path, name=f"_autokernel_swap_{abs(hash(str(task.path)))}")
    kernel = getattr(module, task.entry, None)
    if not callable(kernel):
        raise AutokernelError(f"{task.path} defines no callable {task.entry} (the entry of task {task_name})")
    if ":" not in where:
        raise AutokernelError(f"--swap {task_name}={where}: name what it replaces as module:attr")
    original = load_callable(where, root or task.root)
    swap = CustomSwap(task_name, where, "function", f"{task.path}:{task.entry}")

    def counted(*args: Any, **kwargs: Any) -> Any:
        swap.kernel_calls += 1
        return kernel(*args, **kwargs)

    if isinstance(original, type) and issubclass(original, torch.nn.Module):
        swap.kind = "module"
        for _, m in model.named_modules():
            if isinstance(m, original):
                m.forward = counted
                swap.replaced += 1
        if not swap.replaced:
            raise AutokernelError(f"--swap {task_name}={where}: the model has no {original.__name__} module")
        return swap
    if not callable(original):
        raise AutokernelError(f"--swap {task_name}={where}: {where} is neither a module class nor a function")
    import importlib

    owner = importlib.import_module(where.partition(":")[0])
    attr = where.partition(":")[2]

    def maybe(*args: Any, **kwargs: Any) -> Any:
        return counted(*args, **kwargs) if swap.active else original(*args, **kwargs)

    setattr(owner, attr, maybe)
    swap.replaced, swap.restore = 1, lambda: setattr(owner, attr, original)
    return swap


@contextlib.contextmanager
def _active(swaps: list[CustomSwap]):
    """Swapped functions call the kernel inside this block only (the original model calls them too)."""
    for x in swaps:
        x.active = True
    try:
        yield
    finally:
        for x in swaps:
            x.active = False


def _with_active(fn: Any, swaps: list[CustomSwap]) -> Any:
    if not any(x.kind == "function" for x in swaps):
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        with _active(swaps):
            return fn(*args, **kwargs)

    return call


def never_called_ops(swapped: Mapping[str, int], kernel_calls: Mapping[str, int],
                     fallbacks: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One failure line per swapped op whose kernel never ran: every call took the original op instead,
    so the outputs prove nothing about the kernel. Says why each call fell back."""
    lines = []
    for op, modules in sorted(swapped.items()):
        if kernel_calls.get(op, 0) > 0:
            continue
        reasons = fallbacks.get(op, {})
        why = ", ".join(f"{n} × {FALLBACK_REASONS.get(r, r)}" for r, n in sorted(reasons.items())) \
            or "the swapped modules were never called"
        lines.append(f"{op}: kernel never called ({modules} module(s) swapped, every call fell back to the original "
                     f"op: {why})")
    return lines


def calls_summary(swapped: Mapping[str, int], kernel_calls: Mapping[str, int]) -> str:
    """'rmsnorm 5 modules, 45 calls; rope 2 modules, 18 calls'."""
    return "; ".join(f"{op} {n} module{'s' * (n != 1)}, {kernel_calls.get(op, 0)} kernel call"
                     f"{'s' * (kernel_calls.get(op, 0) != 1)}" for op, n in sorted(swapped.items())) or "none"


FALLBACK_REASONS = {
    "device": "no GPU and no Triton interpreter (set TRITON_INTERPRET=1 to run the kernels on the CPU)",
    "autograd": "autograd was recording (the kernels are forward-only)",
    "dtype": "mixed dtypes or devices between the input and the module's parameters",
    "shape": "the kernel refused the shape",
    "device-or-dtype": "a device or dtype the kernel cannot serve",
}


def _check(label: str, variant: str, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], ref: Any,
           ref32: Any, eager32: float | None, tolerance: tuple[float, float]) -> OutputCheck:
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # a variant that cannot run fails its check, with the reason
        return OutputCheck(label, variant, math.inf, math.inf, False, error=f"{type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}")
    rel, max_abs, passed, nonfinite = compare_outputs(out, ref, tolerance)
    vs32 = relative_l2(out, ref32) if ref32 is not None else None
    if not passed and not nonfinite and vs32 is not None and eager32 is not None:
        # As close to the fp32 model as the original is: within the dtype's own rounding.
        passed = vs32 <= NOISE_FACTOR * eager32 + tolerance[0]
    return OutputCheck(label, variant, rel, max_abs, passed, nonfinite, vs32, eager32)


def _as_fp32(args: list[Any]) -> list[Any]:
    return [a.float() if hasattr(a, "is_floating_point") and a.is_floating_point() else a for a in args]


def _as_fp32_kw(kwargs: dict[str, Any]) -> dict[str, Any]:
    return dict(zip(kwargs, _as_fp32(list(kwargs.values()))))


def _time(name: str, fn: Any, args: list[Any], kwargs: dict[str, Any], options: TimingOptions,
          device: str) -> VariantTiming:
    import torch

    from autokernel_ci.harness.timing import time_fn

    def call():
        with torch.inference_mode():
            return fn(*args, **kwargs)

    try:
        t = time_fn(call, warmup_ms=options.warmup_ms, rep_ms=options.rep_ms, min_reps=options.min_reps,
                    max_reps=options.max_reps, flush_l2=False, device=device)
    except Exception as exc:
        return VariantTiming(name, None, error=f"{type(exc).__name__}: {exc}"[:300])
    return VariantTiming(name, t.median_us, t.iqr_us, t.count, list(t.samples_us))


def _timing_line(t: VariantTiming) -> str:
    if t.median_us is None:
        return f"{t.name}: no timing ({t.error})"
    return f"{t.name}: {t.median_us / 1000:.3f} ms (IQR {(t.iqr_us or 0) / 1000:.3f} ms, {t.count} calls)"


def _timed_step(step: Callable[[str], None], t: VariantTiming) -> VariantTiming:
    step(_timing_line(t))
    return t


def _describe(a: Any) -> str:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{str(a.dtype).removeprefix('torch.')}[{', '.join(map(str, a.shape))}]"
    return repr(a)


def verify_models(names: list[str] | None, config_path: str | Path | None, **options: Any) -> list[VerifyResult]:
    """`verify_model` for the config's models named in `names` (all of them when None)."""
    from autokernel_ci.config import find_config
    from autokernel_ci.profiling import model_target

    path = Path(config_path) if config_path is not None else find_config()
    if path is None:
        raise AutokernelError("no .autokernel.yml here naming models to verify (pass --config)")
    targets = [t for name in (names or [None]) for t in model_target(name, path)]
    return [verify_model(t, config_path=path, **options) for t in targets]
