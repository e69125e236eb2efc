"""`autokernel-ci publish`: push an optimization run's experiment branch and open (or update) its pull request.

Reads the loop's output folder (`results.jsonl`, `best.json`, `experiments/<task>/<n>.json`; see
`loop.py`). Each task with at least one kept experiment has its own branch `autokernel/<task>-<date>`
and gets its own pull request:

1. the task's progress plot is committed on its branch as `.autokernel/progress-<task>.png`, through
   git plumbing, so the work tree and whatever is checked out stay as they are (a re-run with the
   same plot adds nothing; a newer plot replaces the previous plot commit at the branch's tip);
2. the branch's diff against the base (the plot left out) is classified by `risk.classify`;
3. the body is rendered by `report/pr_body.py`, and `GitHubClient.open_or_update_pr` pushes the
   branch and opens the pull request, or updates the one already open for that branch.

Every step can be re-run: after a failure the same command finishes the job. `--dry-run` prints the
body and what would happen, and needs neither a token nor network; it writes nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.commands import read_json
from autokernel_ci.errors import AutokernelError, GitError

if TYPE_CHECKING:
    from autokernel_ci.github import GitHubClient, PrRef
    from autokernel_ci.loop import LoopResult
    from autokernel_ci.report.pr_body import EndToEnd
    from autokernel_ci.risk import RiskConfig, RiskReport

PLOT_DIR = ".autokernel"
PLOT_TRAILER = "Autokernel-Plot"
DEFAULT_SERVER_URL = "https://github.com"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="push an optimization run's branch and open or update its pull request",
                       description="For each task of the run in DIR with a kept experiment: commit its progress "
                                   "plot on its experiment branch, classify the change's risk, push the branch to "
                                   "origin and open its pull request (or update the open one; never a second). "
                                   "Needs GITHUB_TOKEN and GITHUB_REPOSITORY, except with --dry-run. A verify "
                                   "result saved as DIR/verify.json (`autokernel-ci verify --json`) is quoted "
                                   "as the end-to-end speedup.")
    p.add_argument("--results", required=True, metavar="DIR", help="the output folder of `autokernel-ci optimize`")
    p.add_argument("--repo", metavar="PATH",
                   help="the repository the loop ran in (default: the one holding DIR, else the current directory)")
    p.add_argument("--base", metavar="BRANCH",
                   help="the branch to open the pull request against (default: the branch checked out, unless it "
                        "is an experiment branch; else origin's default branch; else main)")
    p.add_argument("--task", action="append", metavar="NAME", help="publish only this task (repeatable)")
    p.add_argument("--config", metavar="FILE", help="config file (default: .autokernel.yml in the repository)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the pull request body and what would happen; change nothing, need no token")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    publish_results(Path(args.results), repo_dir=Path(args.repo) if args.repo else None, base=args.base,
                    tasks=args.task, config_path=Path(args.config) if args.config else None, dry_run=args.dry_run)
    return 0


# -- the whole command, also called by `optimize --open-pr` ---------------------------------------------


@dataclass
class Publication:
    """One task's pull request: what was (or would be) sent, and what GitHub answered."""

    task: str
    branch: str
    base: str
    title: str
    body: str
    risk: RiskReport
    plot: str | None  # the plot's path on the branch
    pr: PrRef | None = None


