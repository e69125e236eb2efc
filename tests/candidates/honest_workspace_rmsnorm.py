"""Honest two-kernel RMSNorm with a scratch workspace kept across calls.

The first kernel writes each row's reciprocal RMS into a float32 workspace, the second scales the row.
The workspace is allocated once per device and grown when a call needs more rows; only the freshly
allocated output is ever returned.
"""

import torch
import triton
import triton.language as tl

_WORKSPACE: dict = {}


@triton.jit
def _inv_rms(X, INV, n_cols, stride, eps, CHUNK: tl.constexpr):
    row = tl.program_id(0)
    acc = tl.zeros((CHUNK,), dtype=tl.float32)
    for start in range(0, n_cols, CHUNK):
        cols = start + tl.arange(0, CHUNK)
        x = tl.load(X + row * stride + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        acc += x * x
    tl.store(INV + row, 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps))


@triton.jit
def _scale(X, INV, W, Y, n_cols, stride, CHUNK: tl.constexpr):
    row = tl.program_id(0)
    inv = tl.load(INV + row)
    for start in range(0, n_cols, CHUNK):
        cols = start + tl.arange(0, CHUNK)
        mask = cols < n_cols
        x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + row * stride + cols, (x * inv * w).to(Y.dtype.element_ty), mask=mask)


def _workspace(rows: int, device: torch.device) -> torch.Tensor:
    buf = _WORKSPACE.get(device)
    if buf is None or buf.numel() < rows:
        buf = torch.empty(max(rows, 1024), dtype=torch.float32, device=device)
        _WORKSPACE[device] = buf
    return buf


def kernel_fn(x, weight, eps=1e-6):
    x2 = x.contiguous().view(-1, x.shape[-1])
    rows, n_cols = x2.shape
    y2 = torch.empty_like(x2)
    inv = _workspace(rows, x.device)
    chunk = min(triton.next_power_of_2(n_cols), 2048)
    _inv_rms[(rows,)](x2, inv, n_cols, x2.stride(0), eps, CHUNK=chunk)
    _scale[(rows,)](x2, inv, weight.contiguous(), y2, n_cols, x2.stride(0), CHUNK=chunk)
    return y2.view(x.shape)
