"""Cross-entropy forward: the mean over T rows of logsumexp(logits_t) − logits_t[target_t].

Returns a 0-dim float32 tensor whatever the logits dtype (the loss is accumulated in fp32).
Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, activation, element_size


def reference(logits, targets):
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (lse - picked).mean()


def make_inputs(shape, dtype, generator, kind="normal"):
    logits = activation((shape["T"], shape["V"]), dtype, generator, kind)
    targets = torch.randint(0, shape["V"], (shape["T"],), generator=generator, device=generator.device)
    return (logits, targets)


def bytes_moved(shape, dtype) -> int:
    return shape["T"] * shape["V"] * element_size(dtype) + shape["T"] * 8 + 4


def flops(shape, dtype) -> int:
    return 4 * shape["T"] * shape["V"]


def vendor(logits, targets):
    return F.cross_entropy(logits.float(), targets)


SPEC = OpSpec(
    name="cross_entropy",
    signature="kernel_fn(logits, targets)",
    family="loss",
    dims=("T", "V"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"T": 1, "V": 2}, {"T": 3, "V": 7}, {"T": 16, "V": 64},
                 {"T": 5, "V": 1000}, {"T": 4, "V": 5000}),
    bench_shapes=({"T": 4096, "V": 32000}, {"T": 4096, "V": 128256}),
    decode_shapes=({"T": 1, "V": 32000}, {"T": 4, "V": 32000}, {"T": 16, "V": 32000}),
    tolerances={"fp32": (1e-4, 1e-4), "fp16": (1e-4, 1e-4), "bf16": (1e-4, 1e-4)},
    out_dtype=lambda dtype: torch.float32,
    vendor=vendor,
    vendor_name="F.cross_entropy",
)
