"""`autokernel-ci demo`: eval → optimize → report on the bundled example, and the example's packaging."""

from __future__ import annotations

import json
from pathlib import Path

from autokernel_ci.cli import main
from autokernel_ci.commands.demo import examples_dir
from autokernel_ci.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_the_pull_request_report_and_the_progress_plot(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-experiments", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "1. eval" in printed and "2. optimize" in printed and "3. the report" in printed
    assert "not representative" in printed

    summary = (out / "summary.md").read_text()
    for section in ("## Benchmarks", "## Correctness evidence", "## Experiment log", "## Environment"):
        assert section in summary
    assert "**Timings are not representative.**" in summary
    assert "| rmsnorm | 8×4096 | fp32 |" in summary, "the benchmark table has a row per kernel and shape"
    assert "| smoke | 1/1 |" in summary and "| determinism |" in summary
    assert "2 tried" in summary and "![speedup and % of roofline per experiment](progress.png)" in summary
    assert (out / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    logged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [row["n"] for row in logged] == [0, 1, 2] and logged[0]["verdict"] == "baseline"
    assert all(row["representative"] is False for row in logged)


def test_examples_ship_inside_the_package_with_their_config():
    examples = examples_dir()
    assert examples.parent.name == "autokernel_ci" or examples == ROOT / "examples"
    cfg = load_config(examples / ".autokernel.yml")
    assert ("rmsnorm", "kernels/rmsnorm.py", "rmsnorm") in [(k.name, k.path, k.op) for k in cfg.kernels]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"examples/**/*"' in pyproject and '"examples/.autokernel.yml"' in pyproject, "package-data ships them"
    assert (ROOT / "autokernel_ci" / "examples" / "kernels" / "rmsnorm.py").is_file()
