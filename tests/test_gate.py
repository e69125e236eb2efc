"""The pull-request gate: the decision flow on synthetic samples, and the whole gate on a temporary git
repository on the CPU (correctness gated, timings reported as not measured, bad input explained)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from autokernel_ci import gate
from autokernel_ci.cli import main
from autokernel_ci.config import load_config
from autokernel_ci.gate import ABSettings, GateReport, TaskVerdict, compare, exit_code_for, run_gate
from autokernel_ci.report.gate_md import render_markdown

ROOT = Path(__file__).resolve().parents[1]
RIGHT_RMSNORM = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
HALF_ROWS = RIGHT_RMSNORM.replace("_rmsnorm_kernel[(n_rows,)]", "_rmsnorm_kernel[((n_rows + 1) // 2,)]")
SMOKE = ("smoke",)
FAST = ABSettings(min_rounds=2, max_rounds=12)


# --- the decision flow on synthetic samples -----------------------------------------------------------


class FakeSessions:
    """Each `open_session()` is a fresh measurement whose head is `ratios[i]` times slower than the base."""

    def __init__(self, *ratios: float, sigma: float = 0.01, n: int = 50, seed: int = 0) -> None:
        self.ratios = list(ratios)
        self.sigma, self.n = sigma, n
        self.rng = np.random.default_rng(seed)
        self.opened = 0

    def __call__(self):
        ratio = self.ratios[min(self.opened, len(self.ratios) - 1)]
        self.opened += 1

        def measure_round():
            base = 100.0 * np.exp(self.rng.normal(0.0, self.sigma, self.n))
            head = 100.0 * ratio * np.exp(self.rng.normal(0.0, self.sigma, self.n))
            return base.tolist(), head.tolist()

        return measure_round


def test_no_change_passes_after_one_measurement():
    sessions = FakeSessions(1.0)
    decision, measurements = compare(sessions, threshold=0.03, settings=FAST)
    assert decision.verdict == "pass"
    assert sessions.opened == 1 and len(measurements) == 1


def test_a_first_regression_must_reproduce_in_a_fresh_session_before_it_blocks():
    sessions = FakeSessions(1.10, 1.10)
    decision, measurements = compare(sessions, threshold=0.03, settings=FAST)
    assert decision.verdict == "regression" and decision.confirmed
    assert sessions.opened == 2 and len(measurements) == 2
    assert [m.decision["verdict"] for m in measurements] == ["regression", "regression"]


def test_a_regression_that_does_not_reproduce_is_inconclusive_and_does_not_block():
    sessions = FakeSessions(1.10, 1.00)
    decision, measurements = compare(sessions, threshold=0.03, settings=FAST)
    assert decision.verdict == "inconclusive" and not decision.confirmed
    assert "not reproduced" in decision.reason
    assert exit_code_for([_timed("k", decision, measurements)]) == 0


def test_every_sample_behind_a_decision_is_recorded_per_round():
    sessions = FakeSessions(1.0, n=30)
    decision, measurements = compare(sessions, threshold=0.03, settings=FAST)
    first = measurements[0]
    assert first.rounds >= FAST.min_rounds and all(len(r) == 30 for r in first.base_us + first.head_us)
    pooled_base = [x for r in first.base_us for x in r]
    pooled_head = [x for r in first.head_us for x in r]
    again = gate.stats.decide(pooled_base, pooled_head, 0.03, confidence=FAST.confidence)
    assert again.verdict == decision.verdict and again.ratio == decision.ratio


def test_rounds_grow_until_the_time_cap_then_inconclusive_does_not_block():
    now = [0.0]

    def clock():
        now[0] += 5.0  # every look at the clock is five seconds later
        return now[0]

    sessions = FakeSessions(1.02, sigma=0.4, n=10)  # far too noisy to decide on a 3 % threshold
    decision, measurements = compare(sessions, threshold=0.03, settings=ABSettings(max_rounds=50),
                                     time_cap_s=30.0, clock=clock)
    assert decision.verdict == "inconclusive"
    assert 2 <= measurements[0].rounds < 50  # stopped by the cap, not the round limit
    verdict = _timed("k", decision, measurements)
    assert verdict.verdict == "inconclusive" and exit_code_for([verdict]) == 0


def test_measured_noise_raises_the_threshold():
    decision, _ = compare(FakeSessions(1.04, 1.04), threshold=0.03, noise=0.0, settings=FAST)
    assert decision.verdict == "regression" and decision.effective_threshold == pytest.approx(0.03)
    decision, _ = compare(FakeSessions(1.04, 1.04), threshold=0.03, noise=0.08, settings=FAST)
    assert decision.verdict != "regression" and decision.effective_threshold == pytest.approx(0.08)


def test_noise_is_estimated_from_a_a_rounds_grouped_like_base_vs_head():
    rng = np.random.default_rng(1)
    rounds = [(list(100 * np.exp(rng.normal(0, 0.01, 40))), list(100 * np.exp(rng.normal(0, 0.01, 40))))
              for _ in range(8)]
    noise, ratios = gate.noise_from_aa(rounds, rounds_per_pair=2)
    assert len(ratios) == 4 and all(abs(r - 1) < 0.02 for r in ratios)
    assert 0 < noise < 0.05
    with pytest.raises(ValueError):
        gate.noise_from_aa(rounds[:1], rounds_per_pair=2)


def test_noise_cache_round_trips_and_expires(tmp_path: Path):
    path = tmp_path / "noise" / "x.json"
    assert gate.load_noise(path) is None
    gate.save_noise(path, 0.012, [1.001, 0.999])
    assert gate.load_noise(path) == (0.012, [1.001, 0.999])
    assert gate.load_noise(path, now=json.loads(path.read_text())["time"] + gate.NOISE_MAX_AGE_S + 1) is None
    path.write_text("{not json")
    assert gate.load_noise(path) is None


def test_one_shape_regressing_makes_the_task_a_regression():
    pass_shape = _shape(*compare(FakeSessions(1.0), 0.03, settings=FAST))
    bad_shape = _shape(*compare(FakeSessions(1.2, 1.2), 0.03, settings=FAST))
    verdict, decider = gate.combine_shapes([pass_shape, bad_shape])
    assert verdict == "regression" and decider is bad_shape


def test_a_malformed_worker_report_is_refused_not_trusted():
    from autokernel_ci.harness.worker import PROTOCOL

    good = {"protocol": PROTOCOL, "mode": "ab", "import_errors": {},
            "shapes": [{"shape": {}, "dtype": "fp32", "errors": {}, "comparisons": {"ab": {"rounds": [
                {"a": [1.0, 2.0], "b": [1.0, 2.0]}]}}}]}
    assert gate._checked_ab_result(good, 1, ["ab"])
    bad = json.loads(json.dumps(good))
    bad["shapes"][0]["comparisons"]["ab"]["rounds"][0]["b"] = [-1.0]
    with pytest.raises(gate.TimingError, match="malformed"):
        gate._checked_ab_result(bad, 1, ["ab"])
    with pytest.raises(gate.TimingError, match="malformed"):
        gate._checked_ab_result(good, 2, ["ab"])


def test_report_round_trips_through_json_and_renders_the_numbers():
    decision, measurements = compare(FakeSessions(1.2, 1.2), 0.03, settings=FAST)
    report = GateReport(base="main", base_sha="a" * 40, head="HEAD", head_sha="b" * 40, device="GPU",
                        timings_measured=True, threshold=0.03, verdicts=[_timed("rmsnorm", decision, measurements)],
                        unchanged=["softmax"])
    report.exit_code = exit_code_for(report.verdicts)
    again = GateReport.from_json(report.to_json())
    assert again == report and again.exit_code == 1
    assert again.verdicts[0].shapes[0].measurements[1].head_us == measurements[1].head_us
    md = render_markdown(again)
    assert "**regression**" in md and "+20." in md and "2+2" in md and "`softmax`" in md
    assert "not measured" not in md


def _shape(decision, measurements, noise: float = 0.0):
    return gate.shape_comparison({"rows": 4, "dim": 8}, "bf16", decision, measurements, noise, "measured")


def _timed(name: str, decision, measurements) -> TaskVerdict:
    blank = TaskVerdict(task=name, verdict="error", reason="", path=f"kernels/{name}.py", threshold=0.03)
    return gate.timed_verdict(blank, [_shape(decision, measurements)])


# --- the whole gate on a temporary git repository, on the CPU ---------------------------------------


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=gate test", "-c", "user.email=gate@example.com", *args],
                         cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout


def config(*names: str) -> str:
    kernels = "".join(f"  - name: {n}\n    op: rmsnorm\n    path: kernels/{n}.py\n" for n in names)
    return f"version: 1\nkernels:\n{kernels}"


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, {".autokernel.yml": config("rmsnorm", "norm2"), "kernels/rmsnorm.py": RIGHT_RMSNORM,
                  "kernels/norm2.py": RIGHT_RMSNORM}, "base")
    git(root, "tag", "base")
    return root


def worktree_count(repo: Path) -> int:
    return git(repo, "worktree", "list").count("\n")


def test_cli_blocks_a_wrong_head_kernel_and_says_timings_were_not_measured(repo: Path, tmp_path: Path, capsys,
                                                                           monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    commit(repo, {"kernels/rmsnorm.py": HALF_ROWS}, "write only half the rows")
    out_json, out_md = tmp_path / "gate.json", tmp_path / "gate.md"
    code = main(["gate", "--repo", str(repo), "--base", "base", "--head", "HEAD", "--device", "cpu",
                 "--json", str(out_json), "--markdown", str(out_md), "--github"])
    assert code == 1
    report = GateReport.from_json(out_json.read_text())
    assert [(v.task, v.verdict) for v in report.verdicts] == [("rmsnorm", "fail")]
    failed = report.verdicts[0]
    assert failed.head_status == "FAIL" and "NaN" in failed.reason and failed.head_result["stages"]
    assert report.unchanged == ["norm2"] and not report.timings_measured and report.exit_code == 1
    md = out_md.read_text()
    assert "Timings were not measured" in md and "**fail**" in md and "`norm2`" in md
    captured = capsys.readouterr()
    assert "gate blocked" in captured.out
    assert "could not publish to GitHub: GITHUB_TOKEN is not set" in captured.err  # and the outputs are written
    assert worktree_count(repo) == 1


def test_all_gates_unchanged_tasks_too_and_correct_heads_pass_without_a_timing_verdict(repo: Path):
    commit(repo, {"kernels/rmsnorm.py": RIGHT_RMSNORM + "# a comment\n"}, "comment only")
    report = run_gate(repo, "base", "HEAD", device="cpu", all_tasks=True, stages=SMOKE)
    verdicts = {v.task: v for v in report.verdicts}
    assert set(verdicts) == {"rmsnorm", "norm2"} and report.unchanged == []
    assert verdicts["rmsnorm"].changed and not verdicts["norm2"].changed
    for v in verdicts.values():
        assert v.verdict == "pass" and not v.timing_measured and v.ratio is None and v.shapes == []
        assert gate.NOT_MEASURED in v.reason and v.base_status == "ok"
    assert report.exit_code == 0
    assert "not measured (no GPU)" in render_markdown(report)


def test_new_tasks_do_not_block_and_removed_ones_block_until_accepted(repo: Path):
    commit(repo, {".autokernel.yml": config("rmsnorm", "norm3"), "kernels/norm2.py": None,
                  "kernels/norm3.py": RIGHT_RMSNORM}, "replace norm2 with norm3")
    report = run_gate(repo, "base", "HEAD", device="cpu", stages=SMOKE)
    verdicts = {v.task: v for v in report.verdicts}
    assert verdicts["norm3"].verdict == "new" and verdicts["norm3"].head_status == "PASS"
    assert verdicts["norm2"].verdict == "removed" and "deleted in head" in verdicts["norm2"].reason
    assert not verdicts["norm3"].blocking and verdicts["norm2"].blocking
    assert report.unchanged == ["rmsnorm"] and report.exit_code == 1
    report.accept("@maintainer at abc1234")
    assert report.exit_code == 0


def test_a_kernel_file_deleted_in_head_but_still_configured_is_a_clear_error(repo: Path, capsys):
    commit(repo, {"kernels/norm2.py": None}, "delete norm2's file only")
    code = main(["gate", "--repo", str(repo), "--base", "base", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "head's config is invalid" in err and "kernels[1].path: file not found: kernels/norm2.py" in err
    assert "remove its entry" in err and "Traceback" not in err and "autokernel-gate-" not in err
    assert worktree_count(repo) == 1


def test_an_invalid_head_config_exits_2_and_explains_in_the_markdown(repo: Path, tmp_path: Path, capsys):
    commit(repo, {".autokernel.yml": config("rmsnorm").replace("op: rmsnorm", "op: rmsnrom")}, "typo")
    out_md = tmp_path / "gate.md"
    code = main(["gate", "--repo", str(repo), "--base", "base", "--device", "cpu", "--markdown", str(out_md)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown built-in op 'rmsnrom'" in err and "did you mean 'rmsnorm'" in err
    assert "could not run" in out_md.read_text()


def test_an_unknown_revision_is_one_line_and_exit_2(repo: Path, capsys):
    code = main(["gate", "--repo", str(repo), "--base", "no-such-branch", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "autokernel-ci gate: error: unknown revision 'no-such-branch'"


def test_a_base_kernel_that_crashes_still_gates_the_head(tmp_path: Path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    crashing = RIGHT_RMSNORM.replace("    shape = x.shape\n", "    raise RuntimeError('base is broken')\n")
    commit(root, {".autokernel.yml": config("rmsnorm"), "kernels/rmsnorm.py": crashing}, "broken base")
    commit(root, {"kernels/rmsnorm.py": RIGHT_RMSNORM}, "fix it")
    report = run_gate(root, "HEAD~1", "HEAD", device="cpu", stages=SMOKE)
    (verdict,) = report.verdicts
    assert verdict.verdict == "pass" and verdict.head_status == "PASS"
    assert verdict.base_status == "crashed" and "base crashed" in verdict.reason
    assert "base is broken" in verdict.base_message and report.exit_code == 0


def test_gate_trees_without_git_finds_changed_tasks_by_content(tmp_path: Path):
    for tree, norm2 in (("base", RIGHT_RMSNORM), ("head", HALF_ROWS)):
        (tmp_path / tree / "kernels").mkdir(parents=True)
        (tmp_path / tree / ".autokernel.yml").write_text(config("rmsnorm", "norm2"))
        (tmp_path / tree / "kernels" / "rmsnorm.py").write_text(RIGHT_RMSNORM)
        (tmp_path / tree / "kernels" / "norm2.py").write_text(norm2)
    report = gate.gate_trees(tmp_path / "base", tmp_path / "head", device="cpu", stages=SMOKE)
    assert [(v.task, v.verdict) for v in report.verdicts] == [("norm2", "fail")]
    assert report.unchanged == ["rmsnorm"] and report.exit_code == 1


SLOW_HEAD = RIGHT_RMSNORM.replace("    shape = x.shape\n",
                                  "    shape = x.shape\n    _spin = sum(i * i for i in range(600_000))\n")


def test_timed_path_catches_and_confirms_a_slowdown_end_to_end(tmp_path: Path, monkeypatch):
    """The GPU code path (A/A noise, A/B rounds in one worker, confirmation in a fresh one), exercised on
    the interpreter by pretending its timings count: only a test may do that. One tiny shape keeps the
    interpreter quick, and a head many times slower keeps the verdict certain on a busy machine."""
    monkeypatch.setattr(gate, "_timings_possible", lambda device: True)
    monkeypatch.setenv("AUTOKERNEL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    tiny = config("rmsnorm") + "    shapes: [{rows: 1, dim: 8}]\n"
    commit(root, {".autokernel.yml": tiny, "kernels/rmsnorm.py": RIGHT_RMSNORM}, "base")
    commit(root, {"kernels/rmsnorm.py": SLOW_HEAD}, "slow down rmsnorm")
    settings = ABSettings(min_rounds=4, refill_rounds=4, aa_pairs=2, max_rounds=8)
    report = run_gate(root, "HEAD~1", "HEAD", device="cpu", stages=SMOKE, settings=settings, threshold=0.05)
    (verdict,) = report.verdicts
    assert verdict.verdict == "regression", verdict.reason
    assert verdict.timing_measured and report.exit_code == 1
    (shape,) = verdict.shapes
    assert shape.shape == {"rows": 1, "dim": 8} and shape.noise_source == "measured" and len(shape.aa_ratios) == 2
    assert shape.confirmed and len(shape.measurements) == 2
    assert shape.ratio > 1.5 and shape.head_median_us > shape.base_median_us
    assert all(m.rounds >= 4 and all(len(r) >= 3 for r in m.base_us) for m in shape.measurements)
    assert verdict.effective_threshold >= 0.05 and math.isfinite(shape.noise)
    assert list((tmp_path / "cache" / "noise").glob("*.json"))
    md = render_markdown(report)
    assert "**regression**" in md and "Timings were not measured" not in md


# --- several workers: tasks gated side by side, each on its own GPU -------------------------------


def test_two_workers_gate_both_tasks_at_once_with_the_same_verdicts_in_config_order(repo: Path):
    commit(repo, {"kernels/norm2.py": HALF_ROWS, "kernels/rmsnorm.py": RIGHT_RMSNORM + "# touched\n"},
           "break norm2, touch rmsnorm")
    events: list[str] = []
    one = run_gate(repo, "base", "HEAD", device="cpu", stages=SMOKE)
    two = run_gate(repo, "base", "HEAD", device="cpu", stages=SMOKE, workers=2, on_event=events.append)
    assert [(v.task, v.verdict) for v in two.verdicts] == [(v.task, v.verdict) for v in one.verdicts] \
        == [("rmsnorm", "pass"), ("norm2", "fail")]
    assert (one.workers, two.workers) == (1, 2) and two.exit_code == one.exit_code == 1
    assert "× 2 (a task per GPU)" in render_markdown(two) and "× " not in render_markdown(one).split("\n")[2]
    # Both tasks started before either had a verdict: they were in flight together.
    started = [i for i, e in enumerate(events) if e.endswith(": gating")]
    decided = [i for i, e in enumerate(events) if ": pass:" in e or ": fail:" in e]
    assert len(started) == 2 and max(started) < min(decided), events
    assert worktree_count(repo) == 1


def test_gate_slots_pin_one_gpu_each_and_refuse_more_workers_than_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gate.gate_slots("cuda", None) == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert gate.gate_slots("cuda", 1) == [{}]  # one GPU: nothing to pin, as without a pool
    with pytest.raises(gate.AutokernelError, match="more workers than the 2 visible GPU"):
        gate.gate_slots("cuda", 3)
    assert gate.gate_slots("cpu", None) == [{}] and gate.gate_slots("cpu", 2) == [{}, {}]


def test_run_on_slots_never_gives_one_slot_two_items_at_once_and_keeps_the_order():
    import threading
    import time

    busy: dict[str, int] = {}
    lock = threading.Lock()
    clashes = []

    def work(item: int, slot: dict[str, str]) -> tuple[int, str]:
        gpu = slot["CUDA_VISIBLE_DEVICES"]
        with lock:
            busy[gpu] = busy.get(gpu, 0) + 1
            if busy[gpu] > 1:
                clashes.append((item, gpu))
        time.sleep(0.02 * (item % 3))
        with lock:
            busy[gpu] -= 1
        return item, gpu

    slots = [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    results = gate.run_on_slots(list(range(12)), slots, work)
    assert [item for item, _ in results] == list(range(12)) and not clashes
    assert {gpu for _, gpu in results} == {"0", "1"}


def test_every_process_of_a_task_gets_its_slots_gpu(repo: Path, monkeypatch):
    from autokernel_ci.harness import sandbox

    commit(repo, {"kernels/norm2.py": RIGHT_RMSNORM + "# touched\n", "kernels/rmsnorm.py": RIGHT_RMSNORM + "#\n"},
           "touch both")
    seen: list[tuple[str, str | None]] = []
    real = sandbox.run_worker

    def recording(request, out_dir, timeout, env, *args, **kwargs):
        seen.append((request.get("mode", "eval"), env.get("CUDA_VISIBLE_DEVICES")))
        assert "GITHUB_TOKEN" not in env
        return real(request, out_dir, timeout, env, *args, **kwargs)

    monkeypatch.setattr(sandbox, "run_worker", recording)
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_not_for_candidates")
    plans = [p for p in gate.plan_tasks(*_trees_and_configs(repo)) if p.name == "rmsnorm"]
    task_gate = gate._TaskGate(load_config(repo / ".autokernel.yml"), "cpu", False, 0.03, ABSettings(),
                               SMOKE, None, float("inf"), lambda: 0.0, lambda message: None)
    verdict = task_gate.verdict(plans[0], {"CUDA_VISIBLE_DEVICES": "7"})
    assert verdict.verdict == "pass"
    assert [mode for mode, _ in seen] == ["eval", "ab"] and {gpu for _, gpu in seen} == {"7"}


def _trees_and_configs(repo: Path):
    cfg = load_config(repo / ".autokernel.yml")
    return cfg, cfg, repo, repo, Path(".autokernel.yml"), {"kernels/rmsnorm.py", "kernels/norm2.py"}


def test_cli_refuses_zero_workers_in_one_line(repo: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gate", "--repo", str(repo), "--base", "base", "--workers", "0"])
    assert exit_info.value.code == 2
    assert "expected at least 1" in capsys.readouterr().err
