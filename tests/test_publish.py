"""`autokernel-ci publish`, `review-status` and `optimize --open-pr` against the local GitHub of test_github.py.

The results folders are written in the loop's own formats (`ResultsLog`, `best.json`, the experiment
JSON files) beside real experiment branches in a clone of a bare `origin`; one test runs the real
loop on the CPU interpreter and publishes what it kept. The token must never reach the output
(test_github's autouse fixture checks every test here too).
"""

# ruff: noqa: F811 - test_github's fixtures are imported, then named as the tests' arguments

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from test_github import (  # noqa: F401 - fixtures, used by name
    DATA,
    FAST,
    MATMUL_KERNEL,
    NORM_KERNEL,
    READ_TOKEN,
    TOKEN,
    actions_env,
    checkout,
    git,
    origin_sha,
    server,
    token_never_leaks,
)

from autokernel_ci.cli import main
from autokernel_ci.github import HIGH_RISK_MARKER, HUMAN_REVIEW_CONTEXT, GitHubClient
from autokernel_ci.loop import ResultsLog
from autokernel_ci.results import CaseEvidence, EvalResult, ShapeTiming, StageEvidence, Status
from autokernel_ci.search import Candidate, Proposer
from autokernel_ci.search.proposer import Experiment

ROOT = Path(__file__).resolve().parents[1]
DATE = "20250101"
CONFIG = textwrap.dedent("""\
    version: 1
    kernels:
      - name: rmsnorm
        op: rmsnorm
        path: kernels/rmsnorm.py
      - name: matmul
        op: matmul
        path: kernels/matmul_tl.py
""")
H100_ENV = {"python": "3.12.3", "torch": "2.11.0+cu130", "triton": "3.6.0", "cuda": "13.0"}


# ---------------------------------------------------------------------------------------------------
# A repository with .autokernel.yml, and results folders in the loop's formats


@pytest.fixture
def project(checkout: Path) -> Path:
    (checkout / ".autokernel.yml").write_text(CONFIG)
    git(checkout, "add", ".autokernel.yml")
    git(checkout, "commit", "-q", "-m", "config")
    git(checkout, "push", "-q", "origin", "main")
    with open(checkout / ".git" / "info" / "exclude", "a") as f:
        f.write("/autokernel-out/\n")  # as the loop does
    return checkout


