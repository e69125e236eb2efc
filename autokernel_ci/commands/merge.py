"""`autokernel-ci merge`: combine shard results into one branch and one pull request.

The matrix flow (`autokernel-ci plan` → one `optimize --shard I --shards N` job per shard → this)
ends here. Each shard's results folder holds its `results.jsonl`, `best.json`, the experiments'
JSON, and `commits.bundle`: its kept commits as a git bundle, since they were made on another
runner. Merging:

1. reads every folder (a folder holding `results.jsonl`, or a folder of such folders, as
   `actions/download-artifact` lays them out) and checks that no task was optimized by two shards;
   the folders come from jobs that ran candidate kernels, so they are checked, not trusted:
2. every kept commit must be an ordinary commit that changes exactly its task's kernel file, as this
   checkout's `.autokernel.yml` names it (`git diff-tree --name-only`); a commit that touches anything
   else (`.github/`, a workflow, CODEOWNERS, a conftest.py, the config, another task's file) stops the
   merge with a message before anything is cherry-picked or pushed;
3. in a temporary worktree at the commit the shards started from, cherry-picks each task's kept
   commits, in order, as the bot with each commit's own date (so a re-run rebuilds the very same
   commits); shards edit disjoint kernel files, so a conflict means the config shares a file
   between tasks, and the merge stops and says so;
4. writes one results folder for the combined run (every row pointing at the combined branch and
   its new commits), renders its summary and progress plot, and commits the plot on the branch;
5. points `autokernel/optimize-<date>` at the result and publishes it: one pull request for all the
   tasks, through the same pieces as `autokernel-ci publish` (risk classification, PR body, push,
   open-or-update, labels, reviewers, the human-review status). `--dry-run` prints it instead.

Run on a single results folder from this repository, it makes the one pull request of a plain
`optimize` run (what the GitHub Action does in `optimize` mode).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.commands import read_json, write_text
from autokernel_ci.errors import AutokernelError, GitError

if TYPE_CHECKING:
    from autokernel_ci.github import GitHubClient, PrRef
    from autokernel_ci.loop import LoopResult
    from autokernel_ci.search.proposer import Experiment

BUNDLE_NAME = "commits.bundle"
SHARD_FILE = "shard.json"
BRANCH_PREFIX = "autokernel/optimize-"
PLOT_PATH = ".autokernel/progress.png"
SHARED_FILES = ("plan.json", "verify.json")  # run-wide files: the first shard's copy is kept
MERGE_REFS = "refs/autokernel-merge"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="combine shard results into one branch and open one pull request",
                       description="Combine the results folders of `optimize --shard` jobs (or one plain optimize "
                                   "run): cherry-pick every kept commit onto one branch, merge the logs into one "
                                   "results folder, and open or update one pull request for all the tasks. Needs "
                                   "GITHUB_TOKEN and GITHUB_REPOSITORY unless --dry-run or --no-publish.")
    p.add_argument("--results", nargs="+", required=True, metavar="DIR",
                   help="shard results folders, or folders holding them (as download-artifact writes them)")
    p.add_argument("--repo", default=".", metavar="PATH",
                   help="the repository, checked out at the commit the shards started from (default: here)")
    p.add_argument("--out", metavar="DIR", help="the combined results folder (default: <repo>/autokernel-out)")
    p.add_argument("--branch", metavar="NAME",
                   help=f"the combined branch (default: {BRANCH_PREFIX}<the runs' date>)")
    p.add_argument("--base", metavar="BRANCH",
                   help="the branch to open the pull request against (default: as `autokernel-ci publish`)")
    p.add_argument("--config", metavar="FILE",
                   help="config file naming each task's kernel file (default: .autokernel.yml in the repository)")
    p.add_argument("--json", metavar="OUT",
                   help="write what was merged and published here: branch, pull request, speedup per task")
    p.add_argument("--no-publish", action="store_true", help="combine only; open no pull request")
    p.add_argument("--dry-run", action="store_true",
                   help="combine, then print the pull request that would be opened; need no token")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = _toplevel(Path(args.repo))
    merged = merge_results([Path(d) for d in args.results], repo, out=Path(args.out) if args.out else None,
                           branch=args.branch, config_path=Path(args.config) if args.config else None,
                           dry_run=args.dry_run)
    for line in merged.describe():
        print(line)
    pr = None
    if merged.kept and not args.no_publish:
        pr = publish_merged(merged, base=args.base, config_path=Path(args.config) if args.config else None,
                            dry_run=args.dry_run)
    if args.json:
        write_text(args.json, json.dumps(merged.to_dict(pr), indent=1) + "\n")
    return 0


# -- reading the shards ---------------------------------------------------------------------------------


@dataclass
class ShardResults:
    """One shard's results folder, read."""

    path: Path
    rows: list[Experiment]
    best: dict[str, Any]
    info: dict[str, Any]

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.rows))

    @property
    def bundle(self) -> Path | None:
        path = self.path / BUNDLE_NAME
        return path if path.is_file() else None

    def start_commit(self, task: str) -> str:
        info = self.best.get(task) if isinstance(self.best.get(task), dict) else {}
        start = next((r.commit for r in self.rows if r.task == task and r.verdict == "baseline" and r.commit), None)
        return str(info.get("start_commit") or start or "")

    def kept_commits(self, task: str) -> list[str]:
        return [r.commit for r in self.rows if r.task == task and r.kept and r.commit]


