"""Computes the mean of squares in PyTorch and leaves only the final scaling to a Triton kernel."""

import torch
import triton
import triton.language as tl


@triton.jit
def _scale_rows(X, R, W, Y, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(R + row).to(tl.float32)
    tl.store(Y + row * n_cols + cols, (x * r * w).to(Y.dtype.element_ty), mask=mask)


def kernel_fn(x, weight, eps=1e-6):
    x2 = x.contiguous().view(-1, x.shape[-1])
    inv_rms = torch.rsqrt(x2.float().pow(2).mean(-1) + eps)
    y2 = torch.empty_like(x2)
    _scale_rows[(x2.shape[0],)](x2, inv_rms, weight.contiguous(), y2, x2.shape[1],
                                BLOCK=triton.next_power_of_2(x2.shape[1]))
    return y2.view(x.shape)
