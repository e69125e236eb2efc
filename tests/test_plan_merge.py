"""The matrix path on the CPU: `plan` splits the tasks, `optimize --shard` runs one shard and leaves its kept
commits in a bundle, `merge` replays every shard's commits onto one branch and opens one pull request on
the local GitHub of test_github.py.

Shards run in clones of their own (as on separate runners) and their results folders travel as copies
(as artifacts do); the clones are deleted before the merge, so the commits can only come from the bundles.
"""

# ruff: noqa: F811 - test_github's fixtures are imported, then named as the tests' arguments

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from test_github import (  # noqa: F401 - fixtures, used by name
    MATMUL_KERNEL,
    NORM_KERNEL,
    actions_env,
    checkout,
    git,
    origin_sha,
    server,
    token_never_leaks,
)
from test_loop import CONFIG as LOOP_CONFIG
from test_loop import FAST, SLOW_START, ScriptedProposer
from test_publish import DATE, eval_result, fast_client, project  # noqa: F401 - fixtures, used by name

from autokernel_ci.cli import main
from autokernel_ci.commands.merge import BUNDLE_NAME, SHARD_FILE, export_commits, merge_results
from autokernel_ci.commands.plan import assign, plan_shards
from autokernel_ci.commands.publish import load_run
from autokernel_ci.errors import GitError
from autokernel_ci.loop import BOT_EMAIL, BOT_NAME, ResultsLog, init_repository
from autokernel_ci.ops import starter_source
from autokernel_ci.search.proposer import Experiment

FOUR = textwrap.dedent("""\
    version: 1
    kernels:
      - {name: rmsnorm, path: k/rmsnorm.py, op: rmsnorm}
      - {name: layernorm, path: k/layernorm.py, op: layernorm}
      - {name: softmax, path: k/softmax.py, op: softmax}
      - {name: swiglu, path: k/swiglu.py, op: swiglu}
""")


@pytest.fixture
def four(tmp_path: Path) -> Path:
    (tmp_path / "k").mkdir()
    for name in ("rmsnorm", "layernorm", "softmax", "swiglu"):
        (tmp_path / "k" / f"{name}.py").write_text("# a kernel\n")
    config = tmp_path / ".autokernel.yml"
    config.write_text(FOUR)
    return config


# ---------------------------------------------------------------------------------------------------
# plan


def test_plan_prints_a_matrix_with_every_task_once_and_equal_weights_split_evenly(four, capsys):
    assert main(["plan", "--shards", "3", "--config", str(four), "--json", str(four.parent / "plan.json")]) == 0
    matrix = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    include = matrix["include"]
    assert [e["shard"] for e in include] == [0, 1, 2] and {e["shards"] for e in include} == {3}
    tasks = [t for e in include for t in e["tasks"].split(",")]
    assert sorted(tasks) == ["layernorm", "rmsnorm", "softmax", "swiglu"]
    assert sorted(len(e["tasks"].split(",")) for e in include) == [1, 1, 2]
    saved = json.loads((four.parent / "plan.json").read_text())
    assert saved["source"] == "equal" and saved["matrix"] == matrix


def test_plan_leaves_empty_shards_out_of_the_matrix(four):
    plan = plan_shards(6, config=four)
    assert len(plan.shards) == 6 and len(plan.matrix()["include"]) == 4


