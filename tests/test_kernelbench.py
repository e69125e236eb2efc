"""`autokernel-ci kernelbench`: a folder of problems judged in one command — the summary's arithmetic
(KernelBench's correct share, fast_p and geometric mean), a missing candidate listed and counted as not
correct, a problem that fails to import as one clear line, out of memory as a verdict, and the scaled
copies the CPU runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from autokernel_ci.cli import main
from autokernel_ci.commands.kernelbench import ProblemRow, format_summary, review_flags, summarize
from autokernel_ci.harness.sandbox import evaluate
from autokernel_ci.results import Status
from autokernel_ci.tasks import kernelbench_task, load_module_from_path, scaled_copy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "kernelbench"
CANDIDATES = ROOT / "benchmarks" / "kernelbench_candidates"


def row(problem: str, status: str = "PASS", **speedups: float) -> ProblemRow:
    return ProblemRow(problem, status, speedups=dict(speedups))


def test_summary_is_kernelbench_arithmetic_over_every_problem_listed() -> None:
    rows = [row("a", eager=3.0, compile=1.5), row("b", eager=0.5, compile=0.25), row("c", eager=1.0, compile=2.5),
            row("d", "FAIL"), row("e", "MISSING"), row("f", "ERROR"), row("g", "PASS"),  # g: correct, never timed
            row("h", "REJECTED")]
    summary = summarize(rows, ("eager", "compile"))
    assert summary["problems"] == 8 and summary["with_candidate"] == 7 and summary["correct"] == 4
    assert summary["correct_pct"] == 50.0
    assert summary["statuses"] == {"ERROR": 1, "FAIL": 1, "MISSING": 1, "PASS": 4, "REJECTED": 1}
    eager = summary["by_baseline"]["eager"]
    # fast_0 is the correct share; fast_1 needs speed-up strictly above 1 (c at exactly 1.0 is not); fast_2 only a
    assert (eager["fast_0"], eager["fast_1"], eager["fast_2"]) == (50.0, 12.5, 12.5)
    assert eager["timed"] == 3 and eager["geomean_speedup"] == pytest.approx((3.0 * 0.5 * 1.0) ** (1 / 3))
    comp = summary["by_baseline"]["compile"]
    assert (comp["fast_0"], comp["fast_1"], comp["fast_2"]) == (50.0, 25.0, 12.5)
    assert comp["geomean_speedup"] == pytest.approx(math.exp((math.log(1.5) + math.log(0.25) + math.log(2.5)) / 3))
    text = format_summary(summary, "cuda")
    assert "8 problems, 7 with a candidate: correct 4 (50%)" in text
    assert "vs eager: fast_0 50%, fast_1 12.5%, fast_2 12.5%; geomean speed-up 1.14× over 3 timed" in text


def test_summary_with_nothing_correct_has_no_geomean() -> None:
    summary = summarize([row("a", "FAIL"), row("b", "MISSING")], ("eager",))
    assert summary["correct_pct"] == 0.0 and summary["by_baseline"]["eager"]["geomean_speedup"] is None
    assert "geomean speed-up - over 0 timed" in format_summary(summary, "cuda")


def test_speedups_past_the_roofline_or_past_10x_without_one_are_flagged() -> None:
    assert review_flags(ProblemRow("a", "PASS", speedups={"eager": 40.0}, pct_roofline=60.0)) == []
    over = review_flags(ProblemRow("a", "PASS", speedups={"eager": 2.0}, pct_roofline=104.0, roofline_source="x"))
    assert len(over) == 1 and "104% of the roofline" in over[0]
    blind = review_flags(ProblemRow("a", "PASS", speedups={"eager": 2.0, "compile": 12.5}))
    assert len(blind) == 1 and "12.5× faster" in blind[0]
    assert review_flags(ProblemRow("a", "PASS", speedups={"eager": 9.9})) == []
    assert review_flags(ProblemRow("a", "FAIL", speedups={"eager": 50.0})) == []


def test_a_folder_with_a_missing_candidate_and_a_broken_problem(tmp_path: Path, capsys) -> None:
    problems, candidates = tmp_path / "problems", tmp_path / "candidates"
    problems.mkdir()
    candidates.mkdir()
    shutil.copy(EXAMPLES / "level1_relu.py", problems / "1_ReLU.py")
    shutil.copy(EXAMPLES / "relu_new.py", candidates / "1_ReLU.py")
    shutil.copy(EXAMPLES / "level1_relu.py", problems / "2_NoCandidate.py")
    broken = (EXAMPLES / "level1_relu.py").read_text().replace(
        "import torch\n", "import torch\nraise ImportError('no module named flash_attn_3')\n", 1)
    (problems / "10_Broken.py").write_text(broken)  # it defines Model, get_inputs, ...: only its import fails
    shutil.copy(EXAMPLES / "relu_new.py", candidates / "10_Broken.py")
    out = tmp_path / "out.json"
    code = main(["kernelbench", str(problems), "--candidates", str(candidates), "--device", "cpu", "--seed", "5",
                 "--baselines", "none", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    broken = [ln for ln in printed.err.splitlines() if "10_Broken" in ln]
    # The problem is imported only inside the sandbox, so its failure comes with the progress line.
    assert len(broken) == 1 and "10_Broken: ERROR" in broken[0], broken
    assert broken[0].endswith(f"{problems / '10_Broken.py'}: failed to import: ImportError: no module named "
                              "flash_attn_3")
    data = json.loads(out.read_text())
    assert [(r["problem"], r["status"]) for r in data["rows"]] == [
        ("1_ReLU", "PASS"), ("2_NoCandidate", "MISSING"), ("10_Broken", "ERROR")]
    assert data["summary"]["correct"] == 1 and data["summary"]["correct_pct"] == 33.3
    assert data["results"]["1_ReLU"]["status"] == "PASS"
    assert "2_NoCandidate.py" in data["rows"][1]["message"]


def test_bad_folders_are_one_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["kernelbench", str(tmp_path / "nope"), "--candidates", str(tmp_path)]) == 2
    assert "problems folder not found" in capsys.readouterr().err
    assert main(["kernelbench", str(tmp_path), "--candidates", str(tmp_path), "--device", "cpu"]) == 2
    assert "no problem files" in capsys.readouterr().err
    shutil.copy(EXAMPLES / "level1_relu.py", tmp_path / "1_ReLU.py")
    assert main(["kernelbench", str(tmp_path), "--candidates", str(tmp_path), "--only", "9_*", "--device", "cpu"]) == 2
    assert "matches no problem" in capsys.readouterr().err


def test_scaled_copy_shrinks_size_constants_and_keeps_small_ones(tmp_path: Path) -> None:
    source = tmp_path / "src" / "3_Thing.py"
    source.parent.mkdir()
    source.write_text("import torch\nbatch_size = 4096\ndim: int = 393216\nM = 16384 * 4\nkernel_size = 3\n"
                      "reduce_dim = 1\nshape = (32768, 7)\nscale = 2.5\nwidth = dim * 2\n")
    copy = scaled_copy(source, 0.001, tmp_path / "scaled")
    assert copy.name == "3_Thing.py" and copy.parent == tmp_path / "scaled"
    module = load_module_from_path(copy)
    assert (module.batch_size, module.dim, module.M, module.kernel_size, module.reduce_dim) == (16, 393, 66, 3, 1)
    assert module.shape == (33, 7) and module.scale == 2.5 and module.width == 786
    assert load_module_from_path(source).batch_size == 4096  # the original is untouched


OOM_PROBLEM = '''import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        {body}


def get_inputs():
    return [torch.randn(4, 8)]


def get_init_inputs():
    return []
'''
NEVER_FITS = "torch.empty(2**50, device=x.device)"  # 4 PiB: no allocator anywhere grants it


def test_a_candidate_that_runs_out_of_memory_fails_with_the_allocators_message(tmp_path: Path) -> None:
    problem = tmp_path / "problem.py"
    problem.write_text(OOM_PROBLEM.format(body="return torch.relu(x)"))
    candidate = tmp_path / "candidate.py"
    candidate.write_text((EXAMPLES / "relu_new.py").read_text().replace(
        "        y = torch.empty_like(x)\n", f"        scratch = {NEVER_FITS}\n        y = torch.empty_like(x)\n"))
    result = evaluate(kernelbench_task(problem), candidate, device="cpu", seed=1, stages=("smoke",))
    assert result.status is Status.FAIL
    assert "raised RuntimeError" in result.message and "can't allocate memory" in result.message


def test_a_reference_that_runs_the_harness_out_of_memory_is_one_line_saying_what_did_not_fit(
        tmp_path: Path, capsys) -> None:
    problem = tmp_path / "problem.py"
    problem.write_text(OOM_PROBLEM.format(body=f"return torch.relu(x) + {NEVER_FITS}[:1]"))
    assert main(["eval", "--task", str(problem), "--candidate", str(CANDIDATES / "19_ReLU.py"), "--device", "cpu",
                 "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The reference runs in a sandboxed worker of its own, in float64: what did not fit is its float64 run.
    assert len(err) == 1 and err[0].startswith("autokernel-ci eval: error: the float64 reference of case 0 did not "
                                               "fit on the host: ")
    assert "can't allocate memory" in err[0]


def test_a_float64_reference_that_does_not_fit_is_an_error_saying_what_did_not_fit(tmp_path: Path) -> None:
    """Fits in float32 (the operator recording), not in float64 (the judging)."""
    problem = tmp_path / "problem.py"
    problem.write_text(OOM_PROBLEM.format(
        body="return torch.relu(x) + (torch.empty(2**50, device=x.device)[:1] if x.dtype == torch.float64 else 0)"))
    from autokernel_ci.errors import HarnessError

    with pytest.raises(HarnessError, match=r"the float64 reference of case 0 did not fit on the host: its float64 "
                                           r"inputs alone are 0\.0 GiB \(.*can't allocate memory"):
        evaluate(kernelbench_task(problem), CANDIDATES / "19_ReLU.py", device="cpu", seed=1, stages=("smoke",))


def test_the_gpu_candidates_pass_the_static_checks_with_native_code_allowed() -> None:
    from autokernel_ci.harness.anticheat import scan_source

    allow = ("static.escape:torch.utils.cpp_extension.load_inline",)
    for path in sorted(CANDIDATES.glob("*.py")):
        source = path.read_text()
        native = "load_inline" in source
        assert scan_source(source, allow=allow if native else (), entry="ModelNew") == [], path.name
        if native:
            assert {f.rule for f in scan_source(source, entry="ModelNew")} == {"static.escape"}
    assert sum("load_inline(" in p.read_text() for p in CANDIDATES.glob("*.py")) >= 2
