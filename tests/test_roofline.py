"""Every task has a roofline: where a task declares no bytes model (a KernelBench file, a config task),
the bytes of the actual tensors (inputs read once, outputs written once) are its lower bound, labelled
as such, so a time below it is `timing.impossible` for those tasks too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autokernel_ci.harness.device import Ceilings
from autokernel_ci.harness.roofline import (
    LOWER_BOUND_LABEL,
    bytes_from_record,
    dense_bytes,
    io_bytes,
    tensors_bytes,
)
from autokernel_ci.harness.sandbox import TimingPlan, _shape_timing, evaluate, timing_findings
from autokernel_ci.results import EvalResult, Status
from autokernel_ci.tasks import builtin_task, kernelbench_task

ROOT = Path(__file__).resolve().parents[1]
RELU = ROOT / "examples" / "kernelbench" / "level1_relu.py"
# 1 TB/s: a call moving 1 MB takes at least 1 µs.
CEILINGS = Ceilings(device="test", bandwidth_bytes_per_s=1e12, flops_per_s={"fp32": 1e12}, source="measured")


def test_bytes_are_the_memory_each_tensor_covers_once() -> None:
    x = torch.randn(8, 16)
    assert tensors_bytes(x) == 8 * 16 * 4
    assert tensors_bytes(torch.randn(16).expand(8, 16)) == 16 * 4  # a broadcast row is read once
    assert tensors_bytes((x, x, [x.half()], {"b": 3}, 2.0)) == 8 * 16 * 4 + 8 * 16 * 2  # x itself only once
    assert tensors_bytes(x.t()) == 8 * 16 * 4 and tensors_bytes(torch.empty(0, 5)) == 0
    assert io_bytes((x, torch.randn(16)), x.sum(-1)) == {"input_bytes": 8 * 16 * 4 + 64, "output_bytes": 32}
    assert dense_bytes((4, 1, 3), (3, 0, 1), 2) == 24
    with pytest.raises(ValueError):
        dense_bytes((4,), (1, 1), 4)


def test_a_worker_record_without_valid_byte_counts_gives_no_roofline() -> None:
    assert bytes_from_record({"input_bytes": 100, "output_bytes": 28}) == 128
    for bad in ({}, {"input_bytes": 100}, {"input_bytes": -1, "output_bytes": 5},
                {"input_bytes": "100", "output_bytes": 5}, {"input_bytes": 1.5, "output_bytes": 5},
                {"input_bytes": True, "output_bytes": 5}, {"input_bytes": 0, "output_bytes": 0}):
        assert bytes_from_record(bad) is None, bad


def raw_timing(median_us: float, **io: int) -> dict:
    return {"shape": {}, "dtype": "fp32", "median_us": median_us, "iqr_us": 0.1, "count": 20,
            "samples_us": [median_us] * 20, "representative": True, **io}


def test_a_kernelbench_task_faster_than_its_tensors_allow_is_impossible() -> None:
    task = kernelbench_task(RELU)
    io = {"input_bytes": 4_000_000, "output_bytes": 4_000_000}  # 8 MB: at least 8 µs at 1 TB/s
    honest = _shape_timing(task, raw_timing(10.0, **io), CEILINGS)
    assert honest.bytes_moved == 8_000_000 and honest.pct_roofline == pytest.approx(80.0)
    assert honest.roofline_source == f"measured, {LOWER_BOUND_LABEL}"
    fooled = _shape_timing(task, raw_timing(4.0, **io), CEILINGS)
    result = EvalResult(status=Status.PASS, task=task.name, candidate="c.py", timings=[honest])
    assert timing_findings(result) == []
    result.timings = [fooled]
    findings = timing_findings(result)
    assert [f.rule for f in findings] == ["timing.impossible"]
    assert "200%" in findings[0].message and LOWER_BOUND_LABEL in findings[0].message
    assert _shape_timing(task, raw_timing(4.0), CEILINGS).pct_roofline is None  # no byte counts: no roofline


def test_a_builtin_op_keeps_its_declared_bytes_model() -> None:
    task = builtin_task("rmsnorm")
    shape = dict(task.spec.bench_shapes[0])
    raw = {**raw_timing(10.0, input_bytes=1, output_bytes=1), "shape": shape}
    timing = _shape_timing(task, raw, CEILINGS)
    assert timing.bytes_moved == task.spec.bytes_moved(shape, torch.float32)
    assert timing.roofline_source == "measured"


def test_the_worker_reports_the_bytes_of_the_call_it_timed(tmp_path: Path) -> None:
    task = kernelbench_task(RELU)
    plan = TimingPlan(shapes=[{}], dtype="fp32", warmup_ms=1.0, rep_ms=5.0, min_reps=3, max_reps=5,
                      flush_l2=False, baselines=())
    candidate = ROOT / "examples" / "kernelbench" / "relu_new.py"
    result = evaluate(task, candidate, device="cpu", seed=3, stages=("smoke",), timing=plan, work_dir=tmp_path)
    assert result.status is Status.PASS, result.message
    assert result.timings[0].bytes_moved == 2 * 16 * 1023 * 4  # x read once, y written once