def publish_results(out_dir: Path, *, repo_dir: Path | None = None, base: str | None = None,
                    tasks: list[str] | None = None, config_path: Path | None = None, dry_run: bool = False,
                    client: GitHubClient | None = None, stream=None) -> list[Publication]:
    """Publish every task of the run in `out_dir` that kept something; returns what was published."""
    from autokernel_ci.github import DEFAULT_PR_LABELS, GitHubClient

    stream = stream or sys.stdout
    out_dir = out_dir.resolve()
    results = load_run(out_dir)
    if tasks:
        unknown = sorted(set(tasks) - {r.task for r in results})
        if unknown:
            raise AutokernelError(f"{out_dir / 'results.jsonl'} has no experiments of {', '.join(unknown)}; it holds "
                                  f"{', '.join(r.task for r in results)}")
        results = [r for r in results if r.task in tasks]
    repo = _repo_root(repo_dir, out_dir)
    publishable = []
    for r in results:
        if r.kept:
            publishable.append(r)
        else:
            _say(stream, f"{r.task}: nothing to publish: no experiment was kept ({len(r.tried)} tried; stopped because "
                         f"{r.stop_reason or 'the run ended'}); no pull request")
    if not publishable:
        return []
    config_file = config_path or _find_config(repo)
    risk_config = load_risk_config(config_file)
    base = base or default_base(repo)
    if client is None and not dry_run:
        client = GitHubClient.from_env()  # no token, no repository: a clear error before anything is written
    html_url = client.repo.html_url.rstrip("/") if client is not None else _html_url_from_env(repo)
    published = []
    for r in publishable:
        _require_branch(repo, r.branch, out_dir)
        family, declared = _task_family(r.task, config_file)
        risk = _classify(repo, base, r, family, declared, risk_config)
        plot_rel = f"{PLOT_DIR}/progress-{_safe(r.task)}.png"
        plot_rel = plot_rel if dry_run else commit_plot(repo, r, plot_rel)
        head = _git(repo, "rev-parse", f"refs/heads/{r.branch}")
        ref = r.branch if dry_run else head
        body = _render(r, risk, risk_config, out_dir, html_url, ref, plot_rel)
        title = _title(r)
        publication = Publication(r.task, r.branch, base, title, body, risk, plot_rel)
        if dry_run:
            _print_dry_run(stream, publication, list(DEFAULT_PR_LABELS) + [risk.label(risk_config)])
        else:
            publication.pr = client.open_or_update_pr(repo, r.branch, base, title, body, DEFAULT_PR_LABELS, risk,
                                                      risk_config=risk_config)
            _print_published(stream, publication, risk_config)
        published.append(publication)
    return published


def _render(r: LoopResult, risk: RiskReport, risk_config: RiskConfig, out_dir: Path, html_url: str | None,
            ref: str, plot_rel: str | None) -> str:
    from autokernel_ci.report.pr_body import render_pr_body

    plot_url = f"{html_url}/raw/{ref}/{plot_rel}" if html_url and plot_rel else plot_rel
    blob_url = f"{html_url}/blob/{ref}" if html_url else None
    return render_pr_body([r], plot_url=plot_url, risk=risk, risk_config=risk_config, blob_url=blob_url,
                          end_to_end=end_to_end(out_dir, [r]), environment=_environment_extra([r]))


def _title(r: LoopResult) -> str:
    from autokernel_ci.report.pr_body import pr_title

    return pr_title([r])


