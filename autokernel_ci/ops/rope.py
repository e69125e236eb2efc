"""Rotary position embedding, interleaved pairs, applied to x[B, H, S, D]:

    out[..., 2i]   = x[..., 2i] · cos[s, i] − x[..., 2i+1] · sin[s, i]
    out[..., 2i+1] = x[..., 2i] · sin[s, i] + x[..., 2i+1] · cos[s, i]

with cos, sin of shape [S, D/2]. Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(x, cos, sin):
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out0 = x0 * cos - x1 * sin
    out1 = x0 * sin + x1 * cos
    return torch.stack((out0, out1), dim=-1).reshape(x.shape)


def make_inputs(shape, dtype, generator, kind="normal"):
    b, h, s, d = shape["B"], shape["H"], shape["S"], shape["D"]
    x = activation((b, h, s, d), dtype, generator, kind)
    device = generator.device
    inv_freq = 10000.0 ** (-torch.arange(0, d // 2, device=device, dtype=torch.float32) * 2 / d)
    # A random start position, so that a kernel cannot assume the sequence starts at 0.
    start = int(torch.randint(0, 4096, (1,), generator=generator, device=device))
    angles = (torch.arange(s, device=device, dtype=torch.float32) + start)[:, None] * inv_freq[None, :]
    return (x, angles.cos().to(dtype), angles.sin().to(dtype))


def bytes_moved(shape, dtype) -> int:
    b, h, s, d = shape["B"], shape["H"], shape["S"], shape["D"]
    return (2 * b * h * s * d + s * d) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 3 * shape["B"] * shape["H"] * shape["S"] * shape["D"]


SPEC = OpSpec(
    name="rope",
    signature="kernel_fn(x, cos, sin)",
    family="rope",
    dims=("B", "H", "S", "D"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"B": 1, "H": 1, "S": 1, "D": 2}, {"B": 2, "H": 3, "S": 5, "D": 8},
                 {"B": 1, "H": 4, "S": 17, "D": 64}, {"B": 2, "H": 2, "S": 33, "D": 128}),
    bench_shapes=({"B": 1, "H": 32, "S": 4096, "D": 128},),
    decode_shapes=({"B": 1, "H": 32, "S": 1, "D": 128}, {"B": 4, "H": 32, "S": 1, "D": 128},
                   {"B": 16, "H": 32, "S": 1, "D": 128}),
)
