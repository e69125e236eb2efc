"""`autokernel-ci doctor`: read the repository's settings and say which make the workflows unsafe.

The workflows keep credentials away from pull-request code only when the repository is set up to match.
`doctor` reads, through the API (the token needs read access to the repository's administration
settings) and from the checkout:

- the fork pull-request approval policy: fork runs must wait for a maintainer (`all_external_contributors`);
- the default branch's protection or rulesets: `autokernel/perf` required, and reviews from code owners,
  stale approvals dismissed, and approval of the most recent push required;
- CODEOWNERS: every kernel file of `.autokernel.yml`, the config itself, `.github/workflows/` and
  CODEOWNERS have an owner;
- the runner labels of the workflows: the jobs that run pull-request code and the trusted self-hosted
  jobs must not be able to land on the same runner;
- every `uses:` pinned by a full commit SHA.

Each unsafe setting is printed with how to fix it; the exit status is 1 when any is found.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autokernel_ci.errors import GitHubError

SAFE_FORK_POLICY = "all_external_contributors"
REQUIRED_CHECK = "autokernel/perf"
SHA_PIN = re.compile(r"^[^@\s]+@[0-9a-f]{40}$")
DEFAULT_IN_EXPR = re.compile(r"\$\{\{.*?\|\|\s*'([^']*)'\s*\}\}")
SETTINGS_URL = "Settings > Actions > General > Approval for running fork pull request workflows from contributors"


@dataclass
class Finding:
    safe: bool
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"ok      {self.what}" if self.safe else f"UNSAFE  {self.what}\n        fix: {self.fix}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the repository's settings against what the workflows need to be safe",
                       description="Read the repository's settings through the API (fork-PR approval, required "
                                   "checks and reviews on the default branch) and the checkout (CODEOWNERS, the "
                                   "workflows' runner labels and pins); print each unsafe setting with how to fix "
                                   "it. Exits 1 when something is unsafe. Needs GITHUB_TOKEN (with read access to "
                                   "the repository's administration settings) and GITHUB_REPOSITORY.")
    p.add_argument("--repo", default=".", metavar="PATH", help="the checkout of the default branch (default: here)")
    p.add_argument("--config", metavar="FILE", help="config file (default: .autokernel.yml in the checkout)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.github import GitHubClient

    client = GitHubClient.from_env()
    repo = Path(args.repo)
    findings = diagnose(client, repo, Path(args.config) if args.config else None)
    for finding in findings:
        print(finding.line())
    unsafe = [f for f in findings if not f.safe]
    print(f"\n{len(unsafe)} unsafe setting(s)" if unsafe else "\nevery checked setting is safe")
    return 1 if unsafe else 0


def diagnose(client: Any, repo: Path, config: Path | None = None) -> list[Finding]:
    workflows = load_workflows(repo)
    return [fork_approval(client), *branch_rules(client), *codeowners_coverage(repo, config),
            *runner_labels(workflows), *pinned_actions(workflows)]


# -- settings through the API ---------------------------------------------------------------------------


def _read(client: Any, path: str, what: str) -> tuple[Any, str | None]:
    try:
        return client.read_settings(path, f"read {what}", "administration: read"), None
    except GitHubError as exc:
        return None, str(exc)


def fork_approval(client: Any) -> Finding:
    data, error = _read(client, "/actions/permissions/fork-pr-contributor-approval", "the fork PR approval policy")
    policy = (data or {}).get("approval_policy") if isinstance(data, dict) else None
    fix = (f"{SETTINGS_URL}: choose \"Require approval for all external contributors\", so no fork's workflow "
           "reaches the GPU runner before a maintainer has read its diff")
    if error or policy is None:
        return Finding(False, f"fork pull-request approval policy: could not be read ({error or 'no answer'})",
                       fix + "; give doctor a token that can read the repository's administration settings")
    if policy != SAFE_FORK_POLICY:
        return Finding(False, f"fork pull-request approval policy is {policy}: some forks' runs start unapproved", fix)
    return Finding(True, f"fork pull-request approval policy is {policy}")


def branch_rules(client: Any) -> list[Finding]:
    """Required checks and review rules on the default branch, from branch protection and rulesets together."""
    branch = client.repo.default_branch
    protection, p_error = _read(client, f"/branches/{branch}/protection", f"the protection of {branch}")
    rules, r_error = _read(client, f"/rules/branches/{branch}", f"the rulesets of {branch}")
    if p_error and r_error:
        fix = "give doctor a token that can read the repository's administration settings"
        return [Finding(False, f"the rules of {branch}: could not be read ({p_error})", fix)]
    checks: set[str] = set()
    review = {"code owners": False, "stale approvals dismissed": False, "approval of the most recent push": False}
    if isinstance(protection, dict):
        required = protection.get("required_status_checks") or {}
        checks |= set(required.get("contexts") or []) | {c.get("context") for c in required.get("checks") or []}
        reviews = protection.get("required_pull_request_reviews") or {}
        review["code owners"] |= bool(reviews.get("require_code_owner_reviews"))
        review["stale approvals dismissed"] |= bool(reviews.get("dismiss_stale_reviews"))
        review["approval of the most recent push"] |= bool(reviews.get("require_last_push_approval"))
    for rule in rules if isinstance(rules, list) else []:
        params = rule.get("parameters") or {}
        if rule.get("type") == "required_status_checks":
            checks |= {c.get("context") for c in params.get("required_status_checks") or []}
        elif rule.get("type") == "pull_request":
            review["code owners"] |= bool(params.get("require_code_owner_review"))
            review["stale approvals dismissed"] |= bool(params.get("dismiss_stale_reviews_on_push"))
            review["approval of the most recent push"] |= bool(params.get("require_last_push_approval"))
    where = f"Settings > Rules > Rulesets, a ruleset targeting {branch}"
    out = []
    if REQUIRED_CHECK in checks:
        out.append(Finding(True, f"{REQUIRED_CHECK} is a required check on {branch}"))
    else:
        out.append(Finding(False, f"{REQUIRED_CHECK} is not a required check on {branch}: a slower or wrong kernel "
                                  "can merge", f"{where}: \"Require status checks to pass\", add {REQUIRED_CHECK}"))
    missing = [name for name, on in review.items() if not on]
    if missing:
        out.append(Finding(False, f"pull requests into {branch} do not require {', '.join(missing)}",
                           f"{where}: \"Require a pull request before merging\" with \"Require review from Code "
                           "Owners\", \"Dismiss stale pull request approvals when new commits are pushed\" and "
                           "\"Require approval of the most recent reviewable push\""))
    else:
        out.append(Finding(True, f"pull requests into {branch} need code-owner review of their most recent push"))
    return out


# -- the checkout ---------------------------------------------------------------------------------------


def codeowners_coverage(repo: Path, config: Path | None) -> list[Finding]:
    from autokernel_ci.config import find_config, load_config
    from autokernel_ci.github import CODEOWNERS_LOCATIONS, owners_for, read_codeowners

    rules = read_codeowners(repo)
    config = config or find_config(repo)
    paths = [".github/workflows/autokernel-gate.yml", ".github/CODEOWNERS"]
    if config is not None:
        paths = [k.path for k in load_config(config).kernels] + [config.resolve().relative_to(repo.resolve())
                                                                 .as_posix()] + paths
    unowned = [p for p in paths if not owners_for(p, rules)]
    if not rules:
        return [Finding(False, f"there is no CODEOWNERS file ({', '.join(CODEOWNERS_LOCATIONS)})",
                        "run `autokernel-ci init` (it writes .github/CODEOWNERS), name your kernel owners in it, "
                        "and commit it")]
    if unowned:
        return [Finding(False, f"CODEOWNERS names no owner for {', '.join(unowned)}",
                        "add a line for each (`/kernels/ @your-org/kernel-owners`) to .github/CODEOWNERS")]
    return [Finding(True, f"CODEOWNERS covers the kernel files, the config and the workflows ({len(paths)} paths)")]


def load_workflows(repo: Path) -> dict[str, dict[str, Any]]:
    import yaml

    found = {}
    folder = repo / ".github" / "workflows"
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]) if folder.is_dir() else []:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            found[path.name] = data
    return found


def _triggers(workflow: dict[str, Any]) -> set[str]:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    if isinstance(on, str):
        return {on}
    if isinstance(on, list):
        return set(on)
    return set(on or {})


def _labels(job: dict[str, Any]) -> frozenset[str]:
    runs_on = job.get("runs-on")
    if isinstance(runs_on, dict):
        runs_on = runs_on.get("labels")
    items = runs_on if isinstance(runs_on, list) else [runs_on] if runs_on else []
    return frozenset(DEFAULT_IN_EXPR.sub(lambda m: m.group(1), str(x)) for x in items)


def runner_labels(workflows: dict[str, dict[str, Any]]) -> list[Finding]:
    untrusted, trusted = {}, {}
    for name, wf in workflows.items():
        runs_pr_code = "pull_request" in _triggers(wf)
        for job_id, job in (wf.get("jobs") or {}).items():
            labels = _labels(job) if isinstance(job, dict) else frozenset()
            if "self-hosted" not in labels:
                continue
            (untrusted if runs_pr_code else trusted)[f"{name}:{job_id}"] = labels
    out = []
    for u_name, u in untrusted.items():
        for t_name, t in trusted.items():
            if u <= t or t <= u:  # a runner with the larger set takes jobs of both
                out.append(Finding(False, f"{u_name} (pull-request code) and {t_name} (trusted) can run on the same "
                                          f"runner: labels {sorted(u)} and {sorted(t)}",
                                   "give the gate's runners a label of their own (AUTOKERNEL_GATE_RUNNER_LABEL, "
                                   "default gpu-untrusted), never on the optimize runners, and make them ephemeral"))
    if not out:
        shown = "; ".join(f"{k} {sorted(v)}" for k, v in {**untrusted, **trusted}.items()) or "no self-hosted job"
        out.append(Finding(True, f"pull-request jobs and trusted jobs use separate runner labels ({shown})"))
    return out


def pinned_actions(workflows: dict[str, dict[str, Any]]) -> list[Finding]:
    unpinned = []
    for name, wf in workflows.items():
        for job in (wf.get("jobs") or {}).values():
            uses = [job.get("uses")] if isinstance(job, dict) and job.get("uses") else []
            uses += [s.get("uses") for s in (job.get("steps") or []) if isinstance(s, dict) and s.get("uses")] \
                if isinstance(job, dict) else []
            for ref in uses:
                if not str(ref).startswith(("./", "docker://")) and not SHA_PIN.match(str(ref)):
                    unpinned.append(f"{name}: {ref}")
    if unpinned:
        return [Finding(False, f"{len(unpinned)} action(s) not pinned by commit SHA: {', '.join(unpinned[:6])}",
                        "pin each `uses:` to the full commit SHA of the release, with the version in a comment "
                        "(`actions/checkout@<sha> # v5.0.0`); .github/dependabot.yml keeps the pins up to date")]
    return [Finding(True, "every action is pinned by commit SHA")]

