"""`report-gate` reads an artifact that pull-request code may have written: each attack, and the honest case.

The artifacts here are what a malicious measuring run could upload: a pass for another pull request,
text that mentions, links and embeds images, fields the gate never writes, a pass from a pull request
that rewrote the measuring workflow. The client is real (PyGithub over HTTP to the local GitHub).
"""

# ruff: noqa: F811 - fixtures are imported, then named as the tests' arguments

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from test_github import FAST, NORM_KERNEL, TOKEN, actions_env, checkout, commit_on, git, server  # noqa: F401

from autokernel_ci.artifact import gate_report_schema, neutralize
from autokernel_ci.commands.report_gate import NOT_TRUSTED, report_gate
from autokernel_ci.gate import GateReport, TaskVerdict
from autokernel_ci.github import GATE_COMMENT_MARKER, PERF_CONTEXT, GitHubClient


def client(actions_env) -> GitHubClient:
    return GitHubClient.from_env(actions_env, policy=FAST)


def pushed_pr(checkout: Path, server, files: dict[str, str], branch: str = "feature") -> tuple[int, str, str]:
    base = git(checkout, "rev-parse", "main")
    head = commit_on(checkout, branch, files, "change")
    git(checkout, "push", "-q", "origin", branch)
    number = server.add_fork_pr("acme", branch, head)
    server.repo.pulls[number]["head_repo"] = "acme/models"
    return number, base, head


def artifact(folder: Path, number: int, base: str, head: str, *, reason: str = "no slower shape",
             verdict: str = "pass", exit_code: int = 0, **extra) -> Path:
    report = GateReport(base="main", base_sha=base, head="feature", head_sha=head, device="cpu",
                        timings_measured=False, threshold=0.03, exit_code=exit_code,
                        verdicts=[TaskVerdict(task="rmsnorm", verdict=verdict, reason=reason,
                                              path="kernels/rmsnorm.py")])
    data = {**report.to_dict(), **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gate.json").write_text(json.dumps(data))
    (folder / "gate.md").write_text("![pwned](https://evil.example/x.png) @lead")  # never used
    (folder / "pull_request.json").write_text(json.dumps({"number": number, "base_sha": base, "head_sha": head,
                                                          "head_repo": "acme/models"}))
    return folder


def run_of(head: str, repo: str = "acme/models") -> dict:
    return {"id": 9, "event": "pull_request", "head_sha": head, "head_repository": {"full_name": repo},
            "html_url": "https://github.com/acme/models/actions/runs/9", "pull_requests": []}


def test_an_honest_pass_is_published_as_success_with_the_comment_rendered_from_the_data(
        checkout, server, actions_env, tmp_path):
    number, base, head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL})
    assert report_gate(client(actions_env), artifact(tmp_path / "a", number, base, head), run_of(head)) == 0
    (comment,) = server.comments_on(number)
    assert comment["body"].startswith(GATE_COMMENT_MARKER) and "evil.example" not in comment["body"]
    assert server.status_of(head, PERF_CONTEXT)["state"] == "success"
    assert server.violations == []


def test_text_in_the_artifact_cannot_mention_link_or_embed(checkout, server, actions_env, tmp_path):
    number, base, head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL})
    evil = ("@lead @acme/kernels see ![x](https://evil.example/p.png) [click](https://evil.example) "
            "<img src=x onerror=alert(1)> www.evil.example #1 `code` | cell")
    folder = artifact(tmp_path / "a", number, base, head, reason=evil, verdict="fail", exit_code=1)
    assert report_gate(client(actions_env), folder, run_of(head)) == 0
    body = server.comments_on(number)[0]["body"]
    for forbidden in ("@lead", "@acme/kernels", "](http", "<img", "https://evil", "www.evil", "#1 ", "`code`"):
        assert forbidden not in body, forbidden
    assert "lead" in body and "evil.example" in body  # still readable
    assert server.status_of(head, PERF_CONTEXT)["state"] == "failure"


