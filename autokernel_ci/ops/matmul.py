"""Matrix product c[M, N] = a[M, K] @ b[K, N], accumulated in fp32 (tf32 allowed for fp32 inputs).

Runs on the tensor cores, so a change to it is always high risk and needs a human reviewer.
Forward only; the backward pass is out of scope for the built-in library.
"""

from __future__ import annotations

import torch

from autokernel_ci.ops.base import OpSpec, Tunable, activation, element_size


def reference(a, b):
    return a @ b


def make_inputs(shape, dtype, generator, kind="normal"):
    a = activation((shape["M"], shape["K"]), dtype, generator, kind)
    b = activation((shape["K"], shape["N"]), dtype, generator)
    return (a, b)


def bytes_moved(shape, dtype) -> int:
    m, k, n = shape["M"], shape["K"], shape["N"]
    return (m * k + k * n + m * n) * element_size(dtype)


def flops(shape, dtype) -> int:
    return 2 * shape["M"] * shape["K"] * shape["N"]


def vendor(a, b):
    return torch.mm(a, b)


# Shared memory a block may use on an H100 (227 KB), and the fp32 accumulator values a thread can hold
# in registers beside the operands without spilling (fewer for fp32 inputs, whose tf32 operands take
# more registers; found by compiling the tunable space for sm_90).
H100_SHARED_MEMORY = 232448
MAX_ACCUMULATORS_PER_THREAD = {"16-bit": 128, "fp32": 64}


def constraint(config) -> str | None:
    """Tiles must fit the H100's shared memory (NUM_STAGES buffers of an A and a B tile) and registers.

    Tile bytes assume 16-bit inputs unless the config names `dtype` ("fp32": 4 bytes, tf32 path). A None
    knob counts as the launcher's choice at the benchmark shapes (M, N, K ≥ 4096).
    """
    fp32 = config.get("dtype") == "fp32"
    bench = {"BLOCK_M": 128, "BLOCK_N": 128 if fp32 else 256, "BLOCK_K": 32 if fp32 else 64,
             "NUM_STAGES": 4 if fp32 else 3, "NUM_WARPS": 8}
    bm, bn, bk, stages, warps = (bench[k] if config.get(k) is None else config[k] for k in bench)
    shared = stages * (bm * bk + bk * bn) * (4 if fp32 else 2)
    if shared > H100_SHARED_MEMORY:
        return (f"{stages} stages of {bm}×{bk} and {bk}×{bn} tiles need {shared // 1024} KB of shared memory; "
                f"an H100 block has {H100_SHARED_MEMORY // 1024} KB")
    per_thread = bm * bn // (32 * warps)
    if per_thread > MAX_ACCUMULATORS_PER_THREAD["fp32" if fp32 else "16-bit"]:
        return f"a {bm}×{bn} fp32 accumulator on {warps} warps is {per_thread} registers a thread: it would spill"
    return None


SPEC = OpSpec(
    name="matmul",
    signature="kernel_fn(a, b)",
    family="matmul",
    dims=("M", "K", "N"),
    reference=reference,
    make_inputs=make_inputs,
    bytes_moved=bytes_moved,
    flops=flops,
    test_shapes=({"M": 1, "K": 1, "N": 1}, {"M": 3, "K": 7, "N": 5}, {"M": 16, "K": 16, "N": 16},
                 {"M": 33, "K": 65, "N": 17}, {"M": 64, "K": 128, "N": 96}),
    bench_shapes=({"M": 4096, "K": 4096, "N": 4096}, {"M": 8192, "K": 8192, "N": 8192}),
    decode_shapes=({"M": 1, "K": 4096, "N": 4096}, {"M": 16, "K": 4096, "N": 4096}),
    dtypes=("bf16", "fp16", "fp32"),
    # Errors are measured against each output row's RMS, so these hold for any K; fp32 allows tf32.
    tolerances={"fp32": (5e-3, 5e-3), "fp16": (2e-3, 2e-3), "bf16": (8e-3, 1.6e-2)},
    stability_kinds=("large", "tiny", "mixed"),
    vendor=vendor,
    vendor_name="cuBLAS (torch.mm)",
    bound="compute",
    risk="high",
    tunables=(
        Tunable("BLOCK_M", (None, 16, 32, 64, 128, 256), "rows of C per program. None: from M (16 for decode)"),
        Tunable("BLOCK_N", (None, 32, 64, 128, 256), "columns of C per program. None: 256 for 16-bit, 128 for fp32"),
        Tunable("BLOCK_K", (None, 32, 64, 128), "depth of one tl.dot step. None: 128 bytes of a row"),
        Tunable("GROUP_M", (1, 4, 8, 16), "row tiles visited together, so the B tiles they share stay in L2"),
        Tunable("NUM_STAGES", (None, 2, 3, 4, 5), "tiles in flight in the software pipeline. None: 3 or 4"),
        Tunable("NUM_WARPS", (None, 4, 8), "warps per program (4 = one warpgroup). None: 8 for big tiles"),
    ),
    constraint=constraint,
)


# === kernel file ===
"""Matrix product in Triton: c[M, N] = a[M, K] @ b[K, N], fp32 accumulation, tf32 for fp32 inputs.

Compute-bound at the benchmark shapes: the tensor cores (wgmma on an H100) are kept fed by a
software pipeline of NUM_STAGES tiles, and programs are ordered in groups of GROUP_M row tiles so
the B tiles they share are still in L2.
"""

