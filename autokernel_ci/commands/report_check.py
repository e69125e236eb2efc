"""`autokernel-ci report-check`: publish a gate JSON, read as data, as a check run, a sticky comment and a status.

The reporting half of the gate. The measuring job (no token) runs `autokernel-ci gate --json gate.json`
and uploads it; a trusted job (on `workflow_run`, with `checks`, `statuses` and `pull-requests` write)
downloads it and runs

    autokernel-ci report-check --json gate.json --github

It imports nothing from the repository and runs nothing from the JSON. The commit and the pull request
come from the trusted event (or --sha/--pr), never from the JSON: a JSON about another commit is
refused, and a pull request whose head is not that commit gets no comment.

`--placeholder` (no --json) marks a new push as being gated: the sticky comment becomes "gating …
(commit)", the check run is in progress and the status pending, so the old verdict never reads as the
new commit's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from autokernel_ci.commands import read_json, write_text
from autokernel_ci.errors import AutokernelError, GitHubError

_LEVELS = {"error": "failure", "warning": "warning", "note": "notice"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report-check", help="publish a gate JSON as a check run with annotations, a sticky comment "
                                           "and a commit status (the trusted reporting job)",
                       description="Read a gate report (`autokernel-ci gate --json`) as data and publish it: the "
                                   "autokernel/perf check run with a summary and annotations at file and line, the "
                                   "sticky comment, the autokernel/perf status, the job summary; or, with "
                                   "--placeholder, mark a new push as being gated. Exits 1 when the gate blocked.")
    p.add_argument("--json", metavar="FILE", help="the gate report (gate --json)")
    p.add_argument("--placeholder", action="store_true",
                   help="post 'gating … (commit)' in place of the old verdict (no --json needed)")
    p.add_argument("--github", action="store_true",
                   help="publish to GitHub (needs GITHUB_TOKEN, GITHUB_REPOSITORY; the commit and pull request "
                        "from GITHUB_EVENT_PATH or --sha/--pr)")
    p.add_argument("--sha", metavar="SHA", help="the head commit (default: the event's; workflow_run.head_sha)")
    p.add_argument("--pr", type=int, metavar="N", help="the pull request (default: the event's)")
    p.add_argument("--sarif", metavar="OUT", help="write the findings as SARIF 2.1.0 here (for code scanning)")
    p.add_argument("--markdown", metavar="OUT", help="write the comment's Markdown here")
    p.add_argument("--history", metavar="DIR", help="earlier gate JSONs: the base's numerics come from them")
    p.add_argument("--config", metavar="FILE",
                   help="the base's .autokernel.yml: gate.numerics_factor and gate.numerics_blocking")
    p.add_argument("--plan", action="append", default=[], metavar="FILE",
                   help="a model's last profile (profile --json / plan.json), for the end-to-end estimate; repeatable")
    p.add_argument("--verify-base", action="append", default=[], metavar="FILE", help="verify --json of the base")
    p.add_argument("--verify-head", action="append", default=[], metavar="FILE", help="verify --json of the head")
    p.add_argument("--risk", metavar="FILE", help="a risk report (RiskReport JSON): its triggers become annotations")
    p.add_argument("--repo", metavar="DIR", help="a checkout to find each kernel's entry line in (read as text)")
    p.add_argument("--run-url", metavar="URL", help="the measuring run (default: the workflow_run's html_url)")
    p.add_argument("--artifact-url", metavar="URL", help="where the gate JSON is kept")
    p.add_argument("--chart-url", metavar="URL", help="the latest history chart")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.placeholder and not args.json:
        raise AutokernelError("report-check needs --json FILE (a gate report), or --placeholder")
    event = _event()
    sha, pr = _identity(args, event)
    run_url = args.run_url or _event_run_url(event)
    if args.placeholder:
        return _placeholder(args, sha, pr, run_url)
    report = load_gate_json(args.json)
    if sha and report.head_sha != sha:
        raise AutokernelError(f"{args.json} is the gate of {report.head_sha[:12] or 'an unnamed commit'}, not of the "
                              f"commit being reported ({sha[:12]}): refusing to publish another commit's verdict")
    sha = sha or report.head_sha
    context, findings = build_context(args, report, run_url)
    from autokernel_ci.report.gate_md import headline, render_markdown, status_description

    markdown = render_markdown(report, context)
    if args.markdown:
        write_text(args.markdown, markdown)
    if args.sarif:
        from autokernel_ci import __version__
        from autokernel_ci.report.sarif import to_sarif

        write_text(args.sarif, json.dumps(to_sarif(findings, tool_version=__version__, base_sha=report.base_sha,
                                                   head_sha=report.head_sha), indent=1) + "\n")
    blocked = not report.passed or any(n.blocking for n in context.numerics)
    print(headline(report, context.numerics))
    if args.github:
        _publish(args, report, sha, pr, markdown, findings, blocked, status_description(report), run_url)
    return 1 if blocked else 0


def load_gate_json(path: str):
    """The GateReport in `path`; one clear error when it is missing or not a gate report."""
    from autokernel_ci.gate import GateReport

    data = read_json(path)
    if data is None:
        raise AutokernelError(f"gate JSON not found: {path}")
    try:
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        report = GateReport.from_dict(data)
        if not isinstance(report.head_sha, str) or not isinstance(report.verdicts, list):
            raise TypeError("head_sha or verdicts of the wrong type")
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise AutokernelError(f"{path} is not a gate report (`autokernel-ci gate --json`): "
                              f"{str(exc).splitlines()[0][:200]}") from None
    return sanitized(report)


_TASK_NAME = re.compile(r"[A-Za-z0-9_.:+-]{1,100}")


def _plain(text: Any, limit: int = 2000) -> str:
    """Text from the JSON made inert in Markdown: no mentions, no HTML, no code-span breakout, bounded."""
    text = " ".join(str(text if text is not None else "").split())[:limit]
    return text.replace("`", "'").replace("<", "&lt;").replace(">", "&gt;").replace("@", "@\u200b")


def sanitized(report):
    """The report with every string a comment shows made inert: the measuring job ran the pull request's code,
    so its JSON may carry mentions, HTML or links meant for the reviewers. Task names that are not names
    become `task-N`; paths that leave the repository are dropped."""
    from dataclasses import replace

    from autokernel_ci.report.sarif import safe_path

    verdicts = []
    for i, task in enumerate(report.verdicts):
        name = task.task if isinstance(task.task, str) and _TASK_NAME.fullmatch(task.task) else f"task-{i + 1}"
        verdicts.append(replace(task, task=name, reason=_plain(task.reason), path=safe_path(task.path),
                                head_message=_plain(task.head_message), base_message=_plain(task.base_message)))
    unchanged = [n if isinstance(n, str) and _TASK_NAME.fullmatch(n) else "task" for n in report.unchanged]
    return replace(report, verdicts=verdicts, unchanged=unchanged, notes=[_plain(n) for n in report.notes],
                   base=_plain(report.base, 100), head=_plain(report.head, 100), device=_plain(report.device, 200))


def build_context(args: argparse.Namespace, report, run_url: str | None):
    """The comment's links, numerics notes and model effects, and the findings for annotations and SARIF."""
    from autokernel_ci.report.gate_md import CommentContext
    from autokernel_ci.report.model_effect import model_effects
    from autokernel_ci.report.sarif import gate_findings

    numerics, extra = [], []
    if args.history:
        from autokernel_ci.report.history import load_reports, numerics_changes

        factor, blocking = _numerics_settings(args.config)
        history = load_reports(args.history)
        numerics = numerics_changes(report, history, factor, blocking)
    plans = [p for p in (read_json(f) for f in args.plan) if isinstance(p, dict)]
    verify_base = [r for f in args.verify_base for r in _records(read_json(f))]
    verify_head = [r for f in args.verify_head for r in _records(read_json(f))]
    models = model_effects(report, plans, verify_base, verify_head) if plans else []
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    commit_url = f"{server}/{repository}/commit" if re.fullmatch(r"[\w.-]+/[\w.-]+", repository) else None
    context = CommentContext(run_url=run_url, artifact_url=args.artifact_url, commit_url=commit_url,
                             chart_url=args.chart_url, numerics=numerics, models=models, extra=extra)
    risk = read_json(args.risk) if args.risk else None
    findings = gate_findings(report, risk=risk if isinstance(risk, dict) else None,
                             entry_lines=_entry_lines(args.repo, report) if args.repo else None, numerics=numerics)
    return context, findings


