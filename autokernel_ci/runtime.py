"""Put the optimized kernels into a model: `apply(model)` swaps them in, in place, for users' own code.

What is swapped, and how it is recognised (a module is swapped only when a probe on a tiny random
input shows that it computes the op, so a look-alike with other maths is left alone):

| op | modules |
| --- | --- |
| `rmsnorm` | a class named like RMSNorm (or with `weight` and `eps`/`variance_epsilon`, no children) |
| `layernorm` | `nn.LayerNorm` over one dim, or a class named like LayerNorm with `weight`, `bias`, `eps` |
| `rope` | a class named like Rotary/RoPE with `cos`/`sin` tables [S, D/2], called on x[B, H, S, D] |
| `swiglu` | an MLP with gate, up and down projections (`gate_proj`/`up_proj`/`down_proj`, `w1`/`w3`/`w2`, |
| | or a fused `gate_up_proj`): only the product `silu(gate) · up` is swapped |
| `softmax` | `nn.Softmax(dim=-1)` |
| `matmul` | `nn.Linear` (opt-in: a tensor-core path, never swapped unless asked for) |

The kernels run through `torch.library` custom ops (`autokernel::<op>`) with fake implementations, so
a patched model still traces under `torch.compile`. A swapped module falls back to its original
forward when a kernel cannot serve the call: autograd is recording (the kernels are forward-only),
the device is a CPU without Triton's interpreter or not a GPU at all, or the dtypes are mixed. A
kernel that refuses a shape (raises ValueError) falls back to the op's reference maths in fp32.
Every fallback is counted by reason; `ApplyReport.fallbacks()` reports them. Under `torch.compile`
the decisions taken in Python are made once, when the graph is traced, so only the kernels' own
refusals keep being counted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import types
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from autokernel_ci.errors import TaskError

SWAPPABLE_OPS: tuple[str, ...] = ("rmsnorm", "layernorm", "rope", "swiglu", "softmax", "matmul")
# matmul runs on the tensor cores and replaces cuBLAS: only when asked for by name.
DEFAULT_OPS: tuple[str, ...] = ("rmsnorm", "layernorm", "rope", "swiglu", "softmax")
# Probe tolerances (atol · rms(ref row) + rtol · |ref|): the dtype's rounding, twice over, since the
# module and the reference may round at different points.
PROBE_TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (4e-3, 8e-3), torch.bfloat16: (1.6e-2, 3.2e-2),
                    torch.float64: (1e-8, 1e-8)}
KernelSource = str | os.PathLike | Callable[..., Any] | None


# -- kernels and the custom ops ------------------------------------------------------------------


class KernelSlot:
    """One loaded kernel for one op, with what happened to the calls that reached it."""

    def __init__(self, op: str, kernel: Callable[..., Any], origin: str) -> None:
        self.op = op
        self.kernel = kernel
        self.origin = origin
        self.kernel_calls = 0
        self.fallbacks: Counter[str] = Counter()
        self.last_refusal = ""

    def __call__(self, *args: Any) -> Any:
        try:
            out = self.kernel(*args)
        except ValueError as exc:  # the kernel's way of saying "not this shape"
            self.fallbacks["shape"] += 1
            self.last_refusal = str(exc)
            return _REFERENCES[self.op](*args)
        self.kernel_calls += 1
        return out


_SLOTS: list[KernelSlot] = []


def _slot(index: int) -> KernelSlot:
    return _SLOTS[index]


def _fresh(out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """A custom op's output must be contiguous (as its fake says) and must not alias an input."""
    out = out.contiguous()
    ptr = out.untyped_storage().data_ptr()
    if any(ptr == t.untyped_storage().data_ptr() for t in inputs):
        out = out.clone()
    return out


def _ref_rmsnorm(x, weight, eps):
    from autokernel_ci.ops.rmsnorm import reference

    return reference(x.float(), weight.float(), eps).to(x.dtype)


