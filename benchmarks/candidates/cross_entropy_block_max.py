"""Cross-entropy forward in Triton: mean over rows t of logsumexp(logits_t) − logits_t[target_t].

A candidate for the op library's cross-entropy kernel, to be timed against it on a GPU:

    python benchmarks/ops.py cross_entropy --candidate cross_entropy=benchmarks/candidates/cross_entropy_block_max.py

The library kernel keeps a running max and sum per lane, so a step needs no reduction across
threads, but each element then costs one exponential and about eleven other instructions (compiled
for sm_90a: 397 in a loop body of 32 elements a thread; `python -m autokernel_ci.harness.ptx`), and
at a 32000 vocabulary it reaches 66% of the copy bandwidth. Here the running max is one number per
program, updated once per step from the step's block maximum (a reduction across the program), and
the per-lane sums are rescaled by one exponential of that: an element costs a conversion, a max,
a subtraction, the exponential (a multiply and an ex2) and one accumulate: 305 instructions in the
loop body of 32 elements a thread, 2 of them barriers (the library kernel's: 397). Whether the
reduction's barriers cost more than the instructions saved is for the GPU to say.
"""

import torch
import triton
import triton.language as tl

# The tunable knobs; None means "chosen from the shape" by `_launch_config`.
BLOCK_SIZE = None  # vocabulary columns per load; a step loads two blocks (a power of two)
NUM_WARPS = None
VOCAB_SPLITS = None  # programs per row

# Enough programs for several resident per SM on an H100 (132 SMs).
TARGET_PROGRAMS = 4 * 132


@triton.jit
def _cross_entropy_partial_kernel(
    Logits_ptr,
    row_stride,
    Max_ptr,
    Sum_ptr,
    n_cols,
    cols_per_split,
    n_splits,
    BLOCK_SIZE: tl.constexpr,
):
    """For row t and vocabulary slice j: m_tj = max_v x_tv and s_tj = Σ_v exp(x_tv − m_tj) over the slice.

    A step loads two blocks, takes their maximum across the program (one reduction), moves the running
    max there and rescales the per-lane sums by one exponential of the change, then adds each
    element's exp(x − max). Lanes are merged once at the end. The running max starts at −1e30 rather
    than −inf so padding (−inf) never meets −inf − (−inf) = NaN.
    """
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    start = split * cols_per_split
    end = tl.minimum(start + cols_per_split, n_cols)
    x_row = Logits_ptr + row * row_stride
    cols = tl.arange(0, BLOCK_SIZE)
    m = tl.full((), -1e30, dtype=tl.float32)  # the program's running max: one number, not one a lane
    s = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)  # per lane: Σ exp(x − m) of the values it has seen
    for off in range(start, end, 2 * BLOCK_SIZE):
        c0 = off + cols
        c1 = c0 + BLOCK_SIZE
        x0 = tl.load(x_row + c0, mask=c0 < end, other=float("-inf")).to(tl.float32)
        x1 = tl.load(x_row + c1, mask=c1 < end, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(tl.maximum(x0, x1), axis=0))
        # x − m_new is taken in natural units, exactly for nearby values, before the exponential
        # scales it: large logits lose nothing to a rounded x·log2(e).
        s = s * tl.exp(m - m_new) + tl.exp(x0 - m_new) + tl.exp(x1 - m_new)
        m = m_new
    m_row = m
    s_row = tl.sum(s, axis=0)
    tl.store(Max_ptr + row * n_splits + split, m_row)
    tl.store(Sum_ptr + row * n_splits + split, s_row)