def _records(data: Any) -> list[dict]:
    return [d for d in (data if isinstance(data, list) else [data]) if isinstance(d, dict)]


def _numerics_settings(config: str | None) -> tuple[float, bool]:
    from autokernel_ci.config import GateSettings, load_config

    if not config:
        defaults = GateSettings()
        return defaults.numerics_factor, defaults.numerics_blocking
    cfg = load_config(config)
    return cfg.gate.numerics_factor, cfg.gate.numerics_blocking


def _entry_lines(repo: str, report) -> dict[str, int]:
    """Each kernel file's entry line (`def kernel_fn`, else the first `@triton.jit`), read as text."""
    from autokernel_ci.report.sarif import safe_path

    root = Path(repo).resolve()
    lines = {}
    for task in report.verdicts:
        path = safe_path(task.path)
        if path is None:
            continue
        file = (root / path).resolve()
        if not file.is_relative_to(root) or not file.is_file():
            continue
        try:
            text = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for pattern in (r"def\s+kernel_fn\b", r"@triton\.jit"):
            hit = next((i for i, line in enumerate(text, 1) if re.match(pattern, line.strip())), None)
            if hit:
                lines[path] = hit
                break
    return lines


# -- the trusted identity: the event, not the JSON ---------------------------------------------------


def _event() -> dict[str, Any]:
    path = os.environ.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    from autokernel_ci.github import read_event

    try:
        return read_event(path)
    except GitHubError as exc:
        raise AutokernelError(str(exc)) from None


