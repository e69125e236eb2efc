"""Residual add fused into RMSNorm: h = x + residual; y = h / sqrt(mean(h²) + eps) · weight.

Returns (y, h): the normalised output and the new residual stream, both in the input dtype.
Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(x, residual, weight, eps: float = 1e-6):
    h = x + residual
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight, h


def make_inputs(shape, dtype, generator, kind="normal"):
    size = (shape["rows"], shape["dim"])
    x = activation(size, dtype, generator, kind)
    residual = activation(size, dtype, generator, kind)
    weight = (activation((shape["dim"],), torch.float32, generator) * 0.5 + 1.0).to(dtype)
    return (x, residual, weight, 1e-6)


def bytes_moved(shape, dtype) -> int:
    return (4 * shape["rows"] * shape["dim"] + shape["dim"]) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 5 * shape["rows"] * shape["dim"]


def vendor(x, residual, weight, eps=1e-6):
    h = x + residual
    return F.rms_norm(h, (h.shape[-1],), weight, eps), h


SPEC = OpSpec(
    name="add_rmsnorm",
    signature="kernel_fn(x, residual, weight, eps=1e-6)",
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
    # h = x + residual is rounded to the input dtype before the norm in a fused kernel too, so the
    # 16-bit tolerances cover that rounding as well as the output's.
    vendor=vendor,
    vendor_name="x + residual, F.rms_norm",
)
