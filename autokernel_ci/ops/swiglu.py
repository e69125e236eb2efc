"""SwiGLU gate: y = silu(gate) · up = gate · sigmoid(gate) · up, elementwise.

Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autokernel_ci.ops.base import OpSpec, Tunable, activation, element_size


def reference(gate, up):
    return gate * torch.sigmoid(gate) * up


def make_inputs(shape, dtype, generator, kind="normal"):
    size = (shape["rows"], shape["dim"])
    return (activation(size, dtype, generator, kind), activation(size, dtype, generator, kind))


def bytes_moved(shape, dtype) -> int:
    return 3 * shape["rows"] * shape["dim"] * element_size(dtype)


def flops(shape, dtype) -> int:
    return 5 * shape["rows"] * shape["dim"]


def vendor(gate, up):
    return F.silu(gate) * up


def constraint(config) -> str | None:
    """A block must give each thread 1 to 64 elements: fewer idles threads, more spills."""
    block, warps = config.get("BLOCK_SIZE"), config.get("NUM_WARPS")
    if block is None or warps is None:
        return None
    per_thread = block / (32 * warps)
    if per_thread > 64:
        return f"BLOCK_SIZE={block} on {warps} warps is {per_thread:g} elements a thread: it would spill"
    if per_thread < 1:
        return f"BLOCK_SIZE={block} is smaller than the {32 * warps} threads of {warps} warps"
    return None


SPEC = OpSpec(
    name="swiglu",
    signature="kernel_fn(gate, up)",
    family="activation",
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
    vendor_name="F.silu(gate) * up",
    tunables=(
        Tunable("BLOCK_SIZE", (None, 512, 1024, 2048, 4096, 8192, 16384),
                "elements per program. None: 4096, less when there are too few elements to fill the GPU"),
        Tunable("NUM_WARPS", (None, 2, 4, 8, 16, 32), "warps per program. None: about 16 elements a thread"),
    ),
    constraint=constraint,
)


# === kernel file ===
"""SwiGLU gate in Triton: y = silu(gate) · up = gate · sigmoid(gate) · up, elementwise.

Memory-bound: two reads and one write per element, nothing shared between elements, so the tensors
are walked flat in large blocks of 16-byte vector accesses.
"""

import torch  # noqa: E402, F811
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# The tunable knobs; None means "chosen from the shape" by `_launch_config`.
BLOCK_SIZE = None  # elements per program (a power of two)
NUM_WARPS = None


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
def _swiglu_fwd_kernel(G_ptr, U_ptr, Y_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """y = g · σ(g) · u with σ(g) = 1 / (1 + exp(−g)), in fp32 (Shazeer, "GLU Variants Improve
    Transformer", 2020). The tensors are contiguous and seen as flat arrays; only the last block is
    masked. The block offset is 64-bit so tensors past 2³¹ elements index correctly.
    """
    start = tl.program_id(0).to(tl.int64) * BLOCK_SIZE
    offs = tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements - start
    g = tl.load(G_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(Y_ptr + start + offs, y.to(Y_ptr.dtype.element_ty), mask=mask)


def _launch_config(n_elements: int, tuned=None) -> tuple[int, int]:
    """(BLOCK_SIZE, NUM_WARPS): the knobs, with None filled from the size."""
    tuned = tuned or {}
    block = tuned.get("BLOCK_SIZE", BLOCK_SIZE)
    if block is None:
        # 4096 elements a program; smaller blocks when that would leave most of the 132 SMs idle.
        block = min(4096, max(1024, triton.next_power_of_2(triton.cdiv(n_elements, 132))))
    warps = tuned.get("NUM_WARPS", NUM_WARPS)
    warps = warps if warps is not None else min(16, max(1, block // 512))
    return block, warps


def kernel_fn(gate, up):
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"gate and up must have the same shape and dtype; got {tuple(gate.shape)} {gate.dtype} "
                         f"and {tuple(up.shape)} {up.dtype}")
    # Flat indexing needs contiguous tensors; views (e.g. halves of a fused gate_up projection) are copied.
    gate, up = gate.contiguous(), up.contiguous()
    y = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    n_elements = gate.numel()
    if n_elements == 0:
        return y
    block, warps = _launch_config(n_elements, _tuned(gate.device, n_elements // max(gate.shape[-1], 1)))
    _swiglu_fwd_kernel[(triton.cdiv(n_elements, block),)](gate, up, y, n_elements, BLOCK_SIZE=block, num_warps=warps)
    return y