def _ref_layernorm(x, weight, bias, eps):
    return F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps).to(x.dtype)


def _ref_rope(x, cos, sin):
    from autokernel_ci.ops.rope import reference

    return reference(x.float(), cos.float(), sin.float()).to(x.dtype)


def _ref_swiglu(gate, up):
    return (F.silu(gate.float()) * up.float()).to(gate.dtype)


def _ref_softmax(x):
    return torch.softmax(x.float(), dim=-1).to(x.dtype)


def _ref_matmul(a, b):
    return torch.mm(a, b)


_REFERENCES: dict[str, Callable[..., Any]] = {
    "rmsnorm": _ref_rmsnorm, "layernorm": _ref_layernorm, "rope": _ref_rope, "swiglu": _ref_swiglu,
    "softmax": _ref_softmax, "matmul": _ref_matmul,
}


@torch.library.custom_op("autokernel::rmsnorm", mutates_args=())
def _rmsnorm_op(x: torch.Tensor, weight: torch.Tensor, eps: float, slot: int) -> torch.Tensor:
    return _fresh(_slot(slot)(x, weight, eps), x, weight)


@_rmsnorm_op.register_fake
def _(x, weight, eps, slot):
    return x.new_empty(x.shape)


@torch.library.custom_op("autokernel::layernorm", mutates_args=())
def _layernorm_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, slot: int) -> torch.Tensor:
    return _fresh(_slot(slot)(x, weight, bias, eps), x, weight, bias)


@_layernorm_op.register_fake
def _(x, weight, bias, eps, slot):
    return x.new_empty(x.shape)


@torch.library.custom_op("autokernel::rope", mutates_args=())
def _rope_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot: int) -> torch.Tensor:
    return _fresh(_slot(slot)(x, cos, sin), x, cos, sin)


@_rope_op.register_fake
def _(x, cos, sin, slot):
    return x.new_empty(x.shape)


@torch.library.custom_op("autokernel::swiglu", mutates_args=())
def _swiglu_op(gate: torch.Tensor, up: torch.Tensor, slot: int) -> torch.Tensor:
    return _fresh(_slot(slot)(gate, up), gate, up)


@_swiglu_op.register_fake
def _(gate, up, slot):
    return gate.new_empty(gate.shape)


@torch.library.custom_op("autokernel::softmax", mutates_args=())
def _softmax_op(x: torch.Tensor, slot: int) -> torch.Tensor:
    return _fresh(_slot(slot)(x), x)


@_softmax_op.register_fake
def _(x, slot):
    return x.new_empty(x.shape)


@torch.library.custom_op("autokernel::matmul", mutates_args=())
def _matmul_op(a: torch.Tensor, b: torch.Tensor, slot: int) -> torch.Tensor:
    return _fresh(_slot(slot)(a, b), a, b)


@_matmul_op.register_fake
def _(a, b, slot):
    return a.new_empty((a.shape[0], b.shape[1]))


_CUSTOM_OPS = {"rmsnorm": _rmsnorm_op, "layernorm": _layernorm_op, "rope": _rope_op, "swiglu": _swiglu_op,
               "softmax": _softmax_op, "matmul": _matmul_op}


def load_kernel(op: str, source: KernelSource = None) -> KernelSlot:
    """A slot for `op`'s kernel: `source` is a kernel file, a callable, or None for the built-in starter."""
    if op not in SWAPPABLE_OPS:
        raise TaskError(f"no swap exists for op {op!r}; the swappable ops are: {', '.join(SWAPPABLE_OPS)}")
    if callable(source):
        kernel, origin = source, getattr(source, "__qualname__", repr(source))
    else:
        path = Path(source) if source is not None else starter_file(op)
        kernel, origin = _kernel_fn_from_file(path), str(path)
    slot = KernelSlot(op, kernel, origin)
    _SLOTS.append(slot)
    slot.index = len(_SLOTS) - 1  # type: ignore[attr-defined]
    return slot


