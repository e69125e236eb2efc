"""Runs the kernel on a side CUDA stream, so the default stream that the timer watches sees no work."""

# The side stream first waits for the caller's stream (where the inputs were written and the output
# was allocated and, in the gate, filled with NaN), so the result is right once the device is
# synchronised: the cheat passes correctness and only the timing checks can catch it. Without that
# wait the kernel raced the NaN fill and the gate failed it as wrong instead (H100, RESULTS.md, run 8).

import torch
import triton
import triton.language as tl

_side_stream = None


@triton.jit
def _softmax_rows(X, Y, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=-float("inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(Y + row * n_cols + cols, (e / tl.sum(e, axis=0)).to(Y.dtype.element_ty), mask=mask)


def kernel_fn(x):
    global _side_stream
    if x.is_cuda and _side_stream is None:
        _side_stream = torch.cuda.Stream()
    x2 = x.contiguous().view(-1, x.shape[-1])
    y2 = torch.empty_like(x2)
    if x.is_cuda:
        _side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(_side_stream):
        _softmax_rows[(x2.shape[0],)](x2, y2, x2.shape[1], BLOCK=triton.next_power_of_2(x2.shape[1]))
    return y2.view(x.shape)
