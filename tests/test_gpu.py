"""On a CUDA GPU (run through the device tool: `pytest -m gpu`): every built-in starter kernel passes the
gate at its benchmark shapes, and the timing checks catch what only a GPU timing can show."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from autokernel_ci.harness.sandbox import TimingPlan, evaluate
from autokernel_ci.ops import OP_NAMES, starter_source
from autokernel_ci.results import Status
from autokernel_ci.tasks import builtin_task

pytestmark = pytest.mark.gpu
CHEATS = Path(__file__).parent / "cheats"


def _softmax_task_allowing(*rules: str):
    task = builtin_task("softmax")
    return dataclasses.replace(task, allow=tuple(task.allow) + rules)


@pytest.mark.parametrize("op", OP_NAMES)
def test_builtin_starter_kernel_passes_at_benchmark_shapes(tmp_path: Path, op: str) -> None:
    path = tmp_path / f"{op}.py"
    path.write_text(starter_source(op))
    task = builtin_task(op)
    result = evaluate(task, path, device="cuda", timing=TimingPlan.for_task(task, "cuda"))
    assert result.status is Status.PASS, result.message
    checked = {tuple(c.shape.values()) for s in result.stages for c in s.cases}
    assert all(tuple(b.values()) in checked for b in task.spec.bench_shapes)
    assert result.timings and all(t.representative and t.pct_roofline for t in result.timings)


def test_work_hidden_on_a_side_stream_is_rejected(tmp_path: Path) -> None:
    task = _softmax_task_allowing("static.cuda-stream")
    result = evaluate(task, CHEATS / "side_stream.py", device="cuda", timing=TimingPlan.for_task(task, "cuda"))
    assert result.status is Status.REJECTED, result.message
    assert {f.rule for f in result.findings} & {"timing.side-stream", "timing.impossible"}


def test_faster_than_the_roofline_is_rejected_not_recorded(tmp_path: Path) -> None:
    """Outputs remembered per input tensor: right on every call, timed and checked alike, and faster than
    memory allows; only the roofline tells."""
    task = _softmax_task_allowing("static.cache")
    result = evaluate(task, CHEATS / "weak_result_cache.py", device="cuda", timing=TimingPlan.for_task(task, "cuda"))
    assert result.status is Status.REJECTED, result.message
    assert "timing.impossible" in {f.rule for f in result.findings}


def test_replaying_the_last_output_while_timed_fails(tmp_path: Path) -> None:
    """The last output replayed after a shape's first calls: the timed calls alternate two input sets and
    some of them are judged, so the replayed output is wrong for the inputs it is returned for."""
    task = _softmax_task_allowing("static.cache")
    result = evaluate(task, CHEATS / "replay_after_warmup.py", device="cuda", timing=TimingPlan.for_task(task, "cuda"))
    assert result.status is Status.FAIL, result.message
    assert "timed call" in result.message and "wrong result" in result.message


def test_each_pool_slot_evaluates_on_its_own_card(tmp_path: Path) -> None:
    """Every visible GPU gets a slot; the worker of each reports the UUID of the card it ran on, and no
    two slots share one (on a one-GPU machine: the slot's worker reports that GPU)."""
    from autokernel_ci.pool import WorkerPool, visible_gpus

    path = tmp_path / "rmsnorm.py"
    path.write_text(starter_source("rmsnorm"))
    task = builtin_task("rmsnorm")
    gpus = visible_gpus()
    with WorkerPool(gpus) as pool:
        results = [pool.evaluate(task, path, slot=slot, device="cuda", stages=("smoke",))
                   for slot in range(pool.size)]
    assert all(r.status is Status.PASS for r in results), [r.message for r in results]
    assert [r.environment.get("gpu_visible") for r in results] == gpus
    uuids = [r.environment.get("gpu_uuid") for r in results]
    assert all(uuids) and len(set(uuids)) == len(gpus), uuids
