"""The roofline of a task that declares no bytes model: the bytes its actual tensors force.

A built-in op declares how many bytes a call moves (`OpSpec.bytes_moved`). A KernelBench file or a
config task declares nothing, yet no kernel can beat reading each input once and writing each output
once: that lower bound, from the tensors the timed call really took and returned, is the roofline's
byte count for those tasks, labelled as a lower bound wherever it is shown. It is a bound, not a
model: a kernel can be far from it and still be good (weights, intermediate traffic, compute-bound
maths are not in it), but a time below it is impossible, so `timing.impossible` can fire for every task.

Bytes are counted as the memory a tensor's layout covers: a broadcast dim (stride 0) counts once,
and a tensor that appears twice (the same memory and layout) is read once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

LOWER_BOUND_LABEL = "lower bound: inputs read once, outputs written once"
# The fields a worker's timing record carries for `bytes_from_record` (one int each, the bytes of the
# timed call's inputs and of its outputs, as `io_bytes` computes them).
INPUT_BYTES, OUTPUT_BYTES = "input_bytes", "output_bytes"


def dense_bytes(shape: Iterable[int], stride: Iterable[int], itemsize: int) -> int:
    """Bytes a tensor of this layout covers at least: its element size times the sizes of its dims, a
    dim of stride 0 (broadcast) counted once. Empty tensors cover nothing."""
    shape, stride = list(shape), list(stride)
    if len(shape) != len(stride) or itemsize < 0 or any(s < 0 for s in shape):
        raise ValueError(f"not a tensor layout: shape {shape}, stride {stride}, itemsize {itemsize}")
    if any(s == 0 for s in shape):
        return 0
    return itemsize * math.prod(size for size, step in zip(shape, stride) if step != 0)


def _tensors(values: Any) -> Iterable[Any]:
    import torch

    if isinstance(values, torch.Tensor):
        yield values
    elif isinstance(values, (tuple, list)):
        for v in values:
            yield from _tensors(v)
    elif isinstance(values, Mapping):
        for v in values.values():
            yield from _tensors(v)


def tensors_bytes(values: Any) -> int:
    """The bytes of every tensor in `values` (nested tuples, lists and dicts; other values count nothing),
    each distinct tensor once."""
    seen = set()
    total = 0
    for t in _tensors(values):
        key = (t.device.type, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += dense_bytes(t.shape, t.stride(), t.element_size())
    return total


def io_bytes(inputs: Any, outputs: Any) -> dict[str, int]:
    """`{INPUT_BYTES: …, OUTPUT_BYTES: …}` of one call: what a worker adds to a timing record."""
    return {INPUT_BYTES: tensors_bytes(inputs), OUTPUT_BYTES: tensors_bytes(outputs)}


def lower_bound_bytes(input_bytes: int, output_bytes: int) -> int:
    """Every input read once and every output written once."""
    return int(input_bytes) + int(output_bytes)


def bytes_from_record(record: Mapping[str, Any]) -> int | None:
    """The lower bound from a worker's timing record, or None when it carries no valid byte counts
    (an older worker, a malformed report: then there is no roofline, as before)."""
    values = [record.get(INPUT_BYTES), record.get(OUTPUT_BYTES)]
    if not all(type(v) is int and v >= 0 for v in values):
        return None
    total = lower_bound_bytes(*values)
    return total if total > 0 else None
