"""L1 normalisation over dim 1: x / mean(|x|) per row, one Triton program per row in two passes."""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _l1_norm_kernel(x_ptr, y_ptr, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride
    y_row = y_ptr + row * stride
    cols = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        acc += tl.abs(tl.load(x_row + offs, mask=offs < n_cols, other=0.0))
    mean = tl.sum(acc, axis=0) / n_cols
    for start in range(0, n_cols, BLOCK):
        offs = start + cols
        mask = offs < n_cols
        tl.store(y_row + offs, tl.load(x_row + offs, mask=mask, other=0.0) / mean, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        rows, cols = x.shape
        _l1_norm_kernel[(rows,)](x, y, cols, x.stride(0), BLOCK=4096, num_warps=8)
        return y