def _identity(args: argparse.Namespace, event: dict[str, Any]) -> tuple[str | None, int | None]:
    sha, pr = args.sha, args.pr
    workflow_run = event.get("workflow_run") if isinstance(event.get("workflow_run"), dict) else None
    pull = event.get("pull_request") if isinstance(event.get("pull_request"), dict) else None
    if workflow_run is not None:
        sha = sha or workflow_run.get("head_sha")
        pulls = [p for p in workflow_run.get("pull_requests") or [] if isinstance(p, dict)]
        if pr is None and pulls:
            pr = pulls[0].get("number")
    elif pull is not None:
        sha = sha or ((pull.get("head") or {}).get("sha"))
        pr = pr if pr is not None else pull.get("number")
    if sha is not None and not re.fullmatch(r"[0-9a-f]{40}", str(sha)):
        raise AutokernelError(f"--sha must be a full 40-character commit SHA, got {sha!r}")
    if args.github and not sha:
        raise AutokernelError("no commit to report on: pass --sha, or run on a workflow_run or pull_request event")
    return sha, int(pr) if isinstance(pr, int) or (isinstance(pr, str) and pr.isdigit()) else None


def _event_run_url(event: dict[str, Any]) -> str | None:
    workflow_run = event.get("workflow_run")
    url = workflow_run.get("html_url") if isinstance(workflow_run, dict) else None
    return url if isinstance(url, str) and url.startswith("https://") else None


# -- publishing ----------------------------------------------------------------------------------------


def _client():
    from autokernel_ci.github import GitHubClient

    return GitHubClient.from_env()


