"""`autokernel-ci gate`: base vs head on this machine; exit 1 on a confirmed regression or a wrong kernel."""

from __future__ import annotations

import argparse
import sys

from autokernel_ci.commands import at_least_one, positive_float, write_text
from autokernel_ci.errors import AutokernelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="gate a pull request: correctness of head, and base vs head timed interleaved",
                       description="Check base and head out as git worktrees, gate every changed kernel task: "
                                   "correctness of the head, then (on a GPU) base vs head timed in interleaved "
                                   "rounds in one sandboxed process. The policy (tasks, references, shapes, "
                                   "tolerances, threshold) is the base's config; a head that changes it, or "
                                   "removes a task, is blocked until someone with write access approves the head "
                                   "commit (checked with --github). Exits 1 on a confirmed regression, an "
                                   "incorrect head, a policy change not approved or a task that could not be "
                                   "checked; 2 on bad input.")
    p.add_argument("--base", required=True, metavar="REV", help="the base revision (branch, tag or SHA)")
    p.add_argument("--head", default="HEAD", metavar="REV", help="the head revision (default HEAD)")
    p.add_argument("--threshold", type=_fraction, default=None, metavar="FRACTION",
                   help="slowdown tolerated, as a fraction: 0.03 is 3 %% (default: gate.threshold of the base's "
                        "config, else 0.03); may tighten the base's, never loosen it; never below the measured noise")
    p.add_argument("--all", action="store_true", default=None, dest="all_tasks",
                   help="gate every task, not only those whose kernel (or a file it imports), reference, inputs or "
                        "config entry changed")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda if available; on cpu only correctness is gated)")
    p.add_argument("--config", metavar="FILE",
                   help="config file, relative to --repo (default: the base's .autokernel.yml)")
    p.add_argument("--repo", default=".", metavar="DIR", help="the git repository (default: the current folder)")
    p.add_argument("--time-cap-minutes", type=positive_float, default=None, metavar="MINUTES",
                   help="stop adding timing rounds after this long; undecided tasks are inconclusive "
                        "(default: gate.max_minutes of the base's config, else 10; may shorten it, never lengthen)")
    p.add_argument("--workers", type=at_least_one, default=None, metavar="N",
                   help="tasks gated at once, each wholly on one GPU (default: every visible GPU; 1 on the CPU)")
    p.add_argument("--json", metavar="OUT", help="write the gate report (every verdict and sample) as JSON here")
    p.add_argument("--markdown", metavar="OUT", help="write the Markdown table here (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--github", action="store_true",
                   help="publish to the pull request: job summary, annotations, sticky comment, autokernel/perf "
                        "status; a policy change is lifted when a writer other than the author approved the head "
                        "commit (needs GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_EVENT_PATH)")
    p.set_defaults(handler=run)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.03, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (0.03 is 3 %), got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.gate import run_gate
    from autokernel_ci.report.gate_md import print_gate_report, render_markdown

    try:
        report = run_gate(args.repo, args.base, args.head, threshold=args.threshold, all_tasks=args.all_tasks,
                          device=args.device, config=args.config,
                          time_cap_s=args.time_cap_minutes * 60.0 if args.time_cap_minutes else None,
                          on_event=_progress, workers=args.workers)
    except AutokernelError as exc:
        _explain_failure(args, exc)
        raise
    github = _github() if args.github else None
    if github is not None and report.needs_acceptance:
        accept_approved_policy(report, *github)
    print_gate_report(report)
    markdown = render_markdown(report)
    if args.json:
        write_text(args.json, report.to_json() + "\n")
    if args.markdown:
        write_text(args.markdown, markdown)
    if args.github:
        _publish(report, markdown, github)
    return report.exit_code


def accept_approved_policy(report, client, pr_number: int) -> bool:
    """Lift the report's policy-changed and removed verdicts when the pull request's current head is the gated
    commit and a user with write access, other than its author, approved that commit (the rule of
    `autokernel/human-review`); else say in a note why not. True when they were lifted."""
    from autokernel_ci.errors import GitHubError

    try:
        approved, why = client.head_approval(pr_number, report.head_sha)
    except GitHubError as exc:
        report.notes.append(f"the approvals of the pull request could not be read ({exc}): the policy change "
                            "still blocks")
        return False
    if approved:
        report.accept(why)
        report.notes.append(f"policy change accepted: {why}")
        return True
    if why.startswith("needs approval"):
        why = f"no approval of {report.head_sha[:7]} by a user with write access other than the author"
    report.notes.append(f"policy change not accepted: {why}")
    return False


def _github():
    """(client, pull request number) from the environment, or None after saying in one line why not."""
    from autokernel_ci.errors import GitHubError

    try:
        from autokernel_ci.github import GitHubClient

        client = GitHubClient.from_env()
        return client, client.event_pull_request().number
    except GitHubError as exc:
        print(f"autokernel-ci gate: could not publish to GitHub: {exc}", file=sys.stderr)
        return None


def _progress(message: str) -> None:
    print(f"gate: {message}", file=sys.stderr, flush=True)


def _explain_failure(args: argparse.Namespace, exc: AutokernelError) -> None:
    """Bad input still leaves an explanation where the job summary and the PR look."""
    text = (f"## autokernel-ci gate could not run\n\n```\n{exc}\n```\n\n"
            f"base `{args.base}`, head `{args.head}`. Fix the input above and re-run; nothing was measured.\n")
    if args.markdown:
        write_text(args.markdown, text)
    if args.github:
        _publish_text(text, passed=False, description=str(exc).splitlines()[0][:140])


def _publish(report, markdown: str, github=None) -> None:
    from autokernel_ci.report.gate_md import status_description

    annotations = []
    try:
        from autokernel_ci.github import Annotation

        annotations = [Annotation(file=v.path, line=None, title=f"autokernel-ci: {v.task} {v.verdict}",
                                  message=" ".join(v.reason.split()))
                       for v in report.verdicts if v.blocking and v.path]
    except ImportError:  # pragma: no cover - PyGithub is a dependency
        pass
    if github is not None:
        _publish_text(markdown, passed=report.passed, description=status_description(report),
                      annotations=annotations, github=github)


def _publish_text(markdown: str, passed: bool, description: str, annotations=(), github=None) -> None:
    """Publish through GitHubClient; a GitHub failure is printed in one line, never fatal to the outputs."""
    from autokernel_ci.errors import GitHubError

    github = github or _github()
    if github is None:
        return
    client, number = github
    try:
        pr = client.event_pull_request()
        client.publish_gate(number, pr.head_sha, markdown, passed, description, annotations=annotations)
    except GitHubError as exc:
        print(f"autokernel-ci gate: could not publish to GitHub: {exc}", file=sys.stderr)
