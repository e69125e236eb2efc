"""RMSNorm over the last dim: y = x / sqrt(mean(x²) + eps) · weight.

Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, Tunable, activation, element_size, row_tile_constraint


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def make_inputs(shape, dtype, generator, kind="normal"):
    x = activation((shape["rows"], shape["dim"]), dtype, generator, kind)
    weight = activation((shape["dim"],), dtype, generator) * 0.5 + 1.0
    return (x, weight.to(dtype), 1e-6)


def bytes_moved(shape, dtype) -> int:
    return (2 * shape["rows"] * shape["dim"] + shape["dim"]) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 4 * shape["rows"] * shape["dim"]


def vendor(x, weight, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


SPEC = OpSpec(
    name="rmsnorm",
    signature="kernel_fn(x, weight, eps=1e-6)",
    family="norm",
    dims=("rows", "dim"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"rows": 1, "dim": 1}, {"rows": 3, "dim": 7}, {"rows": 16, "dim": 64},
                 {"rows": 37, "dim": 1000}, {"rows": 8, "dim": 4096}),
    bench_shapes=({"rows": 16384, "dim": 4096},),
    decode_shapes=({"rows": 1, "dim": 4096}, {"rows": 4, "dim": 4096}, {"rows": 16, "dim": 4096}),
    vendor=vendor,
    vendor_name="F.rms_norm",
    tunables=(
        Tunable("BLOCK_SIZE", (None, 1024, 2048, 4096, 8192, 16384),
                "columns a tile covers; a row longer than this takes two passes. None: the whole row up to 16384"),
        Tunable("ROWS_PER_PROGRAM", (None, 1, 2, 4, 8),
                "rows one program normalises together; more amortise the weight load for short rows"),
        Tunable("NUM_WARPS", (None, 2, 4, 8, 16, 32), "warps per program. None: about 16 values a thread"),
    ),
    constraint=row_tile_constraint,
)


# === kernel file ===
"""RMSNorm forward in Triton: y = x / sqrt(mean(x²) + eps) · weight over the last dim.