def _say(stream, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _print_dry_run(stream, p: Publication, labels: list[str]) -> None:
    _say(stream, p.body)
    _say(stream, "---")
    _say(stream, f"dry run: {p.task}: would commit its progress plot on {p.branch} as {p.plot}, push {p.branch} to "
                 f"origin and open a pull request against {p.base} (or update the open one)")
    _say(stream, f"  title: {p.title}")
    _say(stream, f"  labels: {', '.join(labels)}")
    if p.risk.is_high:
        _say(stream, f"  risk: high ({len(p.risk.triggers)} reasons): reviews from CODEOWNERS; the "
                     "autokernel/human-review status pending until a maintainer approves")
    else:
        _say(stream, "  risk: low: autokernel/human-review set to success")


def _print_published(stream, p: Publication, risk_config: RiskConfig) -> None:
    pr = p.pr
    verb = "opened" if pr.created else "updated"
    _say(stream, f"{p.task}: {verb} pull request #{pr.number}: {pr.url}")
    _say(stream, f"  {p.branch} ({pr.head_sha[:10]}) → {p.base}; risk {p.risk.level}, labelled "
                 f"{p.risk.label(risk_config)!r}")
    if pr.reviewers:
        _say(stream, f"  reviews requested from {', '.join(pr.reviewers)}")


# -- reading the loop's output folder -------------------------------------------------------------------


def load_run(out_dir: Path) -> list[LoopResult]:
    """The run in `out_dir` as `LoopResult`s, one per task, in the order the tasks first appear in the log."""
    from autokernel_ci.loop import LoopResult, ResultsLog

    if not out_dir.is_dir():
        raise AutokernelError(f"no results folder at {out_dir}: run `autokernel-ci optimize` first (it writes its "
                              "results to autokernel-out/ in the repository, or to --out)")
    log = ResultsLog(out_dir)
    rows = log.rows()
    if not rows:
        raise AutokernelError(f"{out_dir} holds no experiments ({log.jsonl.name} is missing or empty); is it the "
                              "output folder of `autokernel-ci optimize`?")
    best = read_json(out_dir / "best.json") or {}
    results = []
    for task in dict.fromkeys(r.task for r in rows):
        task_rows = [r for r in rows if r.task == task]
        info = best.get(task) if isinstance(best.get(task), dict) else {}
        start_row = next((r for r in task_rows if r.verdict == "baseline"), task_rows[0])
        incumbent = next((r for r in reversed(task_rows) if r.is_incumbent), None)
        best_result = _eval_result(info.get("result")) if info.get("result") else None
        if best_result is None and incumbent is not None:
            best_result = _experiment_result(out_dir, task, incumbent.n)
        kept = [r for r in task_rows if r.kept and r.commit]
        results.append(LoopResult(
            task=task, kernel_path=str(info.get("kernel") or ""), repo="",
            branch=str(info.get("branch") or task_rows[-1].branch or start_row.branch),
            start_commit=str(info.get("start_commit") or start_row.commit or ""),
            head_commit=str(info.get("head_commit") or (kept[-1].commit if kept else start_row.commit) or ""),
            proposer=start_row.proposer, out_dir=out_dir, experiments=task_rows,
            start_result=_experiment_result(out_dir, task, start_row.n), best_result=best_result,
            stop_reason=str(info.get("stop_reason") or ""), elapsed_s=sum(r.duration_s for r in task_rows),
            noise=info.get("noise"),
            representative=bool(info["representative"]) if "representative" in info
            else bool(best_result and best_result.representative_timing),
            device=best_result.device if best_result is not None else ""))
    return results


def _eval_result(data: Any):
    from autokernel_ci.results import EvalResult

    try:
        return EvalResult.from_dict(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _experiment_result(out_dir: Path, task: str, n: int):
    """The full gate's EvalResult of experiment `n` (None when it was not gated or the file is gone)."""
    data = read_json(out_dir / "experiments" / task / f"{n:04d}.json")
    return _eval_result(data.get("gate")) if isinstance(data, dict) else None


# -- end to end -----------------------------------------------------------------------------------------


def end_to_end(out_dir: Path, results: list[LoopResult]) -> EndToEnd | None:
    """Measured: DIR/verify.json (`autokernel-ci verify --json`). Else estimated: Amdahl's law over the
    shares in DIR/plan.json (written by `optimize --model`). Else None."""
    from autokernel_ci.report.pr_body import EndToEnd

    verify = read_json(out_dir / "verify.json")
    for item in verify if isinstance(verify, list) else [verify] if isinstance(verify, dict) else []:
        speedup = (item.get("speedups") or {}).get("patched vs eager") if isinstance(item, dict) else None
        if speedup:
            return EndToEnd(float(speedup), True, f"`autokernel-ci verify`: {item.get('model', 'the model')} with "
                                                  f"the kernels swapped in vs eager, on {item.get('device', '?')}")
    plan = read_json(out_dir / "plan.json")
    if not isinstance(plan, dict):
        return None
    shares = {e.get("builtin"): float(e.get("share") or 0.0) for e in plan.get("entries", []) if isinstance(e, dict)}
    saved, parts = 0.0, []
    for r in results:
        share = shares.get(r.task)
        if share and r.speedup:
            saved += share * (1.0 - 1.0 / r.speedup)
            parts.append(f"{r.task} {share:.0%} of the time")
    if not parts or saved >= 1.0:
        return None
    return EndToEnd(1.0 / (1.0 - saved), False, f"Amdahl's law over the profile of {plan.get('model', 'the model')}: "
                                                f"{', '.join(parts)}")


def _environment_extra(results: list[LoopResult]) -> dict[str, str]:
    """The GPU driver, which the results do not record: read here when this machine did the measuring."""
    if not any(r.representative for r in results):
        return {}
    from autokernel_ci.harness.device import _nvidia_driver_version

    driver = _nvidia_driver_version()
    return {"driver": f"{driver} (read on the machine that published)"} if driver else {}


# -- git ------------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              env={**os.environ, **env} if env else None)
    except OSError as exc:
        raise GitError(f"cannot run git: {exc.strerror}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])} failed in {repo}: {detail[-1] if detail else done.returncode}")
    return done.stdout.strip()


def _ref_exists(repo: Path, ref: str) -> bool:
    return subprocess.run(["git", "rev-parse", "--verify", "-q", ref], cwd=repo, capture_output=True).returncode == 0


def _repo_root(repo_dir: Path | None, out_dir: Path) -> Path:
    for start in ([repo_dir] if repo_dir else [out_dir, Path.cwd()]):
        if not start.is_dir():
            continue
        done = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
        if done.returncode == 0:
            return Path(done.stdout.strip()).resolve()
    where = repo_dir or Path.cwd()
    raise GitError(f"{where} is not inside a git repository; pass --repo, the repository the loop ran in")


def default_base(repo: Path) -> str:
    """The branch checked out (unless it is an experiment branch), else origin's default branch, else main."""
    current = subprocess.run(["git", "symbolic-ref", "-q", "--short", "HEAD"], cwd=repo, capture_output=True,
                             text=True).stdout.strip()
    if current and not current.startswith("autokernel/"):
        return current
    remote_head = subprocess.run(["git", "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD"], cwd=repo,
                                 capture_output=True, text=True).stdout.strip()
    return remote_head.split("/", 1)[1] if remote_head.startswith("origin/") else "main"


def _require_branch(repo: Path, branch: str, out_dir: Path) -> None:
    if not branch:
        raise AutokernelError(f"{out_dir / 'results.jsonl'} does not name the experiment branch; start a fresh run")
    if not _ref_exists(repo, f"refs/heads/{branch}"):
        raise GitError(f"the experiment branch {branch} (named in {out_dir / 'results.jsonl'}) does not exist in "
                       f"{repo}: publish in the repository the loop ran in (--repo), or fetch the branch first")


def _classify(repo: Path, base: str, r: LoopResult, family: str, declared: str | None,
              config: RiskConfig) -> RiskReport:
    """Risk of what the pull request would bring: the diff from where the branch left the base to its tip."""
    from autokernel_ci.risk import classify

    base_ref = next((ref for ref in (f"refs/remotes/origin/{base}", f"refs/heads/{base}") if _ref_exists(repo, ref)),
                    None)
    start = _git(repo, "merge-base", base_ref, f"refs/heads/{r.branch}") if base_ref else r.start_commit
    if not start:
        raise GitError(f"cannot find where {r.branch} left {base}: no branch {base} here and no start commit in the "
                       "results; pass --base")
    diff = _git(repo, "diff", "--no-color", "--no-ext-diff", "-M", start, f"refs/heads/{r.branch}", "--", ".",
                f":(exclude){PLOT_DIR}")
    return classify(family, diff + "\n", config, declared=declared)


def commit_plot(repo: Path, r: LoopResult, rel: str) -> str | None:
    """Commit the task's progress plot on its branch at `rel`; returns `rel`, or None when there is no plot.

    The work tree is left alone unless the branch is the one checked out (then the file is written and
    committed there). A plot identical to the one on the branch adds nothing; a plot commit at the tip
    is replaced rather than stacked.
    """
    from autokernel_ci.loop import BOT_EMAIL, BOT_NAME
    from autokernel_ci.report.plots import plot_progress

    identity = {"GIT_AUTHOR_NAME": BOT_NAME, "GIT_AUTHOR_EMAIL": BOT_EMAIL,
                "GIT_COMMITTER_NAME": BOT_NAME, "GIT_COMMITTER_EMAIL": BOT_EMAIL}
    message = (f"autokernel({r.task}): progress plot of the optimization run\n\n"
               f"Shown in the pull request body; every experiment is a row of results.jsonl.\n\n"
               f"{PLOT_TRAILER}: {r.task}\n")
    branch_ref = f"refs/heads/{r.branch}"
    with tempfile.TemporaryDirectory(prefix="autokernel-publish-") as tmp:
        png = plot_progress([r], Path(tmp) / "progress.png")
        if png is None:
            return None
        blob = _git(repo, "hash-object", "-w", str(png))
        if _blob_at(repo, branch_ref, rel) == blob:
            return rel  # already there: a re-run
        tip = _git(repo, "rev-parse", branch_ref)
        replace = _is_plot_commit(repo, tip, r.task)
        checked_out = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=repo, capture_output=True,
                                     text=True).stdout.strip() == branch_ref
        if checked_out:
            target = repo / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png.read_bytes())
            _git(repo, "add", "-f", "--", rel)
            _git(repo, "commit", "-q", "--no-verify", *(["--amend"] if replace else []), "-m", message, "--only",
                 "--", rel, env=identity)
            return rel
        parent = f"{tip}^" if replace else tip
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", parent, env=index)
        _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=index)
        tree = _git(repo, "write-tree", env=index)
        commit = _git(repo, "commit-tree", tree, "-p", _git(repo, "rev-parse", parent), "-m", message,
                      env=identity)
        _git(repo, "update-ref", "-m", "autokernel-ci: progress plot", branch_ref, commit, tip)
    return rel


