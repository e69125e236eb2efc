"""The benchmark scripts run here, on the CPU interpreter, before they cost device time.

Their numbers mean nothing on the CPU; what is checked is that each script runs to the end with the
package as it is now and writes the JSON the results are read from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


def script(name: str, *args: str, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env.update(AUTOKERNEL_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT), OUT=str(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_explains_itself(name: str, tmp_path: Path):
    done = script(name, "--help", tmp_path=tmp_path, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]


def test_gate_detection_times_the_gate_with_one_and_two_workers(tmp_path: Path):
    done = script("gate_detection.py", "--device", "cpu", "--quick", "--skip-trials", "--cold-only",
                  "--gate-workers", "1,2", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gate_detection.json").read_text())
    runs = report["gate_runs"]
    assert [r["workers"] for r in runs] == [1, 2]
    assert all(r["exit_code"] == 0 and {v["verdict"] for v in r["verdicts"]} == {"pass"} for r in runs)


def test_pool_scaling_runs_the_loop_with_two_workers_and_compares(tmp_path: Path):
    done = script("pool_scaling.py", "--device", "cpu", "--ops", "rmsnorm", "--max-experiments", "1",
                  "--workers", "2", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = tmp_path / "out" / "pool_scaling_w2.json"
    report = json.loads(path.read_text())
    assert report["workers"] == 2 and report["ops"][0]["experiments"] == 1 and report["evaluations"]
    compared = script("pool_scaling.py", "--compare", str(path), str(path), tmp_path=tmp_path)
    assert compared.returncode == 0 and "correctness verdicts match" in compared.stdout, compared.stdout


def test_optimize_tuner_splits_an_evaluations_time(tmp_path: Path):
    done = script("optimize_tuner.py", "--device", "cpu", "--ops", "rmsnorm", "--max-experiments", "1",
                  tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (entry,) = json.loads((tmp_path / "out" / "optimize_tuner.json").read_text())["ops"]
    assert entry["experiments"] == 1 and entry["split_median_per_evaluation"]["worker_s"] > 0


def test_eval_profile_reports_the_workers_phases(tmp_path: Path):
    done = script("eval_profile.py", "--device", "cpu", "--repeats", "1", "--top", "3", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = json.loads((tmp_path / "out" / "eval_profile.json").read_text())["runs"]
    assert run["status"] == "PASS" and {"imports", "cases", "timing"} <= set(run["phases_s"])
    assert list((tmp_path / "out" / "prof0").glob("worker-*.prof"))


def test_knob_sweep_times_each_point_and_never_picks_one_that_fails(tmp_path: Path):
    best = tmp_path / "best.py"
    done = script("knob_sweep.py", "--device", "cpu", "--op", "cross_entropy", "--shape", "T=4,V=300",
                  "--grid", "BLOCK_SIZE=3,128", "--grid", "NUM_WARPS=4", "--copy-reference",
                  "--write-best", str(best), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip().startswith("BLOCK_SIZE=")}
    assert "PASS" not in lines["BLOCK_SIZE=3,"] and "PASS" in lines["BLOCK_SIZE=128,"]
    assert "BLOCK_SIZE = 128" in best.read_text() and "a plain copy of the same" in done.stdout


def test_knob_sweep_names_an_unknown_knob_in_one_line(tmp_path: Path):
    done = script("knob_sweep.py", "--device", "cpu", "--op", "rmsnorm", "--shape", "rows=2,dim=64",
                  "--grid", "NO_SUCH_KNOB=1", tmp_path=tmp_path)
    assert done.returncode != 0 and "NO_SUCH_KNOB" in done.stderr and "Traceback" not in done.stderr
    done = script("knob_sweep.py", "--device", "cpu", "--op", "rmsnorm", "--shape", "rows=2,dim=64",
                  "--grid", "NUM_WARPS=four", tmp_path=tmp_path)
    assert done.returncode != 0 and "integers or None" in done.stderr and "Traceback" not in done.stderr
