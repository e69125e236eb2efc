"""RMSNorm over the last dim: y = x / sqrt(mean(x²) + eps) · weight.

Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def make_inputs(shape, dtype, generator, kind="normal"):
    x = activation((shape["rows"], shape["dim"]), dtype, generator, kind)
    weight = activation((shape["dim"],), dtype, generator) * 0.5 + 1.0
    return (x, weight.to(dtype), 1e-6)


def bytes_moved(shape, dtype) -> int:
    return (2 * shape["rows"] * shape["dim"] + shape["dim"]) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 4 * shape["rows"] * shape["dim"]


def vendor(x, weight, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


SPEC = OpSpec(
    name="rmsnorm",
    signature="kernel_fn(x, weight, eps=1e-6)",
    family="norm",
    dims=("rows", "dim"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"rows": 1, "dim": 1}, {"rows": 3, "dim": 7}, {"rows": 16, "dim": 64},
                 {"rows": 37, "dim": 1000}, {"rows": 8, "dim": 4096}),
    bench_shapes=({"rows": 16384, "dim": 4096},),
    decode_shapes=({"rows": 1, "dim": 4096}, {"rows": 4, "dim": 4096}, {"rows": 16, "dim": 4096}),
    vendor=vendor,
    vendor_name="F.rms_norm",
)
