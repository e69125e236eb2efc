"""The shipped workflows, job by job, as a runner would run them, against the local GitHub over real HTTP.

`WorkflowRunner` reads a workflow file and runs one job's steps: `run:` scripts with bash; this action
(`uses: autokernel-ci/autokernel-ci@…`) through test_action's `ActionRunner`, with the step's `with:` as
inputs; and GitHub's own actions as what they do here: checkout (a `git checkout` of `ref:` in the
prepared workspace), setup-python (nothing), upload-artifact and download-artifact (a copy to and from
an artifacts folder). It records every step's environment, and for GitHub's actions their inputs, so a
test can say which step held which credential. Also: zizmor over the action, the workflows and what
`init` writes.
"""

# ruff: noqa: F811 - fixtures are imported, then named as the tests' arguments

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_action import (  # noqa: F401 - fixtures, used by name
    EXAMPLE,
    GATE_CONFIG,
    ActionRunner,
    Expression,
    action_dir,
    as_text,
    installed,
    interpolate,
    pull_request_event,
    truthy,
)
from test_github import BOT, NORM_KERNEL, TOKEN, actions_env, checkout, commit_on, git, server  # noqa: F401
from test_publish import DATE, fast_client, project  # noqa: F401

from autokernel_ci.github import GATE_COMMENT_MARKER, HUMAN_REVIEW_CONTEXT, PERF_CONTEXT

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
LLM_KEY = "sk-ant-L1feK3yN3verSh0wn0000"
PINNED_ACTION = "autokernel-ci/autokernel-ci@" + "5" * 40


@dataclass
class StepRecord:
    name: str
    uses: str
    env: dict[str, str]  # the step's process environment (for this action: each inner step's, merged below)
    inputs: dict[str, str] = field(default_factory=dict)  # `with:`, for GitHub's own actions
    inner: dict[str, dict[str, str]] = field(default_factory=dict)  # this action's steps: their environments


@dataclass
class JobRun:
    returncode: int
    steps: list[StepRecord]
    log: str
    summary: str

    def every_env(self) -> list[tuple[str, dict[str, str]]]:
        out = []
        for s in self.steps:
            out.append((s.name, s.env))
            out += [(f"{s.name} › {sid}", env) for sid, env in s.inner.items()]
        return out