def starter_file(op: str) -> Path:
    """The built-in starter kernel of `op` written to a file (Triton reads a kernel's source from its file)."""
    from autokernel_ci.ops import starter_source

    text = starter_source(op)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"autokernel-starters-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{op}_{digest}.py"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def _kernel_fn_from_file(path: Path) -> Callable[..., Any]:
    from autokernel_ci.tasks import load_module_from_path

    module = load_module_from_path(path, name=f"_autokernel_kernel_{abs(hash(str(Path(path).resolve())))}")
    kernel = getattr(module, "kernel_fn", None)
    if not callable(kernel):
        raise TaskError(f"{path}: a kernel file defines kernel_fn; none found")
    return kernel


def kernels_from_config(config_path: str | os.PathLike | None = None) -> dict[str, Path]:
    """op → kernel file, for the config's kernels that implement a built-in op (first entry per op wins)."""
    from autokernel_ci.config import find_config, load_config

    path = Path(config_path) if config_path is not None else find_config()
    if path is None:
        return {}
    cfg = load_config(path)
    found: dict[str, Path] = {}
    for entry in cfg.kernels:
        if entry.op in SWAPPABLE_OPS and entry.op not in found:
            found[entry.op] = cfg.root / entry.path
    return found


def kernel_supports(t: torch.Tensor) -> str | None:
    """Why a Triton kernel cannot run on `t`'s device, or None when it can."""
    if t.device.type == "cuda":
        return None
    if t.device.type == "cpu":
        return None if os.environ.get("TRITON_INTERPRET") == "1" else "device"
    return "device"


# -- the swapped forwards ------------------------------------------------------------------------


@dataclass
class SwapState:
    """What a swapped module remembers: its op, its kernel slot and its forward before the swap."""

    op: str
    slot: int
    original: Callable[..., Any] | None  # the instance's own forward before the swap, if it had one
    python_fallbacks: Counter[str] = field(default_factory=Counter)  # not counted under torch.compile


def _state(module: nn.Module) -> SwapState:
    return module.__dict__["_autokernel"]