def _blob_at(repo: Path, ref: str, rel: str) -> str | None:
    done = subprocess.run(["git", "rev-parse", "-q", "--verify", f"{ref}:{rel}"], cwd=repo, capture_output=True,
                          text=True)
    return done.stdout.strip() or None


def _is_plot_commit(repo: Path, sha: str, task: str) -> bool:
    body = _git(repo, "log", "-1", "--format=%B", sha)
    return f"{PLOT_TRAILER}: {task}" in body.splitlines()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _html_url_from_env(repo: Path) -> str | None:
    """The repository's web address without asking GitHub: the Actions variables, else origin's URL."""
    repository = os.environ.get("GITHUB_REPOSITORY", "").strip()
    if repository:
        return f"{os.environ.get('GITHUB_SERVER_URL', DEFAULT_SERVER_URL).rstrip('/')}/{repository}"
    url = subprocess.run(["git", "remote", "get-url", "origin"], cwd=repo, capture_output=True, text=True).stdout
    match = re.search(r"github\.com[:/]([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$", url.strip())
    return f"{DEFAULT_SERVER_URL}/{match.group(1)}" if match else None


# -- config ---------------------------------------------------------------------------------------------


def _find_config(repo: Path) -> Path | None:
    from autokernel_ci.config import find_config

    return find_config(repo)


def load_risk_config(config_file: Path | None) -> RiskConfig:
    from autokernel_ci.risk import RiskConfig

    if config_file is None:
        return RiskConfig()
    from autokernel_ci.config import load_config

    cfg = load_config(config_file)
    return RiskConfig.from_mapping(cfg.risk, str(config_file)) if cfg.risk else RiskConfig()


def _task_family(task: str, config_file: Path | None) -> tuple[str, str | None]:
    """The task's op family, and the risk its config entry declares (None when it declares none)."""
    from autokernel_ci.config import load_config
    from autokernel_ci.tasks import resolve_task

    try:
        resolved = resolve_task(task, config_file)
    except AutokernelError:
        return "", None  # not in the config any more: the diff alone decides
    entry = load_config(config_file).kernel(task) if config_file is not None else None
    return resolved.spec.family, entry.risk if entry is not None else None
