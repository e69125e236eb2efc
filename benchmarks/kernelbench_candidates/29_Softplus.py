"""Softplus with a workspace sized by mistake: a [numel, last dim] scratch buffer (meant to be one value
per row) that fits at small sizes and cannot fit on any GPU at the problem's 4096 x 393216. This
candidate runs out of memory on purpose, to show that the gate's verdict for it is FAIL with the
allocator's message, not a traceback."""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _softplus_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    y = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    tl.store(y_ptr + offs, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        workspace = torch.empty((x.numel(), x.shape[-1]), device=x.device, dtype=torch.float32)  # the bug
        y = torch.empty_like(x)
        n = x.numel()
        _softplus_kernel[(triton.cdiv(n, 2048),)](x, y, n, BLOCK=2048, num_warps=8)
        del workspace
        return y