def find_shards(paths: list[Path]) -> list[ShardResults]:
    """The results folders among `paths` (a folder with results.jsonl, or a folder of such folders)."""
    from autokernel_ci.loop import ResultsLog

    folders: list[Path] = []
    for path in paths:
        if (path / "results.jsonl").is_file():
            folders.append(path)
        elif path.is_dir():
            inner = sorted(p for p in path.iterdir() if (p / "results.jsonl").is_file())
            if not inner:
                raise AutokernelError(f"{path} holds no results.jsonl, nor folders that do: is it where the shards' "
                                      "artifacts were downloaded?")
            folders.extend(inner)
        else:
            raise AutokernelError(f"no results folder at {path}")
    shards = []
    for folder in dict.fromkeys(p.resolve() for p in folders):
        rows = ResultsLog(folder).rows()
        if not rows:
            raise AutokernelError(f"{folder / 'results.jsonl'} holds no experiments")
        shards.append(ShardResults(folder, rows, read_json(folder / "best.json") or {},
                                   read_json(folder / SHARD_FILE) or {}))
    seen: dict[str, Path] = {}
    for shard in shards:
        for task in shard.tasks:
            if task in seen:
                raise AutokernelError(f"task {task!r} was optimized in two shards ({seen[task]} and {shard.path}); "
                                      "each task belongs to one shard: plan the matrix with `autokernel-ci plan`")
            seen[task] = shard.path
    return shards


# -- merging --------------------------------------------------------------------------------------------


@dataclass
class MergedRun:
    """The combined run: its branch (None when no shard kept anything), commits and results folder."""

    repo: Path
    out_dir: Path
    branch: str | None
    base_commit: str
    head_commit: str
    tasks: dict[str, dict[str, Any]]  # task → {"shard": folder, "kept": n, "speedup": x}
    commit_map: dict[str, str] = field(default_factory=dict)  # shard commit → combined commit
    notes: list[str] = field(default_factory=list)
    families: dict[str, dict[str, Any]] = field(default_factory=dict)  # task → {"family", "risk"} from the shards
    dry_run: bool = False  # the branch was not created: `head_commit` is the commit it would point at

    @property
    def kept(self) -> int:
        return sum(t["kept"] for t in self.tasks.values())

    @property
    def speedup(self) -> float | None:
        """Geometric mean of the speedups of the tasks that kept something."""
        values = [t["speedup"] for t in self.tasks.values() if t["kept"] and t.get("speedup")]
        return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None

    def describe(self) -> list[str]:
        lines = [f"{name}: {t['kept']} kept commit(s)" + (f", {t['speedup']:.2f}× faster" if t.get("speedup") else "")
                 + f" (from {t['shard']})" for name, t in self.tasks.items()]
        if self.branch:
            lines.append(f"combined branch {self.branch} {'would be' if self.dry_run else ''} at "
                         f"{self.head_commit[:12]} (from {self.base_commit[:12]})".replace("  ", " "))
        else:
            lines.append("no shard kept anything: no branch, no pull request")
        lines.append(f"combined results: {self.out_dir}")
        return lines + self.notes

    def to_dict(self, pr: PrRef | None = None) -> dict[str, Any]:
        return {"branch": self.branch, "base_commit": self.base_commit, "head_commit": self.head_commit,
                "out_dir": str(self.out_dir), "tasks": self.tasks, "kept": self.kept, "speedup": self.speedup,
                "pull_request": None if pr is None else {"number": pr.number, "url": pr.url, "created": pr.created},
                "notes": self.notes}