def test_plan_balances_the_roofline_gap_from_bench_results(four, tmp_path):
    bench = {"results": [{"task": t, "timings": [{"pct_roofline": pct}]}
                         for t, pct in (("rmsnorm", 10.0), ("layernorm", 20.0), ("softmax", 85.0),
                                        ("swiglu", 90.0))]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    plan = plan_shards(2, config=four, weights_file=tmp_path / "bench.json")
    # The two far-from-roofline kernels go to different shards; each takes one of the nearly done ones.
    assert plan.weights["rmsnorm"] == pytest.approx(0.9) and plan.weights["swiglu"] == pytest.approx(0.1)
    assert [set(s.tasks) for s in plan.shards] == [{"rmsnorm", "swiglu"}, {"layernorm", "softmax"}]


def test_plan_ranks_by_amdahl_saving_from_a_profile(four, tmp_path):
    def entry(family, op, share, speedup):
        return {"family": family, "builtin": op, "share": share, "self_time_us": 1.0, "calls": 1.0, "shapes": [],
                "bytes": None, "flops": None, "bound": "memory", "pct_roofline": None,
                "expected_speedup": speedup, "expected_speedup_source": "roofline",
                "potential_saving": share * (1 - 1 / speedup)}

    profile = {"model": "m", "device": "cpu", "time_kind": "cpu", "dtype": "fp32", "steps": 1, "warmup": 0,
               "total_us": 4.0, "ceilings_source": None, "modules": [],
               "entries": [entry("norm", "rmsnorm", 0.4, 2.0), entry("softmax", "softmax", 0.3, 3.0),
                           entry("activation", "swiglu", 0.1, 1.5)]}
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    plan = plan_shards(2, config=four, weights_file=tmp_path / "profile.json")
    assert plan.weights["rmsnorm"] == pytest.approx(0.2) and plan.weights["softmax"] == pytest.approx(0.2)
    assert plan.weights["layernorm"] == 0.0  # its op does not run in the model profiled
    assert sorted(round(s.expected_gain, 4) for s in plan.shards) == [0.2, pytest.approx(0.2333, abs=1e-4)]


def test_assign_is_longest_first_and_deterministic():
    shards = assign({"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 1.0}, 2)
    assert [s.tasks for s in shards] == [["a", "d"], ["b", "c", "e"]]
    assert [s.expected_gain for s in shards] == [8.0, 8.0]


def test_optimize_shard_runs_only_its_shards_tasks(four, monkeypatch):
    from autokernel_ci.commands import optimize

    seen = []
    monkeypatch.setattr(optimize, "optimize_tasks", lambda tasks, *a, **k: seen.append([t.name for t in tasks]) or [])
    expected = plan_shards(2, config=four)
    for i in range(2):
        assert main(["optimize", "--config", str(four), "--shard", str(i), "--shards", "2"]) == 0
    assert seen == [expected.tasks_of(0), expected.tasks_of(1)]
    assert main(["optimize", "--config", str(four), "--shard", "2", "--shards", "2"]) == 2  # no such shard


# ---------------------------------------------------------------------------------------------------
# optimize --shard for real, then merge on another clone


def test_a_real_shard_run_leaves_a_bundle_that_merge_replays_in_another_clone(tmp_path, monkeypatch, capsys):
    runner = tmp_path / "runner"
    (runner / "kernels").mkdir(parents=True)
    (runner / "kernels" / "rmsnorm.py").write_text(SLOW_START)
    (runner / "kernels" / "softmax.py").write_text(starter_source("softmax"))
    second = "  - {name: softmax, path: kernels/softmax.py, op: softmax}\n"
    (runner / ".autokernel.yml").write_text(LOOP_CONFIG + second)
    start = init_repository(runner, "a repository with two kernels")
    merger = tmp_path / "merger"
    git(tmp_path, "clone", "-q", str(runner), str(merger))
    assert plan_shards(2, config=runner / ".autokernel.yml").tasks_of(0) == ["rmsnorm"]

    monkeypatch.setattr("autokernel_ci.search.make_proposer", lambda *a, **k: (ScriptedProposer([FAST]), None))
    monkeypatch.chdir(runner)
    assert main(["optimize", "--shard", "0", "--shards", "2", "--device", "cpu", "--timeout", "25",
                 "--max-experiments", "1", "--budget-minutes", "10"]) == 0
    out = runner / "autokernel-out"
    shard = json.loads((out / SHARD_FILE).read_text())
    assert shard["tasks"] == ["rmsnorm"] and shard["families"]["rmsnorm"]["family"] == "norm"
    assert (out / BUNDLE_NAME).is_file()
    assert [r.task for r in load_run(out)] == ["rmsnorm"]  # softmax belongs to shard 1

    downloads = tmp_path / "downloads" / "autokernel-shard-0"
    shutil.copytree(out, downloads)
    shutil.rmtree(runner)  # the shard's runner is gone: only the artifact is left
    capsys.readouterr()
    assert main(["merge", "--results", str(downloads.parent), "--repo", str(merger), "--no-publish",
                 "--json", str(tmp_path / "merge.json")]) == 0
    merged = json.loads((tmp_path / "merge.json").read_text())
    branch = merged["branch"]
    assert branch == "autokernel/optimize-" + load_run(downloads)[0].branch[-8:]  # the date of the shard's run
    assert merged["kept"] == 1 and merged["pull_request"] is None
    assert git(merger, "show", f"{branch}:kernels/rmsnorm.py") + "\n" == FAST.source
    assert git(merger, "log", "--format=%s", f"{start}..{branch}").splitlines() == [
        "autokernel: progress plot of the combined run", "autokernel(rmsnorm): BLOCK_SIZE 128→4096"]
    rows = [json.loads(x) for x in (merger / "autokernel-out" / "results.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["verdict"] == "kept"]
    assert len(kept) == 1 and kept[0]["branch"] == branch
    assert git(merger, "merge-base", "--is-ancestor", kept[0]["commit"], branch) == ""
    assert git(merger, "status", "--porcelain") == ""


# ---------------------------------------------------------------------------------------------------
# merge of two shards into one pull request


def record_shard(tmp_path: Path, index: int, task: str, kernel: str, source: str) -> Path:
    """A shard as its runner leaves it: a clone with an experiment branch and the loop's results folder,
    uploaded (copied) as an artifact; then the clone is deleted."""
    clone = tmp_path / f"shard-{index}"
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(clone))
    start = git(clone, "rev-parse", "HEAD")
    branch = f"autokernel/{task}-{DATE}"
    git(clone, "checkout", "-q", "-b", branch)
    (clone / kernel).write_text(source)
    git(clone, "-c", f"user.name={BOT_NAME}", "-c", f"user.email={BOT_EMAIL}", "commit", "-q", "-am",
        f"autokernel({task}): one pass over the row\n\nAutokernel-Task: {task}\nAutokernel-Experiment: 1\n")
    kept = git(clone, "rev-parse", "HEAD")
    git(clone, "checkout", "-q", "main")
    out = clone / "autokernel-out"
    log = ResultsLog(out)
    shape = {"M": 4096, "K": 4096, "N": 4096} if task == "matmul" else {"rows": 16384, "dim": 4096}
    before, after = eval_result(task, 210.0, shape, 42.6), eval_result(task, 93.9, shape, 95.2)
    log.append(Experiment(0, task, "baseline", "baseline: the kernel as committed", proposer="tuner", status="PASS",
                          stage="gate", commit=start, branch=branch, score_us=210.0, gate_score_us=210.0,
                          representative=True, duration_s=30.0))
    log.append(Experiment(1, task, "kept", "one pass over the row", {"BLOCK_SIZE": 4096}, "tuner", "PASS", "gate",
                          score_us=93.9, gate_score_us=93.9, gate_ratio=93.9 / 210.0,
                          speedup_vs_start=210.0 / 93.9, representative=True, commit=kept, branch=branch,
                          duration_s=40.0))
    log.append(Experiment(2, task, "slower", "num_warps 8", {"num_warps": 8}, "tuner", "PASS", "screen", ratio=1.2,
                          branch=branch, representative=True, duration_s=10.0))
    (out / "experiments" / task).mkdir(parents=True)
    (out / "experiments" / task / "0000.json").write_text(json.dumps({"gate": before.to_dict()}))
    (out / "best.json").write_text(json.dumps({task: {
        "task": task, "kernel": kernel, "branch": branch, "start_commit": start, "head_commit": kept,
        "experiment": 1, "noise": 0.01, "stop_reason": "reached the experiment budget (2)", "representative": True,
        "result": after.to_dict()}}))
    assert export_commits(load_run(out), out, repo=clone) == out / BUNDLE_NAME
    family = "matmul" if task == "matmul" else "norm"
    (out / SHARD_FILE).write_text(json.dumps({"shard": index, "shards": 2, "tasks": [task],
                                              "families": {task: {"family": family, "risk": None}}}))
    artifact = tmp_path / "autokernel-shards" / f"autokernel-shard-{index}"
    shutil.copytree(out, artifact)
    shutil.rmtree(clone)
    return artifact


def test_merge_opens_one_pull_request_for_every_shard_and_a_rerun_updates_it(project, server, actions_env, tmp_path,
                                                                             capsys):
    record_shard(tmp_path, 0, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    record_shard(tmp_path, 1, "matmul", "kernels/matmul_tl.py", MATMUL_KERNEL)
    downloads = tmp_path / "autokernel-shards"
    args = ["merge", "--results", str(downloads), "--repo", str(project), "--json", str(tmp_path / "merge.json")]

    assert main(args) == 0
    first = json.loads((tmp_path / "merge.json").read_text())
    branch = f"autokernel/optimize-{DATE}"
    assert first["branch"] == branch and first["kept"] == 2
    assert first["speedup"] == pytest.approx(210.0 / 93.9, rel=1e-3)
    (pr,) = server.open_pulls()
    assert first["pull_request"] == {"number": pr["number"], "url": first["pull_request"]["url"], "created": True}
    assert first["pull_request"]["url"].endswith(f"/acme/models/pull/{pr['number']}")
    assert (pr["head_ref"], pr["base_ref"]) == (branch, "main")
    assert "rmsnorm" in pr["title"] and "matmul" in pr["title"]
    assert "autokernel: needs-human-review" in pr["labels"]  # the matmul shard brought tf32 tiles
    for expected in ("`rmsnorm`", "`matmul`", "Why this is high risk", "progress.png"):
        assert expected in pr["body"]
    head = origin_sha(project, branch)
    assert head == first["head_commit"] == server.head_sha(pr["number"])
    assert sorted(git(project, "diff", "--name-only", "main", branch).splitlines()) == [
        ".autokernel/progress.png", "kernels/matmul_tl.py", "kernels/rmsnorm.py"]
    rows = [json.loads(x) for x in (project / "autokernel-out" / "results.jsonl").read_text().splitlines()]
    assert [(r["task"], r["verdict"]) for r in rows] == [("rmsnorm", "baseline"), ("rmsnorm", "kept"),
                                                         ("rmsnorm", "slower"), ("matmul", "baseline"),
                                                         ("matmul", "kept"), ("matmul", "slower")]
    assert {r["branch"] for r in rows} == {branch}
    picks = git(project, "log", "--reverse", "--format=%H", f"main..{branch}").splitlines()[:2]
    assert [r["commit"] for r in rows if r["verdict"] == "kept"] == picks

    # A re-run rebuilds the very same commits and updates the pull request: no twin.
    assert main(args) == 0
    second = json.loads((tmp_path / "merge.json").read_text())
    assert git(project, "log", "--reverse", "--format=%H", f"main..{branch}").splitlines()[:2] == picks
    assert second["pull_request"]["created"] is False and len(server.open_pulls()) == 1
    assert second["pull_request"]["number"] == pr["number"]


def test_merge_refuses_shards_that_edit_the_same_file(project, tmp_path):
    config = project / ".autokernel.yml"
    config.write_text(config.read_text() + "  - {name: rmsnorm_fast, op: rmsnorm, path: kernels/rmsnorm.py}\n")
    git(project, "commit", "-q", "-am", "a second task on the same file")
    git(project, "push", "-q", "origin", "main")
    record_shard(tmp_path, 0, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    record_shard(tmp_path, 1, "rmsnorm_fast", "kernels/rmsnorm.py", NORM_KERNEL.replace("tl.sqrt", "tl.rsqrt"))
    with pytest.raises(GitError, match="two tasks edit the same file"):
        merge_results([tmp_path / "autokernel-shards"], project)
    assert "autokernel/optimize" not in git(project, "branch", "--list")
    assert git(project, "worktree", "list").count("\n") == 0  # the temporary worktree is gone


# ---------------------------------------------------------------------------------------------------
# what a kept commit may change: only its task's kernel file, as the checkout's config names it


def record_shard_touching(tmp_path: Path, index: int, task: str, files: dict[str, str]) -> Path:
    """A shard whose kept commit changes `files`: what a compromised loop job could upload."""
    artifact = record_shard(tmp_path, index, task, "kernels/rmsnorm.py", NORM_KERNEL)
    clone = tmp_path / f"evil-{index}"
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(clone))
    start = git(clone, "rev-parse", "HEAD")
    git(clone, "checkout", "-q", "-b", f"autokernel/{task}-{DATE}")
    for rel, text in files.items():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_text(text)
    git(clone, "add", "-A")
    git(clone, "-c", f"user.name={BOT_NAME}", "-c", f"user.email={BOT_EMAIL}", "commit", "-q", "-m", "faster")
    kept = git(clone, "rev-parse", "HEAD")
    git(clone, "bundle", "create", "-q", str(artifact / BUNDLE_NAME), f"autokernel/{task}-{DATE}", f"^{start}")
    rows = [json.loads(x) for x in (artifact / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if row["verdict"] == "kept":
            row["commit"] = kept
    (artifact / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return artifact


@pytest.mark.parametrize("files, named", [
    ({"kernels/rmsnorm.py": NORM_KERNEL, ".github/workflows/x.yml": "on: push\n"}, ".github/workflows/x.yml"),
    ({"kernels/rmsnorm.py": NORM_KERNEL, "tests/conftest.py": "import os\n"}, "tests/conftest.py"),
    ({"kernels/rmsnorm.py": NORM_KERNEL, ".github/CODEOWNERS": "* @mallory\n"}, ".github/CODEOWNERS"),
    ({".autokernel.yml": "version: 1\nkernels: []\n"}, ".autokernel.yml"),
    ({"kernels/matmul_tl.py": "# another task's file\n"}, "kernels/matmul_tl.py"),
])
def test_merge_refuses_a_kept_commit_that_touches_anything_but_its_kernel(project, tmp_path, capsys, files, named):
    record_shard_touching(tmp_path, 0, "rmsnorm", files)
    before = git(project, "for-each-ref")
    assert main(["merge", "--results", str(tmp_path / "autokernel-shards"), "--repo", str(project),
                 "--dry-run"]) != 0
    err = capsys.readouterr().err
    assert "refused" in err and named in err and "only its task's kernel file kernels/rmsnorm.py" in err
    assert git(project, "for-each-ref") == before  # no branch, no leftover refs
    assert git(project, "worktree", "list").count("\n") == 0


def test_merge_refuses_a_task_the_config_does_not_list(project, tmp_path, capsys):
    record_shard(tmp_path, 0, "rmsnorm_fast", "kernels/rmsnorm.py", NORM_KERNEL)
    assert main(["merge", "--results", str(tmp_path / "autokernel-shards"), "--repo", str(project),
                 "--no-publish"]) != 0
    assert "does not list" in capsys.readouterr().err


def test_merge_accepts_the_loops_own_commit_of_the_kernel_file(project, tmp_path, capsys):
    record_shard(tmp_path, 0, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    assert main(["merge", "--results", str(tmp_path / "autokernel-shards"), "--repo", str(project),
                 "--no-publish"]) == 0
    assert "combined branch autokernel/optimize-" in capsys.readouterr().out


def test_merge_dry_run_changes_nothing_on_disk_or_in_git(project, tmp_path, capsys):
    record_shard(tmp_path, 0, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    out = project / "autokernel-out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"n": 0, "task": "earlier", "verdict": "baseline"}\n')

    def state() -> dict:
        files = {str(p.relative_to(project)): p.read_bytes() for p in sorted(project.rglob("*"))
                 if p.is_file() and ".git/objects/" not in p.as_posix()}
        return {"files": files, "refs": git(project, "for-each-ref"), "status": git(project, "status", "--porcelain"),
                "worktrees": git(project, "worktree", "list")}

    before = state()
    assert main(["merge", "--results", str(tmp_path / "autokernel-shards"), "--repo", str(project), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "dry run: would push autokernel/optimize-" in printed and "would be at" in printed
    after = state()
    changed = sorted(k for k in set(before["files"]) | set(after["files"])
                     if before["files"].get(k) != after["files"].get(k))
    assert changed == []
    assert after == before  # no branch, no moved results folder, no exclude line, no worktree left
