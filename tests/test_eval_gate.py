"""The correctness gate end to end on the CPU interpreter: right candidates pass, each kind of wrong
candidate is caught by the stage meant to catch it, and the sandbox survives whatever a candidate does."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from autokernel_ci.harness.sandbox import child_environment, evaluate
from autokernel_ci.results import EvalResult, Status
from autokernel_ci.tasks import builtin_task, kernelbench_task

ROOT = Path(__file__).resolve().parents[1]
RIGHT_RMSNORM = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
FAST = ("smoke", "shapes", "dtypes", "stability", "determinism")


def mutate(source: str, old: str, new: str) -> str:
    assert old in source, f"mutation anchor not found: {old!r}"
    return source.replace(old, new)


def run(tmp_path: Path, source: str, task=None, allow: tuple[str, ...] = (), timeout: float = 120.0,
        stages=FAST) -> EvalResult:
    task = task or builtin_task("rmsnorm")
    if allow:
        task = dataclasses.replace(task, allow=tuple(task.allow) + allow)
    path = tmp_path / "candidate.py"
    path.write_text(source)
    return evaluate(task, path, device="cpu", timeout=timeout, seed=1234, stages=stages)


def failed_stages(result: EvalResult) -> list[str]:
    return [s.name for s in result.stages if not s.passed]


def test_right_triton_rmsnorm_passes_every_stage(tmp_path: Path) -> None:
    result = run(tmp_path, RIGHT_RMSNORM)
    assert result.status is Status.PASS, result.message
    assert [s.name for s in result.stages] == list(FAST)
    cases = [c for s in result.stages for c in s.cases]
    assert all(c.passed and c.max_rel_err is not None for c in cases)
    assert {c.dtype for c in cases} == {"fp32", "fp16", "bf16"}
    assert {c.kind for c in cases} >= {"normal", "large", "tiny", "mixed", "equal"}
    assert len(set(result.seeds)) == len(result.seeds) - 1  # fresh seeds; the determinism repeat reuses one
    assert "benchmark shapes not checked" in " ".join(result.stages[1].notes)


def test_result_json_round_trips_with_top_level_status(tmp_path: Path) -> None:
    result = run(tmp_path, RIGHT_RMSNORM, stages=("smoke",))
    again = EvalResult.from_json(result.to_json())
    assert again.status is Status.PASS and again.to_dict()["status"] == "PASS"
    assert again.stages[0].cases[0].seed == result.stages[0].cases[0].seed


def test_half_the_output_written_fails_on_nan_poison(tmp_path: Path) -> None:
    source = mutate(RIGHT_RMSNORM, "_rmsnorm_kernel[(n_rows,)]", "_rmsnorm_kernel[((n_rows + 1) // 2,)]")
    result = run(tmp_path, source)
    assert result.status is Status.FAIL
    assert "NaN where the reference is finite" in result.message


def test_right_only_for_power_of_two_sizes_fails_the_shape_sweep(tmp_path: Path) -> None:
    source = mutate(RIGHT_RMSNORM, "y.stride(0), n_cols, eps", "y.stride(0), 1 << (n_cols.bit_length() - 1), eps")
    result = run(tmp_path, source)
    assert result.status is Status.FAIL
    assert "shapes" in failed_stages(result)
    shapes = next(s for s in result.stages if s.name == "shapes")
    verdicts = {c.shape["dim"]: c.passed for c in shapes.cases}
    assert verdicts[64] and verdicts[4096] and not verdicts[1000] and not verdicts[7]


def test_overwriting_an_input_fails(tmp_path: Path) -> None:
    source = mutate(RIGHT_RMSNORM, "y = torch.empty_like(x2)", "y = x2")
    result = run(tmp_path, source)
    assert result.status is Status.FAIL
    assert "modified its inputs (argument 0)" in result.message


def test_fp16_maths_on_an_fp32_task_fails_the_fp32_tolerance(tmp_path: Path) -> None:
    source = RIGHT_RMSNORM.replace("tl.float32", "tl.float16")
    result = run(tmp_path, source)
    assert result.status is Status.FAIL
    assert "outside tolerance" in result.message and "fp32" in result.message


CACHED = mutate(mutate(RIGHT_RMSNORM, "def kernel_fn(x, weight, eps=1e-6):\n",
                       "_seen = {}\n\n\ndef kernel_fn(x, weight, eps=1e-6):\n"
                       "    if (tuple(x.shape), x.dtype) in _seen:\n"
                       "        return _seen[(tuple(x.shape), x.dtype)]\n"),
                "    return y.view(shape)\n",
                "    _seen[(tuple(x.shape), x.dtype)] = y.view(shape)\n    return y.view(shape)\n")


def test_cached_results_are_caught(tmp_path: Path) -> None:
    result = run(tmp_path, CACHED)
    assert result.status in (Status.FAIL, Status.REJECTED), result.message


def test_cached_results_fail_on_fresh_inputs_even_past_the_static_check(tmp_path: Path) -> None:
    result = run(tmp_path, CACHED, allow=("static.cache",))
    assert result.status is Status.FAIL, result.message
    assert "outside tolerance" in result.message


def test_a_hang_is_a_timeout_within_the_limit(tmp_path: Path) -> None:
    source = mutate(RIGHT_RMSNORM, "    shape = x.shape\n", "    while True:\n        pass\n")
    result = run(tmp_path, source, timeout=20)
    assert result.status is Status.TIMEOUT
    assert result.duration_s < 30


@pytest.mark.parametrize("how", ["os.kill(os.getpid(), signal.SIGSEGV)", "os.abort()"])
def test_a_segfault_or_abort_is_a_crash_and_the_caller_survives(tmp_path: Path, how: str) -> None:
    source = "import os\nimport signal\n" + mutate(RIGHT_RMSNORM, "    shape = x.shape\n", f"    {how}\n")
    result = run(tmp_path, source, allow=("static.escape", "static.introspection"))
    assert result.status is Status.CRASH
    assert "killed by SIG" in result.message


def test_exit_at_import_is_never_a_pass(tmp_path: Path) -> None:
    source = "import os\nos._exit(0)\n" + RIGHT_RMSNORM
    result = run(tmp_path, source, allow=("static.escape",))
    assert result.status is Status.CRASH
    assert "before the first case" in result.message


def test_reading_a_secret_is_rejected(tmp_path: Path) -> None:
    source = "import os\n" + mutate(RIGHT_RMSNORM, "    shape = x.shape\n",
                                    "    token = os.environ.get('GITHUB_TOKEN')\n    shape = x.shape\n")
    result = run(tmp_path, source)
    assert result.status is Status.REJECTED
    assert any(f.rule == "static.escape" for f in result.findings)


def test_the_candidate_process_never_sees_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_for_candidates")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-candidates")
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2")
    monkeypatch.setenv("DEPLOY_HOOK_URL", "https://hooks.example/for-candidates")  # no secret-like name
    source = "import os\n" + mutate(
        RIGHT_RMSNORM, "    shape = x.shape\n",
        "    leaked = [v for v in os.environ.values() if 'for-candidates' in v or 'for_candidates' in v"
        " or v == 'hunter2']\n"
        "    if leaked:\n        raise RuntimeError('saw a secret')\n    shape = x.shape\n")
    result = run(tmp_path, source, allow=("static.escape",), stages=("smoke",))
    assert result.status is Status.PASS, result.message
    env = child_environment({"GITHUB_TOKEN": "x", "ACTIONS_RUNTIME_URL": "y", "AWS_ACCESS_KEY_ID": "z",
                             "PATH": "/bin", "HOME": "/root", "WHATEVER": "w", "CUDA_VISIBLE_DEVICES": "1"})
    # An allowlist: PATH and the device pinning pass, everything else (HOME and unknown names too) stays.
    assert env["PATH"] == "/bin" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert not {"GITHUB_TOKEN", "ACTIONS_RUNTIME_URL", "AWS_ACCESS_KEY_ID", "HOME", "WHATEVER"} & set(env)


def test_patching_the_reference_inside_the_candidate_changes_nothing(tmp_path: Path) -> None:
    source = (
        "import torch\nimport autokernel_ci.ops.rmsnorm as target\n"
        "target.reference = lambda x, weight, eps=1e-6: torch.zeros_like(x)\n"
        "def kernel_fn(x, weight, eps=1e-6):\n    return torch.empty_like(x).zero_()\n"
    )
    result = run(tmp_path, source, allow=("static.monkeypatch", "dynamic.torch-compute"), stages=("smoke",))
    assert result.status is Status.FAIL
    assert "outside tolerance" in result.message


def test_syntax_error_is_one_clear_crash_message(tmp_path: Path) -> None:
    result = run(tmp_path, "def kernel_fn(x, weight, eps=1e-6)\n    return x\n")
    assert result.status is Status.CRASH
    assert "does not compile" in result.message and "line 1" in result.message


def test_returning_a_tensor_subclass_fails(tmp_path: Path) -> None:
    source = mutate(RIGHT_RMSNORM, "    return y.view(shape)\n",
                    "    return torch.nn.Parameter(y.view(shape), requires_grad=False)\n")
    result = run(tmp_path, source, stages=("smoke",))
    assert result.status is Status.FAIL
    assert "not a plain torch.Tensor" in result.message


def test_kernelbench_file_with_modelnew_passes(tmp_path: Path) -> None:
    task = kernelbench_task(ROOT / "examples" / "kernelbench" / "level1_relu.py")
    source = (ROOT / "examples" / "kernelbench" / "relu_new.py").read_text()
    result = run(tmp_path, source, task=task)
    assert result.status is Status.PASS, result.message
    wrong = source.replace("tl.maximum(x, 0.0)", "tl.maximum(x, 0.01)")
    assert run(tmp_path, wrong, task=task).status is Status.FAIL


def test_replaying_an_earlier_output_is_refused_before_it_runs(tmp_path: Path) -> None:
    source = (ROOT / "tests" / "cheats" / "replay_after_warmup.py").read_text()
    result = run(tmp_path, source, task=builtin_task("softmax"), stages=("smoke",))
    assert result.status is Status.REJECTED
    assert {f.rule for f in result.findings} == {"static.cache"}


def test_workers_never_write_bytecode_beside_the_sources(tmp_path: Path) -> None:
    """Inside the sandbox the interpreter's own bytecode is read-only and nothing is written; without
    it (`--sandbox=process`) bytecode goes to a cache of ours. Never into the user's repository or a
    candidate's folder, either way."""
    env = child_environment({"PYTHONDONTWRITEBYTECODE": "1", "AUTOKERNEL_CACHE_DIR": "rel/cache", "PATH": "/bin"},
                            mode="process")
    assert "PYTHONDONTWRITEBYTECODE" not in env
    prefix = Path(env["PYTHONPYCACHEPREFIX"])
    assert prefix.is_absolute() and prefix == (Path("rel/cache") / "pycache").absolute()
    assert child_environment({"PYTHONPYCACHEPREFIX": "/elsewhere"}, mode="process")["PYTHONPYCACHEPREFIX"] \
        == "/elsewhere"
    sandboxed = child_environment({"PYTHONPYCACHEPREFIX": "/elsewhere", "PATH": "/bin"}, mode="bwrap")
    assert sandboxed["PYTHONDONTWRITEBYTECODE"] == "1" and "PYTHONPYCACHEPREFIX" not in sandboxed
    (tmp_path / "helper_mod.py").write_text("SCALE = 1.0\n")
    source = "import helper_mod  # noqa\n" + RIGHT_RMSNORM
    result = run(tmp_path, source, stages=("smoke",))
    assert result.status is Status.PASS, result.message
    assert not list(tmp_path.rglob("__pycache__")), "bytecode was written beside a source"


def test_a_kernel_file_rewritten_in_the_same_second_at_the_same_size_is_never_run_from_stale_bytecode(
        tmp_path: Path, monkeypatch) -> None:
    import sys

    from autokernel_ci.tasks import load_module_from_path

    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "pycache"))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = tmp_path / "kernel.py"
    path.write_text("BLOCK_SIZE = 1024\n")
    stamp = path.stat().st_mtime
    assert load_module_from_path(path).BLOCK_SIZE == 1024
    path.write_text("BLOCK_SIZE = 2048\n")  # same size
    os.utime(path, (stamp, stamp))  # and the same time stamp: a .pyc check would take the old one
    assert load_module_from_path(path).BLOCK_SIZE == 2048
    assert not list(tmp_path.rglob("*.pyc"))