def _open_pr_at(client, sha: str) -> int | None:
    """The open pull request whose head is `sha` (a fork's workflow_run event names none)."""
    with client._calling("list open pull requests", "pull-requests: read"):
        for pull in client.repo.get_pulls(state="open"):
            if pull.head.sha == sha:
                return pull.number
    return None


def _pr_is_at(client, pr: int, sha: str) -> bool:
    """The pull request's head is `sha` (a comment about another commit must not land on it)."""
    with client._calling(f"read pull request #{pr}", "pull-requests: read"):
        head = client.repo.get_pull(pr).head.sha
    if head != sha:
        print(f"autokernel-ci report-check: pull request #{pr} is at {head[:12]}, not {sha[:12]}: its comment is left "
              "for the gate of its current head", file=sys.stderr)
        return False
    return True


def _placeholder(args: argparse.Namespace, sha: str | None, pr: int | None, run_url: str | None) -> int:
    from autokernel_ci.github import GATE_COMMENT_MARKER, PERF_CONTEXT, publish_check_run
    from autokernel_ci.report.gate_md import render_placeholder

    if not sha:
        raise AutokernelError("--placeholder needs the commit: pass --sha, or run on a workflow_run or pull_request "
                              "event")
    text = render_placeholder(sha, run_url)
    if args.markdown:
        write_text(args.markdown, text)
    print(f"autokernel-ci gate: gating … ({sha[:7]})")
    if not args.github:
        return 0
    try:
        client = _client()
        publish_check_run(client, sha, title=f"gating … ({sha[:7]})", summary=text, conclusion=None,
                          details_url=run_url)
        client.set_status(sha, PERF_CONTEXT, "pending", f"gating {sha[:7]} …", target_url=run_url)
        if pr is not None and _pr_is_at(client, pr, sha):
            client.upsert_sticky_comment(pr, GATE_COMMENT_MARKER, text)
    except GitHubError as exc:
        print(f"autokernel-ci report-check: could not publish to GitHub: {exc}", file=sys.stderr)
        return 1
    return 0


def _publish(args, report, sha: str, pr: int | None, markdown: str, findings, blocked: bool, description: str,
             run_url: str | None) -> None:
    from autokernel_ci.github import GATE_COMMENT_MARKER, PERF_CONTEXT, CheckAnnotation, publish_check_run
    from autokernel_ci.report.gate_md import headline

    notes = [CheckAnnotation(f.file, f.line, f.message, _LEVELS.get(f.level, "notice"), f.title) for f in findings]
    failed = []

    def step(what: str, action):
        """One publishing step; a failure is said and the others still run (a missing permission for check
        runs must not also cost the comment and the status)."""
        try:
            return action()
        except GitHubError as exc:
            print(f"autokernel-ci report-check: could not {what}: {exc}", file=sys.stderr)
            failed.append(what)
            return None

    try:
        client = _client()
    except GitHubError as exc:
        raise AutokernelError(f"cannot publish to GitHub: {exc}") from None
    step("write the job summary", lambda: client.write_step_summary(markdown))
    check = step("publish the check run", lambda: publish_check_run(
        client, sha, title=headline(report)[:255], summary=markdown, conclusion="failure" if blocked else "success",
        annotations=notes, details_url=run_url))
    if pr is None:
        pr = step("find the pull request", lambda: _open_pr_at(client, sha))
    comment = None
    if pr is not None and step("read the pull request", lambda: _pr_is_at(client, pr, sha)):
        comment = step("comment", lambda: client.upsert_sticky_comment(pr, GATE_COMMENT_MARKER, markdown))
    elif pr is None:
        print(f"autokernel-ci report-check: no open pull request is at {sha[:12]}: the check run and status are "
              "posted, the comment is not", file=sys.stderr)
    step("set the status", lambda: client.set_status(
        sha, PERF_CONTEXT, "failure" if blocked else "success", description,
        target_url=(comment.url if comment else None) or (check.url if check else None) or run_url))
    if failed:
        raise AutokernelError(f"publishing to GitHub failed ({', '.join(failed)}); the other steps were done")
