"""LayerNorm over the last dim: y = (x − mean) / sqrt(var + eps) · weight + bias (biased variance).

Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(x, weight, bias, eps: float = 1e-5):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * weight + bias


def make_inputs(shape, dtype, generator, kind="normal"):
    x = activation((shape["rows"], shape["dim"]), dtype, generator, kind)
    weight = (activation((shape["dim"],), torch.float32, generator) * 0.5 + 1.0).to(dtype)
    bias = (activation((shape["dim"],), torch.float32, generator) * 0.1).to(dtype)
    return (x, weight, bias, 1e-5)


def bytes_moved(shape, dtype) -> int:
    return (2 * shape["rows"] * shape["dim"] + 2 * shape["dim"]) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 7 * shape["rows"] * shape["dim"]


def vendor(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


SPEC = OpSpec(
    name="layernorm",
    signature="kernel_fn(x, weight, bias, eps=1e-5)",
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
    vendor_name="F.layer_norm",
)
