"""`eval` end to end on the adversarial suite: every cheat is REJECTED (with its rule), every honest
candidate passes, on the CPU interpreter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from autokernel_ci.harness.sandbox import evaluate
from autokernel_ci.results import Status
from autokernel_ci.tasks import builtin_task

HERE = Path(__file__).parent
CHEATS = sorted((HERE / "cheats").glob("*.py"))
HONEST = sorted((HERE / "candidates").glob("honest_*.py"))


def op_of(path: Path) -> str:
    """A cheat targets rmsnorm if its kernel_fn takes a weight, else softmax."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "kernel_fn")
    return "rmsnorm" if len(fn.args.args) > 1 else "softmax"


@pytest.mark.parametrize("path", CHEATS, ids=lambda p: p.stem)
def test_every_cheat_is_rejected_with_a_finding(path: Path) -> None:
    result = evaluate(builtin_task(op_of(path)), path, device="cpu", stages=("smoke", "shapes"), seed=11,
                      timeout=120)
    assert result.status is Status.REJECTED, f"{path.name}: {result.status.value} {result.message}"
    assert result.findings and all(f.rule and f.message for f in result.findings)


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_triton_candidates_pass(path: Path) -> None:
    result = evaluate(builtin_task(op_of(path)), path, device="cpu", seed=11, timeout=300)
    assert result.status is Status.PASS, result.message
    assert result.findings == []


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
