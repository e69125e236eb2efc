"""Matrix product c[M, N] = a[M, K] @ b[K, N], accumulated in fp32 (tf32 allowed for fp32 inputs).

Runs on the tensor cores, so a change to it is always high risk and needs a human reviewer.
Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(a, b):
    return a @ b


def make_inputs(shape, dtype, generator, kind="normal"):
    a = activation((shape["M"], shape["K"]), dtype, generator, kind)
    b = activation((shape["K"], shape["N"]), dtype, generator)
    return (a, b)


def bytes_moved(shape, dtype) -> int:
    m, k, n = shape["M"], shape["K"], shape["N"]
    return (m * k + k * n + m * n) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 2 * shape["M"] * shape["K"] * shape["N"]


def vendor(a, b):
    return torch.mm(a, b)


SPEC = OpSpec(
    name="matmul",
    signature="kernel_fn(a, b)",
    family="matmul",
    dims=("M", "K", "N"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"M": 1, "K": 1, "N": 1}, {"M": 3, "K": 7, "N": 5}, {"M": 16, "K": 16, "N": 16},
                 {"M": 33, "K": 65, "N": 17}, {"M": 64, "K": 128, "N": 96}),
    bench_shapes=({"M": 4096, "K": 4096, "N": 4096}, {"M": 8192, "K": 8192, "N": 8192}),
    decode_shapes=({"M": 1, "K": 4096, "N": 4096}, {"M": 16, "K": 4096, "N": 4096}),
    dtypes=("bf16", "fp16", "fp32"),
    # Errors are measured against each output row's RMS, so these hold for any K; fp32 allows tf32.
    tolerances={"fp32": (5e-3, 5e-3), "fp16": (2e-3, 2e-3), "bf16": (8e-3, 1.6e-2)},
    stability_kinds=("large", "tiny", "mixed"),
    vendor=vendor,
    vendor_name="cuBLAS (torch.mm)",
    bound="compute",
    risk="high",
)
