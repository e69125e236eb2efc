"""github.py against a local GitHub: PyGithub over real HTTP, pushes to a local bare `origin`.

Every test runs with DEBUG logging captured and ends by checking that the token appears in no log,
no output and no exception; the server checks every request's shape and the fixture fails the test
if any request was one GitHub would refuse, or if the bot ever merged.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import traceback
from pathlib import Path

import github  # noqa: F401 - imported first: importing it resets the "github" logger to INFO
import pytest
from github_server import FakeGitHub

from autokernel_ci.errors import GitError, GitHubError
from autokernel_ci.github import (
    GATE_COMMENT_MARKER,
    HIGH_RISK_MARKER,
    HUMAN_REVIEW_CONTEXT,
    PERF_CONTEXT,
    Annotation,
    GitHubClient,
    PartialUpdateError,
    RequestPolicy,
    annotate_error,
    owners_for,
    parse_codeowners,
    pr_from_event,
)
from autokernel_ci.report.risk_md import RISK_SECTION_MARKER
from autokernel_ci.risk import RiskConfig, classify

TOKEN = "ghs_Zx81TqS3cr3tV4lue0fTheT0ken9876"  # the secret that must never show up anywhere
READ_TOKEN = "ghs_R34d0nlyT0kenV4lue5432"
PAT_READ_TOKEN = "ghp_Us3rR34d0nlyT0ken1234"
BOT = "github-actions[bot]"
DATA = Path(__file__).parent / "data"
FAST = RequestPolicy(attempts=4, backoff_s=0.01, backoff_max_s=0.05, secondary_rate_wait_s=0.05,
                     max_rate_limit_wait_s=5, seconds_between_requests=0, seconds_between_writes=0, timeout_s=10,
                     per_page=20)

CODEOWNERS = """\
# Default owner, then more specific rules below: the last match wins.
*                 @lead
*.md              @docs-writer
/kernels/         @kernel-owner @acme/kernels
kernels/matmul*   @alice @ghost-user someone@example.com
/kernels/generated/
"""

NORM_KERNEL = """\
import triton
import triton.language as tl


