"""Rotary position embedding, interleaved pairs, applied to x[B, H, S, D]:

    out[..., 2i]   = x[..., 2i] · cos[s, i] − x[..., 2i+1] · sin[s, i]
    out[..., 2i+1] = x[..., 2i] · sin[s, i] + x[..., 2i+1] · cos[s, i]

with cos, sin of shape [S, D/2]. Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch

from autokernel_ci.ops.base import OpSpec, Tunable, activation, element_size


def reference(x, cos, sin):
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out0 = x0 * cos - x1 * sin
    out1 = x0 * sin + x1 * cos
    return torch.stack((out0, out1), dim=-1).reshape(x.shape)


def make_inputs(shape, dtype, generator, kind="normal"):
    b, h, s, d = shape["B"], shape["H"], shape["S"], shape["D"]
    x = activation((b, h, s, d), dtype, generator, kind)
    device = generator.device
    inv_freq = 10000.0 ** (-torch.arange(0, d // 2, device=device, dtype=torch.float32) * 2 / d)
    # A random start position, so that a kernel cannot assume the sequence starts at 0.
    start = int(torch.randint(0, 4096, (1,), generator=generator, device=device))
    angles = (torch.arange(s, device=device, dtype=torch.float32) + start)[:, None] * inv_freq[None, :]
    return (x, angles.cos().to(dtype), angles.sin().to(dtype))


def bytes_moved(shape, dtype) -> int:
    b, h, s, d = shape["B"], shape["H"], shape["S"], shape["D"]
    return (2 * b * h * s * d + s * d) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 3 * shape["B"] * shape["H"] * shape["S"] * shape["D"]


def constraint(config) -> str | None:
    """At head dim 128 (the benchmark's), a [ROWS_PER_PROGRAM, 128] tile must give each thread 1 to 64 values."""
    rows, warps = config.get("ROWS_PER_PROGRAM"), config.get("NUM_WARPS")
    if rows is None or warps is None:
        return None
    per_thread = rows * 128 / (32 * warps)
    if per_thread > 64:
        return f"{rows} rows of 128 on {warps} warps is {per_thread:g} values a thread: it would spill"
    if per_thread < 1:
        return f"{rows} rows of 128 are fewer values than {warps} warps have threads"
    return None


SPEC = OpSpec(
    name="rope",
    signature="kernel_fn(x, cos, sin)",
    family="rope",
    dims=("B", "H", "S", "D"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"B": 1, "H": 1, "S": 1, "D": 2}, {"B": 2, "H": 3, "S": 5, "D": 8},
                 {"B": 1, "H": 4, "S": 17, "D": 64}, {"B": 2, "H": 2, "S": 33, "D": 128}),
    bench_shapes=({"B": 1, "H": 32, "S": 4096, "D": 128},),
    decode_shapes=({"B": 1, "H": 32, "S": 1, "D": 128}, {"B": 4, "H": 32, "S": 1, "D": 128},
                   {"B": 16, "H": 32, "S": 1, "D": 128}),
    tunables=(
        Tunable("ROWS_PER_PROGRAM", (None, 1, 2, 4, 8, 16, 32, 64, 128),
                "head-dim rows one program rotates; the heads of a position are adjacent, so they share one "
                "read of cos and sin. None: a 4096-value tile, fewer rows when there are few"),
        Tunable("NUM_WARPS", (None, 1, 2, 4, 8, 16), "warps per program. None: about 16 values a thread"),
    ),
    constraint=constraint,
)


# === kernel file ===
"""Rotary position embedding (interleaved pairs) in Triton, applied to x[B, H, S, D] with cos, sin[S, D/2].

Memory-bound: x is read once and the output written once; cos and sin (S·D values, small) are read
once per program and shared by the heads of a position, which sit next to each other in a tile.
"""

import torch  # noqa: E402, F811
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

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
    x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    x0, x1 = tl.split(tl.reshape(x, (ROWS_PER_PROGRAM, BLOCK_HALF, 2)))

    pairs = tl.arange(0, BLOCK_HALF)
    cs_offs = (pos * cs_row_stride)[:, None] + pairs[None, :]
    cs_mask = row_mask & (pairs[None, :] < half_dim)
    cos = tl.load(Cos_ptr + cs_offs, mask=cs_mask, other=0.0).to(tl.float32)
    sin = tl.load(Sin_ptr + cs_offs, mask=cs_mask, other=0.0).to(tl.float32)

    out = tl.join(x0 * cos - x1 * sin, x0 * sin + x1 * cos)
    out = tl.reshape(out, (ROWS_PER_PROGRAM, 2 * BLOCK_HALF))
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