class WorkflowRunner:
    def __init__(self, workflow: str, workspace: Path, temp: Path, action_dir: Path, installed: dict[str, str], *,
                 event: dict[str, Any], event_name: str, api_url: str, artifacts: Path,
                 secrets: dict[str, str] | None = None, variables: dict[str, str] | None = None) -> None:
        self.workflow = yaml.safe_load((WORKFLOWS / workflow).read_text())
        self.workspace, self.temp, self.action_dir, self.installed = workspace, temp, action_dir, installed
        self.event, self.event_name, self.api_url, self.artifacts = event, event_name, api_url, artifacts
        self.secrets, self.variables = secrets or {}, variables or {}

    def run(self, job_id: str) -> JobRun:
        job = self.workflow["jobs"][job_id]
        assert job.get("name") and job.get("timeout-minutes"), f"{job_id}: every job has a name and a timeout"
        github = {"token": TOKEN, "event": self.event, "event_name": self.event_name, "repository": "acme/models",
                  "workspace": str(self.workspace), "server_url": "https://github.com"}
        contexts: dict[str, Any] = {"github": github, "secrets": self.secrets, "vars": self.variables,
                                    "inputs": {}, "matrix": {}, "needs": {}, "steps": {},
                                    "runner": {"temp": str(self.temp)}, "env": {}}
        records, log, summary, failed, returncode = [], [], [], False, 0
        for n, step in enumerate(job["steps"]):
            sid = step.get("id", f"step{n}")
            condition = str(step.get("if", "success()"))
            if not truthy(Expression(re.sub(r"^\$\{\{|\}\}$", "", condition.strip()), contexts, failed).value()):
                continue
            env = {k: interpolate(as_text(v), contexts) for k, v in (step.get("env") or {}).items()}
            inputs = {k: interpolate(as_text(v), contexts) for k, v in (step.get("with") or {}).items()}
            uses = step.get("uses", "")
            record = StepRecord(step.get("name", uses or sid), uses, env, inputs)
            records.append(record)
            code, outputs = 0, {}
            if uses.startswith("autokernel-ci/autokernel-ci@"):
                temp = self.temp / f"step{n}"
                action = ActionRunner(self.action_dir, self.workspace, temp, self.event, token=TOKEN,
                                      event_name=self.event_name, env={"GITHUB_API_URL": self.api_url, **env})
                done = action.run({**inputs, "python": sys.executable}, installed=self.installed)
                record.inner = done.envs
                code, outputs = done.returncode, done.outputs
                log.append(done.log)
                summary.append(done.summary)
            elif uses.startswith("actions/checkout@"):
                if inputs.get("ref"):
                    git(self.workspace, "checkout", "-q", inputs["ref"])
            elif uses.startswith("actions/setup-python@"):
                pass
            elif uses.startswith("actions/upload-artifact@"):
                target = self.artifacts / inputs["name"]
                for line in inputs["path"].split("\n"):
                    source = self.workspace / line.strip()
                    if line.strip() and source.exists():
                        dest = target / (source.name if source.is_file() else "")
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        (shutil.copy2 if source.is_file() else
                         lambda s, d: shutil.copytree(s, d, dirs_exist_ok=True))(source, dest)
            elif uses.startswith("actions/download-artifact@"):
                pattern = inputs.get("pattern") or inputs["name"]
                found = sorted(self.artifacts.glob(pattern)) if self.artifacts.is_dir() else []
                for source in found:
                    dest = self.workspace / inputs["path"] / (source.name if "pattern" in inputs else "")
                    shutil.copytree(source, dest, dirs_exist_ok=True)
                code = 0 if found or step.get("continue-on-error") else 1
            elif "run" in step:
                script = self.temp / f"step{n}.sh"
                script.parent.mkdir(parents=True, exist_ok=True)
                script.write_text(step["run"])
                base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
                done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                                      cwd=self.workspace, env={**base, **env}, capture_output=True, text=True)
                record.env = {**base, **env}
                code = done.returncode
                log.append(done.stdout + done.stderr)
            else:
                pytest.fail(f"the simulated runner does not know {uses!r}")
            contexts["steps"][sid] = {"outputs": outputs, "outcome": "success" if code == 0 else "failure"}
            if code != 0 and not step.get("continue-on-error"):
                failed, returncode = True, code
        return JobRun(returncode, records, "\n".join(log), "".join(summary))


def assert_no_credential(run: JobRun, *secrets: str) -> None:
    for where, env in run.every_env():
        assert "GITHUB_TOKEN" not in env, f"{where} has GITHUB_TOKEN in its environment"
        for secret in (TOKEN, *secrets):
            assert not any(secret in v for v in env.values()), f"{where} holds a credential in its environment"


# ---------------------------------------------------------------------------------------------------
# The gate: measure (no credential) → report (trusted, workflow_run)


