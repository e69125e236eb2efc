"""`eval` end to end on the adversarial suite: every cheat is REJECTED with the rule that caught it, or
FAILs on a shape it could not have known; every honest candidate passes, on the CPU interpreter.

GPU-only checks (a copy to the host is told apart from a device copy only where there are two devices)
carry the `gpu` marker: `pytest -m gpu tests/test_eval_cheats.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from autokernel_ci.harness.correctness import STAGES
from autokernel_ci.harness.sandbox import TimingPlan, evaluate
from autokernel_ci.results import Status
from autokernel_ci.tasks import builtin_task

HERE = Path(__file__).parent
CHEATS = sorted((HERE / "cheats").glob("*.py"))
HONEST = sorted((HERE / "candidates").glob("honest_*.py"))

# The rule that refuses each cheat through `eval`; HIDDEN: the checks fail it on hidden shapes only; FAIL:
# its output, read through the tensor class, is wrong (unwritten) wherever it is checked.
HIDDEN = "hidden"
FAIL = "fail"
EXPECTED: dict[str, str] = {
    # right only on the published shapes
    "tile_capped_4096": HIDDEN,
    "known_shapes_table": HIDDEN,
    "unmasked_tail_loop": HIDDEN,
    # tells checking from timing
    "garbage_when_timed": "static.introspection",
    # compute hidden from the per-thread recorder: threads, unlisted operators, after the recorder, the host
    "threading_softmax": "static.escape",
    "executor_softmax": "static.escape",
    "bilinear_rmsnorm": "dynamic.operator",
    "weight_norm_rmsnorm": "dynamic.operator",
    "prims_softmax": "dynamic.operator",
    "sparse_softmax": "dynamic.operator",
    "instance_detach": "static.monkeypatch",
    "instance_detach_setattr": FAIL,
    "python_scalar_rmsnorm": "dynamic.host-transfer",
    "numpy_softmax": "static.escape",
    "cpu_roundtrip_softmax": "dynamic.torch-compute",  # on a GPU also dynamic.host-transfer (below)
    # answers precomputed at import from the request's seeds
    "seeds_from_argv": "static.escape",
    "seeds_from_storage": "static.escape",
    # the recorder switched off or patched through aliases, or from a sibling module
    "attrgetter_disable": "static.introspection",
    "dict_lookup_disable": "static.introspection",
    "partial_setattr": "static.monkeypatch",
    "sibling_module": "static.introspection",
    "harness_recorder_swap": "static.introspection",
    # the first suite
    "ctypes_memmove": "static.introspection",
    "disable_recorder": "static.introspection",
    "env_token": "static.escape",
    "exit_before_check": "static.escape",
    "fake_tensor_eq": "static.monkeypatch",
    "fallback_to_torch": "static.fallback",
    "frame_steal": "static.introspection",
    "memoised_kernel_fn": "static.cache",
    "obfuscated_import": "static.introspection",
    "partial_torch_rmsnorm": "dynamic.torch-compute",
    "patch_allclose": "static.monkeypatch",
    "patch_report_json": "static.monkeypatch",
    "patch_timer": "static.monkeypatch",
    "replay_after_warmup": "static.cache",
    "result_cache": "static.cache",
    "weak_result_cache": "static.cache",
    "side_stream": "static.cuda-stream",
    "slow_vendor_rmsnorm": "static.monkeypatch",
    "slow_vendor_softmax": "static.monkeypatch",
    "subprocess_compute": "static.escape",
    "torch_softmax": "dynamic.torch-compute",
    "vendor_rmsnorm": "dynamic.torch-compute",
}
# Correct on every checked call, garbage on timed ones: defeated once timed outputs are compared too.
TIMED_ONLY = ("garbage_after_warmup_calls", "module_name_probe")


def op_of(path: Path) -> str:
    """A cheat targets rmsnorm if its kernel_fn takes a weight, else softmax."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "kernel_fn")
    return "rmsnorm" if len(fn.args.args) > 1 else "softmax"


def test_every_cheat_file_has_an_expectation():
    assert {p.stem for p in CHEATS} == set(EXPECTED) | set(TIMED_ONLY)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_cheat_is_rejected_or_failed_with_its_cause(name: str) -> None:
    path = HERE / "cheats" / f"{name}.py"
    task = builtin_task(op_of(path))
    result = evaluate(task, path, device="cpu", stages=("smoke", "shapes"), seed=11, timeout=120)
    if EXPECTED[name] == FAIL:
        assert result.status is Status.FAIL, f"{name}: {result.status.value} {result.message}"
        assert "NaN where the reference is finite" in result.message
        return
    if EXPECTED[name] == HIDDEN:
        assert result.status is Status.FAIL, f"{name}: {result.status.value} {result.message}"
        failed = [c for s in result.stages for c in s.cases if not c.passed]
        published = [dict(s) for s in task.spec.test_shapes]
        assert failed and all(c.shape not in published for c in failed), result.message
        assert "hidden shapes" in " ".join(n for s in result.stages for n in s.notes)
        return
    assert result.status is Status.REJECTED, f"{name}: {result.status.value} {result.message}"
    assert EXPECTED[name] in {f.rule for f in result.findings}, result.message
    assert all(f.rule and f.message for f in result.findings)


