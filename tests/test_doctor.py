"""`autokernel-ci doctor`: each unsafe setting, answered by the local GitHub over HTTP, is reported with its fix;
a repository set up as the README says passes with exit 0."""

# ruff: noqa: F811 - fixtures are imported, then named as the tests' arguments

from __future__ import annotations

from pathlib import Path

import pytest
from test_github import actions_env, checkout, git, server  # noqa: F401
from test_publish import fast_client  # noqa: F401

from autokernel_ci.cli import main
from autokernel_ci.commands.init import init_repository

PIN = "autokernel-ci/autokernel-ci@" + "7" * 40
SAFE_RULES = [
    {"type": "required_status_checks", "ruleset_id": 1,
     "parameters": {"strict_required_status_checks_policy": False,
                    "required_status_checks": [{"context": "autokernel/perf"}]}},
    {"type": "pull_request", "ruleset_id": 1,
     "parameters": {"required_approving_review_count": 1, "require_code_owner_review": True,
                    "dismiss_stale_reviews_on_push": True, "require_last_push_approval": True,
                    "required_review_thread_resolution": False}},
]


@pytest.fixture
def safe(checkout: Path, server):
    """A repository set up as the README says: init's files, the ruleset, approval for every fork."""
    (checkout / ".github" / "CODEOWNERS").unlink()
    init_repository(checkout, action=PIN, action_version="v0.1.0", codeowners=["@acme/kernels"])
    server.repo.fork_pr_approval = "all_external_contributors"
    server.repo.rules = [dict(r) for r in SAFE_RULES]
    return checkout


def doctor(repo: Path, capsys) -> tuple[int, str]:
    code = main(["doctor", "--repo", str(repo)])
    return code, capsys.readouterr().out


def test_a_repository_set_up_as_the_readme_says_is_safe(safe, server, actions_env, capsys):
    code, out = doctor(safe, capsys)
    assert code == 0, out
    assert "UNSAFE" not in out and "every checked setting is safe" in out
    assert server.violations == []


def test_branch_protection_instead_of_a_ruleset_counts_too(safe, server, actions_env, capsys):
    server.repo.rules = []
    server.repo.protection = {
        "required_status_checks": {"strict": False, "contexts": ["autokernel/perf"], "checks": []},
        "required_pull_request_reviews": {"dismiss_stale_reviews": True, "require_code_owner_reviews": True,
                                          "require_last_push_approval": True, "required_approving_review_count": 1}}
    code, out = doctor(safe, capsys)
    assert code == 0, out


@pytest.mark.parametrize("policy", ["first_time_contributors", "first_time_contributors_new_to_github"])
def test_a_fork_approval_policy_short_of_all_external_contributors_is_unsafe(safe, server, actions_env, capsys,
                                                                           policy):
    server.repo.fork_pr_approval = policy
    code, out = doctor(safe, capsys)
    assert code == 1 and f"fork pull-request approval policy is {policy}" in out
    assert "Require approval for all external contributors" in out


def test_settings_the_token_cannot_read_are_unsafe_not_assumed_safe(safe, server, actions_env, capsys):
    server.repo.settings_readable = False
    code, out = doctor(safe, capsys)
    assert code == 1 and "could not be read" in out and "administration settings" in out


def test_a_default_branch_without_the_required_check_or_review_rules_is_unsafe(safe, server, actions_env, capsys):
    server.repo.rules = [SAFE_RULES[1] | {"parameters": {**SAFE_RULES[1]["parameters"],
                                                          "require_last_push_approval": False}}]
    code, out = doctor(safe, capsys)
    assert code == 1
    assert "autokernel/perf is not a required check on main" in out
    assert "do not require approval of the most recent push" in out and "Require approval of the most recent" in out


def test_a_kernel_file_without_a_code_owner_is_unsafe(safe, server, actions_env, capsys):
    (safe / ".autokernel.yml").write_text("version: 1\nkernels:\n  - {name: rmsnorm, path: kernels/rmsnorm.py, "
                                          "op: rmsnorm}\n")
    (safe / ".github" / "CODEOWNERS").write_text("/.autokernel.yml @acme/kernels\n/.github/ @acme/kernels\n")
    code, out = doctor(safe, capsys)
    assert code == 1 and "CODEOWNERS names no owner for kernels/rmsnorm.py" in out


def test_gate_and_optimize_on_the_same_runner_label_is_unsafe(safe, server, actions_env, capsys):
    gate = safe / ".github" / "workflows" / "autokernel-gate.yml"
    gate.write_text(gate.read_text().replace("AUTOKERNEL_GATE_RUNNER_LABEL || 'gpu-untrusted'",
                                             "AUTOKERNEL_RUNNER_LABEL || 'gpu'"))
    code, out = doctor(safe, capsys)
    assert code == 1 and "can run on the same runner" in out and "autokernel-gate.yml:measure" in out


def test_an_unpinned_action_is_unsafe(safe, server, actions_env, capsys):
    review = safe / ".github" / "workflows" / "autokernel-review.yml"
    review.write_text(review.read_text().replace(PIN + " # v0.1.0", "autokernel-ci/autokernel-ci@v0"))
    code, out = doctor(safe, capsys)
    assert code == 1 and "not pinned by commit SHA: autokernel-review.yml: autokernel-ci/autokernel-ci@v0" in out


def test_doctor_without_a_token_is_one_clear_line(safe, monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert main(["doctor", "--repo", str(safe)]) != 0
    assert "GITHUB_TOKEN is not set" in capsys.readouterr().err
    git(safe, "status")  # the checkout is untouched
