"""Everything that speaks to GitHub: pull requests, labels, reviewers, statuses, the sticky comment.

The client follows the GitHub Actions conventions: `GITHUB_TOKEN`, `GITHUB_REPOSITORY`,
`GITHUB_API_URL` (so GitHub Enterprise Server and a local test server work), `GITHUB_EVENT_PATH`
and `GITHUB_STEP_SUMMARY`. Requests are retried with backoff on 5xx answers and secondary rate
limits, and wait for the primary rate limit to reset (up to a limit). PyGithub and GitPython
exceptions are translated into `GitHubError`/`GitError` with one readable sentence, and every text
that leaves this module passes through `scrub`, so the token never reaches a log, an exception or a
report.

Every operation can be re-run: the optimization PR is found by its branch and updated, the sticky
comment is found by its marker and edited, statuses are set per commit. The bot never merges and
never approves its own pull requests; `autokernel/human-review` is what makes review mandatory,
because branch protection can require a status where it cannot require a label.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from autokernel_ci.errors import GitError, GitHubError
from autokernel_ci.report.risk_md import RISK_SECTION_MARKER, render_risk_section
from autokernel_ci.risk import RiskConfig, RiskReport

if TYPE_CHECKING:  # pragma: no cover
    from github.PullRequest import PullRequest
    from github.Repository import Repository

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_PR_LABELS = ("autokernel", "performance")
PERF_CONTEXT = "autokernel/perf"
HUMAN_REVIEW_CONTEXT = "autokernel/human-review"
GATE_COMMENT_MARKER = "<!-- autokernel-ci:gate -->"
# Kept in the PR body: a triage user can remove a label, but the body needs write access to change.
HIGH_RISK_MARKER = "<!-- autokernel-ci:risk=high -->"
ACTIONS_BOT_LOGIN = "github-actions[bot]"
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
STATUS_STATES = ("error", "failure", "pending", "success")
MAX_STATUS_DESCRIPTION = 140  # GitHub refuses longer status descriptions
MAX_BODY_CHARS = 65_536  # GitHub's limit for PR bodies and comments
MAX_SUMMARY_BYTES = 1024 * 1024  # the job summary's limit per step
CODEOWNERS_LOCATIONS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")  # GitHub's search order

REDACTED = "***"


# ---------------------------------------------------------------------------------------------------
# Data that leaves this module


@dataclass(frozen=True)
class PrRef:
    """The optimization pull request after `open_or_update_pr`: created is False when it was updated."""

    number: int
    url: str
    created: bool
    head_sha: str = ""
    reviewers: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommentRef:
    id: int
    url: str
    created: bool
    edited: bool


class EventPullRequest(NamedTuple):
    """The pull request a workflow event is about."""

    number: int
    head_sha: str
    is_fork: bool


@dataclass(frozen=True)
class Annotation:
    """An error shown on a line of a file in the pull request's diff (a workflow command)."""

    file: str
    line: int | None
    message: str
    title: str | None = None


@dataclass(frozen=True)
class RequestPolicy:
    """How patient the client is. The defaults suit github.com; tests shrink every delay.

    `attempts` counts tries per request on 5xx answers and rate limits; the n-th retry waits
    `backoff_s * 2**(n-1)` (the first retry is immediate), at most `backoff_max_s`. A secondary rate
    limit waits its `Retry-After`, or `secondary_rate_wait_s` when none is given. The primary limit
    waits until its reset, unless that is more than `max_rate_limit_wait_s` away.
    """

    attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    secondary_rate_wait_s: float = 60.0
    max_rate_limit_wait_s: float = 900.0
    seconds_between_requests: float = 0.25
    seconds_between_writes: float = 1.0  # GitHub's advice against secondary limits on writes
    timeout_s: int = 30
    per_page: int = 100


class PartialUpdateError(GitHubError):
    """Some steps of publishing the pull request were done and a later one failed; a re-run finishes."""

    def __init__(self, done: Sequence[str], cause: GitHubError) -> None:
        self.done = tuple(done)
        self.cause = cause
        reason = str(cause).rstrip(".")
        super().__init__(f"{'; '.join(self.done)}, but then: {reason}. Re-run the same command to finish: "
                         "it reuses the pushed branch and the open pull request.")


# ---------------------------------------------------------------------------------------------------
# Things that need no API: the event, the job summary, annotations, CODEOWNERS


