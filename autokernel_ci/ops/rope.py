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
    """At the benchmark's 32 heads of 128, a [HEADS_PER_PROGRAM, 128] tile must give each thread 1 to 64
    values. A None knob counts as the launcher's choice there (32 heads, 8 warps)."""
    heads = config.get("HEADS_PER_PROGRAM") or 32
    warps = config.get("NUM_WARPS") or min(16, max(1, heads * 128 // 512))
    per_thread = heads * 128 / (32 * warps)
    if per_thread > 64:
        return f"{heads} heads of 128 on {warps} warps is {per_thread:g} values a thread: it would spill"
    if per_thread < 1:
        return f"{heads} heads of 128 are fewer values than {warps} warps have threads"
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
        Tunable("HEADS_PER_PROGRAM", (None, 1, 2, 4, 8, 16, 32, 64),
                "heads of one position a program rotates; they share one read of cos and sin. "
                "None: all heads up to a 4096-value tile, fewer when there are few positions"),
        Tunable("NUM_WARPS", (None, 1, 2, 4, 8, 16), "warps per program. None: about 16 values a thread"),
    ),
    constraint=constraint,
)


# === kernel file ===
"""Rotary position embedding (interleaved pairs) in Triton, applied to x[B, H, S, D] with cos, sin[S, D/2].

Memory-bound: x is read once and the output written once. A program takes the heads of one position,
so cos and sin (S·D values, small) are read once per program as one row and shared by all its heads.
"""

import torch  # noqa: E402, F811
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# The tunable knobs; None means "chosen from the shape" by `_launch_config`.
HEADS_PER_PROGRAM = None  # heads of one position per program (a power of two)
NUM_WARPS = None

SM_COUNT = 132  # H100 SXM


# Knob values per GPU, over the defaults above, keyed by the device name torch reports ("NVIDIA H200")
# or by the name and a shape bucket ("NVIDIA H200/decode": 1-16 rows; "/prefill": more). The launcher
# takes the running GPU's entry for the bucket, else for the GPU, else the defaults.
CONFIGS = {}
DECODE_ROWS = 16
_DEVICE_NAMES = {}


def _tuned(device, n_rows):
    """The CONFIGS entry for `device` at `n_rows` rows, or {}."""
    if not CONFIGS:
        return {}
    if device.type != "cuda":
        name = device.type
    else:
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = _DEVICE_NAMES.get(index) or _DEVICE_NAMES.setdefault(index, torch.cuda.get_device_name(index))
    bucket = "decode" if n_rows <= DECODE_ROWS else "prefill"
    return CONFIGS.get(f"{name}/{bucket}") or CONFIGS.get(name) or {}

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
    HEADS_PER_PROGRAM: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    """out[2i] = x[2i]·cos[s, i] − x[2i+1]·sin[s, i];  out[2i+1] = x[2i]·sin[s, i] + x[2i+1]·cos[s, i].

    Su et al., "RoFormer" (2021), interleaved (GPT-J) layout; fp32 maths. Program (t, j) rotates heads
    j·HEADS_PER_PROGRAM … of position t = b·S + s, a [HEADS_PER_PROGRAM, D] tile. The position is one
    scalar per program, so there is no per-row index arithmetic, and cos and sin are one contiguous
    row each, loaded once and broadcast over the heads. Each head's row is loaded whole (vectorised),
    split into its even and odd lanes in registers, rotated, re-interleaved and stored whole. x may
    have any strides over (B, H, S) (e.g. a transposed [B, S, H, D] projection); the output is
    contiguous.
    """
    position = tl.program_id(0)
    batch = (position // seq_len).to(tl.int64)
    pos = (position % seq_len).to(tl.int64)
    heads = tl.program_id(1) * HEADS_PER_PROGRAM + tl.arange(0, HEADS_PER_PROGRAM)
    head_mask = heads[:, None] < n_heads

    pairs = tl.arange(0, BLOCK_HALF)
    pair_mask = pairs < half_dim
    cos = tl.load(Cos_ptr + pos * cs_row_stride + pairs, mask=pair_mask, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(Sin_ptr + pos * cs_row_stride + pairs, mask=pair_mask, other=0.0).to(tl.float32)[None, :]

    cols = tl.arange(0, 2 * BLOCK_HALF)
    mask = head_mask & (cols[None, :] < 2 * half_dim)
    x_rows = X_ptr + batch * x_stride_b + pos * x_stride_s + heads.to(tl.int64)[:, None] * x_stride_h
    x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    x0, x1 = tl.split(tl.reshape(x, (HEADS_PER_PROGRAM, BLOCK_HALF, 2)))
    out = tl.join(x0 * cos - x1 * sin, x0 * sin + x1 * cos)
    out = tl.reshape(out, (HEADS_PER_PROGRAM, 2 * BLOCK_HALF))
    out_rows = Out_ptr + ((batch * n_heads + heads[:, None]) * seq_len + pos) * (2 * half_dim)
    tl.store(out_rows + cols[None, :], out.to(Out_ptr.dtype.element_ty), mask=mask)


def _launch_config(n_positions: int, n_heads: int, head_dim: int, tuned=None) -> tuple[int, int, int]:
    """(BLOCK_HALF, HEADS_PER_PROGRAM, NUM_WARPS): the knobs, with None filled from the shape."""
    block_half = triton.next_power_of_2(max(head_dim // 2, 1))
    tuned = tuned or {}
    heads = tuned.get("HEADS_PER_PROGRAM", HEADS_PER_PROGRAM)
    if heads is None:
        # All heads of a position up to a 4096-value tile; fewer when that would leave SMs idle
        # (decode: a handful of positions).
        wanted_per_sm = triton.next_power_of_2(triton.cdiv(n_positions * n_heads, SM_COUNT))
        heads = max(1, min(triton.next_power_of_2(n_heads), 4096 // (2 * block_half), wanted_per_sm))
    warps = tuned.get("NUM_WARPS", NUM_WARPS)
    if warps is None:
        warps = min(16, max(1, heads * 2 * block_half // 512))
    return block_half, heads, warps


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
    n_positions = batch * seq_len
    if n_positions == 0 or n_heads == 0 or half == 0:
        return out
    block_half, heads, warps = _launch_config(n_positions, n_heads, head_dim, _tuned(x.device, n_positions))
    grid = (n_positions, triton.cdiv(n_heads, heads))
    _rope_fwd_kernel[grid](
        x, x.stride(0), x.stride(1), x.stride(2), cos, sin, cos.stride(0), out,
        n_heads, seq_len, half, HEADS_PER_PROGRAM=heads, BLOCK_HALF=block_half, num_warps=warps,
    )
    return out
