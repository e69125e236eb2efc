"""Profile a `ModelTarget`: where its forward pass spends GPU time, by op family and by module, as a plan.

`profile_model` builds the model from its factory, runs a few warm-up forwards (not recorded), then
records `steps` forwards with `torch.profiler`. Every module call is wrapped in a `record_function`
range by forward hooks, so each op knows the module it ran in. An op's time is that of its outermost
operator call (`aten::linear`, not also the `aten::addmm` inside it), on the GPU its kernels' time.

Ops are grouped into families, in this order of evidence:

1. a `record_function("autokernel:<op>")` range around the code names the op outright;
2. the class of an enclosing module: RMSNorm-, LayerNorm-, Rotary-, Softmax-like;
3. the ops of one module call: `pow`/`mean`/`rsqrt` only is an RMSNorm written out; a `silu` and the
   `mul` after it are a SwiGLU gate;
4. the operator's name: `aten::linear`/`mm`/`addmm`/`bmm`/`matmul` → matmul, `aten::rms_norm` →
   rmsnorm, `aten::native_layer_norm` → layernorm, `aten::_softmax` → softmax, SDPA and flash →
   attention (no built-in yet), and so on.

Each family gets its share of the total, its bytes and flops (for a built-in op, what the op's cost
model says one fused kernel would move at the shapes seen), whether those make it memory- or
compute-bound against the ceilings, its percent of roofline, and the speedup a kernel at
`ACHIEVABLE_PCT` of roofline would bring. Without a GPU the times are CPU times, there are no
ceilings, and the expected speedups are priors; the plan says so.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autokernel_ci.errors import AutokernelError, TaskError
from autokernel_ci.tasks import ModelTarget

MODULE_RANGE = "autokernel.module::"
ANNOTATION = "autokernel:"
# A kernel is expected to reach this percent of its roofline; the gap to it is the expected speedup.
ACHIEVABLE_PCT = 80.0
MAX_EXPECTED_SPEEDUP = 8.0
# Without ceilings (no GPU): what a fused kernel typically brings over the eager sequence of ops.
PRIOR_SPEEDUP = {"rmsnorm": 2.0, "layernorm": 1.5, "rope": 2.0, "swiglu": 1.5, "softmax": 1.5,
                 "cross_entropy": 2.0, "add_rmsnorm": 2.0, "matmul": 1.05}
CPU_NOTE = "CPU time (no GPU): shares are of CPU time, and expected speedups are priors, not measurements"

# The class of a module says which op it computes (checked innermost first).
CLASS_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"rms_?norm", "rmsnorm"),
    (r"layer_?norm", "layernorm"),
    (r"rotary|rope", "rope"),
    (r"^softmax$", "softmax"),
)
OP_FAMILIES: dict[str, str] = {
    **dict.fromkeys(("linear", "mm", "addmm", "matmul", "bmm", "baddbmm", "_addmm_activation"), "matmul"),
    **dict.fromkeys(("rms_norm", "_fused_rms_norm"), "rmsnorm"),
    **dict.fromkeys(("layer_norm", "native_layer_norm"), "layernorm"),
    **dict.fromkeys(("softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"), "softmax"),
    **dict.fromkeys(("cross_entropy_loss", "nll_loss", "nll_loss_nd", "nll_loss_forward"), "cross_entropy"),
    **dict.fromkeys(("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                     "_flash_attention_forward", "_efficient_attention_forward",
                     "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention_for_cpu"),
                    "attention"),
    **dict.fromkeys(("silu", "silu_"), "silu"),
    **dict.fromkeys(("gelu", "gelu_"), "gelu"),
    **dict.fromkeys(("embedding",), "embedding"),
    **dict.fromkeys(("add", "add_", "sub", "mul", "mul_", "div", "neg", "pow", "rsqrt", "sqrt", "mean", "sum",
                     "sigmoid", "tanh", "exp", "where", "masked_fill", "cos", "sin", "relu", "dropout"),
                    "elementwise"),
    **dict.fromkeys(("copy_", "to", "_to_copy", "contiguous", "clone", "cat", "stack", "type_as", "index",
                     "index_select", "flatten", "reshape", "arange", "ones", "zeros", "empty", "full"), "copy"),
    **dict.fromkeys(("view", "_unsafe_view", "transpose", "t", "permute", "slice", "select", "unbind", "split",
                     "chunk", "expand", "unsqueeze", "squeeze", "as_strided", "unflatten", "detach", "alias",
                     "lift_fresh"), "view"),
}
NORM_PATTERN_OPS = {"pow", "mean", "add", "rsqrt", "mul", "to", "_to_copy", "copy_", "type_as", "square", "float"}
DTYPE_NAMES = {"float": "fp32", "c10::BFloat16": "bf16", "c10::Half": "fp16", "double": "fp64",
               "bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64"}
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp64": 8}


# -- the plan -----------------------------------------------------------------------------------------


@dataclass
class PlanEntry:
    """One op family: its share of the total time and what a kernel for it could bring."""

    family: str
    builtin: str | None  # the built-in op that implements it, or None ("no built-in yet")
    share: float  # of the total time, 0..1
    self_time_us: float  # per forward
    calls: float  # per forward
    shapes: list[dict[str, Any]]  # [{"shape": {...}, "dtype": "bf16", "calls": n}], most calls first
    bytes: int | None  # per forward (for a built-in: one fused kernel's traffic at these shapes)
    flops: int | None
    bound: str  # "memory" or "compute"
    pct_roofline: float | None
    expected_speedup: float
    expected_speedup_source: str  # "roofline" or "prior"
    potential_saving: float  # share × (1 − 1/expected_speedup): of the end-to-end time
    dtype: str | None = None
    modules: list[str] = field(default_factory=list)  # where it runs (collapsed paths), most time first
    ops: dict[str, float] = field(default_factory=dict)  # operator → µs per forward

    @property
    def note(self) -> str:
        return f"built-in {self.builtin}" if self.builtin else "no built-in yet"


@dataclass
class ModuleEntry:
    """Time by module path, layer indices collapsed (`layers.*.attention`)."""

    path: str
    self_time_us: float
    share: float
    families: dict[str, float]  # family → µs per forward


@dataclass
class Plan:
    model: str
    device: str
    time_kind: str  # "gpu" or "cpu"
    dtype: str
    steps: int
    warmup: int
    total_us: float  # per forward, the sum of the grouped ops
    entries: list[PlanEntry]
    modules: list[ModuleEntry]
    ceilings_source: str | None  # "measured", "datasheet" or None
    note: str = ""
    inputs: list[str] = field(default_factory=list)
    factory: str = ""
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    trace: str | None = None
    swapped: list[str] = field(default_factory=list)  # kernels swapped in before profiling, with their calls

    def entry(self, family: str) -> PlanEntry | None:
        return next((e for e in self.entries if e.family == family), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, raw in zip(self.entries, data["entries"]):
            raw["note"] = entry.note
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        entry_fields = set(PlanEntry.__dataclass_fields__)
        entries = [PlanEntry(**{k: v for k, v in e.items() if k in entry_fields}) for e in data["entries"]]
        modules = [ModuleEntry(**m) for m in data.get("modules", [])]
        known = set(cls.__dataclass_fields__) - {"entries", "modules"}
        return cls(entries=entries, modules=modules, **{k: v for k, v in data.items() if k in known})


def load_plan(path: str | Path) -> Plan:
    try:
        return Plan.from_dict(json.loads(Path(path).read_text()))
    except OSError as exc:
        raise AutokernelError(f"cannot read the plan {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AutokernelError(f"{path} is not a plan written by `autokernel-ci profile`: {exc}") from None


# -- model targets --------------------------------------------------------------------------------------


def model_target(name: str | None, config_path: str | Path | None = None) -> list[ModelTarget]:
    """The config's model named `name` (all its models when None), as `ModelTarget`s."""
    from autokernel_ci.config import find_config, load_config

    path = Path(config_path) if config_path is not None else find_config()
    if path is None:
        raise AutokernelError("no .autokernel.yml here naming models to profile (pass --config, or add a "
                              "`models:` section with name and factory)")
    cfg = load_config(path)
    targets = [ModelTarget(name=m.name, factory=m.factory, dtype=m.dtype, swap=list(m.swap), tolerance=m.tolerance,
                           root=cfg.root) for m in cfg.models]
    if not targets:
        raise AutokernelError(f"{path} has no `models:` section; add one with a name and a factory "
                              "('module:callable' returning (model, example_inputs))")
    if name is None:
        return targets
    chosen = [t for t in targets if t.name == name]
    if not chosen:
        names = [t.name for t in targets]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise AutokernelError(f"unknown model {name!r}{hint}; {path} names: {', '.join(names)}")
    return chosen