def merge_results(paths: list[Path], repo: Path, *, out: Path | None = None, branch: str | None = None,
                  config_path: Path | None = None, dry_run: bool = False) -> MergedRun:
    """Cherry-pick the shards' kept commits onto one branch and write one results folder; see the module doc.
    `dry_run`: the same combination, but no branch is created and the results folder is a temporary one
    outside the repository: nothing in the repository, its refs or `out` changes."""
    repo = _toplevel(repo)
    shards = find_shards(paths)
    kernel_paths = _kernel_paths(repo, config_path)
    starts = {s.start_commit(t) for s in shards for t in s.tasks} - {""}
    first = shards[0].start_commit(shards[0].tasks[0])
    if not first:
        raise AutokernelError(f"{shards[0].path / 'results.jsonl'} does not say which commit the run started from")
    base_commit = _commit_in(repo, first, "the commit the shards started from")
    notes = [] if len(starts) <= 1 else [f"the shards started from {len(starts)} different commits; their kept "
                                         f"commits are all replayed onto {base_commit[:12]}"]
    out_dir = (out or repo / "autokernel-out").resolve()
    name = branch or _default_branch(shards)
    if _checked_out_branch(repo) == name:
        raise GitError(f"{name} is checked out in {repo}; check out another branch before merging onto it")
    with tempfile.TemporaryDirectory(prefix="autokernel-merge-") as tmp:
        tree = Path(tmp) / "tree"
        _git(repo, "worktree", "add", "--detach", "-q", str(tree), base_commit)
        try:
            commit_map = _replay(repo, tree, shards, kernel_paths)
            staging = Path(tmp) / "results"
            results = _write_results(shards, staging, name, base_commit, commit_map)
            head = base_commit
            if commit_map:
                head = _commit_plot(tree, staging / "progress.png", commit_map)
                if not dry_run:
                    _git(repo, "update-ref", "-m", "autokernel-ci merge", f"refs/heads/{name}", head)
            if dry_run:
                out_dir = Path(tempfile.mkdtemp(prefix="autokernel-merge-dry-run-"))
                notes.append(f"dry run: no branch created and nothing written to the repository; the combined "
                             f"results are in {out_dir}")
            else:
                _exclude(repo, out_dir)
            _install(staging, out_dir)
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree), check=False)
            _drop_merge_refs(repo)
    tasks = {r.task: {"shard": str(next(s.path for s in shards if r.task in s.tasks)), "kept": len(r.kept),
                      "speedup": r.speedup} for r in results}
    families = {t: v for s in shards for t, v in (s.info.get("families") or {}).items() if isinstance(v, dict)}
    return MergedRun(repo, out_dir, name if commit_map else None, base_commit, head, tasks, commit_map, notes,
                     families, dry_run)


def _default_branch(shards: list[ShardResults]) -> str:
    """autokernel/optimize-<date of the runs' branches>: a re-run of the merge lands on the same branch."""
    for shard in shards:
        for row in shard.rows:
            match = re.search(r"-(\d{8})(?:-\d+)?$", row.branch or "")
            if match:
                return BRANCH_PREFIX + match.group(1)
    return BRANCH_PREFIX + datetime.now(timezone.utc).strftime("%Y%m%d")


def _kernel_paths(repo: Path, config_path: Path | None) -> dict[str, str]:
    """{task: its kernel file} from the checkout's config: what a kept commit may change."""
    from autokernel_ci.config import find_config, load_config

    config_file = config_path or find_config(repo)
    if config_file is None:
        raise AutokernelError(f"no .autokernel.yml in {repo}: merge checks every kept commit against the kernel "
                              "file its task names there; check out the repository (with its config) first")
    return {k.name: Path(k.path).as_posix() for k in load_config(config_file).kernels}


# Never changed by a kept commit, whatever the config says: what would change who reviews, what runs in CI,
# or what the gate trusts.
PROTECTED = (re.compile(r"(^|/)\.github/"), re.compile(r"(^|/)CODEOWNERS$"), re.compile(r"(^|/)conftest\.py$"),
             re.compile(r"(^|/)\.autokernel\.ya?ml$"), re.compile(r"(^|/)action\.ya?ml$"),
             re.compile(r"(^|/)\.gitmodules$"), re.compile(r"(^|/)\.gitattributes$"))