@pytest.fixture(autouse=True)
def fast_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands build their client with from_env(); here it gets the test policy (no waits)."""
    original = GitHubClient.from_env.__func__

    def from_env(cls, env=None, *, policy=None):
        return original(cls, env, policy=policy or FAST)

    monkeypatch.setattr(GitHubClient, "from_env", classmethod(from_env))


def eval_result(task: str, median_us: float, shape: dict[str, int], pct: float) -> EvalResult:
    cases = [CaseEvidence("smoke", {"rows": 16, "dim": 64}, "fp32", 11, passed=True, max_abs_err=4.8e-07,
                          max_rel_err=1.9e-07, atol=1e-05, rtol=1e-05),
             CaseEvidence("shapes", {"rows": 3, "dim": 7}, "bf16", 12, passed=True, max_abs_err=3.1e-02,
                          max_rel_err=7.8e-03, atol=5e-02, rtol=2e-02)]
    samples = [median_us * (1 + 0.001 * k) for k in (-2, -1, 0, 1, 2)]
    timing = ShapeTiming(shape, "bf16", median_us, 0.4, len(samples), samples, pct_roofline=pct,
                         roofline_source="measured", baselines_us={"eager": 497.8, "vendor": 113.1, "compile": 95.1},
                         representative=True)
    return EvalResult(Status.PASS, task, f"kernels/{task}.py", "all 2 checks passed in 2 stages",
                      device="NVIDIA H100 80GB HBM3", representative_timing=True,
                      stages=[StageEvidence("smoke", True, cases[:1]), StageEvidence("shapes", True, cases[1:])],
                      timings=[timing], environment=dict(H100_ENV), seeds=[11, 12])


def make_run(repo: Path, task: str, kernel: str, source: str | None) -> Path:
    """An experiment branch (with one kept commit of `source`, or none) and the loop's output folder."""
    branch = f"autokernel/{task}-{DATE}"
    start = git(repo, "rev-parse", "main")
    git(repo, "branch", branch, "main")
    kept_sha = None
    if source is not None:
        git(repo, "checkout", "-q", branch)
        (repo / kernel).write_text(source)
        git(repo, "commit", "-q", "-am", f"autokernel({task}): BLOCK_SIZE 128→4096")
        kept_sha = git(repo, "rev-parse", "HEAD")
        git(repo, "checkout", "-q", "main")
    shape = {"M": 4096, "K": 4096, "N": 4096} if task == "matmul" else {"rows": 16384, "dim": 4096}
    before, after = eval_result(task, 210.0, shape, 42.6), eval_result(task, 93.9, shape, 95.2)
    out = repo / "autokernel-out"
    log = ResultsLog(out)
    log.append(Experiment(0, task, "baseline", "baseline: the kernel as committed", proposer="tuner", status="PASS",
                          stage="gate", commit=start, branch=branch, score_us=210.0, gate_score_us=210.0,
                          pct_roofline=42.6, representative=True, duration_s=31.0))
    if kept_sha:
        log.append(Experiment(1, task, "kept", "BLOCK_SIZE 128→4096", {"BLOCK_SIZE": 4096}, "tuner", "PASS", "gate",
                              score_us=93.9, gate_score_us=93.9, gate_ratio=93.9 / 210.0,
                              speedup_vs_start=210.0 / 93.9, pct_roofline=95.2, representative=True,
                              commit=kept_sha, branch=branch, duration_s=44.0))
    log.append(Experiment(2, task, "slower", "num_warps 8", {"num_warps": 8}, "tuner", "PASS", "screen", ratio=1.2,
                          branch=branch, representative=True, duration_s=12.0))
    log.append(Experiment(3, task, "rejected", "replays the last output", {}, "tuner", "REJECTED", "screen",
                          branch=branch, representative=True, duration_s=6.0))
    (out / "experiments" / task).mkdir(parents=True, exist_ok=True)
    (out / "experiments" / task / "0000.json").write_text(json.dumps({"gate": before.to_dict()}))
    best_path = out / "best.json"
    best = json.loads(best_path.read_text()) if best_path.exists() else {}
    best[task] = {"task": task, "kernel": kernel, "branch": branch, "start_commit": start,
                  "head_commit": kept_sha or start, "experiment": 1 if kept_sha else 0, "noise": 0.012,
                  "stop_reason": "reached the experiment budget (3)", "representative": True,
                  "result": (after if kept_sha else before).to_dict()}
    best_path.write_text(json.dumps(best))
    return out


def publish(*args: str) -> int:
    return main(["publish", *args])


# ---------------------------------------------------------------------------------------------------
# publish


