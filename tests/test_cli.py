"""The command line contract: exit 0 only on PASS, JSON with a top-level status, and one clear line
(never a traceback) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kernels" / "rmsnorm.py"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autokernel_ci", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def assert_one_clear_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert all(f in proc.stderr for f in fragments), proc.stderr


def test_eval_writes_json_and_exits_zero_on_pass(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = cli("eval", "--task", "rmsnorm", "--candidate", str(EXAMPLE), "--json", str(out), "--device", "cpu",
               "--seed", "7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "Triton interpreter" in proc.stdout
    data = json.loads(out.read_text())
    assert data["status"] == "PASS" and data["stages"][0]["name"] == "smoke"


def test_eval_exits_non_zero_when_the_candidate_fails(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(EXAMPLE.read_text().replace("x * rstd * w", "x * rstd"))
    out = tmp_path / "result.json"
    proc = cli("eval", "--task", "rmsnorm", "--candidate", str(wrong), "--json", str(out), "--device", "cpu")
    assert proc.returncode == 1
    assert json.loads(out.read_text())["status"] == "FAIL"


def test_missing_candidate_is_one_clear_line(tmp_path: Path) -> None:
    assert_one_clear_line(cli("eval", "--task", "rmsnorm", "--candidate", str(tmp_path / "nope.py")),
                          "candidate file not found")


def test_unknown_task_suggests_the_nearest_name() -> None:
    assert_one_clear_line(cli("eval", "--task", "rmsnrom", "--candidate", str(EXAMPLE)),
                          "unknown task 'rmsnrom'", "did you mean 'rmsnorm'")


def test_config_typo_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "k.py").write_text(EXAMPLE.read_text())
    (tmp_path / ".autokernel.yml").write_text("version: 1\nkernels:\n  - name: rms\n    path: k.py\n    op: rmsnorm\n"
                                             "    tolerence: {fp32: [0, 0]}\n")
    proc = cli("eval", "--task", "rms", "--candidate", "k.py", cwd=tmp_path)
    assert_one_clear_line(proc, ".autokernel.yml: kernels[0].tolerence: unknown key", "did you mean 'tolerance'")


def test_syntax_error_in_the_candidate_is_a_clear_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def kernel_fn(x, weight, eps=1e-6):\n    return (x\n")
    proc = cli("eval", "--task", "rmsnorm", "--candidate", str(bad), "--device", "cpu")
    assert proc.returncode == 1
    assert "CRASH" in proc.stdout and "does not compile" in proc.stdout and "line" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_help_is_instant_and_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "autokernel_ci", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "eval" in proc.stdout
    heavy = [m for m in ("torch", "triton", "github", "git", "litellm") if f" {m}\n" in proc.stderr]
    assert heavy == []