def check_kept_commit(repo: Path, sha: str, task: str, kernel_paths: dict[str, str]) -> None:
    """Refuse a kept commit unless it is an ordinary commit that changes only its task's kernel file."""
    allowed = kernel_paths.get(task)
    if allowed is None:
        raise AutokernelError(f"the shard results name a task {task!r} that the config does not list; its commit "
                              f"{sha[:12]} is not merged (the config decides which file each task may change)")
    parents = _git(repo, "rev-list", "--parents", "-n", "1", sha).split()[1:]
    if len(parents) != 1:
        raise AutokernelError(f"the kept commit {sha[:12]} of {task} has {len(parents)} parents; the loop makes "
                              "ordinary commits only: refused")
    changed = _git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "--no-renames", sha).splitlines()
    protected = [p for p in changed if any(rule.search(p) for rule in PROTECTED)]
    others = [p for p in changed if p != allowed]
    if protected or others or not changed:
        what = ", ".join((protected or others)[:5]) or "nothing"
        raise AutokernelError(f"refused: the kept commit {sha[:12]} of {task} changes {what}; a kept commit may "
                              f"change only its task's kernel file {allowed}. Nothing was merged or pushed.")


def _replay(repo: Path, tree: Path, shards: list[ShardResults], kernel_paths: dict[str, str]) -> dict[str, str]:
    """Check, then cherry-pick, each task's kept commits in `tree`; returns {shard commit: new commit}."""
    commit_map: dict[str, str] = {}
    for i, shard in enumerate(shards):
        fetched = False
        for task in shard.tasks:
            for sha in shard.kept_commits(task):
                if not _has_commit(repo, sha) and not fetched and shard.bundle is not None:
                    _git(repo, "fetch", "-q", "--no-tags", "--no-write-fetch-head", str(shard.bundle),
                         f"+refs/heads/*:{MERGE_REFS}/{i}/*")
                    fetched = True
                if not _has_commit(repo, sha):
                    raise GitError(f"commit {sha[:12]} (kept for {task}) is neither in {repo} nor in "
                                   f"{shard.path / BUNDLE_NAME}: upload the shard's whole results folder, bundle "
                                   "included, or merge in the repository the shard ran in")
                check_kept_commit(repo, sha, task, kernel_paths)
    for shard in shards:  # every commit checked: now replay them
        for task in shard.tasks:
            for sha in shard.kept_commits(task):
                date = _git(repo, "log", "-1", "--format=%cI", sha)
                done = _git(tree, "-c", "core.hooksPath=/dev/null", "cherry-pick", "--allow-empty",
                            "--keep-redundant-commits", sha, env=_bot(date), check=False, full=True)
                if done.returncode != 0:
                    _git(tree, "cherry-pick", "--abort", check=False)
                    raise GitError(f"the kept commit {sha[:12]} of {task} (from {shard.path}) does not apply on top "
                                   f"of the other shards' commits: two tasks edit the same file. Give each kernel "
                                   f"task its own file. git said: {(done.stderr or done.stdout).strip()[:300]}")
                commit_map[sha] = _git(tree, "rev-parse", "HEAD")
    return commit_map


def _write_results(shards: list[ShardResults], staging: Path, branch: str, base_commit: str,
                   commit_map: dict[str, str]) -> list[LoopResult]:
    """One results folder for the combined run: rows, best.json, experiments, summary and plot."""
    from dataclasses import replace

    from autokernel_ci.commands.publish import load_run
    from autokernel_ci.loop import ResultsLog, write_atomic, write_reports

    staging.mkdir(parents=True)
    log = ResultsLog(staging)
    best: dict[str, Any] = {}
    head = list(commit_map.values())[-1] if commit_map else base_commit
    for shard in shards:
        for row in shard.rows:
            commit = commit_map.get(row.commit or "", row.commit)
            if row.verdict in ("baseline", "remeasure"):
                commit = base_commit if row.commit == shard.start_commit(row.task) else commit
            log.append(replace(row, branch=branch if commit_map else row.branch, commit=commit))
        for task in shard.tasks:
            info = dict(shard.best.get(task) or {})
            kept = [commit_map[c] for c in shard.kept_commits(task) if c in commit_map]
            info.update(branch=branch if commit_map else info.get("branch", ""), start_commit=base_commit,
                        head_commit=kept[-1] if kept else head)
            best[task] = info
            source = shard.path / "experiments" / task
            if source.is_dir():
                shutil.copytree(source, staging / "experiments" / task)
            llm = shard.path / "llm" / task
            if llm.is_dir():
                shutil.copytree(llm, staging / "llm" / task)
        for name in SHARED_FILES:
            if (shard.path / name).is_file() and not (staging / name).exists():
                shutil.copy2(shard.path / name, staging / name)
    write_atomic(staging / "best.json", json.dumps(best, indent=1, default=str))
    results = load_run(staging)
    write_reports(results, staging, command="autokernel-ci merge")
    return results