def _fallback_reason(module: nn.Module, x: torch.Tensor, params: Iterable[torch.Tensor | None]) -> str | None:
    tensors = [x] + [p for p in params if p is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "autograd"
    reason = kernel_supports(x)
    if reason:
        return reason
    if any(t.dtype != x.dtype for t in tensors) or any(t.device != x.device for t in tensors):
        return "dtype"
    return None


def _fall_back(module: nn.Module, reason: str, *args: Any) -> Any:
    state = _state(module)
    if not torch.compiler.is_compiling():
        # Under torch.compile this line would be traced: a counter mutated in the graph is guarded on
        # and recompiles the frame at every call (until the recompile limit), so it is not counted there.
        state.python_fallbacks[reason] += 1
    if state.original is not None:
        return state.original(*args)
    return type(module).forward(module, *args)  # not types.MethodType: dynamo cannot trace building one


def _norm_eps(module: nn.Module, x: torch.Tensor) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return float(torch.finfo(x.dtype).eps)  # nn.RMSNorm(eps=None)


def _rmsnorm_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reason = _fallback_reason(self, x, [self.weight])
    if reason:
        return _fall_back(self, reason, x)
    return torch.ops.autokernel.rmsnorm(x, self.weight, _norm_eps(self, x), _state(self).slot)


def _layernorm_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reason = _fallback_reason(self, x, [self.weight, self.bias])
    if reason:
        return _fall_back(self, reason, x)
    bias = self.bias if self.bias is not None else torch.zeros_like(self.weight)
    return torch.ops.autokernel.layernorm(x, self.weight, bias, _norm_eps(self, x), _state(self).slot)


def _rope_tables(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    for cos_name, sin_name in (("cos", "sin"), ("cos_cached", "sin_cached"), ("_cos", "_sin")):
        cos, sin = getattr(module, cos_name, None), getattr(module, sin_name, None)
        if isinstance(cos, torch.Tensor) and isinstance(sin, torch.Tensor) and cos.dim() == 2 \
                and cos.shape == sin.shape:
            return cos, sin
    return None


def _rope_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    cos, sin = _rope_tables(self)
    if x.dim() != 4 or x.shape[-1] != 2 * cos.shape[-1] or x.shape[2] > cos.shape[0]:
        return _fall_back(self, "shape", x)
    cos, sin = cos[: x.shape[2]], sin[: x.shape[2]]
    reason = _fallback_reason(self, x, [cos, sin])
    if reason:
        return _fall_back(self, reason, x)
    return torch.ops.autokernel.rope(x, cos, sin, _state(self).slot)


_MLP_LAYOUTS = (("gate_proj", "up_proj", "down_proj"), ("w1", "w3", "w2"), ("gate", "up", "down"))


def _mlp_projections(module: nn.Module) -> tuple[str, ...] | None:
    for names in _MLP_LAYOUTS:
        if all(isinstance(getattr(module, n, None), nn.Module) for n in names):
            return names
    if isinstance(getattr(module, "gate_up_proj", None), nn.Module) and isinstance(
            getattr(module, "down_proj", None), nn.Module):
        return ("gate_up_proj", "down_proj")
    return None


def _gate_up(module: nn.Module, names: tuple[str, ...], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if len(names) == 2:
        return getattr(module, names[0])(x).chunk(2, dim=-1)
    return getattr(module, names[0])(x), getattr(module, names[1])(x)


def _swiglu_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reason = _fallback_reason(self, x, list(self.parameters()))
    if reason:
        return _fall_back(self, reason, x)
    names = _mlp_projections(self)
    gate, up = _gate_up(self, names, x)
    if gate.shape != up.shape or gate.dtype != up.dtype:
        return getattr(self, names[-1])(_ref_swiglu(gate, up))
    return getattr(self, names[-1])(torch.ops.autokernel.swiglu(gate, up, _state(self).slot))


def _softmax_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reason = _fallback_reason(self, x, [])
    if reason:
        return _fall_back(self, reason, x)
    return torch.ops.autokernel.softmax(x, _state(self).slot)


def _linear_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reason = _fallback_reason(self, x, [self.weight, self.bias])
    if reason:
        return _fall_back(self, reason, x)
    lead, k = x.shape[:-1], x.shape[-1]
    y = torch.ops.autokernel.matmul(x.reshape(-1, k), self.weight.t(), _state(self).slot)
    if self.bias is not None:
        y = y + self.bias
    return y.view(*lead, y.shape[-1])


_FORWARDS: dict[str, Callable[..., Any]] = {
    "rmsnorm": _rmsnorm_forward, "layernorm": _layernorm_forward, "rope": _rope_forward,
    "swiglu": _swiglu_forward, "softmax": _softmax_forward, "matmul": _linear_forward,
}


# -- recognising modules ---------------------------------------------------------------------------


def _params_like(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _close(out: Any, ref: torch.Tensor) -> bool:
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape or out.dtype != ref.dtype:
        return False
    atol, rtol = PROBE_TOLERANCES.get(ref.dtype, (1e-2, 1e-2))
    out64, ref64 = out.double(), ref.double()
    scale = ref64.pow(2).mean(-1, keepdim=True).sqrt() if ref64.dim() else ref64.abs()
    return bool(((out64 - ref64).abs() <= atol * scale + rtol * ref64.abs() + 1e-30).all())


def _probe(module: nn.Module, x: torch.Tensor, expected: Callable[[], torch.Tensor]) -> bool:
    """Does the module, on a tiny random input, compute what the op computes?"""
    try:
        with torch.no_grad():
            return _close(module(x), expected())
    except Exception:  # any failure to run on the probe means "not this op"
        return False


def _probe_input(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(1234)
    return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)


def _match_rmsnorm(name: str, module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or isinstance(module, nn.LayerNorm):
        return False
    named = "rmsnorm" in type(module).__name__.lower()
    has_eps = any(hasattr(module, n) for n in ("eps", "variance_epsilon", "epsilon"))
    if not (named or (has_eps and not list(module.children()))):
        return False
    x = _probe_input((3, weight.shape[0]), weight.device, weight.dtype)
    return _probe(module, x, lambda: _ref_rmsnorm(x, weight, _norm_eps(module, x)))


def _match_layernorm(name: str, module: nn.Module) -> bool:
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return False
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            return False
    elif "layernorm" not in type(module).__name__.lower() or not isinstance(bias, torch.Tensor):
        return False
    x = _probe_input((3, weight.shape[0]), weight.device, weight.dtype)
    b = bias if isinstance(bias, torch.Tensor) else torch.zeros_like(weight)
    return _probe(module, x, lambda: _ref_layernorm(x, weight, b, _norm_eps(module, x)))


def _match_rope(name: str, module: nn.Module) -> bool:
    cls = type(module).__name__.lower()
    if "rotary" not in cls and "rope" not in cls:
        return False
    tables = _rope_tables(module)
    if tables is None:
        return False
    cos, sin = tables
    seq = min(3, cos.shape[0])
    x = _probe_input((1, 2, seq, 2 * cos.shape[1]), cos.device, cos.dtype)
    return _probe(module, x, lambda: _ref_rope(x, cos[:seq], sin[:seq]))


def _match_swiglu(name: str, module: nn.Module) -> bool:
    names = _mlp_projections(module)
    if names is None:
        return False
    first = getattr(module, names[0])
    in_features = getattr(first, "in_features", None)
    if not isinstance(in_features, int):
        return False
    device, dtype = _params_like(module)
    x = _probe_input((3, in_features), device, dtype)

    def expected():
        gate, up = _gate_up(module, names, x)
        return getattr(module, names[-1])(_ref_swiglu(gate, up))

    return _probe(module, x, expected)


def _match_softmax(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Softmax) and module.dim == -1


def _match_matmul(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


_MATCHERS: dict[str, Callable[[str, nn.Module], bool]] = {
    "rmsnorm": _match_rmsnorm, "layernorm": _match_layernorm, "rope": _match_rope,
    "swiglu": _match_swiglu, "softmax": _match_softmax, "matmul": _match_matmul,
}


# -- apply ---------------------------------------------------------------------------------------------


@dataclass
class Swap:
    path: str  # the module's name in the model ("" for the model itself)
    op: str
    module_class: str
    slot: int


@dataclass
class ApplyReport:
    """What `apply` swapped, with which kernels, and (live) how often the kernels ran or fell back."""

    swaps: list[Swap]
    kernels: dict[str, str]  # op → where its kernel came from
    model: nn.Module | None = field(default=None, repr=False)

    def ops(self) -> dict[str, int]:
        """op → number of modules swapped."""
        return dict(Counter(s.op for s in self.swaps))

    def kernel_calls(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for slot_index in {s.slot for s in self.swaps}:
            counts[_SLOTS[slot_index].op] += _SLOTS[slot_index].kernel_calls
        return dict(counts)

    def fallbacks(self) -> dict[str, dict[str, int]]:
        """op → reason → calls that did not run the kernel (shape, device, autograd, dtype)."""
        out: dict[str, Counter[str]] = {}
        for slot_index in {s.slot for s in self.swaps}:
            slot = _SLOTS[slot_index]
            out.setdefault(slot.op, Counter()).update(slot.fallbacks)
        if self.model is not None:
            for _, module in self.model.named_modules():
                state = module.__dict__.get("_autokernel")
                if state is not None:
                    out.setdefault(state.op, Counter()).update(state.python_fallbacks)
        return {op: dict(c) for op, c in out.items() if sum(c.values())}

    def reset_counts(self) -> None:
        for slot_index in {s.slot for s in self.swaps}:
            _SLOTS[slot_index].kernel_calls = 0
            _SLOTS[slot_index].fallbacks.clear()
        if self.model is not None:
            for _, module in self.model.named_modules():
                state = module.__dict__.get("_autokernel")
                if state is not None:
                    state.python_fallbacks.clear()

    def summary(self) -> str:
        if not self.swaps:
            return "no module matched a swappable op"
        return ", ".join(f"{op} ×{n}" for op, n in sorted(self.ops().items()))


def apply(model: nn.Module, kernels: Mapping[str, KernelSource] | None = None, *,
          ops: Iterable[str] | None = None, config: str | os.PathLike | None = None) -> ApplyReport:
    """Swap kernels into `model`, in place; returns what was swapped.

    `ops` are the ops to swap (default: `DEFAULT_OPS`, or the keys of `kernels` when given). Each op's
    kernel is `kernels[op]` (a kernel file or a callable) if given, else the file of the config's
    kernel entry for that op (`config`, default ./.autokernel.yml), else the built-in starter.
    """
    wanted = tuple(ops) if ops is not None else (tuple(kernels) if kernels else DEFAULT_OPS)
    unknown = [op for op in wanted if op not in SWAPPABLE_OPS]
    if unknown:
        raise TaskError(f"no swap exists for {', '.join(map(repr, unknown))}; the swappable ops are: "
                        f"{', '.join(SWAPPABLE_OPS)}")
    sources: dict[str, KernelSource] = dict(kernels_from_config(config)) if config is not None or kernels is None \
        else {}
    sources.update(kernels or {})
    slots: dict[str, KernelSlot] = {}
    swaps: list[Swap] = []
    for path, module in list(model.named_modules()):
        if "_autokernel" in module.__dict__:
            continue
        for op in wanted:
            if not _MATCHERS[op](path, module):
                continue
            if op not in slots:
                slots[op] = load_kernel(op, sources.get(op))
            slot = slots[op].index  # type: ignore[attr-defined]
            module.__dict__["_autokernel"] = SwapState(op, slot, module.__dict__.get("forward"))
            module.forward = types.MethodType(_FORWARDS[op], module)
            swaps.append(Swap(path, op, type(module).__name__, slot))
            break
    return ApplyReport(swaps=swaps, kernels={op: s.origin for op, s in slots.items()}, model=model)


def restore(model: nn.Module) -> int:
    """Undo `apply`: every swapped module gets its own forward back. Returns how many were restored."""
    restored = 0
    for _, module in model.named_modules():
        state = module.__dict__.pop("_autokernel", None)
        if state is None:
            continue
        if state.original is not None:
            module.forward = state.original
        else:
            module.__dict__.pop("forward", None)
        restored += 1
    return restored


def functional(op: str, kernel: KernelSource = None) -> Callable[..., torch.Tensor]:
    """The op as a function for your own forward code, e.g. `rmsnorm = functional("rmsnorm")`, then
    `rmsnorm(x, weight, eps)`; it runs the kernel through the custom op (so it traces under
    torch.compile) and falls back to the reference maths where the kernel cannot serve the call."""
    slot = load_kernel(op, kernel)
    custom = _CUSTOM_OPS[op]
    reference = _REFERENCES[op]

    def call(*args: Any) -> torch.Tensor:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        if needs_grad or kernel_supports(tensors[0]) or any(t.dtype != tensors[0].dtype for t in tensors):
            if not torch.compiler.is_compiling():
                slot.fallbacks["autograd" if needs_grad else "device-or-dtype"] += 1
            return reference(*args)
        return custom(*args, slot.index)

    call.__name__ = f"autokernel_{op}"
    call.slot = slot  # type: ignore[attr-defined]
    return call