@triton.jit
def rmsnorm_kernel(X, Y, W, stride, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * stride + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    rms = tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(Y + row * stride + cols, x / rms * tl.load(W + cols, mask=cols < n_cols), mask=cols < n_cols)
"""

MATMUL_KERNEL = """\
import triton
import triton.language as tl


@triton.jit
def matmul_kernel(A, B, C, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(A + k)
        b = tl.load(B + k)
        acc += tl.dot(a, b, input_precision="tf32")
    tl.store(C, acc)
"""


# ---------------------------------------------------------------------------------------------------
# Fixtures: a git repository with a bare origin, the server, the Actions environment, the client


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clone of a bare `origin` whose main holds CODEOWNERS and two kernels."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "config", "user.name", "autokernel")
    git(work, "config", "user.email", "autokernel@example.com")
    git(work, "checkout", "-q", "-b", "main")
    (work / ".github").mkdir()
    (work / ".github" / "CODEOWNERS").write_text(CODEOWNERS)
    (work / "kernels").mkdir()
    (work / "kernels" / "rmsnorm.py").write_text(NORM_KERNEL.replace("tl.sqrt", "tl.math.sqrt"))
    (work / "kernels" / "matmul_tl.py").write_text(MATMUL_KERNEL.replace(', input_precision="tf32"', ""))
    (work / "README.md").write_text("# models\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    git(work, "push", "-q", "origin", "main")
    return work


def commit_on(work: Path, branch: str, files: dict[str, str], message: str) -> str:
    existing = git(work, "branch", "--list", branch)
    git(work, "checkout", "-q", *([branch] if existing else ["-b", branch, "main"]))
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    sha = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "main")
    return sha


def origin_sha(work: Path, branch: str) -> str | None:
    result = subprocess.run(["git", "--git-dir", str(work.parent / "origin.git"), "rev-parse", "--verify", "-q",
                             f"refs/heads/{branch}"], capture_output=True, text=True)
    return result.stdout.strip() or None


def diff_of(work: Path, branch: str) -> str:
    return git(work, "diff", f"main...{branch}")


@pytest.fixture
def server(checkout: Path):
    srv = FakeGitHub("acme", "models", origin=checkout.parent / "origin.git").start()
    srv.add_token(TOKEN, BOT)
    srv.add_token(READ_TOKEN, BOT, write=False)
    srv.add_token(PAT_READ_TOKEN, "mallory", write=False, kind="user")
    for login, permission in [("lead", "admin"), ("kernel-owner", "maintain"), ("alice", "write"),
                              ("mallory", "read"), ("docs-writer", "triage")]:
        srv.add_collaborator(login, permission)
    srv.teams = {"kernels"}
    yield srv
    srv.stop()
    assert srv.violations == [], "requests GitHub would refuse"
    assert not srv.calls("PUT", r"/merge$"), "the bot must never merge"


@pytest.fixture
def actions_env(server: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models", "GITHUB_API_URL": server.api_url,
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def client(actions_env: dict[str, str]) -> GitHubClient:
    return GitHubClient.from_env(policy=FAST)


@pytest.fixture(autouse=True)
def token_never_leaks(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="github")  # PyGithub logs each request with its headers
    yield
    out, err = capsys.readouterr()
    summary = tmp_path / "summary.md"
    texts = [caplog.text, out, err, summary.read_text() if summary.exists() else ""]
    for secret in (TOKEN, READ_TOKEN, PAT_READ_TOKEN):
        assert all(secret not in text for text in texts), "a token reached the logs or the output"


def assert_clean(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    for secret in (TOKEN, READ_TOKEN, PAT_READ_TOKEN):
        assert secret not in text and secret not in repr(exc)


# ---------------------------------------------------------------------------------------------------
# The optimization pull request


def test_opens_pr_after_pushing_branch_with_labels_and_low_risk_status(client, server, checkout):
    sha = commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "rmsnorm: one pass")
    risk = classify("norm", diff_of(checkout, "autokernel/exp-1"))
    assert not risk.is_high

    ref = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "autokernel: rmsnorm 1.4x faster",
                                   "Benchmarks…", risk=risk)

    assert ref.created and ref.number == 1 and ref.head_sha == sha
    assert origin_sha(checkout, "autokernel/exp-1") == sha
    pr = server.pull(1)
    assert (pr["head_ref"], pr["base_ref"]) == ("autokernel/exp-1", "main")
    assert pr["title"] == "autokernel: rmsnorm 1.4x faster"
    assert pr["labels"] == ["autokernel", "performance", "autokernel: low-risk"]
    assert pr["requested_reviewers"] == [] and HIGH_RISK_MARKER not in pr["body"]
    assert server.combined_state(sha, HUMAN_REVIEW_CONTEXT) == "success"
    assert ref.url.endswith("/acme/models/pull/1")
    assert {r.auth_scheme for r in server.requests} == {"token"}


def test_rerun_updates_the_open_pr_instead_of_opening_a_twin(client, server, checkout):
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "first")
    first = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "title one", "body one")
    same = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "title one", "body one")
    sha = commit_on(checkout, "autokernel/exp-1", {"kernels/extra.py": "x = 1\n"}, "second")
    second = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "title two", "body two")

    assert first.created and not same.created and not second.created
    assert first.number == same.number == second.number
    assert len(server.open_pulls()) == 1 and len(server.calls("POST", r"/pulls$")) == 1
    assert server.pull(first.number)["title"] == "title two"
    assert server.head_sha(first.number) == sha == second.head_sha
    assert len(server.calls("PATCH", r"/pulls/\d+$")) == 1  # the identical re-run changed nothing


def test_high_risk_pr_is_labelled_explained_and_requests_codeowners(client, server, checkout):
    branch = "autokernel/exp-mm"
    sha = commit_on(checkout, branch, {"kernels/matmul_tl.py": MATMUL_KERNEL, "kernels/rmsnorm.py": NORM_KERNEL},
                    "matmul: tf32 tiles")
    risk = classify("matmul", diff_of(checkout, branch))
    assert risk.is_high

    ref = client.open_or_update_pr(checkout, branch, "main", "autokernel: matmul", "Benchmarks…", risk=risk)

    pr = server.pull(ref.number)
    assert "autokernel: needs-human-review" in pr["labels"] and "autokernel: low-risk" not in pr["labels"]
    # kernels/matmul* → alice (ghost-user is not a collaborator, e-mails cannot be requested);
    # kernels/rmsnorm.py → /kernels/ → kernel-owner and the acme/kernels team.
    assert pr["requested_reviewers"] == ["alice", "kernel-owner"]
    assert pr["requested_teams"] == ["kernels"]
    assert set(ref.reviewers) == {"alice", "kernel-owner", "acme/kernels"}
    assert RISK_SECTION_MARKER in pr["body"] and "Why this is high risk" in pr["body"]
    assert "kernels/matmul_tl.py:11" in pr["body"] and 'tl.dot(a, b, input_precision="tf32")' in pr["body"]
    assert HIGH_RISK_MARKER in pr["body"]
    assert server.combined_state(sha, HUMAN_REVIEW_CONTEXT) == "pending"


def test_fallback_reviewers_when_codeowners_names_nobody(client, server, checkout):
    branch = "autokernel/gen"
    commit_on(checkout, branch, {"kernels/generated/mm.py": "acc += tl.dot(a, b)\n"}, "generated")
    config = RiskConfig(fallback_reviewers=("lead",))
    risk = classify("matmul", diff_of(checkout, branch), config)
    ref = client.open_or_update_pr(checkout, branch, "main", "t", "b", risk=risk, risk_config=config)
    assert server.pull(ref.number)["requested_reviewers"] == ["lead"]


def test_risk_label_follows_the_latest_classification(client, server, checkout):
    branch = "autokernel/exp-2"
    commit_on(checkout, branch, {"kernels/matmul_tl.py": MATMUL_KERNEL}, "tf32")
    client.open_or_update_pr(checkout, branch, "main", "t", "b", risk=classify("norm", diff_of(checkout, branch)))
    commit_on(checkout, branch, {"kernels/matmul_tl.py": MATMUL_KERNEL.replace(', input_precision="tf32"', "")
                                 .replace("tl.dot(a, b)", "a * b")}, "plain")
    ref = client.open_or_update_pr(checkout, branch, "main", "t", "b", risk=classify("norm", diff_of(checkout, branch)))
    assert server.pull(ref.number)["labels"] == ["autokernel", "performance", "autokernel: low-risk"]


def test_human_review_stays_pending_until_a_writer_approves_the_current_head(client, server, checkout):
    branch = "autokernel/exp-mm"
    sha1 = commit_on(checkout, branch, {"kernels/matmul_tl.py": MATMUL_KERNEL}, "tf32")
    risk = classify("matmul", diff_of(checkout, branch))
    number = client.open_or_update_pr(checkout, branch, "main", "t", "b", risk=risk).number
    assert server.combined_state(sha1, HUMAN_REVIEW_CONTEXT) == "pending"

    server.add_review(number, BOT, "APPROVED")  # the bot itself: never counts
    server.add_review(number, "mallory", "APPROVED")  # read access only
    server.add_review(number, "ghost-user", "APPROVED")  # not a collaborator
    server.add_review(number, "alice", "COMMENTED")
    assert client.evaluate_human_review(number) == "pending"

    server.add_review(number, "alice", "APPROVED")
    assert client.evaluate_human_review(number) == "success"
    assert server.status_of(sha1, HUMAN_REVIEW_CONTEXT)["description"].startswith("approved by @alice")

    # A new push: the approval was for sha1, so the new head waits for a new one.
    sha2 = commit_on(checkout, branch, {"kernels/matmul_tl.py": MATMUL_KERNEL + "# retuned\n"}, "retune")
    client.open_or_update_pr(checkout, branch, "main", "t", "b", risk=classify("matmul", diff_of(checkout, branch)))
    assert server.combined_state(sha2, HUMAN_REVIEW_CONTEXT) == "pending"
    assert client.evaluate_human_review(number) == "pending"

    server.add_review(number, "kernel-owner", "APPROVED")  # maintain role
    assert client.evaluate_human_review(number) == "success"
    server.add_review(number, "lead", "CHANGES_REQUESTED")
    assert client.evaluate_human_review(number) == "pending"
    assert "changes requested by @lead" in server.status_of(sha2, HUMAN_REVIEW_CONTEXT)["description"]
    assert not server.calls("POST", r"/reviews$"), "the bot never reviews its own pull request"


def test_removing_the_label_does_not_lift_the_review_requirement(client, server, checkout):
    branch = "autokernel/exp-mm"
    sha = commit_on(checkout, branch, {"kernels/matmul_tl.py": MATMUL_KERNEL}, "tf32")
    number = client.open_or_update_pr(checkout, branch, "main", "t", "b",
                                      risk=classify("matmul", diff_of(checkout, branch))).number
    server.pull(number)["labels"].remove("autokernel: needs-human-review")
    assert client.evaluate_human_review(number) == "pending"
    assert server.combined_state(sha, HUMAN_REVIEW_CONTEXT) == "pending"


def test_review_status_is_success_for_a_pr_that_is_not_high_risk(client, server, checkout):
    branch = "autokernel/exp-1"
    sha = commit_on(checkout, branch, {"kernels/rmsnorm.py": NORM_KERNEL}, "one pass")
    number = client.open_or_update_pr(checkout, branch, "main", "t", "b").number
    assert client.evaluate_human_review(number) == "success"
    assert server.combined_state(sha, HUMAN_REVIEW_CONTEXT) == "success"


# ---------------------------------------------------------------------------------------------------
# The gate on GitHub


def test_sticky_comment_is_edited_in_place_never_duplicated(client, server, checkout):
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    number = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b").number
    for i in range(25):  # more than one page (the client reads 20 a page here)
        server.add_comment(number, "alice", f"comment {i}")
    server.add_comment(number, "alice", f"> {GATE_COMMENT_MARKER}\n> quoting the bot")

    first = client.upsert_sticky_comment(number, GATE_COMMENT_MARKER, "| kernel | speedup |\n| rmsnorm | 1.4x |")
    for i in range(20):
        server.add_comment(number, "lead", f"later {i}")
    second = client.upsert_sticky_comment(number, GATE_COMMENT_MARKER, "| kernel | speedup |\n| rmsnorm | 1.1x |")
    third = client.upsert_sticky_comment(number, GATE_COMMENT_MARKER, "| kernel | speedup |\n| rmsnorm | 1.1x |")

    assert first.created and not second.created and second.edited and not third.edited
    assert first.id == second.id == third.id
    mine = [c for c in server.comments_on(number) if c["body"].startswith(GATE_COMMENT_MARKER)]
    assert len(mine) == 1 and mine[0]["login"] == BOT and "1.1x" in mine[0]["body"]
    assert len(server.calls("POST", r"/comments$")) == 1 and len(server.calls("PATCH", r"/comments/\d+$")) == 1


def test_publish_gate_sets_status_comment_summary_and_annotations(client, server, checkout, tmp_path, capsys):
    sha = commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    number = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b").number
    table = "| kernel | base | head | verdict |\n| --- | --- | --- | --- |\n| rmsnorm | 10 us | 14 us | slower |"

    client.publish_gate(number, sha, table, passed=False, description="rmsnorm 40% slower (p < 0.01)",
                        annotations=[Annotation("kernels/rmsnorm.py", 9, "40% slower than base\nmedian 14 us",
                                                title="autokernel: regression")])

    status = server.status_of(sha, PERF_CONTEXT)
    assert status["state"] == "failure" and status["description"] == "rmsnorm 40% slower (p < 0.01)"
    assert status["target_url"].endswith(f"#issuecomment-{server.comments_on(number)[0]['id']}")
    assert table in server.comments_on(number)[0]["body"]
    assert table in (tmp_path / "summary.md").read_text()
    out = capsys.readouterr().out
    assert ("::error file=kernels/rmsnorm.py,line=9,title=autokernel%3A regression::"
            "40% slower than base%0Amedian 14 us") in out.replace("%25", "%")
    assert TOKEN not in out

    client.publish_gate(number, sha, table.replace("slower", "ok"), passed=True, description="no regression")
    assert server.combined_state(sha, PERF_CONTEXT) == "success"
    assert len(server.comments_on(number)) == 1


def test_status_description_is_cut_to_githubs_limit(client, server, checkout):
    sha = commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    client.push_branch(checkout, "autokernel/exp-1")
    client.set_status(sha, PERF_CONTEXT, "pending", "measuring " * 40)
    assert len(server.status_of(sha, PERF_CONTEXT)["description"]) == 140
    with pytest.raises(ValueError):
        client.set_status(sha, PERF_CONTEXT, "passed", "no such state")


def test_annotation_escapes_workflow_command_characters():
    stream = io.StringIO()
    annotate_error("dir,with:odd/file.py", 3, "50% slower\r\nsee summary", stream=stream)
    assert stream.getvalue() == "::error file=dir%2Cwith%3Aodd/file.py,line=3::50%25 slower%0D%0Asee summary\n"


# ---------------------------------------------------------------------------------------------------
# Events and forks


def test_pr_from_event_reads_number_head_and_fork():
    assert pr_from_event(DATA / "pull_request_fork_event.json") == (
        7, "9f3c2b1a8e7d6c5b4a39281706f5e4d3c2b1a098", True)
    number, head, is_fork = pr_from_event(DATA / "pull_request_event.json")
    assert (number, is_fork) == (7, False)
    assert pr_from_event(DATA / "pull_request_review_event.json").number == 7


def test_pr_from_event_treats_a_deleted_fork_as_a_fork(tmp_path):
    event = json.loads((DATA / "pull_request_fork_event.json").read_text())
    event["pull_request"]["head"]["repo"] = None
    (tmp_path / "event.json").write_text(json.dumps(event))
    assert pr_from_event(tmp_path / "event.json").is_fork


def test_pr_from_event_explains_a_push_event():
    with pytest.raises(GitHubError, match="not about a pull request"):
        pr_from_event(DATA / "push_event.json")


def test_gate_on_a_fork_pr_explains_the_read_only_token(server, actions_env, monkeypatch, tmp_path, capsys):
    event = DATA / "pull_request_fork_event.json"
    number, head, is_fork = pr_from_event(event)
    server.add_fork_pr("contrib", "fast-norm", head, number=number)
    monkeypatch.setenv("GITHUB_TOKEN", READ_TOKEN)  # what GitHub gives a workflow on a fork PR
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    client = GitHubClient.from_env(policy=FAST)
    assert client.event_pull_request() == (number, head, True)

    with pytest.raises(GitHubError, match="fork contrib/models.*read-only token") as info:
        client.publish_gate(number, head, "| rmsnorm | slower |", passed=False, description="slower",
                            annotations=[Annotation("kernels/rmsnorm.py", 4, "slower")])
    assert_clean(info.value)
    assert "| rmsnorm | slower |" in (tmp_path / "summary.md").read_text()  # the verdict is still visible
    assert "::error file=kernels/rmsnorm.py,line=4::slower" in capsys.readouterr().out
    assert server.comments_on(number) == []


# ---------------------------------------------------------------------------------------------------
# Retries and rate limits


def test_5xx_answers_are_retried(client, server, checkout):
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    server.fail_next(2, 502)
    server.fail_next(1, 503, method="POST", path=r"/pulls$")
    ref = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    assert ref.created
    assert [r.status for r in server.calls("GET", r"^/repos/acme/models$")] == [502, 502, 200]
    assert [r.status for r in server.calls("POST", r"/pulls$")] == [503, 201]


def test_a_lost_create_response_does_not_open_a_second_pr(client, server, checkout):
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    server.fail_next(1, 502, method="POST", path=r"/pulls$", after=True)  # created, but the answer is lost
    ref = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    assert len(server.open_pulls()) == 1 and ref.number == server.open_pulls()[0]["number"]


def test_github_that_keeps_failing_gives_a_clear_error_and_pushes_nothing(client, server, checkout):
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    server.fail_next(10, 503)
    with pytest.raises(GitHubError, match=r"kept failing to read the repository .* \(HTTP 503\) after 4 tries") as info:
        client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    assert_clean(info.value)
    assert len(server.requests) == 4
    assert origin_sha(checkout, "autokernel/exp-1") is None


@pytest.mark.parametrize("retry_after, least_wait", [("1", 0.9), (None, 0.04)])
def test_secondary_rate_limit_is_retried_after_the_wait(client, server, checkout, retry_after, least_wait):
    sha = commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    client.push_branch(checkout, "autokernel/exp-1")
    server.secondary_rate_limit_next(1, retry_after=retry_after)
    client.set_status(sha, PERF_CONTEXT, "pending", "measuring")
    first, second = server.requests[0], server.requests[1]
    assert (first.status, second.status, second.path) == (403, 200, first.path)
    assert second.at - first.at >= least_wait
    assert server.combined_state(sha, PERF_CONTEXT) == "pending"


@pytest.mark.parametrize("status", [403, 429])
def test_primary_rate_limit_waits_for_the_reset(client, server, checkout, status):
    sha = commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    client.push_branch(checkout, "autokernel/exp-1")
    server.primary_rate_limit_next(1, status=status)
    client.set_status(sha, PERF_CONTEXT, "success", "ok")
    first, second = server.requests[0], server.requests[1]
    assert (first.status, second.status) == (status, 200)
    assert second.at - first.at >= 0.9  # the reset is at least one whole second away


def test_secondary_rate_limit_that_never_lifts_is_a_clear_error(client, server):
    server.secondary_rate_limit_next(10, retry_after=None)
    with pytest.raises(GitHubError, match="rate limit kept refusing the attempt to read the repository") as info:
        client.repo  # noqa: B018
    assert_clean(info.value)
    assert len(server.requests) == FAST.attempts


def test_bot_login_comes_from_the_user_endpoint_when_the_token_may_read_it(server, actions_env):
    server.add_token("ghp_W1thUs3rScop3T0ken", "autokernel-bot", kind="user")
    user_client = GitHubClient.from_env({**actions_env, "GITHUB_TOKEN": "ghp_W1thUs3rScop3T0ken"}, policy=FAST)
    assert user_client.bot_login == "autokernel-bot"
    assert GitHubClient.from_env(actions_env, policy=FAST).bot_login == BOT  # GITHUB_TOKEN cannot read /user


def test_primary_rate_limit_beyond_the_longest_wait_is_a_clear_error(server, actions_env, checkout):
    client = GitHubClient.from_env(policy=RequestPolicy(attempts=3, backoff_s=0.01, max_rate_limit_wait_s=0.1,
                                                        seconds_between_requests=0, seconds_between_writes=0))
    server.primary_rate_limit_next(1)
    with pytest.raises(GitHubError, match="rate limit.*resets in") as info:
        client.repo  # noqa: B018
    assert_clean(info.value)


# ---------------------------------------------------------------------------------------------------
# Bad input: each a clear sentence, nothing half-written


def test_missing_token_is_a_clear_error():
    with pytest.raises(GitHubError, match="GITHUB_TOKEN is not set"):
        GitHubClient.from_env({"GITHUB_REPOSITORY": "acme/models"})
    with pytest.raises(GitHubError, match="GITHUB_REPOSITORY is not set"):
        GitHubClient.from_env({"GITHUB_TOKEN": TOKEN})


def test_token_with_a_line_break_is_refused_without_echoing_it():
    with pytest.raises(GitHubError, match="whitespace or control characters") as info:
        GitHubClient("abc\r\nX-Injected: 1" + TOKEN, "acme/models")
    assert_clean(info.value)


def test_wrong_token_is_a_clear_error(server, actions_env, checkout):
    client = GitHubClient.from_env({**actions_env, "GITHUB_TOKEN": "ghs_not_the_right_one"}, policy=FAST)
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    with pytest.raises(GitHubError, match="rejected the token .*HTTP 401: Bad credentials") as info:
        client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    assert "ghs_not_the_right_one" not in str(info.value)
    assert origin_sha(checkout, "autokernel/exp-1") is None


def test_unknown_repository_is_a_clear_error(server, actions_env, checkout):
    client = GitHubClient.from_env({**actions_env, "GITHUB_REPOSITORY": "acme/no-such-repo"}, policy=FAST)
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    with pytest.raises(GitHubError, match="repository acme/no-such-repo was not found") as info:
        client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    assert_clean(info.value)
    assert origin_sha(checkout, "autokernel/exp-1") is None


def test_read_only_user_token_fails_before_pushing(server, actions_env, checkout):
    client = GitHubClient.from_env({**actions_env, "GITHUB_TOKEN": PAT_READ_TOKEN}, policy=FAST)
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    with pytest.raises(GitHubError, match="no write access to acme/models.*nothing was pushed") as info:
        client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    assert_clean(info.value)
    assert origin_sha(checkout, "autokernel/exp-1") is None


def test_read_only_actions_token_reports_what_was_done_and_a_rerun_completes(server, actions_env, checkout):
    sha = commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    read_only = GitHubClient.from_env({**actions_env, "GITHUB_TOKEN": READ_TOKEN}, policy=FAST)
    with pytest.raises(PartialUpdateError) as info:
        read_only.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    message = str(info.value)
    assert "pushed autokernel/exp-1" in message and "Re-run the same command" in message
    assert "not allowed to open a pull request" in message and "pull-requests: write" in message
    assert_clean(info.value)

    ref = GitHubClient.from_env(actions_env, policy=FAST).open_or_update_pr(
        checkout, "autokernel/exp-1", "main", "t", "b")
    assert ref.created and ref.head_sha == sha and len(server.open_pulls()) == 1


def test_push_without_origin_is_a_git_error(client, server, checkout):
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    git(checkout, "remote", "rename", "origin", "upstream")
    with pytest.raises(GitError, match="cannot push autokernel/exp-1"):
        client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", "b")
    assert server.open_pulls() == []


def test_enterprise_server_api_prefix(checkout, tmp_path, monkeypatch):
    ghes = FakeGitHub("acme", "models", origin=checkout.parent / "origin.git", prefix="/api/v3").start()
    try:
        ghes.add_token(TOKEN, BOT)
        env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models", "GITHUB_API_URL": ghes.api_url}
        sha = commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
        ref = GitHubClient.from_env(env, policy=FAST).open_or_update_pr(checkout, "autokernel/exp-1", "main", "t",
                                                                         "b", risk=classify("norm", ""))
        assert ref.created and ghes.combined_state(sha, HUMAN_REVIEW_CONTEXT) == "success"
        assert ghes.violations == []
    finally:
        ghes.stop()


def test_token_is_absent_from_every_error_and_log(server, actions_env, checkout, caplog, capsys):
    """Drive failures of every kind with DEBUG logging on; the token must appear nowhere."""
    commit_on(checkout, "autokernel/exp-1", {"kernels/rmsnorm.py": NORM_KERNEL}, "x")
    client = GitHubClient.from_env(policy=FAST)
    errors: list[BaseException] = []
    server.fail_next(10, 500)
    for attempt in (lambda: client.repo, lambda: client.set_status("0" * 40, PERF_CONTEXT, "success", TOKEN)):
        with pytest.raises(GitHubError) as info:
            attempt()
        errors.append(info.value)
    server.faults.clear()
    ref = client.open_or_update_pr(checkout, "autokernel/exp-1", "main", "t", f"body with {TOKEN}")
    client.upsert_sticky_comment(ref.number, GATE_COMMENT_MARKER, f"leaked? {TOKEN}")
    client.write_step_summary(f"summary {TOKEN}")
    client.annotate_error("f.py", 1, f"message {TOKEN}")
    assert TOKEN not in server.pull(ref.number)["body"]
    assert all(TOKEN not in c["body"] for c in server.comments_on(ref.number))
    for exc in errors:
        assert_clean(exc)
    assert TOKEN not in repr(client) and TOKEN not in str(vars(client))


# ---------------------------------------------------------------------------------------------------
# CODEOWNERS


@pytest.mark.parametrize("pattern, path, owned", [
    ("*", "any/where/file.py", True),
    ("*.js", "a/b/c.js", True),
    ("*.js", "a/b/c.jsx", False),
    ("docs/*", "docs/getting-started.md", True),
    ("docs/*", "docs/build-app/troubleshooting.md", False),
    ("docs/**", "docs/build-app/troubleshooting.md", True),
    ("/build/logs/", "build/logs/x.log", True),
    ("/build/logs/", "src/build/logs/x.log", False),
    ("apps/", "x/apps/y.py", True),
    ("**/logs", "a/b/logs/c.txt", True),
    ("/apps/github", "apps/github/x.py", True),
    ("/apps/github", "apps/githubx/x.py", False),
    ("/kernels/", "kernels/matmul.py", True),
    ("kernels/matmul*", "kernels/matmul_tl.py", True),
    ("kernels/matmul*", "src/kernels/matmul_tl.py", False),
])
def test_codeowners_patterns_follow_githubs_rules(pattern, path, owned):
    rules = parse_codeowners(f"{pattern} @owner\n")
    assert (owners_for(path, rules) == ("@owner",)) is owned


def test_codeowners_last_match_wins_and_empty_owners_disown():
    rules = parse_codeowners(CODEOWNERS)
    assert owners_for("src/train.py", rules) == ("@lead",)
    assert owners_for("docs/guide.md", rules) == ("@docs-writer",)
    assert owners_for("kernels/rmsnorm.py", rules) == ("@kernel-owner", "@acme/kernels")
    assert owners_for("kernels/matmul_tl.py", rules) == ("@alice", "@ghost-user", "someone@example.com")
    assert owners_for("kernels/generated/mm.py", rules) == ()
