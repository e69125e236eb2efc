"""Judging in chunks: `compare` gives the whole tensor's verdict, counts and maxima while holding only a
few chunks' worth of memory, and the harness running out of memory is an error that says what did
not fit, never the allocator's traceback."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from autokernel_ci.harness.correctness import _same_bits, compare

ATOL, RTOL = 1e-5, 1e-5


def pair(rows: int, cols: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    out = ref.float()
    return out, ref


class LargestAllocation(TorchDispatchMode):
    """The largest tensor any operator allocated (views of existing memory do not count): a real
    measure of the working set, taken from torch's own dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        seen = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for t in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.largest = max(self.largest, t.numel())
        return result


def test_chunked_verdict_and_maxima_equal_the_whole_tensor_at_once() -> None:
    out, ref = pair(37, 53)
    out[5, 7] += 3e-6  # inside tolerance, but the largest error
    whole = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=10**9)
    for chunk in (53, 64, 200, 37 * 53 - 1):  # one row, a row and a bit, several rows, all but one element
        chunked = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=chunk)
        assert chunked == whole and chunked.passed


def test_working_set_is_a_few_chunks_not_the_output() -> None:
    out, ref = pair(400, 50)  # 20 000 elements
    with LargestAllocation() as mode:
        assert compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=500).passed
    assert 0 < mode.largest <= 500, mode.largest
    with LargestAllocation() as whole:
        compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=10**9)
    assert whole.largest == 20_000  # the measure sees a whole-output allocation when there is one


def test_nan_in_the_last_chunk_fails_with_the_count_over_every_chunk() -> None:
    out, ref = pair(37, 53)
    out[-1, -1] = float("nan")
    out[0, 0] = float("nan")
    result = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=100)
    assert not result.passed
    assert result.message.startswith(f"2 of {37 * 53} elements are NaN where the reference is finite")


def test_a_wrong_element_in_the_last_chunk_fails_with_its_index() -> None:
    out, ref = pair(37, 53)
    out[-1, -1] += 1.0
    result = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=100)
    assert not result.passed
    assert f"1 of {37 * 53} elements outside tolerance (first at index (36, 52)" in result.message
    assert result.max_abs_err is not None and abs(result.max_abs_err - 1.0) < 1e-3


def test_the_first_wrong_element_is_named_in_flat_order_across_chunks() -> None:
    out, ref = pair(6, 10, seed=3)
    out = out.reshape(2, 3, 10).clone()
    ref = ref.reshape(2, 3, 10)
    out[1, 2, 9] += 5.0
    out[1, 0, 4] += 5.0
    result = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=10)
    assert "2 of 60 elements outside tolerance (first at index (1, 0, 4)" in result.message


def test_a_row_longer_than_the_chunk_keeps_its_exact_rms() -> None:
    """The tolerance scales with the RMS of the whole row; a piece of a row has a different RMS, so a
    compare that took each piece's own RMS would pass or fail the wrong elements."""
    ref = torch.full((2, 1000), 1e-3, dtype=torch.float64)
    ref[:, 0] = 1000.0  # rms(row) ≈ 31.6; rms of any piece without column 0 is 1e-3
    out = ref.float()
    out[1, 999] += 1e-4  # within atol·rms(row) = 3.2e-4, far outside atol·rms(piece) = 1e-8
    whole = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=10**9)
    pieces = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=128)
    assert whole.passed and pieces == whole
    out[1, 999] += 1e-3  # now outside even the row's tolerance
    result = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=128)
    assert not result.passed and "first at index (1, 999)" in result.message


def test_inf_and_nan_where_the_reference_has_them_pass_and_a_sign_flip_of_inf_fails() -> None:
    out, ref = pair(20, 30)
    ref[19, 29], ref[0, 1], ref[10, 3] = float("inf"), float("-inf"), float("nan")
    out = ref.float()
    assert compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=64).passed
    out[19, 29] = float("-inf")
    result = compare(out, ref, torch.float32, ATOL, RTOL, chunk_elements=64)
    assert not result.passed and result.message.startswith("1 of 600 elements disagree with the reference on ±inf")


def test_reference_rounded_to_the_output_dtype_and_non_float_outputs() -> None:
    ref = torch.tensor([[1.0 + 2**-12, 3.0]], dtype=torch.float64)
    assert compare(ref.half(), ref, torch.float16, 0.0, 0.0, chunk_elements=1).passed
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    assert compare(idx.clone(), idx, torch.int64, 0.0, 0.0, chunk_elements=2).passed
    wrong = idx.clone()
    wrong[0, 4] = 6
    assert "first at index (0, 4)" in compare(wrong, idx, torch.int64, 0.0, 0.0, chunk_elements=2).message
    scalar = torch.tensor(2.0, dtype=torch.float64)
    assert compare(scalar.float(), scalar, torch.float32, ATOL, RTOL).passed
    assert not compare(torch.tensor(2.1), scalar, torch.float32, ATOL, RTOL).passed


def test_determinism_check_compares_bits_chunk_by_chunk() -> None:
    a = torch.randn(50, 7)
    b = a.clone()
    assert _same_bits(a, b, chunk_elements=16)
    b[-1, -1] = torch.nextafter(b[-1, -1], torch.tensor(10.0))
    assert not _same_bits(a, b, chunk_elements=16)
    a[3, 3], b[3, 3] = float("nan"), 0.0
    assert not _same_bits(a, a.clone().nan_to_num(), chunk_elements=16)