@triton.jit
def _cross_entropy_mean_kernel(
    Max_ptr,
    Sum_ptr,
    Logits_ptr,
    row_stride,
    Targets_ptr,
    Loss_ptr,
    n_rows,
    n_cols,
    n_splits,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_SPLITS: tl.constexpr,
):
    """loss = (1/T) Σ_t (M_t + log Σ_j s_tj · exp(m_tj − M_t) − x[t, target_t]), M_t = max_j m_tj.

    One program walks the rows in order, so the fp32 sum is the same on every run. It also fetches the
    target logits, BLOCK_ROWS independent reads at a time, rather than leaving each streaming program
    a dependent read (target, then logit) at its end. A target out of [0, V) reads NaN, so a bad target
    poisons the loss instead of reading out of bounds.
    """
    splits = tl.arange(0, BLOCK_SPLITS)
    total = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    for start in range(0, n_rows, BLOCK_ROWS):
        rows = start + tl.arange(0, BLOCK_ROWS)
        row_mask = rows < n_rows
        target = tl.load(Targets_ptr + rows, mask=row_mask, other=0).to(tl.int64)
        in_range = (target >= 0) & (target < n_cols)
        picked_ptr = Logits_ptr + rows.to(tl.int64) * row_stride + target
        picked = tl.load(picked_ptr, mask=row_mask & in_range, other=float("nan")).to(tl.float32)
        mask = row_mask[:, None] & (splits[None, :] < n_splits)
        offs = rows[:, None] * n_splits + splits[None, :]
        m = tl.load(Max_ptr + offs, mask=mask, other=-1e30)
        s = tl.load(Sum_ptr + offs, mask=mask, other=0.0)
        m_row = tl.max(m, axis=1)
        # Rows past the end sum to 0: take log(1) there instead of log(0), then drop them.
        lse = m_row + tl.log(tl.where(row_mask, tl.sum(s * tl.exp(m - m_row[:, None]), axis=1), 1.0))
        total += tl.where(row_mask, lse - picked, 0.0)
    tl.store(Loss_ptr, tl.sum(total, axis=0) / n_rows)


def _launch_config(n_rows: int, n_cols: int) -> tuple[int, int, int, int]:
    """(BLOCK_SIZE, NUM_WARPS, splits, columns per split): the knobs, with None filled from the shape."""
    block = BLOCK_SIZE if BLOCK_SIZE is not None else min(4096, max(16, triton.next_power_of_2(n_cols)))
    warps = NUM_WARPS if NUM_WARPS is not None else min(16, max(1, block // 512))
    steps = triton.cdiv(n_cols, 2 * block)  # a step reads two blocks
    splits = VOCAB_SPLITS if VOCAB_SPLITS is not None else triton.cdiv(TARGET_PROGRAMS, max(n_rows, 1))
    splits = max(1, min(splits, steps))
    # Whole steps per split, so only the row's last step is ragged; recount so no split is empty.
    cols_per_split = triton.cdiv(steps, splits) * 2 * block
    return block, warps, triton.cdiv(n_cols, cols_per_split), cols_per_split


def kernel_fn(logits, targets):
    if logits.dim() == 0:
        raise ValueError("cross_entropy needs logits with a class dim (the last)")
    n_cols = logits.shape[-1]
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"targets must have shape {tuple(logits.shape[:-1])} (logits without the class dim); "
                         f"got {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must be class indices (an integer dtype); got {targets.dtype}")
    x = logits if logits.dim() == 2 and logits.stride(-1) == 1 else logits.contiguous().view(-1, n_cols)
    t = targets.contiguous().view(-1)
    n_rows = x.shape[0]
    loss = torch.empty((), dtype=torch.float32, device=logits.device)
    block, warps, splits, cols_per_split = _launch_config(n_rows, n_cols)
    row_max = torch.empty((n_rows, splits), dtype=torch.float32, device=logits.device)
    row_sum = torch.empty((n_rows, splits), dtype=torch.float32, device=logits.device)
    if n_rows > 0 and n_cols > 0:
        _cross_entropy_partial_kernel[(n_rows, splits)](
            x, x.stride(0), row_max, row_sum, n_cols, cols_per_split, splits, BLOCK_SIZE=block, num_warps=warps,
        )
    block_splits = triton.next_power_of_2(splits)
    block_rows = max(1, min(triton.next_power_of_2(max(n_rows, 1)), 4096 // block_splits))
    _cross_entropy_mean_kernel[(1,)](
        row_max, row_sum, x, x.stride(0), t, loss, n_rows, n_cols, splits,
        BLOCK_ROWS=block_rows, BLOCK_SPLITS=block_splits, num_warps=8 if block_rows * block_splits >= 2048 else 4,
    )
    return loss