import torch  # noqa: E402, F811
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# The tunable knobs; None means "chosen from the shape and dtype" by `_launch_config`.
BLOCK_M = None
BLOCK_N = None
BLOCK_K = None
GROUP_M = 8
NUM_STAGES = None
NUM_WARPS = None
# How fp32 inputs enter the tensor cores: "tf32" (10-bit mantissa, the spec's tolerance allows it),
# "tf32x3" (three tf32 products, about fp32 accuracy) or "ieee" (no tensor cores).
FP32_PRECISION = "tf32"

SM_COUNT = 132  # H100 SXM
SHARED_MEMORY_BYTES = 232448  # per block on an H100: the launcher's own choices stay under it


@triton.jit
def _matmul_kernel(
    A_ptr,
    B_ptr,
    C_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST_OPERANDS: tl.constexpr,
):
    """c_mn = Σ_k a_mk · b_kn, one BLOCK_M × BLOCK_N tile of c per program, accumulated in fp32.

    The classic tiled GEMM of the Triton tutorial: walk K in BLOCK_K steps with tl.dot. Program ids
    are remapped so that GROUP_M consecutive programs share a column of B tiles (grouped ordering),
    which raises L2 hits for B. Row and column indices past M and N wrap around (modulo) instead of
    being masked, so the loads in the inner loop need only a K mask, and none when BLOCK_K divides K
    (EVEN_K); the wrapped rows are computed but never stored. UPCAST_OPERANDS is only set under
    Triton's CPU interpreter, whose tl.dot multiplies bf16 tiles as raw bit patterns
    (triton-lang/triton#11584); fp32 products of bf16 values are exact, so the result is unchanged.
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_am = tl.max_contiguous(tl.multiple_of((pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M, BLOCK_M), BLOCK_M)
    offs_bn = tl.max_contiguous(tl.multiple_of((pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N, BLOCK_N), BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = A_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = B_ptr + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if UPCAST_OPERANDS:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    offs_cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = C_ptr + offs_cm[:, None] * stride_cm + offs_cn[None, :] * stride_cn
    mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(c_ptrs, acc.to(C_ptr.dtype.element_ty), mask=mask)


def _launch_config(m: int, n: int, k: int, itemsize: int) -> tuple[int, int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, NUM_STAGES, NUM_WARPS), None knobs filled from the shape."""
    if m <= 16:
        # Decode: a GEMV in disguise, bound by reading b. Narrow column tiles give enough programs
        # to keep every SM streaming; deep K steps keep many bytes in flight per program.
        bm, bn, bk, stages, warps = 16, 64, 256 // itemsize * 2, 4, 4
        if triton.cdiv(n, bn) < SM_COUNT:
            bn = 32
    elif m <= 64:
        bm, bn, bk, stages, warps = 64, 128, 128 // itemsize, 4, 4
    elif itemsize == 2:
        # The H100 favourite for 16-bit inputs: two warpgroups each own a 64×256 wgmma tile.
        bm, bn, bk, stages, warps = 128, 256, 64, 3, 8
    else:
        bm, bn, bk, stages, warps = 128, 128, 32, 4, 8
    # Too few tiles to fill the GPU: halve the columns, then the rows.
    if bm >= 128 and triton.cdiv(m, bm) * triton.cdiv(n, bn) < SM_COUNT:
        bn = max(64, bn // 2)
        if triton.cdiv(m, bm) * triton.cdiv(n, bn) < SM_COUNT:
            bm, warps = 64, 4
    bm = BLOCK_M if BLOCK_M is not None else bm
    bn = BLOCK_N if BLOCK_N is not None else bn
    bk = BLOCK_K if BLOCK_K is not None else bk
    stages = NUM_STAGES if NUM_STAGES is not None else stages
    warps = NUM_WARPS if NUM_WARPS is not None else warps
    # Knobs left to the launcher give way to the pinned ones: a search that pins big tiles and deep
    # pipelining must not fail on a shape whose own choice of BLOCK_K (deep for decode) no longer fits.
    while stages * (bm * bk + bk * bn) * itemsize > SHARED_MEMORY_BYTES:
        if BLOCK_K is None and bk > 16:
            bk //= 2
        elif NUM_STAGES is None and stages > 2:
            stages -= 1
        else:
            break
    return bm, bn, bk, GROUP_M, stages, warps


def kernel_fn(a, b):
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul expects a[M, K] and b[K, N]; got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"a and b must have the same dtype; got {a.dtype} and {b.dtype}")
    # Any strides work (b may be a transposed weight); a tensor with no unit stride is copied so the
    # tile loads stay coalesced.
    if a.stride(0) != 1 and a.stride(1) != 1:
        a = a.contiguous()
    if b.stride(0) != 1 and b.stride(1) != 1:
        b = b.contiguous()
    m, k = a.shape
    n = b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    if m == 0 or n == 0:
        return c
    if k == 0:
        raise ValueError("matmul with K = 0 is an all-zero product; this kernel needs K ≥ 1")
    bm, bn, bk, group_m, stages, warps = _launch_config(m, n, k, a.element_size())
    # Triton runs CPU tensors only under its interpreter (see UPCAST_OPERANDS in the kernel).
    interpreted = a.device.type == "cpu"
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    _matmul_kernel[grid](
        a, b, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group_m, EVEN_K=k % bk == 0,
        INPUT_PRECISION=FP32_PRECISION if a.dtype == torch.float32 else None,
        UPCAST_OPERANDS=interpreted and a.dtype == torch.bfloat16,
        num_stages=stages, num_warps=warps,
    )
    return c
