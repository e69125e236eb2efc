"""SwiGLU gate: y = silu(gate) · up = gate · sigmoid(gate) · up, elementwise.

Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(gate, up):
    return gate * torch.sigmoid(gate) * up


def make_inputs(shape, dtype, generator, kind="normal"):
    size = (shape["rows"], shape["dim"])
    return (activation(size, dtype, generator, kind), activation(size, dtype, generator, kind))


def bytes_moved(shape, dtype) -> int:
    return 3 * shape["rows"] * shape["dim"] * element_size(dtype)


def flops(shape, dtype) -> int:
    return 5 * shape["rows"] * shape["dim"]


def vendor(gate, up):
    return F.silu(gate) * up


SPEC = OpSpec(
    name="swiglu",
    signature="kernel_fn(gate, up)",
    family="activation",
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
    vendor_name="F.silu(gate) * up",
)
