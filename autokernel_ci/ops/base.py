"""What every built-in op declares: the maths, the inputs, the cost model and the knobs.

An op module (`ops/<name>.py`) builds one `OpSpec` called `SPEC`. The correctness gate reads the
reference, the input factory, the shapes and the tolerances; the timing harness reads the bytes and
flops; the tuner reads the tunable space. A candidate kernel for the op is a Python file that defines
`kernel_fn` with the op's signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp64": torch.float64,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# Inputs for the numerical-stability stage. "normal" is standard normal data.
INPUT_KINDS = ("normal", "large", "tiny", "mixed", "equal")

# (atol, rtol): an element passes when |out − ref| ≤ atol · rms(ref row) + rtol · |ref|, where the
# row is the last dim. Scaling atol by the row's RMS keeps one tolerance valid for inputs of any
# magnitude (the stability stage multiplies inputs by up to 1e3). For outputs computed in fp32
# internally, the final rounding to a 16-bit type costs up to half an ulp (fp16 ~4.9e-4, bf16 ~3.9e-3).
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-5, 1e-5),
    "fp16": (1e-3, 2e-3),
    "bf16": (8e-3, 1.6e-2),
}

Shape = Mapping[str, int]


@dataclass(frozen=True)
class Tunable:
    """One knob of a kernel: its name in the kernel file, the values worth trying, and why it matters."""

    name: str
    values: tuple[Any, ...]
    help: str = ""


@dataclass(frozen=True)
class OpSpec:
    name: str
    signature: str
    family: str
    dims: tuple[str, ...]
    reference: Callable[..., Any]
    make_inputs: Callable[[Shape, torch.dtype, torch.Generator, str], tuple[Any, ...]]
    bytes_moved: Callable[[Shape, torch.dtype], int]
    flops: Callable[[Shape, torch.dtype], int]
    test_shapes: tuple[dict[str, int], ...]
    bench_shapes: tuple[dict[str, int], ...]
    decode_shapes: tuple[dict[str, int], ...] = ()
    dtypes: tuple[str, ...] = ("fp32", "fp16", "bf16")
    tolerances: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    tolerance_fn: Callable[[Shape, str], tuple[float, float]] | None = None
    out_dtype: Callable[[torch.dtype], torch.dtype] | None = None  # None: the first input's dtype
    vendor: Callable[..., Any] | None = None
    vendor_name: str | None = None
    bound: str = "memory"  # "memory" or "compute": which ceiling the roofline uses
    risk: str = "low"  # "high" for tensor-core paths, which always need a human reviewer
    stability_kinds: tuple[str, ...] = ("large", "tiny", "mixed", "equal")
    tunables: tuple[Tunable, ...] = ()
    constraint: Callable[[Mapping[str, Any]], str | None] | None = None
    # torch operators a candidate may run during the call (beyond allocation, views and copies)
    allowed_ops: tuple[str, ...] = ()
    # How the correctness gate draws hidden shapes, dim -> "width" (the contiguous dim a kernel tiles:
    # drawn odd or prime, past 4096 and beyond the benchmark widths) or "count" (a batch-like dim: 1 or
    # a small odd or prime size). None: the last dim is the width, the others are counts (a "custom"
    # family, a config task's own input factory, draws none). A dim even in every declared shape is drawn even.
    shape_family: Mapping[str, str] | None = None

    def tolerance(self, shape: Shape, dtype: str) -> tuple[float, float]:
        if self.tolerance_fn is not None:
            return self.tolerance_fn(shape, dtype)
        return self.tolerances[dtype]

    def shape_label(self, shape: Shape) -> str:
        return "×".join(str(shape[d]) for d in self.dims)

    def check_config(self, config: Mapping[str, Any]) -> str | None:
        """Why a point of the tunable space is invalid, or None when it may be tried."""
        for knob in self.tunables:
            if knob.name in config and config[knob.name] not in knob.values:
                return f"{knob.name}={config[knob.name]!r} is not one of {list(knob.values)}"
        return self.constraint(config) if self.constraint else None


def activation(
    size: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, kind: str = "normal"
) -> torch.Tensor:
    """Random data shaped like activations, distorted by `kind` for the numerical-stability stage.

    The last dim is the reduction ("row") dim of the row-wise ops, so "mixed" scales whole rows and
    "equal" makes each row constant (zero variance for the norms, uniform softmax).
    """
    device = generator.device
    x = torch.randn(size, generator=generator, device=device, dtype=torch.float32)
    half = dtype in (torch.float16,)
    if kind == "large":
        x = x * (1e2 if half else 1e3)
    elif kind == "tiny":
        x = x * 1e-3
    elif kind == "mixed":
        span = 2.0 if half else 3.0
        lead = size[:-1] + (1,) if size else ()
        exponent = (torch.rand(lead, generator=generator, device=device) * 2 - 1) * span
        x = x * torch.pow(10.0, exponent)
    elif kind == "equal":
        lead = size[:-1] + (1,) if size else ()
        x = torch.randn(lead, generator=generator, device=device).expand(size).contiguous()
    elif kind != "normal":
        raise ValueError(f"unknown input kind {kind!r}; expected one of {INPUT_KINDS}")
    return x.to(dtype)


def row_tile_constraint(config: Mapping[str, Any]) -> str | None:
    """For the row-wise ops (norms, softmax): prunes tiles that would spill registers.

    A thread holds BLOCK_SIZE · ROWS_PER_PROGRAM / (32 · NUM_WARPS) fp32 values of the tile: at most 64,
    and at most its share of the 64K-register file (255 at most) less 32 for addresses and masks. A None
    knob counts as the launcher's choice at the benchmark shape (rows of 4096: one row per program,
    ~16 values a thread)."""
    block = config.get("BLOCK_SIZE") or 4096
    rows = config.get("ROWS_PER_PROGRAM") or 1
    warps = config.get("NUM_WARPS") or min(16, max(1, block * rows // 512))
    per_thread = block * rows / (32 * warps)
    budget = min(64, min(255, 65536 // (32 * warps)) - 32)
    if per_thread > budget:
        return (f"a {rows}×{block} tile on {warps} warps is {per_thread:g} fp32 values a thread, over the "
                f"{budget} that fit in registers: it would spill")
    if per_thread < 1:
        return f"a {rows}×{block} tile has fewer elements than {warps} warps have threads"
    return None


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def numel(*dims: int) -> int:
    return math.prod(dims)