Memory-bound: it reads x and writes y once, so the aim is one pass at full bandwidth. A row of up to
16384 columns is held in registers (one read of x); longer rows take a second pass over x.
"""

import torch  # noqa: E402, F811
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# The tunable knobs; None means "chosen from the shape" by `_launch_config`.
BLOCK_SIZE = None  # columns per tile (a power of two)
ROWS_PER_PROGRAM = None  # rows per program (a power of two)
NUM_WARPS = None

# Knob values per GPU, over the defaults above, keyed by the device name torch reports ("NVIDIA H200")
# or by the name and a shape bucket ("NVIDIA H200/decode": 1-16 rows; "/prefill": more). The launcher
# takes the running GPU's entry for the bucket, else for the GPU, else the defaults.
CONFIGS = {}

# Rows up to this many columns are normalised in one pass, from registers.
MAX_SINGLE_PASS = 16384
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
def _rmsnorm_fwd_kernel(
    X_ptr,
    X_row_stride,
    W_ptr,
    Y_ptr,
    Y_row_stride,
    n_rows,
    n_cols,
    eps,
    ROWS_PER_PROGRAM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
):
    """y_ij = x_ij · rstd_i · w_j with rstd_i = 1 / sqrt(Σ_j x_ij² / n_cols + eps), all in fp32.

    Zhang & Sennrich, "Root Mean Square Layer Normalization" (2019). A program owns a
    [ROWS_PER_PROGRAM, BLOCK_SIZE] tile. With SINGLE_PASS the tile spans the row: x is read once and
    rstd is applied from registers. Otherwise the row is walked twice in BLOCK_SIZE steps: first to
    sum x², then to scale (the second read mostly hits L2). The sum is kept per lane across steps so
    there is one cross-thread reduction per row, not one per step.
    """
    rows = tl.program_id(0).to(tl.int64) * ROWS_PER_PROGRAM + tl.arange(0, ROWS_PER_PROGRAM)
    row_mask = rows[:, None] < n_rows
    cols = tl.arange(0, BLOCK_SIZE)
    x_rows = X_ptr + rows[:, None] * X_row_stride
    y_rows = Y_ptr + rows[:, None] * Y_row_stride
    if SINGLE_PASS:
        col_mask = cols < n_cols
        mask = row_mask & col_mask[None, :]
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        y = x * rstd[:, None] * w[None, :]
        tl.store(y_rows + cols[None, :], y.to(Y_ptr.dtype.element_ty), mask=mask)
    else:
        sum_sq = tl.zeros((ROWS_PER_PROGRAM, BLOCK_SIZE), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_SIZE):
            c = start + cols
            x = tl.load(x_rows + c[None, :], mask=row_mask & (c[None, :] < n_cols), other=0.0).to(tl.float32)
            sum_sq += x * x
        rstd = tl.rsqrt(tl.sum(sum_sq, axis=1) / n_cols + eps)
        for start in range(0, n_cols, BLOCK_SIZE):
            c = start + cols
            mask = row_mask & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :], mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W_ptr + c, mask=c < n_cols, other=0.0).to(tl.float32)
            y = x * rstd[:, None] * w[None, :]
            tl.store(y_rows + c[None, :], y.to(Y_ptr.dtype.element_ty), mask=mask)


def _launch_config(n_rows: int, n_cols: int, tuned=None) -> tuple[int, int, int]:
    """(BLOCK_SIZE, ROWS_PER_PROGRAM, NUM_WARPS): the knobs (`tuned`, the GPU's entry, over the module's
    defaults), with None filled from the shape."""
    tuned = tuned or {}
    block = tuned.get("BLOCK_SIZE", BLOCK_SIZE)
    if block is None:
        block = triton.next_power_of_2(n_cols) if n_cols <= MAX_SINGLE_PASS else 8192
    rows = tuned.get("ROWS_PER_PROGRAM", ROWS_PER_PROGRAM)
    if rows is None:
        # Short rows: pack several per program so a tile has ~4096 values, while keeping about two
        # programs per SM (132 on an H100) when there are enough rows.
        rows = max(1, min(4096 // block, triton.next_power_of_2(triton.cdiv(n_rows, 264))))
    warps = tuned.get("NUM_WARPS", NUM_WARPS)
    if warps is None:
        # ~16 values a thread: 16-byte vector loads for 16-bit types, and few enough registers.
        warps = min(16, max(1, block * rows // 512))
    return block, rows, warps


def _as_rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """A [rows, n_cols] view with unit column stride; copies only when no such view exists."""
    if t.dim() == 2 and t.stride(-1) == 1:
        return t
    return t.contiguous().view(-1, n_cols)


def kernel_fn(x, weight, eps=1e-6):
    if x.dim() == 0:
        raise ValueError("rmsnorm needs x with at least one dim; the last dim is normalised")
    n_cols = x.shape[-1]
    if tuple(weight.shape) != (n_cols,):
        raise ValueError(f"weight must have shape ({n_cols},) to match x's last dim; got {tuple(weight.shape)}")
    x2 = _as_rows(x, n_cols)
    n_rows = x2.shape[0]
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    if n_rows == 0 or n_cols == 0:
        return y.view(x.shape)
    block, rows, warps = _launch_config(n_rows, n_cols, _tuned(x.device, n_rows))
    grid = (triton.cdiv(n_rows, rows),)
    _rmsnorm_fwd_kernel[grid](
        x2, x2.stride(0), weight.contiguous(), y, y.stride(0), n_rows, n_cols, eps,
        ROWS_PER_PROGRAM=rows, BLOCK_SIZE=block, SINGLE_PASS=block >= n_cols, num_warps=warps,
    )
    return y.view(x.shape)
