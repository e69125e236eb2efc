"""Rotary position embedding (interleaved pairs) in Triton, applied to x[B, H, S, D] with cos, sin[S, D/2].

Memory-bound: x is read once and the output written once; cos and sin (S·D values, small) are read
once per program and shared by the heads of a position, which sit next to each other in a tile.
"""

import torch
import triton
import triton.language as tl

# The tunable knobs; None means "chosen from the shape" by `_launch_config`.
ROWS_PER_PROGRAM = None  # head-dim rows per program (a power of two)
NUM_WARPS = None


@triton.jit
def _rope_fwd_kernel(
    X_ptr,
    x_stride_b,
    x_stride_h,
    x_stride_s,
    Cos_ptr,
    Sin_ptr,
    cs_row_stride,
    Out_ptr,
    n_rows,
    n_heads,
    seq_len,
    half_dim,
    ROWS_PER_PROGRAM: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    """out[2i] = x[2i]·cos[s, i] − x[2i+1]·sin[s, i];  out[2i+1] = x[2i]·sin[s, i] + x[2i+1]·cos[s, i].

    Su et al., "RoFormer" (2021), interleaved (GPT-J) layout; fp32 maths. A program rotates a
    [ROWS_PER_PROGRAM, D] tile of rows taken in (b, s, h) order, heads fastest, so the rows of one
    position share the same cos/sin addresses. Each row is loaded whole (contiguous, vectorised), split
    into its even and odd lanes in registers, rotated, re-interleaved and stored whole. x may have any
    strides over (B, H, S) (e.g. a transposed [B, S, H, D] projection); the output is contiguous.
    """
    rows = tl.program_id(0).to(tl.int64) * ROWS_PER_PROGRAM + tl.arange(0, ROWS_PER_PROGRAM)
    row_mask = rows[:, None] < n_rows
    head = rows % n_heads
    pos_flat = rows // n_heads
    pos = pos_flat % seq_len
    batch = pos_flat // seq_len
    x_rows = X_ptr + (batch * x_stride_b + head * x_stride_h + pos * x_stride_s)[:, None]
    out_rows = Out_ptr + (((batch * n_heads + head) * seq_len + pos) * (2 * half_dim))[:, None]

    cols = tl.arange(0, 2 * BLOCK_HALF)
    mask = row_mask & (cols[None, :] < 2 * half_dim)
    # Each lane reads its own element and its pair partner (cols ^ 1, a hit in L1 after the first
    # load), and cos/sin at cols // 2: no shuffles across lanes, every access contiguous.
    x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    partner = tl.load(x_rows + (cols ^ 1)[None, :], mask=mask, other=0.0).to(tl.float32)
    cs_offs = (pos * cs_row_stride)[:, None] + (cols // 2)[None, :]
    cos = tl.load(Cos_ptr + cs_offs, mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(Sin_ptr + cs_offs, mask=mask, other=0.0).to(tl.float32)
    # even lane: x0·cos − x1·sin; odd lane: x1·cos + x0·sin
    sign = tl.where((cols % 2) == 0, -1.0, 1.0)[None, :]
    out = x * cos + sign * partner * sin
    tl.store(out_rows + cols[None, :], out.to(Out_ptr.dtype.element_ty), mask=mask)


def _launch_config(n_rows: int, head_dim: int) -> tuple[int, int, int]:
    """(BLOCK_HALF, ROWS_PER_PROGRAM, NUM_WARPS): the knobs, with None filled from the shape."""
    block_half = triton.next_power_of_2(max(head_dim // 2, 1))
    rows = ROWS_PER_PROGRAM
    if rows is None:
        # A 4096-value tile, but fewer rows when that would leave SMs idle (decode: a few rows).
        rows = max(1, min(4096 // (2 * block_half), triton.next_power_of_2(triton.cdiv(n_rows, 132))))
    warps = NUM_WARPS
    if warps is None:
        warps = min(16, max(1, rows * 2 * block_half // 512))
    return block_half, rows, warps


def kernel_fn(x, cos, sin):
    if x.dim() != 4:
        raise ValueError(f"rope expects x of shape [B, H, S, D]; got {tuple(x.shape)}")
    batch, n_heads, seq_len, head_dim = x.shape
    if head_dim % 2:
        raise ValueError(f"rope rotates pairs, so the head dim must be even; got {head_dim}")
    half = head_dim // 2
    for name, table in (("cos", cos), ("sin", sin)):
        if table.shape[-1] != half or table.numel() != seq_len * half:
            raise ValueError(f"{name} must hold [S, D/2] = [{seq_len}, {half}] values; got {tuple(table.shape)}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos = cos.contiguous().view(seq_len, half)
    sin = sin.contiguous().view(seq_len, half)
    out = torch.empty((batch, n_heads, seq_len, head_dim), dtype=x.dtype, device=x.device)
    n_rows = batch * n_heads * seq_len
    if n_rows == 0 or half == 0:
        return out
    block_half, rows, warps = _launch_config(n_rows, head_dim)
    _rope_fwd_kernel[(triton.cdiv(n_rows, rows),)](
        x, x.stride(0), x.stride(1), x.stride(2), cos, sin, cos.stride(0), out,
        n_rows, n_heads, seq_len, half, ROWS_PER_PROGRAM=rows, BLOCK_HALF=block_half, num_warps=warps,
    )
    return out