def _commit_plot(tree: Path, png: Path, commit_map: dict[str, str]) -> str:
    """Commit the combined run's progress plot in `tree`, dated like the last kept commit; returns HEAD."""
    if not png.is_file():
        return _git(tree, "rev-parse", "HEAD")
    target = tree / PLOT_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(png, target)
    _git(tree, "add", "-f", "--", PLOT_PATH)
    date = _git(tree, "log", "-1", "--format=%cI", list(commit_map.values())[-1])
    _git(tree, "-c", "core.hooksPath=/dev/null", "commit", "-q", "--allow-empty", "-m",
         "autokernel: progress plot of the combined run\n\nShown in the pull request body; every experiment is a "
         "row of results.jsonl.\n\nAutokernel-Plot: combined\n", env=_bot(date, author=True))
    return _git(tree, "rev-parse", "HEAD")


def _install(staging: Path, out_dir: Path) -> None:
    """Put the combined results in `out_dir`; a previous run's files there are moved aside first."""
    from autokernel_ci.loop import prepare_out_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    prepare_out_dir(out_dir, resume=False)
    for item in staging.iterdir():
        target = out_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(item), target)


def export_commits(results: list[LoopResult], out_dir: Path, repo: Path | None = None) -> Path | None:
    """Write the run's kept commits to `out_dir/commits.bundle` (for `merge` on another runner);
    None when nothing was kept. `repo`: where the run's branches are (default: the results' own)."""
    kept = [r for r in results if r.kept and r.branch]
    if not kept:
        return None
    repo = repo or Path(kept[0].repo)
    bundle = out_dir / BUNDLE_NAME
    starts = sorted({f"^{r.start_commit}" for r in kept if r.start_commit})
    _git(repo, "bundle", "create", "-q", str(bundle), *[f"refs/heads/{r.branch}" for r in kept], *starts)
    return bundle


# -- publishing -----------------------------------------------------------------------------------------


def publish_merged(merged: MergedRun, *, base: str | None = None, config_path: Path | None = None,
                   dry_run: bool = False, client: GitHubClient | None = None, stream=None) -> PrRef | None:
    """One pull request for every task of the combined run: the pieces of `autokernel-ci publish` (risk,
    body, open-or-update with labels, reviewers and the human-review status), over all the tasks at once."""
    from autokernel_ci.commands.publish import default_base, end_to_end, load_risk_config, load_run
    from autokernel_ci.config import find_config
    from autokernel_ci.github import DEFAULT_PR_LABELS, GitHubClient
    from autokernel_ci.report.pr_body import pr_title, render_pr_body

    stream = stream or sys.stdout
    if merged.branch is None:
        return None
    results = load_run(merged.out_dir)
    kept = [r for r in results if r.kept]
    config_file = config_path or find_config(merged.repo)
    risk_config = load_risk_config(config_file)
    risk = _classify(merged, kept, config_file, risk_config)
    base = base or default_base(merged.repo)
    if client is None and not dry_run:
        client = GitHubClient.from_env()
    html_url = client.repo.html_url.rstrip("/") if client is not None else _html_url_from_env()
    ref = merged.branch if dry_run else merged.head_commit
    body = render_pr_body(results, plot_url=f"{html_url}/raw/{ref}/{PLOT_PATH}" if html_url else PLOT_PATH,
                          risk=risk, risk_config=risk_config, blob_url=f"{html_url}/blob/{ref}" if html_url else None,
                          end_to_end=end_to_end(merged.out_dir, kept))
    title = pr_title(kept)
    labels = list(DEFAULT_PR_LABELS)
    if dry_run:
        stream.write(body + "---\n")
        stream.write(f"dry run: would push {merged.branch} ({merged.head_commit[:10]}) to origin and open a pull "
                     f"request against {base} (or update the open one)\n  title: {title}\n  labels: "
                     f"{', '.join(labels + [risk.label(risk_config)])}\n")
        return None
    pr = client.open_or_update_pr(merged.repo, merged.branch, base, title, body, labels, risk, risk_config=risk_config)
    stream.write(f"{'opened' if pr.created else 'updated'} pull request #{pr.number}: {pr.url}\n")
    stream.write(f"  {merged.branch} ({pr.head_sha[:10]}) → {base}; risk {risk.level}, labelled "
                 f"{risk.label(risk_config)!r}\n")
    return pr


