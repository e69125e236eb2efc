"""Sum over the middle dim of a [batch, dim1, dim2] tensor, kept as a size-1 dim: each Triton program
owns one batch and a block of dim2 columns and walks dim1, so every load is a contiguous run."""

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _sum_dim1_kernel(x_ptr, y_ptr, dim1, dim2, stride_b, stride_r, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < dim2
    rows = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    base = x_ptr + b * stride_b
    for start in range(0, dim1, BLOCK_R):
        r = start + rows
        mask = (r < dim1)[:, None] & col_mask[None, :]
        acc += tl.load(base + r.to(tl.int64)[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)
    tl.store(y_ptr + b * dim2 + cols, tl.sum(acc, axis=0), mask=col_mask)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim != 1 or x.dim() != 3:
            raise ValueError("this kernel sums dim 1 of a 3-d tensor")
        x = x.contiguous()
        batch, dim1, dim2 = x.shape
        y = torch.empty((batch, 1, dim2), device=x.device, dtype=x.dtype)
        block_c = 128
        _sum_dim1_kernel[(batch, triton.cdiv(dim2, block_c))](x, y, dim1, dim2, x.stride(0), x.stride(1),
                                                              BLOCK_C=block_c, BLOCK_R=16, num_warps=4)
        return y