def test_an_artifact_naming_another_pull_request_publishes_nothing_there(checkout, server, actions_env, tmp_path):
    victim, _, victim_head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL + "# v\n"}, "victim")
    attacker, base, head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL}, "attacker")
    # The attacker's run uploads a pass that names the victim's pull request and commit.
    folder = artifact(tmp_path / "a", victim, base, victim_head)
    result = report_gate(client(actions_env), folder, run_of(head))
    assert result == 0  # "moved on": the victim's head is not the run's commit
    assert server.comments_on(victim) == [] and server.status_of(victim_head, PERF_CONTEXT) is None
    assert server.comments_on(attacker) == []


def test_an_artifact_from_another_repository_is_refused(checkout, server, actions_env, tmp_path):
    number, base, head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL})
    with pytest.raises(Exception, match="nothing published"):
        report_gate(client(actions_env), artifact(tmp_path / "a", number, base, head), run_of(head, "mallory/models"))
    assert server.comments_on(number) == []


def test_an_artifact_about_another_commit_fails_the_status(checkout, server, actions_env, tmp_path):
    number, base, head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL})
    folder = artifact(tmp_path / "a", number, base, head)
    data = json.loads((folder / "gate.json").read_text())
    data["head_sha"] = base  # a pass measured on something else
    (folder / "gate.json").write_text(json.dumps(data))
    assert report_gate(client(actions_env), folder, run_of(head)) == 1
    assert server.status_of(head, PERF_CONTEXT)["state"] == "failure"
    assert server.comments_on(number) == []


@pytest.mark.parametrize("tamper, said", [
    (lambda d: d.update(extra_field="x"), "Additional properties"),
    (lambda d: d.update(exit_code="0"), "is not of type 'integer'"),
    (lambda d: d["verdicts"][0].update(verdict="pass; rm -rf /"), "values the gate never writes"),
    (lambda d: d.update(threshold=float("nan")), "not valid JSON"),
])
def test_an_artifact_that_does_not_match_the_schema_fails_the_status_with_the_reason(
        checkout, server, actions_env, tmp_path, tamper, said):
    number, base, head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL})
    folder = artifact(tmp_path / "a", number, base, head)
    data = json.loads((folder / "gate.json").read_text())
    tamper(data)
    (folder / "gate.json").write_text(json.dumps(data))
    printed = io.StringIO()
    assert report_gate(client(actions_env), folder, run_of(head), stream=printed) == 1
    status = server.status_of(head, PERF_CONTEXT)
    assert status["state"] == "failure" and status["description"].startswith("the measuring run left no valid")
    assert said in printed.getvalue()
    assert server.comments_on(number) == []


def test_a_missing_artifact_fails_the_status(checkout, server, actions_env, tmp_path):
    _, _, head = pushed_pr(checkout, server, {"kernels/rmsnorm.py": NORM_KERNEL})
    assert report_gate(client(actions_env), tmp_path / "nothing", run_of(head)) == 1
    assert "no valid result" in server.status_of(head, PERF_CONTEXT)["description"]


def test_a_pass_from_a_pull_request_that_edits_the_workflows_is_not_trusted(checkout, server, actions_env, tmp_path):
    files = {"kernels/rmsnorm.py": NORM_KERNEL, ".github/workflows/autokernel-gate.yml": "name: autokernel-gate\n"}
    number, base, head = pushed_pr(checkout, server, files)
    assert report_gate(client(actions_env), artifact(tmp_path / "a", number, base, head), run_of(head)) == 0
    status = server.status_of(head, PERF_CONTEXT)
    assert status["state"] == "failure" and status["description"] == NOT_TRUSTED
    assert "**Not trusted:**" in server.comments_on(number)[0]["body"]


def test_the_schema_covers_every_field_the_gate_writes_and_closes_every_object():
    schema = gate_report_schema()
    assert set(schema["properties"]) == set(GateReport.__dataclass_fields__)
    verdict = schema["properties"]["verdicts"]["items"]
    assert verdict["additionalProperties"] is False and "reason" in verdict["properties"]


def test_neutralize_keeps_ordinary_error_text_readable():
    text = "max abs err 3.1e-02 > atol 1e-05 at [3, 7]; see kernels/rmsnorm.py:12"
    out = neutralize(text)
    assert out.replace("\uff1e", ">").replace("\uff3b", "[").replace("\uff3d", "]") == text
    assert TOKEN not in out
