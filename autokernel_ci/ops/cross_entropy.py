"""Cross-entropy forward: the mean over T rows of logsumexp(logits_t) − logits_t[target_t].

Returns a 0-dim float32 tensor whatever the logits dtype (the loss is accumulated in fp32).
Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, Tunable, activation, element_size


def reference(logits, targets):
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (lse - picked).mean()


def make_inputs(shape, dtype, generator, kind="normal"):
    logits = activation((shape["T"], shape["V"]), dtype, generator, kind)
    targets = torch.randint(0, shape["V"], (shape["T"],), generator=generator, device=generator.device)
    return (logits, targets)


def bytes_moved(shape, dtype) -> int:
    return shape["T"] * shape["V"] * element_size(dtype) + shape["T"] * 8 + 4


def flops(shape, dtype) -> int:
    return 4 * shape["T"] * shape["V"]


def vendor(logits, targets):
    return F.cross_entropy(logits.float(), targets)


def constraint(config) -> str | None:
    """Each thread keeps a running max and sum for BLOCK_SIZE / (32 · NUM_WARPS) lanes: 1 to 32 of them."""
    block, warps = config.get("BLOCK_SIZE"), config.get("NUM_WARPS")
    if block is None or warps is None:
        return None
    per_thread = block / (32 * warps)
    if per_thread > 32:
        return f"BLOCK_SIZE={block} on {warps} warps is {per_thread:g} lanes of state a thread: it would spill"
    if per_thread < 1:
        return f"BLOCK_SIZE={block} is smaller than the {32 * warps} threads of {warps} warps"
    return None


SPEC = OpSpec(
    name="cross_entropy",
    signature="kernel_fn(logits, targets)",
    family="loss",
    dims=("T", "V"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"T": 1, "V": 2}, {"T": 3, "V": 7}, {"T": 16, "V": 64},
                 {"T": 5, "V": 1000}, {"T": 4, "V": 5000}),
    bench_shapes=({"T": 4096, "V": 32000}, {"T": 4096, "V": 128256}),
    decode_shapes=({"T": 1, "V": 32000}, {"T": 4, "V": 32000}, {"T": 16, "V": 32000}),
    tolerances={"fp32": (1e-4, 1e-4), "fp16": (1e-4, 1e-4), "bf16": (1e-4, 1e-4)},
    out_dtype=lambda dtype: torch.float32,
    vendor=vendor,
    vendor_name="F.cross_entropy",
    tunables=(
        Tunable("BLOCK_SIZE", (None, 1024, 2048, 4096, 8192, 16384),
                "vocabulary columns per load; a step of the online logsumexp loads two. None: up to 4096"),
        Tunable("NUM_WARPS", (None, 4, 8, 16, 32), "warps per program. None: about 16 columns a thread"),
        Tunable("VOCAB_SPLITS", (None, 1, 2, 4, 8, 16, 32, 64),
                "programs sharing one row's vocabulary; more fill the GPU when there are few rows. "
                "None: about 4 programs per SM"),
    ),
    constraint=constraint,
)


# === kernel file ===
"""Cross-entropy forward in Triton: mean over rows t of logsumexp(logits_t) − logits_t[target_t].

Memory-bound: the logits are read once, in chunks, with an online logsumexp, so a row of any width
(128256 for Llama 3) streams through registers. When there are few rows, each row's vocabulary is
split across several programs and their partial results are merged by a second, small kernel,
which also takes the mean in a fixed order (no atomics: the loss is bitwise reproducible).
"""

import torch  # noqa: E402, F811
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# The tunable knobs; None means "chosen from the shape" by `_launch_config`.
BLOCK_SIZE = None  # vocabulary columns per load; a step loads two blocks (a power of two)
NUM_WARPS = None
VOCAB_SPLITS = None  # programs per row

# Enough programs for several resident per SM on an H100 (132 SMs).
TARGET_PROGRAMS = 4 * 132


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

    A step loads two blocks before using either (twice the bytes in flight for the same state), takes
    their maximum across the program (one reduction), moves the program's running max there and
    rescales the per-lane sums by one exponential of the change, then adds each element's
    exp(x − max): a conversion, a max, a subtraction, an exponential and an add an element. Lanes are
    merged once at the end. The running max starts at −1e30 rather than −inf so padding (−inf) never
    meets −inf − (−inf) = NaN.

    A running max per lane instead (no reduction a step, but a compare, a select and an exponential of
    |x − m| an element) measured slower on an H100 at every benchmark shape: 4096×32000 131 µs against
    108 µs here, 4096×128256 426 against 368, one row of 32000 9.8 against 8.8 µs.
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


def _launch_config(n_rows: int, n_cols: int, tuned=None) -> tuple[int, int, int, int]:
    """(BLOCK_SIZE, NUM_WARPS, splits, columns per split): the knobs, with None filled from the shape."""
    tuned = tuned or {}
    block, warps = tuned.get("BLOCK_SIZE", BLOCK_SIZE), tuned.get("NUM_WARPS", NUM_WARPS)
    block = block if block is not None else min(4096, max(16, triton.next_power_of_2(n_cols)))
    warps = warps if warps is not None else min(16, max(1, block // 512))
    steps = triton.cdiv(n_cols, 2 * block)  # a step reads two blocks
    splits = tuned.get("VOCAB_SPLITS", VOCAB_SPLITS)
    splits = splits if splits is not None else triton.cdiv(TARGET_PROGRAMS, max(n_rows, 1))
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
    block, warps, splits, cols_per_split = _launch_config(n_rows, n_cols, _tuned(logits.device, n_rows))
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
