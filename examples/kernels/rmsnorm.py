"""RMSNorm over the last dim, one row per program: y = x / sqrt(mean(x²) + eps) · weight."""

import torch
import triton
import triton.language as tl

BLOCK_SIZE = 1024  # columns per step of the row loop
NUM_WARPS = 4


@triton.jit
def _rmsnorm_kernel(x_ptr, w_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, eps, BLOCK: tl.constexpr):
    """Two passes over the row: Σx² in fp32, then y = x · rsqrt(Σx²/n + eps) · w in the input dtype."""
    row = tl.program_id(0)
    x_row = x_ptr + row * x_row_stride
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        acc += x * x
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * y_row_stride + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def kernel_fn(x, weight, eps=1e-6):
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).contiguous()
    y = torch.empty_like(x2)
    n_rows, n_cols = x2.shape
    block = min(BLOCK_SIZE, triton.next_power_of_2(n_cols))
    _rmsnorm_kernel[(n_rows,)](x2, weight.contiguous(), y, x2.stride(0), y.stride(0), n_cols, eps,
                               BLOCK=block, num_warps=NUM_WARPS)
    return y.view(shape)