def test_publish_opens_the_pr_once_and_a_rerun_updates_it(project, server, actions_env, capsys):
    out = make_run(project, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    branch = f"autokernel/rmsnorm-{DATE}"

    assert publish("--results", str(out)) == 0
    first = capsys.readouterr().out
    head = git(project, "rev-parse", branch)
    assert publish("--results", str(out)) == 0
    second = capsys.readouterr().out

    assert "opened pull request #1" in first and "updated pull request #1" in second
    assert len(server.open_pulls()) == 1 and len(server.calls("POST", r"/pulls$")) == 1
    assert not server.calls("PATCH", r"/pulls/\d+$"), "the identical re-run changed nothing"
    assert git(project, "rev-parse", branch) == head == origin_sha(project, branch), "no second plot commit"
    pr = server.pull(1)
    assert (pr["head_ref"], pr["base_ref"]) == (branch, "main")
    assert pr["title"] == "autokernel: rmsnorm 2.24× faster"
    assert pr["labels"] == ["autokernel", "performance", "autokernel: low-risk"]
    assert server.combined_state(head, HUMAN_REVIEW_CONTEXT) == "success"

    body = pr["body"]
    for section in ("## Summary", "## Benchmarks", "## Correctness evidence", "## Experiment log", "## Environment",
                    "## Reproduce", "## Review"):
        assert section in body
    assert "**2.24× faster** than the starting kernel" in body
    assert "| rmsnorm | 16384×4096 | bf16 | 210.0 | 93.90 | 2.24× | 5.30× | 1.20× | 1.01× | 42.6% → 95.2% |" in body
    assert "| smoke | 1/1 | 16×64 | fp32 | normal | 1 | 4.8e-07 | 1.9e-07 |" in body
    assert "findings on the final kernel: none" in body and "1 candidate was rejected" in body
    assert "3 tried, 1 kept, reverted: 1 slower, 1 rejected" in body
    assert "- GPU: NVIDIA H100 80GB HBM3" in body and "- torch: 2.11.0+cu130" in body and "- triton: 3.6.0" in body
    assert "autokernel-ci bench --task rmsnorm --device cuda" in body
    assert f"{server.api_url}/acme/models/raw/{head}/.autokernel/progress-rmsnorm.png" in body

    # The plot is committed on the experiment branch only; the work tree and main are untouched.
    png = subprocess.run(["git", "show", f"{branch}:.autokernel/progress-rmsnorm.png"], cwd=project,
                         capture_output=True, check=True).stdout
    assert png.startswith(b"\x89PNG")
    assert git(project, "diff", "--name-only", f"{branch}~1", branch) == ".autokernel/progress-rmsnorm.png"
    assert git(project, "log", "-1", "--format=%an", branch) == "autokernel-ci"
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(project, "status", "--porcelain") == ""
    assert TOKEN not in first + second


def test_a_newer_plot_replaces_the_plot_commit_and_works_on_the_checked_out_branch(project, server, actions_env):
    out = make_run(project, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    branch = f"autokernel/rmsnorm-{DATE}"
    kept = git(project, "rev-parse", branch)
    assert publish("--results", str(out)) == 0
    first_plot = git(project, "rev-parse", f"{branch}:.autokernel/progress-rmsnorm.png")

    # A resumed run logs more experiments: the plot changes and replaces the one at the tip, whether the
    # branch is elsewhere (plumbing) or checked out (a commit in the work tree).
    plots = {first_plot}
    for n, checked_out in ((4, False), (5, True)):
        ResultsLog(out).append(Experiment(n, "rmsnorm", "within-noise", f"num_stages {n}", {"num_stages": n}, "tuner",
                                          "PASS", "screen", ratio=0.99, speedup_vs_start=2.2, branch=branch,
                                          representative=True, duration_s=9.0))
        if checked_out:
            git(project, "checkout", "-q", branch)
        assert publish("--results", str(out), "--base", "main") == 0
        assert git(project, "rev-parse", f"{branch}~1") == kept, "one plot commit, not two"
        plots.add(git(project, "rev-parse", f"{branch}:.autokernel/progress-rmsnorm.png"))
        assert git(project, "status", "--porcelain") == ""
        assert server.head_sha(1) == git(project, "rev-parse", branch) and len(server.open_pulls()) == 1

    assert len(plots) == 3 and git(project, "rev-parse", "--abbrev-ref", "HEAD") == branch
    assert "5 tried, 1 kept, reverted: 1 slower, 2 within-noise, 1 rejected" in server.pull(1)["body"]


def test_matmul_with_tl_dot_is_high_risk_and_waits_for_a_human(project, server, actions_env, capsys):
    out = make_run(project, "matmul", "kernels/matmul_tl.py", MATMUL_KERNEL)

    assert publish("--results", str(out)) == 0

    pr = server.pull(1)
    assert pr["labels"] == ["autokernel", "performance", "autokernel: needs-human-review"]
    # CODEOWNERS: kernels/matmul* → alice. The plot is not part of the risk: `*` → @lead is not asked.
    assert pr["requested_reviewers"] == ["alice"] and pr["requested_teams"] == []
    assert "### Why this is high risk" in pr["body"] and HIGH_RISK_MARKER in pr["body"]
    assert "`kernels/matmul_tl.py:11`" in pr["body"] and "tl.dot: matrix multiply on tensor cores" in pr["body"]
    assert pr["body"].count("### Why this is high risk") == 1 and "declared `risk: high`" not in pr["body"]
    assert server.combined_state(server.head_sha(1), HUMAN_REVIEW_CONTEXT) == "pending"
    assert "reviews requested from alice" in capsys.readouterr().out


def test_risk_label_names_come_from_the_config(project, server, actions_env):
    (project / ".autokernel.yml").write_text(CONFIG + "risk:\n  high_label: 'perf: review me'\n"
                                                      "  low_label: 'perf: safe'\n")
    git(project, "commit", "-q", "-am", "labels")
    out = make_run(project, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    assert publish("--results", str(out)) == 0
    assert server.pull(1)["labels"] == ["autokernel", "performance", "perf: safe"]
    assert "labelled `perf: safe`" in server.pull(1)["body"]


def test_dry_run_prints_the_body_without_a_token_and_changes_nothing(project, server, monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    monkeypatch.delenv("GITHUB_SERVER_URL", raising=False)
    out = make_run(project, "matmul", "kernels/matmul_tl.py", MATMUL_KERNEL)
    branch = f"autokernel/matmul-{DATE}"
    head = git(project, "rev-parse", branch)

    assert publish("--results", str(out), "--dry-run") == 0

    text = capsys.readouterr().out
    assert "## Benchmarks" in text and "### Why this is high risk" in text
    assert f"https://github.com/acme/models/raw/{branch}/.autokernel/progress-matmul.png" in text
    assert f"would commit its progress plot on {branch}" in text and "against main" in text
    assert "labels: autokernel, performance, autokernel: needs-human-review" in text
    assert server.requests == [] and origin_sha(project, branch) is None
    assert git(project, "rev-parse", branch) == head


def test_nothing_kept_opens_no_pr(project, server, actions_env, capsys):
    out = make_run(project, "rmsnorm", "kernels/rmsnorm.py", None)
    assert publish("--results", str(out)) == 0
    assert "rmsnorm: nothing to publish: no experiment was kept (2 tried" in capsys.readouterr().out
    assert server.requests == [] and origin_sha(project, f"autokernel/rmsnorm-{DATE}") is None


def test_bad_input_is_one_clear_line_and_nothing_is_written(project, server, actions_env, monkeypatch, capsys,
                                                            tmp_path):
    assert publish("--results", str(tmp_path / "nowhere")) == 2
    assert "no results folder at" in capsys.readouterr().err

    out = make_run(project, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    branch = f"autokernel/rmsnorm-{DATE}"
    head = git(project, "rev-parse", branch)
    monkeypatch.delenv("GITHUB_TOKEN")
    assert publish("--results", str(out)) == 2
    assert "GITHUB_TOKEN is not set" in capsys.readouterr().err
    assert git(project, "rev-parse", branch) == head and origin_sha(project, branch) is None

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/no-such-repo")
    assert publish("--results", str(out)) == 2
    err = capsys.readouterr().err
    assert "repository acme/no-such-repo was not found" in err and TOKEN not in err
    assert origin_sha(project, branch) is None and server.open_pulls() == []

    # A token that may push but not open pull requests: what was done is reported, and a re-run finishes.
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    monkeypatch.setenv("GITHUB_TOKEN", READ_TOKEN)
    assert publish("--results", str(out)) == 2
    err = capsys.readouterr().err
    assert f"pushed {branch}" in err and "Re-run the same command" in err and READ_TOKEN not in err
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert publish("--results", str(out)) == 0 and len(server.open_pulls()) == 1
    server.pull(1)["state"] = "closed"

    git(project, "branch", "-D", branch)
    assert publish("--results", str(out)) == 2
    assert f"the experiment branch {branch}" in capsys.readouterr().err and server.open_pulls() == []
    assert [c.status for c in server.calls("POST", r"/pulls$")] == [403, 201], "refused once, then opened once"


# ---------------------------------------------------------------------------------------------------
# review-status


def test_review_status_reads_the_pr_from_a_review_event(project, server, actions_env, tmp_path, monkeypatch,
                                                         capsys):
    out = make_run(project, "matmul", "kernels/matmul_tl.py", MATMUL_KERNEL)
    assert publish("--results", str(out)) == 0
    head = server.head_sha(1)
    event = json.loads((DATA / "pull_request_review_event.json").read_text())
    event["pull_request"]["number"] = 1
    event["pull_request"]["head"]["sha"] = head
    (tmp_path / "event.json").write_text(json.dumps(event))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(tmp_path / "event.json"))
    capsys.readouterr()

    assert main(["review-status"]) == 0
    assert "autokernel/human-review: pending on pull request #1" in capsys.readouterr().out
    server.add_review(1, "alice", "APPROVED")
    assert main(["review-status"]) == 0
    assert "autokernel/human-review: success on pull request #1" in capsys.readouterr().out
    assert server.combined_state(head, HUMAN_REVIEW_CONTEXT) == "success"
    assert not server.calls("PUT", r"/merge$") and not server.calls("POST", r"/reviews$")


# ---------------------------------------------------------------------------------------------------
# optimize --open-pr: the real loop on the CPU interpreter, then the same publishing


EXAMPLE = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
SLOW_START = EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 128")
FAST_CANDIDATE = Candidate(EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 4096"), "BLOCK_SIZE 128→4096",
                           {"BLOCK_SIZE": 4096})


class OneCandidate(Proposer):
    name = "scripted"

    def propose(self, task, best_source, best_result, history):
        if any(e.description == FAST_CANDIDATE.description for e in history):
            self.done_reason = "the script is finished"
            return None
        return FAST_CANDIDATE


def test_optimize_open_pr_publishes_what_the_loop_kept(checkout, server, actions_env, monkeypatch, capsys):
    (checkout / "kernels" / "rmsnorm.py").write_text(SLOW_START)
    (checkout / ".autokernel.yml").write_text(textwrap.dedent("""\
        version: 1
        kernels:
          - name: rmsnorm
            op: rmsnorm
            path: kernels/rmsnorm.py
            shapes: [{rows: 3, dim: 7}, {rows: 4, dim: 4096}]
            dtypes: [fp32]
    """))
    git(checkout, "commit", "-q", "-am", "a slow rmsnorm")
    git(checkout, "add", ".autokernel.yml")
    git(checkout, "commit", "-q", "-m", "config")
    git(checkout, "push", "-q", "origin", "main")
    monkeypatch.setattr("autokernel_ci.search.make_proposer", lambda name, settings=None: (OneCandidate(), None))

    code = main(["optimize", "--config", str(checkout / ".autokernel.yml"), "--device", "cpu", "--timeout", "60",
                 "--open-pr"])

    out = capsys.readouterr().out
    assert code == 0, out
    [pr] = server.open_pulls()
    assert pr["head_ref"].startswith("autokernel/rmsnorm-") and pr["base_ref"] == "main"
    assert pr["labels"] == ["autokernel", "performance", "autokernel: low-risk"]
    assert "(CPU interpreter timings)" in pr["title"] and "Timings are not representative" in pr["body"]
    assert "BLOCK_SIZE 128→4096" in pr["body"] and ".autokernel/progress-rmsnorm.png" in pr["body"]
    assert f"opened pull request #{pr['number']}" in out
    assert git(checkout, "show", f"{pr['head_ref']}:kernels/rmsnorm.py") + "\n" == FAST_CANDIDATE.source
