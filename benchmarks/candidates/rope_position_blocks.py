"""Rotary position embedding (interleaved pairs) in Triton, applied to x[B, H, S, D] with cos, sin[S, D/2].

A candidate for the op library's rope kernel, to be timed against it on a GPU:

    python benchmarks/ops.py rope --candidate rope=benchmarks/candidates/rope_position_blocks.py

Both earlier rope kernels (the library's, and rope_partner_load.py) gave a program the heads of one
position: in x[B, H, S, D] those rows are S·D elements apart (1 MB at the benchmark shape), so each
program read and wrote 32 scattered 256-byte rows, and they reached 24–28% of the copy bandwidth
where torch.compile's flat elementwise kernel reaches ~73%. Here a program takes BLOCK_S consecutive
positions of one head instead: one contiguous stretch of x read and one of the output written, the
way an elementwise kernel streams. cos and sin rows are re-read once per head, from L2 (S·D/2
values each, 0.5 MB at the benchmark shape).
"""

import torch
import triton
import triton.language as tl

# The tunable knobs; None means "chosen from the shape" by `_launch_config`.
POSITIONS_PER_PROGRAM = None  # consecutive positions of one head per program (a power of two)
NUM_WARPS = None

SM_COUNT = 132  # H100 SXM


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
    n_heads,
    seq_len,
    half_dim,
    BLOCK_S: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    """out[2i] = x[2i]·cos[s, i] − x[2i+1]·sin[s, i];  out[2i+1] = x[2i]·sin[s, i] + x[2i+1]·cos[s, i].

    Su et al., "RoFormer" (2021), interleaved (GPT-J) layout; fp32 maths. Program (j, bh) rotates
    positions j·BLOCK_S … of head h of batch b, a [BLOCK_S, D] tile; each row is split into its even
    and odd lanes in registers, rotated, re-interleaved and stored. x may have any strides over
    (B, H, S); the output is contiguous.
    """
    bh = tl.program_id(1)
    batch = (bh // n_heads).to(tl.int64)
    head = (bh % n_heads).to(tl.int64)
    pos = tl.program_id(0).to(tl.int64) * BLOCK_S + tl.arange(0, BLOCK_S)
    pos_mask = pos < seq_len

    pairs = tl.arange(0, BLOCK_HALF)
    cs_mask = pos_mask[:, None] & (pairs[None, :] < half_dim)
    cs_offs = pos[:, None] * cs_row_stride + pairs[None, :]
    cos = tl.load(Cos_ptr + cs_offs, mask=cs_mask, other=0.0).to(tl.float32)
    sin = tl.load(Sin_ptr + cs_offs, mask=cs_mask, other=0.0).to(tl.float32)

    cols = tl.arange(0, 2 * BLOCK_HALF)
    mask = pos_mask[:, None] & (cols[None, :] < 2 * half_dim)
    x_rows = X_ptr + batch * x_stride_b + head * x_stride_h + pos[:, None] * x_stride_s
    x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    x0, x1 = tl.split(tl.reshape(x, (BLOCK_S, BLOCK_HALF, 2)))
    out = tl.reshape(tl.join(x0 * cos - x1 * sin, x0 * sin + x1 * cos), (BLOCK_S, 2 * BLOCK_HALF))
    out_rows = Out_ptr + ((batch * n_heads + head) * seq_len + pos[:, None]) * (2 * half_dim)
    tl.store(out_rows + cols[None, :], out.to(Out_ptr.dtype.element_ty), mask=mask)


def _launch_config(batch_heads: int, seq_len: int, head_dim: int) -> tuple[int, int, int]:
    """(BLOCK_HALF, BLOCK_S, NUM_WARPS): the knobs, with None filled from the shape."""
    block_half = triton.next_power_of_2(max(head_dim // 2, 1))
    block_s = POSITIONS_PER_PROGRAM
    if block_s is None:
        # A 4096-value tile, fewer positions when that would leave SMs idle (short sequences).
        wanted = triton.next_power_of_2(triton.cdiv(batch_heads * seq_len, SM_COUNT))
        block_s = max(1, min(triton.next_power_of_2(seq_len), 4096 // (2 * block_half), wanted))
    warps = NUM_WARPS
    if warps is None:
        warps = min(16, max(1, block_s * 2 * block_half // 512))
    return block_half, block_s, warps


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
    if batch * n_heads == 0 or seq_len == 0 or half == 0:
        return out
    if batch * n_heads > 65535:
        raise ValueError(f"B·H = {batch * n_heads} exceeds the 65535 programs of a grid's second axis")
    block_half, block_s, warps = _launch_config(batch * n_heads, seq_len, head_dim)
    grid = (triton.cdiv(seq_len, block_s), batch * n_heads)
    _rope_fwd_kernel[grid](
        x, x.stride(0), x.stride(1), x.stride(2), cos, sin, cos.stride(0), out,
        n_heads, seq_len, half, BLOCK_S=block_s, BLOCK_HALF=block_half, num_warps=warps,
    )
    return out