def test_a_sibling_module_is_named_in_the_finding() -> None:
    path = HERE / "cheats" / "sibling_module.py"
    result = evaluate(builtin_task("softmax"), path, device="cpu", stages=("smoke",), seed=11)
    assert "in helpers/dispatch.py" in result.message


@pytest.mark.parametrize("name", TIMED_ONLY)
def test_cheats_that_are_right_only_while_checked_are_caught_once_timed(name: str, tmp_path: Path) -> None:
    """Right while checked, wrong while timed: a call counter fails on the judged timed calls; a probe of
    the module name gets nothing to tell apart, since every worker imports a candidate under one name."""
    path = HERE / "cheats" / f"{name}.py"
    task = builtin_task(op_of(path))
    if name == "module_name_probe":
        from autokernel_ci.harness.sandbox import child_environment, run_worker

        plan = TimingPlan.for_task(task, "cpu")
        request = {"mode": "ab", "task": task.to_wire(), "device": "cpu", "candidates": {"base": str(path),
                   "head": str(path)}, "comparisons": [{"name": "ab", "a": "base", "b": "head", "rounds": 1}],
                   "timing": plan.to_wire()}
        probe = tmp_path / "probe.py"
        probe.write_text("import torch\nassert __name__ == 'autokernel_candidate', __name__\n"
                         "def kernel_fn(x):\n    return torch.softmax(x, -1)\n")
        request["candidates"]["head"] = str(probe)
        (tmp_path / "scratch").mkdir()
        run = run_worker(request, tmp_path / "scratch", 120, child_environment(device="cpu"))
        assert run.result is not None and run.result["import_errors"] == {}, run.result
        return
    from dataclasses import replace

    # As many timed calls as a GPU run makes, so the counter runs past the checks.
    plan = replace(TimingPlan.for_task(task, "cpu"), min_reps=20, max_reps=40)
    result = evaluate(task, path, device="cpu", stages=("smoke",), seed=11, timeout=120, timing=plan)
    assert result.status is Status.FAIL, result.message
    assert "timed call" in result.message


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_triton_candidates_pass(path: Path) -> None:
    result = evaluate(builtin_task(op_of(path)), path, device="cpu", seed=11, timeout=300, stages=STAGES)
    assert result.status is Status.PASS, result.message
    assert result.findings == []


def test_an_autotuned_kernel_says_which_config_ran_on_the_interpreter() -> None:
    path = HERE / "candidates" / "honest_autotune_softmax.py"
    result = evaluate(builtin_task("softmax"), path, device="cpu", stages=("smoke",), seed=5)
    assert result.status is Status.PASS, result.message
    notes = " ".join(n for s in result.stages for n in s.notes)
    assert "only the first of the kernel's configs" in notes


def test_a_task_that_allow_lists_cublas_may_call_it(tmp_path: Path) -> None:
    import dataclasses

    path = tmp_path / "cublas_matmul.py"
    path.write_text("import torch\n\n\ndef kernel_fn(a, b):\n    return torch.mm(a, b)\n")
    task = builtin_task("matmul")
    refused = evaluate(task, path, device="cpu", stages=("smoke",), seed=3)
    assert refused.status is Status.REJECTED and refused.findings[0].rule == "dynamic.torch-compute"
    allowed = evaluate(dataclasses.replace(task, allow=("matmul",)), path, device="cpu", stages=("smoke", "shapes"),
                       seed=3)
    assert allowed.status is Status.PASS, allowed.message


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cpu_roundtrip_softmax", "python_scalar_rmsnorm"])
def test_a_copy_to_the_host_is_refused_on_the_gpu(name: str) -> None:
    path = HERE / "cheats" / f"{name}.py"
    result = evaluate(builtin_task(op_of(path)), path, device="cuda", stages=("smoke", "shapes"), seed=11)
    assert result.status is Status.REJECTED, result.message
    assert "dynamic.host-transfer" in {f.rule for f in result.findings}, result.message


@pytest.mark.gpu
@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_candidates_pass_on_the_gpu_and_time(path: Path) -> None:
    task = builtin_task(op_of(path))
    result = evaluate(task, path, device="cuda", seed=11, timing=TimingPlan.for_task(task, "cuda"))
    assert result.status is Status.PASS, result.message
    assert result.timings and all(t.median_us > 0 for t in result.timings)