def read_event(event_path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(event_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise GitHubError(f"cannot read the workflow event file {event_path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise GitHubError(f"the workflow event file {event_path} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise GitHubError(f"the workflow event file {event_path} does not hold a JSON object")
    return data


def pr_from_event(event_path: str | os.PathLike[str]) -> EventPullRequest:
    """The pull request of a `pull_request`, `pull_request_target` or `pull_request_review` event.

    A fork is a head repository other than the base one, or a head repository that was deleted.
    """
    event = read_event(event_path)
    pr = event.get("pull_request")
    if not isinstance(pr, dict):
        kinds = ", ".join(sorted(k for k in event if isinstance(event[k], dict))) or "no objects"
        raise GitHubError(f"the workflow event in {event_path} is not about a pull request (it holds {kinds}); "
                          "run this step on `pull_request` or `pull_request_review` events")
    try:
        number = int(pr.get("number") or event["number"])
        head_sha = str(pr["head"]["sha"])
    except (KeyError, TypeError, ValueError):
        raise GitHubError(f"the pull request in {event_path} has no number or head commit") from None
    return EventPullRequest(number, head_sha, _is_fork(pr))


def _is_fork(pr: Mapping[str, Any]) -> bool:
    head_repo = (pr.get("head") or {}).get("repo")
    base_repo = (pr.get("base") or {}).get("repo") or {}
    if not head_repo:
        return True  # the fork was deleted after the PR was opened
    return str(head_repo.get("full_name", "")).lower() != str(base_repo.get("full_name", "")).lower()


def write_step_summary(markdown: str, path: str | os.PathLike[str] | None = None) -> bool:
    """Append Markdown to the job summary; False (and nothing written) outside GitHub Actions."""
    path = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        log.info("GITHUB_STEP_SUMMARY is not set; the job summary is not written")
        return False
    data = markdown if markdown.endswith("\n") else markdown + "\n"
    if len(data.encode("utf-8")) > MAX_SUMMARY_BYTES:
        data = data.encode("utf-8")[: MAX_SUMMARY_BYTES - 200].decode("utf-8", "ignore")
        data += "\n\n… (truncated: the job summary is limited to 1 MiB per step)\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(data)
    except OSError as exc:
        raise GitHubError(f"cannot write the job summary to {path}: {exc.strerror}") from None
    return True


def annotate_error(file: str, line: int | None, message: str, *, title: str | None = None,
                   stream: IO[str] | None = None) -> None:
    """Print an `::error file=…,line=…::…` workflow command; Actions shows it on that line of the diff."""
    props = [f"file={_escape_property(file)}"]
    if line:
        props.append(f"line={int(line)}")
    if title:
        props.append(f"title={_escape_property(title)}")
    out = stream if stream is not None else sys.stdout
    out.write(f"::error {','.join(props)}::{_escape_data(message)}\n")
    out.flush()


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class CodeownersRule:
    pattern: str
    owners: tuple[str, ...]
    regex: re.Pattern[str] = field(compare=False)


def parse_codeowners(text: str) -> list[CodeownersRule]:
    """Parse a CODEOWNERS file. GitHub's rules: gitignore-like patterns, no `!` negation, no `[]`
    ranges, `docs/*` matches files directly in docs/ only, and the last matching line wins (a line
    with no owners takes ownership away)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"(?<!\\)\s+", line)
        pattern = parts[0].replace("\\ ", " ").replace("\\#", "#")
        owners = []
        for part in parts[1:]:
            if part.startswith("#"):
                break  # trailing comment
            owners.append(part)
        if pattern.startswith("!") or "[" in pattern:
            log.warning("CODEOWNERS pattern %r uses syntax GitHub ignores; skipped", pattern)
            continue
        rules.append(CodeownersRule(pattern, tuple(owners), _codeowners_regex(pattern)))
    return rules


def owners_for(path: str, rules: Sequence[CodeownersRule]) -> tuple[str, ...]:
    path = path.lstrip("/")
    for rule in reversed(rules):
        if rule.regex.match(path):
            return rule.owners
    return ()


def read_codeowners(repo_dir: str | os.PathLike[str]) -> list[CodeownersRule]:
    for location in CODEOWNERS_LOCATIONS:
        candidate = Path(repo_dir) / location
        if candidate.is_file():
            return parse_codeowners(candidate.read_text(encoding="utf-8", errors="replace"))
    return []


def _codeowners_regex(pattern: str) -> re.Pattern[str]:
    dir_only = pattern.endswith("/")
    body = pattern.strip("/")
    anchored = pattern.startswith("/") or "/" in body  # a slash before the end anchors to the root
    out, i = [], 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("/**", i) and i + 3 == len(body):
            out.append("/.*")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    last = body.rsplit("/", 1)[-1]
    if dir_only:
        tail = "/.*"
    elif "*" in last and last != "**":
        tail = ""  # `docs/*` owns docs/a.md, not docs/sub/b.md
    else:
        tail = "(?:/.*)?"  # a name owns the file or the directory and everything below it
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{''.join(out)}{tail}$")


# ---------------------------------------------------------------------------------------------------
# The client


@functools.cache
def _retry_class() -> type:
    """PyGithub's retry, plus waiting for the reset when the primary limit answers 429 (not only 403)."""
    from github.GithubException import RateLimitExceededExceedsMaxWait
    from github.GithubRetry import GithubRetry

    class ActionsRetry(GithubRetry):
        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            if response is None or response.status != 429 or "Retry-After" in response.headers:
                return retry
            reset = response.headers.get("X-RateLimit-Reset", "")
            if not reset.isdigit():
                return retry
            wait = max(int(reset) - time.time(), 0.0) + 1.0  # the reset second is not exact
            if self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
                raise RateLimitExceededExceedsMaxWait(429, {"message": "API rate limit exceeded"}, None, wait=wait)
            floor = retry.get_backoff_time()
            retry.get_backoff_time = lambda: max(wait, floor)
            return retry

    return ActionsRetry


class GitHubClient:
    """One repository on one GitHub (or GitHub Enterprise Server) instance, through PyGithub."""

    def __init__(self, token: str, repository: str, api_url: str = DEFAULT_API_URL, *,
                 policy: RequestPolicy | None = None, step_summary_path: str | None = None,
                 event_path: str | None = None, bot_login: str | None = None,
                 stream: IO[str] | None = None) -> None:
        if not token or any(ch.isspace() or ord(ch) < 32 for ch in token):
            raise GitHubError("the GitHub token is empty or contains whitespace or control characters; "
                              "set GITHUB_TOKEN to the token alone")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository or ""):
            raise GitHubError(f"GITHUB_REPOSITORY must be owner/name, got {repository!r}")
        self.__token = _Secret(token)
        self.repository = repository
        self.owner = repository.split("/")[0]
        self.api_url = api_url.rstrip("/")
        self.policy = policy or RequestPolicy()
        self.step_summary_path = step_summary_path
        self.event_path = event_path
        self._bot_login = bot_login
        self._stream = stream
        self._gh: Any = None
        self._repo: Repository | None = None
        self._fork_head: str | None = None
        if event_path:
            with contextlib.suppress(GitHubError):
                pr = read_event(event_path).get("pull_request")
                if isinstance(pr, dict) and _is_fork(pr):
                    self._fork_head = ((pr.get("head") or {}).get("repo") or {}).get("full_name") or "a deleted fork"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, policy: RequestPolicy | None = None) -> GitHubClient:
        env = os.environ if env is None else env
        token = env.get("GITHUB_TOKEN", "")
        if not token.strip():
            raise GitHubError("GITHUB_TOKEN is not set: pass a token to the action (`github-token`) or export "
                              "GITHUB_TOKEN with contents, pull-requests and statuses write permission")
        repository = env.get("GITHUB_REPOSITORY", "").strip()
        if not repository:
            raise GitHubError("GITHUB_REPOSITORY is not set: export it as owner/name (Actions sets it for you)")
        return cls(token.strip(), repository, env.get("GITHUB_API_URL") or DEFAULT_API_URL, policy=policy,
                   step_summary_path=env.get("GITHUB_STEP_SUMMARY") or None,
                   event_path=env.get("GITHUB_EVENT_PATH") or None)

    def __repr__(self) -> str:
        return f"GitHubClient(repository={self.repository!r}, api_url={self.api_url!r})"

    # -- plumbing --------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """The text with the token (and any credentials in a URL) replaced by ***."""
        text = text.replace(self.__token.value, REDACTED)
        return re.sub(r"(\w+://)[^/@\s]+@", rf"\1{REDACTED}@", text)

    @property
    def gh(self) -> Any:
        if self._gh is None:
            import github

            p = self.policy
            retry = _retry_class()(
                total=max(p.attempts - 1, 0), backoff_factor=p.backoff_s, backoff_max=p.backoff_max_s,
                secondary_rate_wait=p.secondary_rate_wait_s, max_rate_limit_wait=p.max_rate_limit_wait_s,
                status_forcelist=[*range(500, 600), 429],
            )
            self._gh = github.Github(
                auth=github.Auth.Token(self.__token.value), base_url=self.api_url, timeout=p.timeout_s,
                per_page=p.per_page, retry=retry, seconds_between_requests=p.seconds_between_requests or None,
                seconds_between_writes=p.seconds_between_writes or None,
                user_agent="autokernel-ci",
            )
        return self._gh

    @contextlib.contextmanager
    def _calling(self, action: str, permission: str = "", not_found: str = "") -> Iterator[None]:
        """Translate whatever PyGithub or requests raises while doing `action` into one GitHubError.

        The error's `status` attribute keeps the HTTP status (None when GitHub was not reached).
        """
        import requests
        from github.GithubException import GithubException

        try:
            yield
        except GitHubError:
            raise
        except GithubException as exc:
            message = not_found if exc.status == 404 and not_found else self._explain(exc, action, permission)
            raise _error(self.scrub(message), exc.status) from None
        except requests.exceptions.RetryError as exc:
            raise self._exhausted(exc, action) from None
        except requests.RequestException as exc:
            raise _error(self.scrub(f"could not reach GitHub at {self.api_url} to {action} "
                                    f"({type(exc).__name__}); check GITHUB_API_URL and the network"), None) from None

    def _exhausted(self, exc: Exception, action: str) -> GitHubError:
        """Every try was answered with a retryable status (urllib3 names it in the reason)."""
        match = re.search(r"too many (\d{3}) error responses", str(exc))
        status = int(match.group(1)) if match else None
        if status in (403, 429):
            message = (f"GitHub's rate limit kept refusing the attempt to {action} after {self.policy.attempts} "
                       "tries; re-run later: every step is safe to repeat")
        else:
            message = (f"GitHub kept failing to {action} (HTTP {status or 'error'}) after {self.policy.attempts} "
                       "tries; re-run the job: every step is safe to repeat")
        return _error(self.scrub(message), status)

    def _explain(self, exc: Any, action: str, permission: str) -> str:
        from github.GithubException import RateLimitExceededExceedsMaxWait, RateLimitExceededException

        status = exc.status
        data = exc.data if isinstance(exc.data, dict) else {}
        detail = str(data.get("message") or "").strip().splitlines()[0:1]
        detail = detail[0] if detail else ""
        errors = [str(e.get("message") or e.get("code") or "") for e in data.get("errors", []) if isinstance(e, dict)]
        said = "; ".join(x for x in [detail, *errors] if x)[:300]
        said = f"HTTP {status}: {said}" if said else f"HTTP {status}"
        if isinstance(exc, RateLimitExceededExceedsMaxWait):
            return (f"GitHub's API rate limit stopped the attempt to {action}: it resets in {exc.wait or 0:.0f} s, "
                    f"longer than the {self.policy.max_rate_limit_wait_s:.0f} s this client waits; re-run later")
        if isinstance(exc, RateLimitExceededException):
            return f"GitHub's rate limit stopped the attempt to {action} after {self.policy.attempts} tries ({said})"
        if status == 401:
            return (f"GitHub at {self.api_url} rejected the token ({said}): GITHUB_TOKEN is expired, revoked or "
                    f"for another GitHub instance")
        if status == 403 and self._fork_head:
            return (f"cannot {action}: this pull request comes from the fork {self._fork_head}, and GitHub gives "
                    f"workflows on fork pull requests a read-only token ({said}); the results are in the job summary "
                    f"and annotations, or post them from a `workflow_run` workflow that has write permission")
        if status == 403:
            need = f"; the workflow needs `permissions: {permission}`" if permission else ""
            return f"the token is not allowed to {action} in {self.repository} ({said}){need}"
        if status == 404:
            return (f"cannot {action}: not found on {self.api_url} ({said}); check that {self.repository} exists and "
                    f"the token can see it")
        if status >= 500:
            return (f"GitHub kept failing to {action} ({said}) after {self.policy.attempts} tries; "
                    f"re-run the job: every step is safe to repeat")
        return f"GitHub refused to {action} ({said})"

    @property
    def repo(self) -> Repository:
        """The repository, fetched once: a wrong token or repository fails here, before anything is written."""
        if self._repo is None:
            missing = (f"the repository {self.repository} was not found on {self.api_url}, or the token cannot "
                       "see it; check GITHUB_REPOSITORY and the token's access")
            with self._calling(f"read the repository {self.repository}", "contents: read", not_found=missing):
                self._repo = self.gh.get_repo(self.repository)
        return self._repo

    @property
    def bot_login(self) -> str:
        """Who the token acts as. A GITHUB_TOKEN may not read /user: then it is github-actions[bot]."""
        if self._bot_login is None:
            import requests
            from github.GithubException import GithubException

            try:
                login = self.gh.get_user().login
            except (GithubException, requests.RequestException):
                login = ""
            self._bot_login = login or ACTIONS_BOT_LOGIN
        return self._bot_login

    # -- pushing ---------------------------------------------------------------------------------

    def push_branch(self, repo_dir: str | os.PathLike[str], branch: str, remote: str = "origin") -> str:
        """Force-push the local experiment branch to `remote`; returns the pushed commit.

        The branch belongs to the bot and is rebuilt by each run, so the push replaces it.
        """
        import git

        try:
            repo = git.Repo(repo_dir)
            sha = repo.commit(f"refs/heads/{branch}").hexsha
            infos = repo.remote(remote).push(f"+refs/heads/{branch}:refs/heads/{branch}")
            failed = [i for i in infos if i.flags & (i.ERROR | i.REJECTED | i.REMOTE_REJECTED | i.REMOTE_FAILURE)]
            if failed or not infos:
                summary = failed[0].summary.strip() if failed else "git reported nothing pushed"
                raise GitError(self.scrub(f"git push of {branch} to {remote} failed: {summary}"))
        except GitError:
            raise
        except git.GitCommandError as exc:
            stderr = (exc.stderr or "").strip().replace("\n", " ")[:300]
            raise GitError(self.scrub(f"git push of {branch} to {remote} failed: {stderr}")) from None
        except (git.BadName, ValueError, git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise GitError(self.scrub(f"cannot push {branch} from {repo_dir} to {remote}: {exc}")) from None
        return sha

    # -- the optimization pull request -----------------------------------------------------------

    def open_or_update_pr(self, repo_dir: str | os.PathLike[str], branch: str, base: str, title: str, body: str,
                          labels: Sequence[str] = DEFAULT_PR_LABELS, risk: RiskReport | None = None, *,
                          risk_config: RiskConfig | None = None) -> PrRef:
        """Push `branch` to origin, then open its pull request against `base` or update the open one.

        Labels it, and for a high-risk change requests reviewers from CODEOWNERS and sets
        `autokernel/human-review` pending; a low-risk change gets that status as success. If a step
        after the push fails, `PartialUpdateError` says what was done; re-running completes it.
        """
        config = risk_config or RiskConfig()
        self._check_can_push()  # a wrong token or repository fails before anything is pushed
        head_sha = self.push_branch(repo_dir, branch)
        done = [f"pushed {branch} ({head_sha[:7]}) to origin"]
        try:
            full_body = self._pr_body(body, risk, head_sha)
            pr, created = self._find_or_create_pr(branch, base, title, full_body)
            done.append(f"{'opened' if created else 'updated'} pull request #{pr.number}")
            self._sync_labels(pr, labels, risk, config)
            reviewers: tuple[str, ...] = ()
            if risk is not None and risk.is_high:
                done.append(f"labelled it {config.high_label!r}")
                reviewers = tuple(self._request_codeowners(pr, risk.files, repo_dir, config.fallback_reviewers))
                self._set_review_status(pr, head_sha, high=True)
            elif risk is not None:
                self.set_status(head_sha, HUMAN_REVIEW_CONTEXT, "success", "low risk: no human review required")
            with self._calling(f"read pull request #{pr.number}"):
                url = pr.html_url
        except GitHubError as exc:
            raise PartialUpdateError(done, exc) from None
        log.info("%s pull request #%d for %s", "opened" if created else "updated", pr.number, branch)
        return PrRef(pr.number, url, created, head_sha, reviewers)

    def _check_can_push(self) -> None:
        with self._calling(f"read the repository {self.repository}"):
            permissions = self.repo.permissions  # present for user tokens, absent for GITHUB_TOKEN
        if permissions is not None and not permissions.push:
            raise GitHubError(f"the token has no write access to {self.repository}, so it cannot open the pull "
                              "request; nothing was pushed")

    def _pr_body(self, body: str, risk: RiskReport | None, head_sha: str) -> str:
        text = body.rstrip() + "\n"
        if risk is not None and risk.is_high:
            if RISK_SECTION_MARKER not in text:
                html = self.repo.html_url.rstrip("/")
                text += "\n" + render_risk_section(risk, blob_url=f"{html}/blob/{head_sha}")
            text += f"\n{HIGH_RISK_MARKER}\n"
        return self.scrub(_truncate(text, MAX_BODY_CHARS))

    def _find_open_pr(self, branch: str) -> PullRequest | None:
        with self._calling(f"list pull requests for {branch}", "pull-requests: read"):
            for pr in self.repo.get_pulls(state="open", head=f"{self.owner}:{branch}"):
                return pr
        return None

    def _find_or_create_pr(self, branch: str, base: str, title: str, body: str) -> tuple[PullRequest, bool]:
        pr = self._find_open_pr(branch)
        if pr is None:
            try:
                with self._calling("open a pull request", "pull-requests: write"):
                    return self.repo.create_pull(base=base, head=branch, title=title, body=body,
                                                 maintainer_can_modify=True), True
            except GitHubError as exc:
                if exc.status != 422 or "already exists" not in str(exc):
                    raise
            # A retried create whose first try succeeded, or a concurrent run: use the PR that exists.
            pr = self._find_open_pr(branch)
            if pr is None:
                raise GitHubError(f"GitHub says a pull request for {branch} exists but lists none open")
        with self._calling(f"update pull request #{pr.number}", "pull-requests: write"):
            changes = {k: v for k, v in (("title", title), ("body", body), ("base", base))
                       if (pr.base.ref if k == "base" else getattr(pr, k)) != v}
            if changes:
                pr.edit(**changes)
        return pr, False

    def _sync_labels(self, pr: PullRequest, labels: Sequence[str], risk: RiskReport | None,
                     config: RiskConfig) -> None:
        wanted = list(dict.fromkeys(labels))
        stale: list[str] = []
        if risk is not None:
            wanted.append(risk.label(config))
            stale.append(config.low_label if risk.is_high else config.high_label)
        with self._calling(f"label pull request #{pr.number}", "pull-requests: write"):
            current = {label.name for label in pr.labels}
            missing = [name for name in wanted if name not in current]
            if missing:
                pr.add_to_labels(*missing)
            for name in stale:
                if name in current:
                    pr.remove_from_labels(name)

    # -- reviewers -------------------------------------------------------------------------------

    def request_reviewers_from_codeowners(self, pr_number: int, files: Iterable[str],
                                          repo_dir: str | os.PathLike[str],
                                          fallback_reviewers: Sequence[str] = ()) -> list[str]:
        """Request reviews from the CODEOWNERS of `files` (or the fallbacks when nobody owns them).

        Returns who was requested: logins, and `org/team` for teams. Owners GitHub refuses (not
        collaborators) are skipped with a warning; the PR author and the bot are never requested.
        """
        return self._request_codeowners(self.repo.get_pull(pr_number), files, repo_dir, fallback_reviewers)

    def _request_codeowners(self, pr: PullRequest, files: Iterable[str], repo_dir: str | os.PathLike[str],
                            fallback: Sequence[str]) -> list[str]:
        rules = read_codeowners(repo_dir)
        owners = list(dict.fromkeys(o for f in files for o in owners_for(f, rules)))
        if not owners:
            owners = [o if o.startswith("@") or "@" in o else "@" + o for o in fallback]
        with self._calling(f"read pull request #{pr.number}"):
            author = pr.user.login
        excluded = {author.lower(), self.bot_login.lower()}
        users, teams = [], []
        for owner in owners:
            if not owner.startswith("@"):
                continue  # an e-mail address: GitHub cannot request a review from it
            name = owner[1:]
            if "/" in name:
                org, slug = name.split("/", 1)
                if org.lower() == self.owner.lower():
                    teams.append(slug)
            elif name.lower() not in excluded:
                users.append(name)
        return self._request_reviews(pr, users, teams)

    def _request_reviews(self, pr: PullRequest, users: list[str], teams: list[str]) -> list[str]:
        if not users and not teams:
            return []
        action = f"request reviewers on pull request #{pr.number}"
        kwargs = {k: v for k, v in (("reviewers", users), ("team_reviewers", teams)) if v}
        try:
            with self._calling(action, "pull-requests: write"):
                pr.create_review_request(**kwargs)
            return users + [f"{self.owner}/{t}" for t in teams]
        except GitHubError as exc:
            if exc.status != 422:
                raise
            if len(users) + len(teams) == 1:
                log.warning("review not requested: %s", exc)
                return []
        # One refused name fails the whole request: ask one at a time and keep the ones GitHub accepts.
        requested = []
        for user in users:
            requested += self._request_reviews(pr, [user], [])
        for team in teams:
            requested += self._request_reviews(pr, [], [team])
        return requested

    # -- statuses and human review ---------------------------------------------------------------

    def set_status(self, sha: str, context: str, state: str, description: str,
                   target_url: str | None = None) -> None:
        if state not in STATUS_STATES:
            raise ValueError(f"status state must be one of {', '.join(STATUS_STATES)}, got {state!r}")
        kwargs: dict[str, Any] = {"state": state, "context": context,
                                  "description": self.scrub(_truncate(description, MAX_STATUS_DESCRIPTION))}
        if target_url:
            kwargs["target_url"] = target_url
        with self._calling(f"set the {context} status on {sha[:7]}", "statuses: write"):
            self.repo.get_commit(sha).create_status(**kwargs)

    def evaluate_human_review(self, pr_number: int, *, risk_config: RiskConfig | None = None,
                              head_sha: str | None = None, pusher: str | None = None,
                              high_risk_paths: Iterable[str] = ()) -> str:
        """Set `autokernel/human-review` on the PR's head and return its state.

        Recomputed from GitHub's data on every call, never from the pull request's checkout: the risk is
        classified again from the diff fetched through the API (and the marker or label the bot set), and
        a head pushed by anyone but the bot needs review whatever its risk, since the bot's checks did not
        produce it. `pusher` is who pushed the head (the `sender` of a `synchronize` event); without it,
        the pusher recorded in this status on the head is used. Pending until a writer (write, maintain or
        admin) who is neither the author, nor the last pusher, nor a bot approves that very head commit (an
        approval of an older commit does not count, so a push resets it) and no such writer requests
        changes. `high_risk_paths`: files that always need review (kernels of a high-risk family).
        """
        config = risk_config or RiskConfig()
        pr = self.repo.get_pull(pr_number)
        with self._calling(f"read pull request #{pr_number}", "pull-requests: read"):
            marked = HIGH_RISK_MARKER in (pr.body or "") or config.high_label in {lbl.name for lbl in pr.labels}
            head = head_sha or pr.head.sha
        pusher = pusher or self._recorded_pusher(head)
        reasons = ["marked high risk"] if marked else []
        risk = self.classify_pull_request(pr_number, config, high_risk_paths=high_risk_paths)
        if risk.is_high:
            reasons.append(f"{len(risk.triggers)} risk trigger(s) in the diff")
        if pusher and pusher.lower() != self.bot_login.lower() and not pusher.lower().endswith("[bot]"):
            reasons.append(f"pushed by @{pusher}")
        return self._set_review_status(pr, head, high=bool(reasons), pusher=pusher)

    def head_approval(self, pr_number: int, head_sha: str) -> tuple[bool, str]:
        """(approved, why): whether `head_sha` is the PR's current head and someone with write access, other
        than the author and the bot, approved that very commit, with no such person requesting changes:
        the rule of `autokernel/human-review`. What lifts the gate's policy-changed and removed verdicts."""
        pr = self.repo.get_pull(pr_number)
        with self._calling(f"read pull request #{pr_number}", "pull-requests: read"):
            current = pr.head.sha
        if current != head_sha:
            return False, f"the pull request's head is now {current[:7]}, not the gated {head_sha[:7]}"
        state, description = self._review_verdict(pr, head_sha, self._recorded_pusher(head_sha))
        return state == "success", description

    def classify_pull_request(self, pr_number: int, config: RiskConfig | None = None, *,
                              high_risk_paths: Iterable[str] = ()) -> RiskReport:
        """The risk of the pull request's whole diff as GitHub has it (the files API), not as a checkout says."""
        from autokernel_ci.risk import classify

        always = set(high_risk_paths)
        diff, forced = [], False
        for name, patch in self.pull_request_patches(pr_number):
            diff.append(f"diff --git a/{name} b/{name}\n--- a/{name}\n+++ b/{name}\n{patch}\n")
            forced = forced or name in always  # a kernel of a high-risk family: reviewed whatever its lines say
        return classify("", "".join(diff), config, declared="high" if forced else None)

    def pull_request_summary(self, pr_number: int) -> dict[str, str]:
        """The head commit, head repository, author and state of a pull request, as GitHub has them now."""
        with self._calling(f"read pull request #{pr_number}", "pull-requests: read",
                           not_found=f"there is no pull request #{pr_number} in {self.repository}"):
            pr = self.repo.get_pull(pr_number)
            head_repo = pr.head.repo.full_name if pr.head.repo is not None else ""
            return {"head_sha": pr.head.sha, "head_repo": head_repo, "author": pr.user.login, "state": pr.state,
                    "url": pr.html_url}

    def pull_request_patches(self, pr_number: int) -> list[tuple[str, str]]:
        """(path, unified-diff hunks) of every file the pull request changes; a binary file has no hunks."""
        with self._calling(f"list the files of pull request #{pr_number}", "pull-requests: read"):
            out = []
            for f in self.repo.get_pull(pr_number).get_files():
                out.append((f.filename, f.patch or ""))
                if f.previous_filename:
                    out.append((f.previous_filename, ""))
            return out

    def pull_request_files(self, pr_number: int) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.pull_request_patches(pr_number)))

    def read_settings(self, path: str, action: str, permission: str = "") -> Any:
        """GET an API path under the repository (`/branches/main/protection`), its first page; None when GitHub
        answers 404."""
        url = f"{self.api_url}/repos/{self.repository}{path}"
        try:
            with self._calling(action, permission):
                _, data = self.gh.requester.requestJsonAndCheck("GET", url)
                return data
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise

    def _recorded_pusher(self, head: str) -> str | None:
        """Who pushed `head`, as this client recorded it in the human-review status on that commit."""
        statuses = self.read_settings(f"/commits/{head}/statuses", f"read the statuses of {head[:7]}",
                                      "statuses: read") or []
        for status in statuses:  # newest first
            creator = str((status.get("creator") or {}).get("login") or "")
            if status.get("context") != HUMAN_REVIEW_CONTEXT or creator.lower() != self.bot_login.lower():
                continue
            match = re.search(r"pushed by @([A-Za-z0-9-]+(?:\[bot\])?)", str(status.get("description") or ""))
            return match.group(1) if match else None
        return None

    def _set_review_status(self, pr: PullRequest, head: str, *, high: bool, pusher: str | None = None) -> str:
        if not high:
            state, description = "success", "not high risk: no human review required"
        else:
            state, description = self._review_verdict(pr, head, pusher)
            if pusher:
                description = f"pushed by @{pusher}; {description}"
        with self._calling(f"read pull request #{pr.number}"):
            url = pr.html_url
        self.set_status(head, HUMAN_REVIEW_CONTEXT, state, description, target_url=url)
        return state

    def _review_verdict(self, pr: PullRequest, head: str, pusher: str | None = None) -> tuple[str, str]:
        with self._calling(f"read the reviews of pull request #{pr.number}", "pull-requests: read"):
            author = pr.user.login
            latest: dict[str, Any] = {}
            for review in pr.get_reviews():  # oldest first; a reviewer's latest decision counts
                if review.state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED") and review.user is not None:
                    latest[review.user.login.lower()] = review
        excluded = {author.lower(), self.bot_login.lower()} | ({pusher.lower()} if pusher else set())
        approvers, blockers = [], []
        for login, review in latest.items():
            if login in excluded or review.user.type == "Bot" or review.state == "DISMISSED":
                continue
            if review.state == "APPROVED" and review.commit_id != head:
                continue  # approved an older commit: the new push needs a new look
            if not self._can_write(review.user.login):
                continue
            (approvers if review.state == "APPROVED" else blockers).append(review.user.login)
        if blockers:
            return "pending", f"changes requested by @{blockers[0]}"
        if approvers:
            return "success", f"approved by @{approvers[0]} at {head[:7]}"
        return "pending", f"needs approval of {head[:7]} by a writer other than its author and last pusher"

    def _can_write(self, login: str) -> bool:
        try:
            with self._calling(f"read {login}'s permission on {self.repository}"):
                return self.repo.get_collaborator_permission(login) in WRITE_PERMISSIONS
        except GitHubError as exc:
            if exc.status == 404:  # not a user GitHub knows, or not a collaborator
                return False
            raise

    # -- the gate on GitHub ----------------------------------------------------------------------

    def upsert_sticky_comment(self, pr_number: int, marker: str, body: str) -> CommentRef:
        """Create the PR's comment that starts with `marker`, or edit it in place; never a second one.

        A comment counts only if it starts with the marker, so a reply quoting it is not taken over.
        """
        text = body if body.lstrip().startswith(marker) else f"{marker}\n{body}"
        text = self.scrub(_truncate(text, MAX_BODY_CHARS))
        issue = self.repo.get_issue(pr_number)
        with self._calling(f"comment on pull request #{pr_number}", "pull-requests: write"):
            for comment in issue.get_comments():
                if (comment.body or "").lstrip().startswith(marker):
                    if comment.body == text:
                        return CommentRef(comment.id, comment.html_url, created=False, edited=False)
                    comment.edit(text)
                    return CommentRef(comment.id, comment.html_url, created=False, edited=True)
            comment = issue.create_comment(text)
            return CommentRef(comment.id, comment.html_url, created=True, edited=False)

    def write_step_summary(self, markdown: str) -> bool:
        return write_step_summary(self.scrub(markdown), self.step_summary_path or "")

    def annotate_error(self, file: str, line: int | None, message: str, *, title: str | None = None) -> None:
        annotate_error(file, line, self.scrub(message), title=self.scrub(title) if title else None,
                       stream=self._stream)

    def publish_gate(self, pr_number: int, head_sha: str, markdown: str, passed: bool, description: str, *,
                     annotations: Iterable[Annotation] = (), target_url: str | None = None,
                     marker: str = GATE_COMMENT_MARKER) -> CommentRef:
        """Publish a gate verdict: job summary and annotations first (they work on fork PRs too), then
        the sticky comment and the `autokernel/perf` status."""
        self.write_step_summary(markdown)
        for note in annotations:
            self.annotate_error(note.file, note.line, note.message, title=note.title)
        comment = self.upsert_sticky_comment(pr_number, marker, markdown)
        self.set_status(head_sha, PERF_CONTEXT, "success" if passed else "failure", description,
                        target_url=target_url or comment.url)
        return comment

    def event_pull_request(self) -> EventPullRequest:
        if not self.event_path:
            raise GitHubError("GITHUB_EVENT_PATH is not set: this step must run in a pull request workflow")
        return pr_from_event(self.event_path)


class _Secret:
    """Holds the token so that repr(), vars() and a traceback's locals show *** instead of it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return REDACTED


def _error(message: str, status: int | None) -> GitHubError:
    error = GitHubError(message)
    error.status = status  # type: ignore[attr-defined]
    return error


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = "\n\n… (truncated)" if limit > 100 else "…"
    return text[: limit - len(note)] + note
