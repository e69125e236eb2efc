"""Softmax over the last dim: y_i = exp(x_i − max x) / Σ_j exp(x_j − max x).

Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(x):
    shifted = x - x.amax(-1, keepdim=True)
    e = shifted.exp()
    return e / e.sum(-1, keepdim=True)


def make_inputs(shape, dtype, generator, kind="normal"):
    return (activation((shape["rows"], shape["dim"]), dtype, generator, kind),)


def bytes_moved(shape, dtype) -> int:
    return 2 * shape["rows"] * shape["dim"] * element_size(dtype)


def flops(shape, dtype) -> int:
    return 5 * shape["rows"] * shape["dim"]


def vendor(x):
    return torch.softmax(x, -1)


SPEC = OpSpec(
    name="softmax",
    signature="kernel_fn(x)",
    family="softmax",
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
    vendor_name="torch.softmax",
)
