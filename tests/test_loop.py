"""The experiment loop on a real git repository and real Triton kernels under the interpreter.

The repository holds a small RMSNorm whose row loop steps 128 columns at a time: interpreted, a
4096-column step is many times faster, a difference no machine load hides. Every candidate runs in
the sandbox; git history, file contents and the results log are checked after each run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import git
import pytest

from autokernel_ci.errors import AutokernelError, GitError
from autokernel_ci.loop import LoopSettings, init_repository, run_loop
from autokernel_ci.search import Candidate, Proposer, TunerProposer
from autokernel_ci.tasks import resolve_task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = (ROOT / "examples" / "kernels" / "rmsnorm.py").read_text()
SLOW_START = EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 128")
CONFIG = textwrap.dedent("""\
    version: 1
    kernels:
      - name: rmsnorm
        path: kernels/rmsnorm.py
        op: rmsnorm
        shapes: [{rows: 3, dim: 7}, {rows: 4, dim: 4096}]
        dtypes: [fp32]
""")
# Long enough for an honest candidate on a busy two-core machine, short enough to wait out a hang.
TIMEOUT_S = 25.0
DATE = "20250101"
BRANCH = f"autokernel/rmsnorm-{DATE}"

FAST = Candidate(EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 4096"), "BLOCK_SIZE 128→4096",
                 {"BLOCK_SIZE": 4096})
WRONG = Candidate(SLOW_START.replace("acc += x * x", "acc += x * x * 1.5"), "a wrong answer", {"case": "wrong"})
CRASHES = Candidate(SLOW_START + '\nraise RuntimeError("broken at import")\n', "crashes at import", {"case": "crash"})
HANGS = Candidate(SLOW_START.replace("def kernel_fn(x, weight, eps=1e-6):\n",
                                     "def kernel_fn(x, weight, eps=1e-6):\n    while True:\n        pass\n"),
                  "never returns", {"case": "hang"})
CHEATS = Candidate(SLOW_START + "\n\ndef kernel_fn(x, weight, eps=1e-6):  # noqa: F811\n"
                   "    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight\n",
                   "computes the answer in PyTorch", {"case": "cheat"})


class ScriptedProposer(Proposer):
    """Proposes the given candidates in order, each once."""

    name = "scripted"

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates

    def propose(self, task, best_source, best_result, history):
        done = {e.description for e in history}
        for candidate in self.candidates:
            if candidate.description not in done:
                return candidate
        self.done_reason = "the script is finished"
        return None


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "kernels").mkdir(parents=True)
    (root / "kernels" / "rmsnorm.py").write_text(SLOW_START)
    (root / ".autokernel.yml").write_text(CONFIG)
    (root / "README.md").write_text("a user's repository\n")
    init_repository(root, "A repository with a slow kernel")
    return root


def task_in(root: Path):
    return resolve_task("rmsnorm", root / ".autokernel.yml")


def settings(**kw) -> LoopSettings:
    return LoopSettings(**{"device": "cpu", "timeout": TIMEOUT_S, "date": DATE, "budget_minutes": 15.0, **kw})


def rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "autokernel-out" / "results.jsonl").read_text().splitlines()]


def test_loop_keeps_a_faster_kernel_and_reverts_wrong_crashing_hanging_and_cheating_ones(repo: Path):
    r = git.Repo(repo)
    start = r.head.commit.hexsha
    result = run_loop(task_in(repo), ScriptedProposer([FAST, WRONG, CRASHES, HANGS, CHEATS]), settings())

    assert [e.verdict for e in result.experiments] == ["baseline", "kept", "fail", "crash", "timeout", "rejected"]
    assert result.stop_reason == "the scripted has nothing left to try: the script is finished"

    # One commit, of the kernel file only, holding the fast candidate; its message carries the evidence.
    commits = list(r.iter_commits(f"{start}..{BRANCH}"))
    assert len(commits) == 1
    assert r.git.diff("--name-only", start, BRANCH).splitlines() == ["kernels/rmsnorm.py"]
    assert r.git.show(f"{BRANCH}:kernels/rmsnorm.py") + "\n" == FAST.source
    message = commits[0].message
    for expected in ("autokernel(rmsnorm): BLOCK_SIZE 128→4096", "Task: rmsnorm (kernels/rmsnorm.py)",
                     "Speedup:", "over the previous best", "Roofline:", "Correctness: PASS",
                     "NOT representative", "Autokernel-Experiment: 1"):
        assert expected in message
    assert commits[0].author.name == "autokernel-ci"
    assert result.speedup > 2.0

    # Back where the user was: same branch, same file, nothing left over in `git status`.
    assert r.active_branch.name in ("master", "main")
    assert (repo / "kernels" / "rmsnorm.py").read_text() == SLOW_START
    assert r.git.status("--porcelain", "--untracked-files=all") == ""

    logged = rows(repo)
    assert [x["verdict"] for x in logged] == [e.verdict for e in result.experiments]
    assert [x["status"] for x in logged] == ["PASS", "PASS", "FAIL", "CRASH", "TIMEOUT", "REJECTED"]
    assert all(x["representative"] is False for x in logged)
    assert logged[1]["commit"] == commits[0].hexsha and logged[1]["speedup_vs_start"] > 2.0
    assert "past the 25 s limit" in logged[4]["message"]
    tsv = (repo / "autokernel-out" / "results.tsv").read_text().splitlines()
    assert len(tsv) == 7 and tsv[0].startswith("n\ttask\tverdict")
    best = json.loads((repo / "autokernel-out" / "best.json").read_text())["rmsnorm"]
    assert best["experiment"] == 1 and best["head_commit"] == commits[0].hexsha


def test_resume_continues_a_killed_run_without_repeating_an_experiment(repo: Path, tmp_path: Path):
    out = repo / "autokernel-out"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from autokernel_ci.loop import LoopSettings, run_loop
        from autokernel_ci.search import TunerProposer
        from autokernel_ci.tasks import resolve_task
        task = resolve_task("rmsnorm", Path({str(repo / '.autokernel.yml')!r}))
        run_loop(task, TunerProposer(), LoopSettings(device="cpu", timeout={TIMEOUT_S}, date={DATE!r},
                 max_experiments=10))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.jsonl").is_file() and len(rows(repo)) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        time.sleep(1.0)  # into the next experiment: its candidate is in the kernel file now
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = rows(repo)
    assert [x["n"] for x in before] == [0, 1]
    r = git.Repo(repo)
    assert r.active_branch.name == BRANCH, "the killed run was on its experiment branch"

    result = run_loop(task_in(repo), TunerProposer(), settings(resume=True, max_experiments=3))

    after = rows(repo)
    assert after[:2] == before
    assert [x["verdict"] for x in after][2] == "remeasure"
    assert [x["n"] for x in after] == list(range(len(after)))
    experiments = [x for x in after if x["verdict"] not in ("baseline", "remeasure")]
    assert len(experiments) == 3
    tried = [json.dumps(x["params"], sort_keys=True) for x in experiments]
    assert len(set(tried)) == len(tried), "a point was tried twice"
    assert json.dumps(after[0]["params"], sort_keys=True) not in tried, "the starting point was tried again"
    assert result.stop_reason == "reached the experiment budget (3)"
    assert "the interrupted run left a candidate in it" in result.notes[0]
    assert r.active_branch.name == BRANCH, "left on the branch it was resumed from"
    assert r.git.status("--porcelain", "--untracked-files=all") == ""
    assert (repo / "kernels" / "rmsnorm.py").read_text() == r.git.show(f"{BRANCH}:kernels/rmsnorm.py") + "\n"
    kept = [x for x in after if x["verdict"] == "kept"]
    assert len(list(r.iter_commits(f"{after[0]['commit']}..{BRANCH}"))) == len(kept)
    if kept:
        assert r.git.show(f"{BRANCH}:kernels/rmsnorm.py").count("BLOCK_SIZE = 128") == 0


def test_a_dirty_work_tree_is_refused_and_left_as_it_was(repo: Path):
    edited = SLOW_START + "\n# the user's own unfinished edit\n"
    (repo / "kernels" / "rmsnorm.py").write_text(edited)
    with pytest.raises(GitError, match="uncommitted changes \\(kernels/rmsnorm.py\\)"):
        run_loop(task_in(repo), TunerProposer(), settings())
    r = git.Repo(repo)
    assert (repo / "kernels" / "rmsnorm.py").read_text() == edited
    assert [b.name for b in r.branches] == [r.active_branch.name]
    assert not (repo / "autokernel-out").exists()


def test_resume_without_a_run_to_resume_says_so(repo: Path):
    with pytest.raises(AutokernelError, match="nothing to resume"):
        run_loop(task_in(repo), TunerProposer(), settings(resume=True))