def build_model(target: ModelTarget, device: Any = None, factory_kwargs: dict[str, Any] | None = None):
    """Call the target's factory; returns (model in eval mode on `device` in the target's dtype, args, kwargs)."""
    import torch

    from autokernel_ci.ops.base import DTYPES
    from autokernel_ci.tasks import load_callable

    factory = load_callable(target.factory, target.root)
    try:
        built = factory(**(factory_kwargs or {}))
    except Exception as exc:
        raise TaskError(f"the factory {target.factory} of model {target.name!r} failed: "
                        f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(built, (tuple, list)) and len(built) == 2 and isinstance(built[0], torch.nn.Module)):
        raise TaskError(f"the factory {target.factory} of model {target.name!r} must return (model, example_inputs); "
                        f"got {type(built).__name__}")
    model, inputs = built
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[target.dtype]
    model = model.to(device=device, dtype=dtype).eval()
    args, kwargs = split_inputs(inputs)
    return model, prepare_inputs(args, device, dtype), {k: prepare_inputs([v], device, dtype)[0]
                                                        for k, v in kwargs.items()}


def split_inputs(inputs: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(inputs, dict):
        return [], dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return list(inputs), {}
    return [inputs], {}


def prepare_inputs(args: list[Any], device: Any, dtype: Any) -> list[Any]:
    """Tensors moved to the device; floating-point ones cast to the model's dtype (token ids stay ints)."""
    import torch

    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.to(device=device, dtype=dtype if a.is_floating_point() else a.dtype)
        out.append(a)
    return out


# -- recording --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def module_ranges(model: Any) -> Iterator[None]:
    """Wrap every module call in a `record_function` range named after its path, class and input."""
    from torch.autograd.profiler import record_function

    stack: list[Any] = []
    handles = []

    def enter(path: str, cls: str):
        def hook(module, args):
            first = next((a for a in args if hasattr(a, "shape") and hasattr(a, "dtype")), None)
            detail = "||" if first is None else \
                f"|{'x'.join(map(str, first.shape))}|{str(first.dtype).removeprefix('torch.')}"
            rf = record_function(f"{MODULE_RANGE}{path}|{cls}{detail}")
            rf.__enter__()
            stack.append(rf)
        return hook

    def leave(module, args, output):
        if stack:
            stack.pop().__exit__(None, None, None)

    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(path, type(module).__name__)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        while stack:
            stack.pop().__exit__(None, None, None)
        for h in handles:
            h.remove()


def profile_model(target: ModelTarget, *, device: Any = None, steps: int = 3, warmup: int = 2,
                  factory_kwargs: dict[str, Any] | None = None, trace: str | Path | None = None,
                  ceilings: Any = "auto", prepare: Callable[[Any], Callable[[], list[str]]] | None = None) -> Plan:
    """Profile `steps` forwards of the target after `warmup` unrecorded ones; see the module docstring.

    `prepare(model)` runs on the built model before anything is timed (swapping kernels in, say) and
    returns a function that, after profiling, says what it did (recorded in `Plan.swapped`)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from autokernel_ci.harness.device import device_info, get_ceilings

    if steps < 1 or warmup < 0:
        raise AutokernelError(f"need steps ≥ 1 and warmup ≥ 0, got steps={steps}, warmup={warmup}")
    model, args, kwargs = build_model(target, device, factory_kwargs)
    report = prepare(model) if prepare is not None else None
    on_gpu = next(model.parameters()).device.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with torch.inference_mode():
        warmed = warm_up(lambda: model(*args, **kwargs), warmup, sync) if warmup else 0
        with profile(activities=activities, record_shapes=True):
            model(*args, **kwargs)  # the profiler's own first-use costs land in a session thrown away
            sync()
        with profile(activities=activities, record_shapes=True) as prof, module_ranges(model):
            for _ in range(steps):
                model(*args, **kwargs)
            sync()
    if trace is not None:
        Path(trace).parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    info = device_info()
    if ceilings == "auto":
        ceilings = get_ceilings() if on_gpu else None
    records = op_records(prof.events(), gpu=on_gpu)
    if not records:
        raise AutokernelError(f"the profiler recorded no operators in the forward of {target.name!r}")
    plan = build_plan(records, steps=steps, ceilings=ceilings, time_kind="gpu" if on_gpu else "cpu",
                      model_dtype=target.dtype)
    plan.model, plan.device, plan.dtype, plan.warmup = target.name, info.label, target.dtype, warmed
    plan.factory, plan.factory_kwargs = target.factory, dict(factory_kwargs or {})
    plan.inputs = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in kwargs.items()]
    plan.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    plan.environment = info.to_dict()
    plan.trace = str(trace) if trace is not None else None
    plan.swapped = report() if report is not None else []
    return plan


def warm_up(forward: Callable[[], Any], minimum: int, sync: Callable[[], None], *, max_calls: int = 50,
            settle: float = 1.25) -> int:
    """Run `forward` at least `minimum` times, and on until two calls in a row take about the same time
    (within `settle`×): the first calls pay for lazy initialisation, autotuning and caches. Returns the calls."""
    import time

    previous = None
    for calls in range(1, max_calls + 1):
        start = time.perf_counter()
        forward()
        sync()
        elapsed = time.perf_counter() - start
        if calls >= minimum and previous is not None and max(elapsed, previous) <= settle * min(elapsed, previous):
            return calls
        if calls >= minimum and minimum == 0:
            return calls
        previous = elapsed
    return max_calls


def _describe(a: Any) -> str:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{str(a.dtype).removeprefix('torch.')}[{', '.join(map(str, a.shape))}]"
    return repr(a)


# -- from events to records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleCall:
    """One call of a module: the profiler range the forward hooks opened around it."""

    id: int
    path: str  # "" is the model itself
    cls: str
    input_shape: tuple[int, ...] | None  # of its first tensor argument
    input_dtype: str | None


@dataclass
class OpRecord:
    """One outermost operator call, with the module calls it ran inside (innermost first)."""

    name: str  # "linear", without the "aten::" namespace
    time_us: float
    modules: tuple[ModuleCall, ...]
    annotation: str | None  # the op named by an enclosing `autokernel:<op>` range
    input_shapes: list[list[int]]
    input_dtypes: list[str]
    concrete: list[Any]

    @property
    def module(self) -> ModuleCall | None:
        return self.modules[0] if self.modules else None

    @property
    def path(self) -> str:
        return self.modules[0].path if self.modules else ""


def _is_op(name: str) -> bool:
    return "::" in name and not name.startswith(MODULE_RANGE) and not name.startswith(ANNOTATION)


def _module_call(event: Any) -> ModuleCall:
    parts = event.name[len(MODULE_RANGE):].split("|")
    shape = dtype = None
    if len(parts) >= 4 and parts[2]:
        shape = tuple(int(d) for d in parts[2].split("x") if d)
        dtype = DTYPE_NAMES.get(parts[3], parts[3])
    return ModuleCall(id=event.id, path=parts[0], cls=parts[1] if len(parts) > 1 else "", input_shape=shape,
                      input_dtype=dtype)


def op_records(events: Any, gpu: bool) -> list[OpRecord]:
    """The outermost operator calls among the profiler's events, with their module context."""
    records = []
    for e in events:
        if str(getattr(e, "device_type", "")).endswith("CUDA") or not _is_op(e.name):
            continue
        parent, modules, annotation, nested = e.cpu_parent, [], None, False
        while parent is not None:
            if _is_op(parent.name):
                nested = True
                break
            if parent.name.startswith(MODULE_RANGE):
                modules.append(_module_call(parent))
            elif parent.name.startswith(ANNOTATION) and annotation is None:
                annotation = parent.name[len(ANNOTATION):].strip()
            parent = parent.cpu_parent
        if nested:
            continue
        records.append(OpRecord(
            name=e.name.split("::", 1)[1], time_us=float(e.device_time_total if gpu else e.cpu_time_total),
            modules=tuple(modules), annotation=annotation,
            input_shapes=[list(s) for s in (e.input_shapes or [])],
            input_dtypes=[DTYPE_NAMES.get(d, d) for d in (getattr(e, "input_dtypes", None) or [])],
            concrete=list(getattr(e, "concrete_inputs", None) or []),
        ))
    return records


# -- families ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classified:
    """A record's family, and the call of the op it belongs to: a module call for ops recognised by
    their module, the record itself otherwise (`unit` is then None)."""

    family: str
    unit: ModuleCall | None = None


def class_family(cls: str) -> str | None:
    for pattern, family in CLASS_FAMILIES:
        if re.search(pattern, cls, flags=re.IGNORECASE):
            return family
    return None


def op_family(name: str) -> str:
    return OP_FAMILIES.get(name, "other")


def classify(records: list[OpRecord]) -> list[Classified]:
    """The family of each record (see the module docstring for the order of evidence)."""
    from autokernel_ci.ops import is_builtin

    out: list[Classified | None] = [None] * len(records)
    by_call: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_call[r.module.id if r.module else -1].append(i)
        if r.annotation and is_builtin(r.annotation):
            out[i] = Classified(r.annotation)
            continue
        match = next((m for m in r.modules if class_family(m.cls)), None)
        if match is not None:
            out[i] = Classified(class_family(match.cls), match)
    for call, members in by_call.items():
        names = {records[i].name for i in members}
        if call >= 0 and {"rsqrt", "mean"} <= names and names <= NORM_PATTERN_OPS:
            for i in members:
                out[i] = out[i] or Classified("rmsnorm", records[i].module)
        silu_shapes: list[Any] = []
        for i in members:
            r = records[i]
            if out[i] is not None:
                continue
            if r.name in ("silu", "silu_"):
                out[i] = Classified("swiglu")
                silu_shapes.append(r.input_shapes[0] if r.input_shapes else None)
            elif r.name == "mul" and silu_shapes and silu_shapes[-1] in r.input_shapes[:2]:
                out[i] = Classified("swiglu", None)
                silu_shapes.pop()
    return [c or Classified(op_family(r.name)) for c, r in zip(out, records)]


def _numel(shape: list[int] | tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def _rows_dim(shape: tuple[int, ...] | list[int]) -> dict[str, int] | None:
    return {"rows": _numel(shape[:-1]), "dim": shape[-1]} if shape else None


def shape_of(family: str, r: OpRecord, unit: ModuleCall | None) -> dict[str, int] | None:
    """The op's shape dict (its SPEC's dims for a built-in) for one call, or None when unknown."""
    shapes = r.input_shapes
    source = unit.input_shape if unit is not None and unit.input_shape else (shapes[0] if shapes else None)
    if family in ("rmsnorm", "layernorm", "softmax", "add_rmsnorm", "swiglu"):
        return _rows_dim(source) if source else None
    if family == "rope":
        return dict(zip("BHSD", source)) if source and len(source) == 4 else None
    if family == "matmul":
        return _matmul_shape(r.name, shapes)
    if family == "attention" and len(shapes) >= 3 and len(shapes[0]) == 4 and len(shapes[1]) == 4:
        (b, h, s, d), sk = shapes[0], shapes[1][2]
        return {"B": b, "H": h, "S": s, "Sk": sk, "D": d}
    if family == "cross_entropy" and shapes and len(shapes[0]) == 2:
        return {"T": shapes[0][0], "V": shapes[0][1]}
    return None


def _matmul_shape(name: str, shapes: list[list[int]]) -> dict[str, int] | None:
    try:
        if name == "linear":
            x, w = shapes[0], shapes[1]
            return {"M": _numel(x[:-1]), "K": x[-1], "N": w[0]}
        if name in ("addmm", "baddbmm", "_addmm_activation"):
            shapes = shapes[1:]
        a, b = shapes[0], shapes[1]
        if len(b) == 2:
            return {"M": _numel(a[:-1]), "K": a[-1], "N": b[1]}
        return {"M": _numel(a[:-2]) * a[-2], "K": a[-1], "N": b[-1]}
    except (IndexError, TypeError):
        return None


def cost_of(family: str, shape: dict[str, int] | None, r: OpRecord, dtype: str) -> tuple[int | None, int | None]:
    """(bytes, flops) of one call: the built-in op's cost model when there is one, else an estimate."""
    import torch

    from autokernel_ci.ops import get_op
    from autokernel_ci.ops.base import DTYPES

    element = ELEMENT_BYTES.get(dtype, 4)
    builtin = builtin_for(family)
    if builtin and shape is not None:
        spec = get_op(builtin)
        if all(d in shape for d in spec.dims):
            torch_dtype = DTYPES.get(dtype, torch.float32)
            return int(spec.bytes_moved(shape, torch_dtype)), int(spec.flops(shape, torch_dtype))
    if family == "attention" and shape is not None:
        causal = len(r.concrete) > 5 and r.concrete[5] is True
        flops = 4 * shape["B"] * shape["H"] * shape["S"] * shape["Sk"] * shape["D"] // (2 if causal else 1)
        bytes_ = (2 * shape["S"] + 2 * shape["Sk"]) * shape["B"] * shape["H"] * shape["D"] * element
        return bytes_, flops
    tensors = [s for s in r.input_shapes if s]
    if not tensors:
        return None, None
    numels = [_numel(s) for s in tensors]
    # Elementwise ops and copies: every input read once, an output the size of the largest written.
    return (sum(numels) + max(numels)) * element, max(numels)


# -- the plan from records --------------------------------------------------------------------------------


def builtin_for(family: str) -> str | None:
    from autokernel_ci.ops import is_builtin

    return family if is_builtin(family) else None


def collapse_path(path: str) -> str:
    """`layers.3.mlp` → `layers.*.mlp`; the model itself is `(model)`."""
    return ".".join("*" if part.isdigit() else part for part in path.split(".")) if path else "(model)"


def build_plan(records: list[OpRecord], *, steps: int, ceilings: Any, time_kind: str,
               model_dtype: str | None = None) -> Plan:
    """Group records into families and modules, per forward; the model's name and device are filled in later.

    `model_dtype` ("bf16", …) is the dtype of a record that names none and has no module that does."""
    classified = classify(records)
    total = sum(r.time_us for r in records) / steps
    groups: dict[str, list[tuple[OpRecord, Classified]]] = defaultdict(list)
    modules: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c, r in zip(classified, records):
        groups[c.family].append((r, c))
        modules[collapse_path(r.path)][c.family] += r.time_us / steps
    entries = [_entry(family, members, steps, total, ceilings, model_dtype) for family, members in groups.items()]
    entries.sort(key=lambda e: e.self_time_us, reverse=True)
    module_entries = [
        ModuleEntry(path=path, self_time_us=sum(fams.values()), share=sum(fams.values()) / total if total else 0.0,
                    families=dict(sorted(fams.items(), key=lambda kv: -kv[1])))
        for path, fams in modules.items()
    ]
    module_entries.sort(key=lambda m: m.self_time_us, reverse=True)
    return Plan(model="", device="", time_kind=time_kind, dtype="", steps=steps, warmup=0, total_us=total,
                entries=entries, modules=module_entries, ceilings_source=getattr(ceilings, "source", None),
                note=CPU_NOTE if time_kind == "cpu" else "GPU time: the kernels each op launched")


def _dtype_of(r: OpRecord, unit: ModuleCall | None, model_dtype: str | None = None) -> str:
    """The op's unit's input dtype, else the first of the operator's inputs, else that of the innermost
    module around it, else the model's. Some torch builds record no input dtypes on profiler events:
    an H100 run (torch 2.11) then took a bf16 model's matmuls for fp32 and put them at 1322% of the
    fp32 roofline (benchmarks/RESULTS.md, run 8)."""
    if unit is not None and unit.input_dtype in ELEMENT_BYTES:
        return unit.input_dtype
    found = next((d for d in r.input_dtypes if d in ELEMENT_BYTES), None)
    found = found or next((m.input_dtype for m in r.modules if m.input_dtype in ELEMENT_BYTES), None)
    return found or (model_dtype if model_dtype in ELEMENT_BYTES else "fp32")


def _entry(family: str, members: list[tuple[OpRecord, Classified]], steps: int, total: float,
           ceilings: Any, model_dtype: str | None = None) -> PlanEntry:
    from autokernel_ci.harness.device import pct_of_roofline

    builtin = builtin_for(family)
    time_us = sum(r.time_us for r, _ in members) / steps
    calls = 0
    bytes_total, flops_total, costed = 0, 0, True
    shapes: Counter[tuple[tuple[tuple[str, int], ...], str]] = Counter()
    dtypes: Counter[str] = Counter()
    seen_units: set[int] = set()
    for r, c in members:
        if c.unit is not None:
            if c.unit.id in seen_units:
                continue  # one call of the op is one module call, however many operators it ran
            seen_units.add(c.unit.id)
        elif family == "swiglu" and r.name not in ("silu", "silu_"):
            continue  # the mul of a silu · mul pair
        calls += 1
        dtype = _dtype_of(r, c.unit, model_dtype)
        dtypes[dtype] += 1
        shape = shape_of(family, r, c.unit)
        if shape is not None:
            shapes[(tuple(shape.items()), dtype)] += 1
        b, f = cost_of(family, shape, r, dtype)
        if b is None or f is None:
            costed = False
        else:
            bytes_total, flops_total = bytes_total + b, flops_total + f
    dtype = dtypes.most_common(1)[0][0] if dtypes else "fp32"
    bytes_, flops = (bytes_total // steps, flops_total // steps) if costed and calls else (None, None)
    bound = _bound(family, builtin, bytes_, flops, dtype, ceilings)
    pct = None
    if ceilings is not None and time_us > 0:
        pct, _ = pct_of_roofline(bytes_, flops, dtype, time_us * 1e-6, ceilings, bound)
    expected, source = _expected_speedup(builtin, pct)
    ops: Counter[str] = Counter()
    where: Counter[str] = Counter()
    for r, _ in members:
        ops[r.name] += r.time_us / steps
        where[collapse_path(r.path)] += r.time_us
    share = time_us / total if total else 0.0
    return PlanEntry(
        family=family, builtin=builtin, share=share, self_time_us=time_us, calls=calls / steps,
        shapes=[{"shape": dict(key), "dtype": dt, "calls": n / steps} for (key, dt), n in shapes.most_common(8)],
        bytes=bytes_, flops=flops, bound=bound, pct_roofline=pct, expected_speedup=expected,
        expected_speedup_source=source, potential_saving=share * (1 - 1 / expected), dtype=dtype,
        modules=[m for m, _ in where.most_common(4)], ops={k: v for k, v in ops.most_common(8)},
    )


def _bound(family: str, builtin: str | None, bytes_: int | None, flops: int | None, dtype: str, ceilings: Any) -> str:
    from autokernel_ci.harness.device import ceiling_kind

    if ceilings is not None and bytes_ and flops:
        peak = ceilings.flops_per_s.get(ceiling_kind(dtype) or "")
        if peak:
            return "compute" if flops / peak > bytes_ / ceilings.bandwidth_bytes_per_s else "memory"
    if builtin:
        from autokernel_ci.ops import get_op

        return get_op(builtin).bound
    return "compute" if family == "attention" else "memory"


def _expected_speedup(builtin: str | None, pct: float | None) -> tuple[float, str]:
    if pct is not None and pct > 0:
        return min(MAX_EXPECTED_SPEEDUP, max(1.0, ACHIEVABLE_PCT / pct)), "roofline"
    return PRIOR_SPEEDUP.get(builtin or "", 1.0), "prior"
