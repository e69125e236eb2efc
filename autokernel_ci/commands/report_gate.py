"""`autokernel-ci report-gate`: publish a gate run's result from its artifact, in a trusted workflow.

Runs on `workflow_run` (after the measuring gate workflow), on a GitHub-hosted runner, with the token.
The measuring job ran the pull request's code without any token; what it uploaded is untrusted data:

1. `gate.json` and `pull_request.json` are validated against their schemas and every text in them is
   neutralized (`artifact.py`); the comment is rendered here from that data, never taken from `gate.md`;
2. the pull request the artifact names must be open with exactly the head commit and head repository
   GitHub recorded for the run (`workflow_run.head_sha`, `workflow_run.head_repository`): an artifact
   cannot steer the comment or the status to another pull request or commit;
3. a pull request that changes anything under `.github/` (or an `action.yml`, for a workflow that uses a
   local action) ran a measuring workflow it may have edited: its result is published as not trusted, a
   failing `autokernel/perf` that a maintainer has to look at;
4. the sticky comment, the `autokernel/perf` status (on the run's head commit) and the job summary.

Fork pull requests get their comment the same way: this workflow runs from the default branch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from autokernel_ci.errors import AutokernelError, GitHubError

NOT_TRUSTED = ("this pull request changes .github/ or an action: the gate ran workflows it edits, so its result is "
               "not trusted; a maintainer must review it")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report-gate", help="publish a gate run's artifact: sticky comment, autokernel/perf status",
                       description="Read the artifact of a measuring gate run (gate.json, pull_request.json) as "
                                   "data, check it against the workflow_run event in GITHUB_EVENT_PATH and the "
                                   "pull request on GitHub, and publish the comment, the autokernel/perf status "
                                   "and the job summary. Needs GITHUB_TOKEN and GITHUB_REPOSITORY.")
    p.add_argument("--artifact", required=True, metavar="DIR", help="where the gate run's artifact was downloaded")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.github import GitHubClient, read_event

    event_path = os.environ.get("GITHUB_EVENT_PATH", "")
    if not event_path:
        raise AutokernelError("GITHUB_EVENT_PATH is not set: report-gate runs in a workflow_run workflow")
    workflow_run = read_event(event_path).get("workflow_run")
    if not isinstance(workflow_run, dict) or not isinstance(workflow_run.get("head_sha"), str):
        raise AutokernelError(f"the event in {event_path} is not a workflow_run: run report-gate on `workflow_run` "
                              "events of the measuring gate workflow")
    client = GitHubClient.from_env()
    return report_gate(client, Path(args.artifact), workflow_run)


def report_gate(client: Any, artifact_dir: Path, workflow_run: dict[str, Any], stream=None) -> int:
    """Publish the artifact of `workflow_run`; the exit status of the command."""
    from autokernel_ci.artifact import ArtifactError, load_gate_artifact, neutralize
    from autokernel_ci.github import PERF_CONTEXT
    from autokernel_ci.report.gate_md import render_markdown, status_description

    stream = stream or sys.stdout
    head_sha = str(workflow_run["head_sha"])
    head_repo = str((workflow_run.get("head_repository") or {}).get("full_name") or "")
    run_url = str(workflow_run.get("html_url") or "") or None
    try:
        artifact = load_gate_artifact(artifact_dir)
    except ArtifactError as exc:
        # Without a valid artifact there is no trusted pull request number: only the commit gets the news.
        message = f"the measuring run left no valid result: {exc}"
        client.set_status(head_sha, PERF_CONTEXT, "failure", message, target_url=run_url)
        client.write_step_summary(f"## autokernel-ci gate: no valid result\n\n{neutralize(message)}\n")
        print(f"report-gate: {message}", file=stream)
        return 1
    number = int(artifact.pull_request["number"])
    pr = client.pull_request_summary(number)
    if pr["head_repo"].lower() != head_repo.lower():
        raise GitHubError(f"the artifact names pull request #{number}, whose head is in {pr['head_repo'] or '?'}, "
                          f"but the run was for {head_repo or '?'}: nothing published")
    if pr["head_sha"] != head_sha:
        print(f"report-gate: pull request #{number} moved on from {head_sha[:7]} to {pr['head_sha'][:7]}; a newer "
              "run reports on it; nothing published", file=stream)
        return 0
    report = artifact.report
    if report.head_sha != head_sha or artifact.pull_request["head_sha"] != head_sha:
        message = f"the artifact is about {report.head_sha[:7]}, not the run's commit {head_sha[:7]}; not published"
        client.set_status(head_sha, PERF_CONTEXT, "failure", message, target_url=run_url)
        print(f"report-gate: {message}", file=stream)
        return 1
    markdown = render_markdown(report)
    passed, description = report.passed, status_description(report)
    edits_workflows = [f for f in client.pull_request_files(number)
                       if f.startswith(".github/") or f.rsplit("/", 1)[-1] in ("action.yml", "action.yaml")]
    if edits_workflows:
        passed, description = False, NOT_TRUSTED
        shown = ", ".join(f"`{neutralize(f, 200)}`" for f in edits_workflows[:5])
        markdown = (f"> **Not trusted:** this pull request changes {shown}. The measuring workflow runs as the "
                    "pull request has it, so the result below may be its own invention. A maintainer must review "
                    "the change; the `autokernel/perf` status stays failing.\n\n" + markdown)
    comment = client.publish_gate(number, head_sha, markdown, passed, description, target_url=run_url)
    # A check run with the same verdict can be published here, from `report` and `head_sha` alone.
    print(f"report-gate: pull request #{number} at {head_sha[:7]}: {PERF_CONTEXT} "
          f"{'success' if passed else 'failure'} ({description}); comment {comment.url}", file=stream)
    return 0