def _classify(merged: MergedRun, kept: list[LoopResult], config_file: Path | None, risk_config):
    """The risk of the whole branch: classified as each task's op family would see it; high if any is."""
    from autokernel_ci.config import load_config
    from autokernel_ci.risk import classify
    from autokernel_ci.tasks import resolve_task

    diff = _git(merged.repo, "diff", "--no-color", "--no-ext-diff", "-M", merged.base_commit,
                merged.head_commit, "--", ".", ":(exclude).autokernel") + "\n"
    reports = []
    for r in kept:
        recorded = merged.families.get(r.task)  # what the shard, which had torch, saw
        try:
            task = resolve_task(r.task, config_file)
            family, declared = task.spec.family, task.risk
        except (AutokernelError, ImportError):  # not in the config any more, or no torch on this runner
            family, declared = "", None  # the diff alone decides
        if recorded and not family:
            family, declared = str(recorded.get("family") or ""), recorded.get("risk")
            # shard.json came from the job that ran candidates: the config's own word cannot be lowered by it.
            entry = load_config(config_file).kernel(r.task) if config_file is not None else None
            if entry is not None:
                declared = entry.risk or declared
                if (entry.op or "").lower() in {f.lower() for f in risk_config.high_risk_families}:
                    family = entry.op or family
        reports.append(classify(family, diff, risk_config, declared=declared))
    return next((r for r in reports if r.is_high), reports[0])


def _html_url_from_env() -> str | None:
    repository = os.environ.get("GITHUB_REPOSITORY", "").strip()
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    return f"{server}/{repository}" if repository else None


# -- git ------------------------------------------------------------------------------------------------


def _bot(date: str, author: bool = False) -> dict[str, str]:
    """The bot as committer at `date` (a cherry-pick keeps the commit's own author), and as author too."""
    from autokernel_ci.loop import BOT_EMAIL, BOT_NAME

    env = {"GIT_COMMITTER_NAME": BOT_NAME, "GIT_COMMITTER_EMAIL": BOT_EMAIL, "GIT_COMMITTER_DATE": date}
    if author:
        env.update(GIT_AUTHOR_NAME=BOT_NAME, GIT_AUTHOR_EMAIL=BOT_EMAIL, GIT_AUTHOR_DATE=date)
    return env


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True, full: bool = False):
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **env} if env else None)
    except OSError as exc:
        raise GitError(f"cannot run git: {exc.strerror}") from None
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {detail[-1] if detail else done.returncode}")
    return done if full else done.stdout.strip()


def _toplevel(path: Path) -> Path:
    if not path.is_dir():
        raise GitError(f"{path} is not a folder; pass --repo, the repository the shards ran on")
    done = _git(path, "rev-parse", "--show-toplevel", check=False, full=True)
    if done.returncode != 0:
        raise GitError(f"{path} is not inside a git repository; pass --repo, the repository the shards ran on")
    return Path(done.stdout.strip()).resolve()


def _has_commit(repo: Path, sha: str) -> bool:
    return _git(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False, full=True).returncode == 0


def _commit_in(repo: Path, sha: str, what: str) -> str:
    if not _has_commit(repo, sha):
        raise GitError(f"{what}, {sha[:12]}, is not in {repo}: check out the same commit the shards ran on, with "
                       "its history (actions/checkout with fetch-depth: 0)")
    return _git(repo, "rev-parse", f"{sha}^{{commit}}")


def _checked_out_branch(repo: Path) -> str:
    done = _git(repo, "symbolic-ref", "-q", "--short", "HEAD", check=False, full=True)
    return done.stdout.strip()


def _exclude(repo: Path, out_dir: Path) -> None:
    """Keep the results folder out of `git status` (.git/info/exclude), as the loop does."""
    try:
        rel = out_dir.resolve().relative_to(repo).as_posix()
    except ValueError:
        return  # outside the repository
    common = Path(_git(repo, "rev-parse", "--git-common-dir"))
    exclude = (common if common.is_absolute() else repo / common) / "info" / "exclude"
    text = exclude.read_text() if exclude.is_file() else ""
    if f"/{rel}/" not in text.splitlines():
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text(text + ("" if not text or text.endswith("\n") else "\n") + f"/{rel}/\n")


def _drop_merge_refs(repo: Path) -> None:
    refs = _git(repo, "for-each-ref", "--format=%(refname)", MERGE_REFS, check=False)
    for ref in (refs or "").splitlines():
        _git(repo, "update-ref", "-d", ref, check=False)