def gate_setup(checkout: Path) -> tuple[str, str]:
    (checkout / "kernels" / "norm.py").write_text(EXAMPLE)
    (checkout / ".autokernel.yml").write_text(GATE_CONFIG)
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "an RMSNorm kernel to guard")
    git(checkout, "push", "-q", "origin", "main")
    base = git(checkout, "rev-parse", "HEAD")
    git(checkout, "checkout", "-q", "-b", "feature")
    (checkout / "kernels" / "norm.py").write_text(EXAMPLE.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 256"))
    git(checkout, "commit", "-q", "-am", "rmsnorm: smaller blocks")
    head = git(checkout, "rev-parse", "HEAD")
    git(checkout, "push", "-q", "origin", "HEAD:refs/pull/1/head")  # a fork's commits, as GitHub keeps them
    return base, head


def workflow_run_event(head: str, head_repo: str, run_id: int = 4242) -> dict[str, Any]:
    return {"action": "completed", "workflow_run": {
        "id": run_id, "name": "autokernel-gate", "event": "pull_request", "conclusion": "success",
        "head_sha": head, "head_repository": {"full_name": head_repo}, "pull_requests": [],
        "html_url": f"https://github.com/acme/models/actions/runs/{run_id}"}}


def test_a_fork_pr_is_measured_with_no_credential_and_the_trusted_workflow_posts_its_comment(
        checkout, server, actions_env, installed, action_dir, tmp_path):
    base, head = gate_setup(checkout)
    number = server.add_fork_pr("mallory", "feature", head, title="rmsnorm: smaller blocks")
    event = pull_request_event(number, base, head, "feature")
    event["pull_request"]["head"]["repo"] = {"full_name": "mallory/models"}
    artifacts = tmp_path / "artifacts"
    secrets = {"AUTOKERNEL_TOKEN": "ghp_AppT0kenThatMustStayAway", "AUTOKERNEL_LLM_API_KEY": LLM_KEY}

    measure = WorkflowRunner("autokernel-gate.yml", checkout, tmp_path / "m", action_dir, installed, event=event,
                             event_name="pull_request", api_url=server.api_url, artifacts=artifacts,
                             secrets=secrets).run("measure")
    assert measure.returncode == 0, measure.log
    assert_no_credential(measure, *secrets.values())
    checkout_step = measure.steps[0]
    assert checkout_step.inputs["persist-credentials"] == "false" and "token" not in checkout_step.inputs
    assert sorted(p.name for p in (artifacts / "autokernel-gate").iterdir()) == [
        "gate.json", "gate.md", "pull_request.json"]
    assert server.comments_on(number) == [] and server.status_of(head, PERF_CONTEXT) is None  # nothing posted

    workspace = tmp_path / "hosted"
    workspace.mkdir()
    report = WorkflowRunner("autokernel-gate-report.yml", workspace, tmp_path / "r", action_dir, installed,
                            event=workflow_run_event(head, "mallory/models"), event_name="workflow_run",
                            api_url=server.api_url, artifacts=artifacts).run("report")
    assert report.returncode == 0, report.log
    (comment,) = server.comments_on(number)
    assert comment["body"].startswith(GATE_COMMENT_MARKER) and "rmsnorm" in comment["body"]
    status = server.status_of(head, PERF_CONTEXT)
    assert status["state"] == "success" and status["target_url"].endswith("/actions/runs/4242")
    assert "rmsnorm" in report.summary
    holders = [where for where, env in report.every_env() if env.get("GITHUB_TOKEN") == TOKEN]
    assert holders == ["Publish the comment and the autokernel/perf status › report"]
    assert server.violations == []


# ---------------------------------------------------------------------------------------------------
# Optimize: the loop job holds no GitHub credential; the publish job refuses a commit outside the kernel


def fake_python(tmp_path: Path) -> dict[str, str]:
    """An interpreter that records the environment it was started with, then does nothing."""
    record = tmp_path / "loop-env.json"
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\nimport json, os\njson.dump(dict(os.environ), open({str(record)!r}, 'w'))\n")
    script.chmod(0o755)
    return {"python": str(script), "record": str(record)}


def test_the_loop_job_gives_no_step_a_token_and_only_the_loop_the_llm_key(checkout, action_dir, tmp_path):
    (checkout / ".autokernel.yml").write_text(GATE_CONFIG)
    fake = fake_python(tmp_path)
    (checkout / "autokernel-out").mkdir()
    secrets = {"AUTOKERNEL_TOKEN": "ghp_AppT0kenThatMustStayAway", "AUTOKERNEL_LLM_API_KEY": LLM_KEY}
    run = WorkflowRunner("autokernel-optimize.yml", checkout, tmp_path / "t", action_dir, {"python": fake["python"]},
                         event={}, event_name="schedule", api_url="http://127.0.0.1:9", artifacts=tmp_path / "a",
                         secrets=secrets, variables={"AUTOKERNEL_LLM_MODEL": "anthropic/claude"}).run("loop")
    assert run.returncode == 0, run.log
    assert_no_credential(run, "ghp_AppT0kenThatMustStayAway")
    holders = [where for where, env in run.every_env() if any(LLM_KEY in v for v in env.values())]
    assert holders == ["Optimize › optimize"], holders
    loop_env = json.loads(Path(fake["record"]).read_text())  # the loop's own process
    assert loop_env["ANTHROPIC_API_KEY"] == LLM_KEY and "LLM_API_KEY" not in loop_env
    assert "GITHUB_TOKEN" not in loop_env and loop_env["AUTOKERNEL_LLM_MODEL"] == "anthropic/claude"
    assert LLM_KEY not in run.log


def test_the_publish_job_refuses_a_bundle_whose_commit_touches_a_workflow(project, server, actions_env, installed,
                                                                        action_dir, tmp_path):
    from test_plan_merge import record_shard_touching

    artifact = record_shard_touching(tmp_path, 0, "rmsnorm", {"kernels/rmsnorm.py": NORM_KERNEL,
                                                              ".github/workflows/x.yml": "on: push\n"})
    run = WorkflowRunner("autokernel-optimize.yml", project, tmp_path / "t", action_dir, installed, event={},
                         event_name="schedule", api_url=server.api_url, artifacts=artifact.parent).run("publish")
    assert run.returncode != 0
    assert "refused: the kept commit" in run.log and ".github/workflows/x.yml" in run.log
    assert server.open_pulls() == []
    assert "autokernel/" not in git(project, "ls-remote", "origin")  # nothing pushed


def test_the_publish_job_opens_the_pull_request_for_an_honest_bundle(project, server, actions_env, installed,
                                                                  action_dir, tmp_path):
    from test_plan_merge import record_shard

    artifact = record_shard(tmp_path, 0, "rmsnorm", "kernels/rmsnorm.py", NORM_KERNEL)
    run = WorkflowRunner("autokernel-optimize.yml", project, tmp_path / "t", action_dir, installed, event={},
                         event_name="schedule", api_url=server.api_url, artifacts=artifact.parent).run("publish")
    assert run.returncode == 0, run.log
    (pr,) = server.open_pulls()
    assert pr["head_ref"] == f"autokernel/optimize-{DATE}"


# ---------------------------------------------------------------------------------------------------
# Human review: recomputed on every push, never satisfied by the last pusher


def review_event(action: str, number: int, base: str, head: str, sender: str) -> dict[str, Any]:
    event = pull_request_event(number, base, head, "autokernel/rmsnorm-1")
    event["action"] = action
    event["sender"] = {"login": sender, "type": "Bot" if sender.endswith("[bot]") else "User"}
    return event


def test_a_push_by_a_person_makes_review_pending_and_the_pushers_own_approval_does_not_count(
        checkout, server, actions_env, installed, action_dir, tmp_path):
    base = git(checkout, "rev-parse", "HEAD")
    branch = "autokernel/rmsnorm-1"
    first = commit_on(checkout, branch, {"kernels/rmsnorm.py": NORM_KERNEL}, "autokernel: faster")
    git(checkout, "push", "-q", "origin", branch)
    server.add_token("ghs_B0tT0ken", BOT)
    number = server.add_fork_pr(BOT, branch, first)  # then made a same-repository pull request:
    server.repo.pulls[number].update(head_repo="acme/models", author=BOT)

    def review(action: str, sender: str) -> str:
        head = server.head_sha(number)
        run = WorkflowRunner("autokernel-review.yml", checkout, tmp_path / f"r{len(server.requests)}", action_dir,
                             installed, event=review_event(action, number, base, head, sender),
                             event_name="pull_request_target" if action != "submitted" else "pull_request_review",
                             api_url=server.api_url, artifacts=tmp_path / "a").run("human-review")
        assert run.returncode == 0, run.log
        assert git(checkout, "rev-parse", "HEAD") == base  # the base was checked out, never the pull request
        git(checkout, "checkout", "-q", "main")
        return server.combined_state(head, HUMAN_REVIEW_CONTEXT)

    assert review("opened", BOT) == "success"  # the bot's own low-risk change
    second = commit_on(checkout, branch, {"kernels/rmsnorm.py": NORM_KERNEL + "# tuned by hand\n"}, "by hand")
    git(checkout, "push", "-q", "origin", branch)
    assert review("synchronize", "alice") == "pending"  # a person pushed: review needed whatever the risk
    assert "pushed by @alice" in server.status_of(second, HUMAN_REVIEW_CONTEXT)["description"]
    server.add_review(number, "alice", "APPROVED", second)
    assert review("submitted", "alice") == "pending"  # the last pusher cannot approve her own push
    server.add_review(number, "mallory", "APPROVED", second)
    assert review("submitted", "mallory") == "pending"  # read access only
    server.add_review(number, "kernel-owner", "APPROVED", first)
    assert review("submitted", "kernel-owner") == "pending"  # an approval of an older commit
    server.add_review(number, "kernel-owner", "APPROVED", second)
    assert review("submitted", "kernel-owner") == "success"
    assert server.violations == []


def test_a_tensor_core_line_in_the_diff_fetched_from_the_api_needs_review_even_from_the_bot(
        checkout, server, actions_env, installed, action_dir, tmp_path):
    branch = "autokernel/rmsnorm-1"
    sha = commit_on(checkout, branch, {"kernels/rmsnorm.py": NORM_KERNEL + "# acc = tl.dot(a, b)\n"}, "faster")
    git(checkout, "push", "-q", "origin", branch)
    number = server.add_fork_pr(BOT, branch, sha)
    server.repo.pulls[number].update(head_repo="acme/models", author=BOT)
    run = WorkflowRunner("autokernel-review.yml", checkout, tmp_path / "r", action_dir, installed,
                         event=review_event("synchronize", number, git(checkout, "rev-parse", "main"), sha, BOT),
                         event_name="pull_request_target", api_url=server.api_url,
                         artifacts=tmp_path / "a").run("human-review")
    assert run.returncode == 0, run.log
    assert server.combined_state(sha, HUMAN_REVIEW_CONTEXT) == "pending"  # the body has no marker: the diff decided


# ---------------------------------------------------------------------------------------------------
# zizmor


def zizmor(*paths: Path, config: Path | None = None) -> list[dict[str, Any]]:
    binary = shutil.which("zizmor")
    if binary is None:
        pytest.fail("zizmor is needed: pip install zizmor")
    args = [binary, "--offline", "--format", "json", "--no-progress"]
    if config is not None:
        args += ["--config", str(config)]
    done = subprocess.run([*args, *map(str, paths)], capture_output=True, text=True)
    assert done.returncode in (0, 10, 11, 12, 13, 14), done.stderr  # 1x: findings of some severity
    return json.loads(done.stdout or "[]")


def severe(findings: list[dict[str, Any]]) -> list[str]:
    return [f"{f['ident']} {f['determinations']['severity']} {f['locations'][0]['symbolic']['key']}"
            for f in findings if f["determinations"]["severity"] in ("High", "Medium") and not f.get("ignored")]


def test_zizmor_finds_nothing_high_or_medium_in_the_action_and_the_workflows(tmp_path):
    # The templates name this action by its release tag; `init --action owner/repo@<sha>` pins it (next test).
    config = tmp_path / "zizmor.yml"
    config.write_text('rules:\n  unpinned-uses:\n    config:\n      policies:\n'
                      '        "autokernel-ci/autokernel-ci": ref-pin\n        "*": hash-pin\n')
    files = [ROOT / "action.yml", *sorted(WORKFLOWS.glob("*.yml"))]
    assert severe(zizmor(*files, config=config)) == []


def test_zizmor_finds_nothing_high_or_medium_in_what_init_writes(tmp_path):
    from autokernel_ci.commands.init import init_repository

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    init_repository(repo, action=PINNED_ACTION, action_version="v0.1.0", matrix=True, codeowners=["@acme/kernels"])
    written = sorted((repo / ".github" / "workflows").glob("*.yml")) + [repo / ".github" / "dependabot.yml"]
    assert severe(zizmor(*written)) == []
    gate = (repo / ".github" / "workflows" / "autokernel-gate.yml").read_text()
    assert f"uses: {PINNED_ACTION} # v0.1.0" in gate


def test_zizmor_would_catch_an_unpinned_action_and_a_pwn_request(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: pull_request_target\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
                   "    steps:\n      - uses: actions/checkout@v5\n        with:\n"
                   "          ref: ${{ github.event.pull_request.head.sha }}\n")
    idents = {f["ident"] for f in zizmor(bad)}
    assert {"unpinned-uses", "dangerous-triggers"} <= idents


def test_every_shipped_uses_is_pinned_by_sha_with_its_version_in_a_comment():
    for path in [ROOT / "action.yml", *sorted(WORKFLOWS.glob("*.yml"))]:
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(?:- )?uses:\s*(\S+)(.*)$", line)
            if not match or match.group(1).startswith("autokernel-ci/autokernel-ci@"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", match.group(1)), f"{path.name}: {line.strip()}"
            assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", match.group(2)), f"{path.name}: {line.strip()}"


def test_the_matrix_workflow_has_a_concurrency_group_and_the_gate_and_optimize_use_different_runner_labels():
    matrix = yaml.safe_load((WORKFLOWS / "autokernel-optimize-matrix.yml").read_text())
    assert matrix["concurrency"]["group"] == "autokernel-optimize"
    gate = yaml.safe_load((WORKFLOWS / "autokernel-gate.yml").read_text())
    optimize = yaml.safe_load((WORKFLOWS / "autokernel-optimize.yml").read_text())
    assert gate["jobs"]["measure"]["runs-on"] != optimize["jobs"]["loop"]["runs-on"]
    assert gate["jobs"]["measure"]["permissions"] == {"contents": "read"}
    assert optimize["jobs"]["loop"]["permissions"] == {"contents": "read"}
    assert "pull_request_target" not in gate[True] and set(gate[True]) == {"pull_request"}


def test_the_readmes_copy_paste_gate_workflows_are_the_shipped_ones():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n# \.github/workflows/(\S+)\n(.*?)```", readme, re.S)
    assert [name for name, _ in blocks] == ["autokernel-gate.yml", "autokernel-gate-report.yml"]
    for name, text in blocks:
        assert yaml.safe_load(text) == yaml.safe_load((WORKFLOWS / name).read_text()), name


def test_every_job_has_a_name_a_timeout_and_explicit_permissions():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {}, path.name
        for job_id, job in workflow["jobs"].items():
            assert job.get("name") and isinstance(job.get("timeout-minutes"), int), f"{path.name}:{job_id}"
            assert "permissions" in job, f"{path.name}:{job_id}"
            if any("self-hosted" in str(label) for label in job.get("runs-on", [])):
                writes = {k for k, v in job["permissions"].items() if v == "write"}
                assert not writes and "secrets.AUTOKERNEL_TOKEN" not in json.dumps(job), f"{path.name}:{job_id}"
