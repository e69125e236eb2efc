"""A local GitHub REST API for tests: real HTTP on 127.0.0.1, state in memory, strict about shapes.

It implements only the endpoints autokernel-ci uses, and checks every request the way GitHub's REST
documentation describes it: the method and path, the `Authorization: token|Bearer …` header, a
User-Agent, a JSON body with the required fields of the right types and no unknown ones, the enum
values and length limits, and the query parameters of list endpoints. A request GitHub would
refuse for its shape is answered with GitHub's error and recorded in `violations`, which a test
expects to stay empty. Behaviour GitHub has is imitated too: 401 for an unknown token, 403 for a
read-only one on a write, 404 for an unknown repository, 422 for a second open pull request on one
branch or a reviewer who is not a collaborator, pagination with `Link` headers.

The pull request's head is read live from a bare git repository (the tests' `origin`), so a push is
what moves it, as on GitHub. Faults can be injected: 5xx answers, secondary and primary rate limits.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

_REPO = r"/repos/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)"
_N = r"(?P<number>[0-9]+)"
_PAGED = {"per_page", "page"}

# (method, path regex, handler name, allowed query parameters)
ROUTES: list[tuple[str, re.Pattern[str], str, set[str]]] = [
    (m, re.compile(f"^{p}$"), h, q)
    for m, p, h, q in [
        ("GET", r"/user", "get_user", set()),
        ("GET", r"/rate_limit", "rate_limit", set()),
        ("GET", _REPO, "get_repo", set()),
        ("GET", _REPO + r"/pulls", "list_pulls", {"state", "head", "base", "sort", "direction"} | _PAGED),
        ("POST", _REPO + r"/pulls", "create_pull", set()),
        ("GET", _REPO + rf"/pulls/{_N}", "get_pull", set()),
        ("PATCH", _REPO + rf"/pulls/{_N}", "update_pull", set()),
        ("POST", _REPO + rf"/pulls/{_N}/requested_reviewers", "request_reviewers", set()),
        ("GET", _REPO + rf"/pulls/{_N}/reviews", "list_reviews", _PAGED),
        ("GET", _REPO + rf"/issues/{_N}", "get_issue", set()),
        ("GET", _REPO + rf"/issues/{_N}/labels", "list_labels", _PAGED),
        ("POST", _REPO + rf"/issues/{_N}/labels", "add_labels", set()),
        ("DELETE", _REPO + rf"/issues/{_N}/labels/(?P<name>[^/]+)", "remove_label", set()),
        ("GET", _REPO + rf"/issues/{_N}/comments", "list_comments", {"since"} | _PAGED),
        ("POST", _REPO + rf"/issues/{_N}/comments", "create_comment", set()),
        ("PATCH", _REPO + r"/issues/comments/(?P<id>[0-9]+)", "update_comment", set()),
        ("GET", _REPO + r"/commits/(?P<ref>[^/]+)", "get_commit", _PAGED),  # page/per_page: its files
        ("GET", _REPO + r"/commits/(?P<ref>[^/]+)/status", "combined_status", _PAGED),
        ("GET", _REPO + r"/commits/(?P<ref>[^/]+)/statuses", "list_statuses", _PAGED),
        ("POST", _REPO + r"/statuses/(?P<sha>[^/]+)", "create_status", set()),
        ("GET", _REPO + r"/collaborators/(?P<user>[^/]+)/permission", "get_permission", set()),
        # Repository settings, for `autokernel-ci doctor` and the review status
        ("GET", _REPO + rf"/pulls/{_N}/files", "list_pull_files", _PAGED),
        ("GET", _REPO + r"/actions/permissions/fork-pr-contributor-approval", "get_fork_approval", set()),
        ("GET", _REPO + r"/branches/(?P<branch>[^/]+)/protection", "get_protection", set()),
        ("GET", _REPO + r"/rules/branches/(?P<branch>[^/]+)", "get_branch_rules", _PAGED),
    ]
]

_OPT_STR = (str, type(None))
# Request bodies from GitHub's REST docs: field → (types, required).
BODIES: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "create_pull": {"head": ((str,), True), "base": ((str,), True), "title": ((str,), False),
                    "body": ((str,), False), "maintainer_can_modify": ((bool,), False),
                    "draft": ((bool,), False), "issue": ((int,), False), "head_repo": ((str,), False)},
    "update_pull": {"title": ((str,), False), "body": ((str,), False), "state": ((str,), False),
                    "base": ((str,), False), "maintainer_can_modify": ((bool,), False)},
    "request_reviewers": {"reviewers": ((list,), False), "team_reviewers": ((list,), False)},
    "create_comment": {"body": ((str,), True)},
    "update_comment": {"body": ((str,), True)},
    "create_status": {"state": ((str,), True), "target_url": (_OPT_STR, False),
                      "description": (_OPT_STR, False), "context": ((str,), False)},
}
WRITES = {"create_pull", "update_pull", "request_reviewers", "add_labels", "remove_label", "create_comment",
          "update_comment", "create_status"}
DOCS = "https://docs.github.com/rest"
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                     "If you reach out to GitHub Support for help, please include the request ID.")


class HttpError(Exception):
    def __init__(self, status: int, message: str, errors: list[Any] | None = None, *,
                 violation: bool = False, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.violation = status, message, errors, violation
        self.headers = headers or {}


@dataclass
class Token:
    login: str
    write: bool = True
    kind: str = "app"  # "app": behaves like an Actions GITHUB_TOKEN (no /user); "user": a personal token


@dataclass
class Recorded:
    method: str
    path: str  # without the API prefix and the query
    query: dict[str, list[str]]
    body: Any
    auth_scheme: str
    status: int = 0
    at: float = 0.0


@dataclass
class Fault:
    kind: str  # "status" | "secondary" | "primary"
    remaining: int
    status: int = 502
    method: str | None = None
    path: str | None = None  # a regex searched in the path
    after: bool = False  # handle the request first, then answer with the fault (a lost response)
    retry_after: str | None = None


@dataclass
class Repo:
    owner: str
    name: str
    origin: Path | None
    default_branch: str = "main"
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    extra_shas: set[str] = field(default_factory=set)  # commits of fork PRs, reachable as refs/pull/N/head
    next_number: int = 1
    # Settings (None: GitHub answers 404, as for a branch without protection)
    fork_pr_approval: str | None = "first_time_contributors"  # GitHub's default
    protection: dict[str, Any] | None = None  # GET /branches/{branch}/protection, as GitHub returns it
    rules: list[dict[str, Any]] = field(default_factory=list)  # GET /rules/branches/{branch}
    settings_readable: bool = True  # False: the token lacks administration: read (403)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class FakeGitHub:
    """The server. `api_url` is what GITHUB_API_URL should be; `start()`/`stop()` run it in a thread."""

    def __init__(self, owner: str = "acme", name: str = "models", origin: Path | None = None,
                 prefix: str = "") -> None:
        self.prefix = prefix.rstrip("/")
        self.repo = Repo(owner, name, origin)
        self.tokens: dict[str, Token] = {}
        self.users: dict[str, str] = {}  # login → "User" | "Bot"
        self.collaborators: dict[str, str] = {}  # login → admin | maintain | write | triage | read
        self.teams: set[str] = set()  # slugs of the owner's teams with access to the repository
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base = ""

    # -- setup -----------------------------------------------------------------------------------

    def add_token(self, token: str, login: str, *, write: bool = True, kind: str = "app") -> None:
        self.tokens[token] = Token(login, write, kind)
        self.add_user(login)

    def add_user(self, login: str) -> None:
        self.users.setdefault(login, "Bot" if login.endswith("[bot]") else "User")

    def add_collaborator(self, login: str, permission: str) -> None:
        self.add_user(login)
        self.collaborators[login] = permission

    def add_review(self, number: int, login: str, state: str, commit_id: str | None = None) -> dict[str, Any]:
        """A review as a person would submit it from the web UI (not through the client)."""
        with self._lock:
            self.add_user(login)
            pr = self.repo.pulls[number]
            review = {"id": next(self._ids), "login": login, "state": state, "body": "",
                      "commit_id": commit_id or self._head_sha(pr), "submitted_at": _now()}
            self.repo.reviews.setdefault(number, []).append(review)
            return review

    def add_comment(self, number: int, login: str, body: str) -> dict[str, Any]:
        with self._lock:
            self.add_user(login)
            comment = {"id": next(self._ids), "issue": number, "login": login, "body": body,
                       "created_at": _now(), "updated_at": _now()}
            self.repo.comments[comment["id"]] = comment
            return comment

    def add_fork_pr(self, head_owner: str, ref: str, sha: str, *, number: int | None = None, base: str = "main",
                    title: str = "fork") -> int:
        with self._lock:
            self.add_user(head_owner)
            number = number or self._next_number()
            self.repo.next_number = max(self.repo.next_number, number + 1)
            self.repo.pulls[number] = self._new_pull(number, title, "", ref, base, head_owner,
                                                     head_repo=f"{head_owner}/{self.repo.name}", sha=sha)
            self.repo.extra_shas.add(sha)
            return number

    def fail_next(self, count: int, status: int = 502, *, method: str | None = None, path: str | None = None,
                  after: bool = False) -> None:
        self.faults.append(Fault("status", count, status, method, path, after))

    def secondary_rate_limit_next(self, count: int, retry_after: str | None = "1") -> None:
        self.faults.append(Fault("secondary", count, 403, retry_after=retry_after))

    def primary_rate_limit_next(self, count: int, status: int = 403) -> None:
        self.faults.append(Fault("primary", count, status))

    # -- queries for tests -----------------------------------------------------------------------

    def open_pulls(self) -> list[dict[str, Any]]:
        return [pr for pr in self.repo.pulls.values() if pr["state"] == "open"]

    def pull(self, number: int) -> dict[str, Any]:
        return self.repo.pulls[number]

    def head_sha(self, number: int) -> str:
        return self._head_sha(self.repo.pulls[number])

    def combined_state(self, sha: str, context: str) -> str | None:
        latest = self._latest_statuses(sha)
        return next((s["state"] for s in latest if s["context"] == context), None)

    def status_of(self, sha: str, context: str) -> dict[str, Any] | None:
        return next((s for s in self._latest_statuses(sha) if s["context"] == context), None)

    def comments_on(self, number: int) -> list[dict[str, Any]]:
        return [c for c in self.repo.comments.values() if c["issue"] == number]

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.base + self.prefix

    def start(self) -> FakeGitHub:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server._serve(self)

            do_POST = do_PATCH = do_DELETE = do_PUT = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # -- HTTP ------------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        url = urlsplit(handler.path)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        auth = handler.headers.get("Authorization", "")
        record = Recorded(method, path, query, None, auth.split(" ", 1)[0] if auth else "", at=time.monotonic())
        status, headers, payload = 500, {}, None
        with self._lock:
            self.requests.append(record)
            try:
                if self.prefix:
                    if not path.startswith(self.prefix + "/"):
                        raise HttpError(404, "Not Found", violation=True)
                    path = path[len(self.prefix):]
                record.path = path
                fault = self._take_fault(method, path)
                if fault is not None and not fault.after:
                    raise self._fault_error(fault)
                status, payload, headers = self._dispatch(method, path, query, handler.headers, raw, record)
                if fault is not None:
                    raise self._fault_error(fault)
            except HttpError as exc:
                status, headers = exc.status, exc.headers
                payload = {"message": exc.message, "documentation_url": DOCS}
                if exc.errors:
                    payload["errors"] = exc.errors
                if exc.violation:
                    self.violations.append(f"{method} {path}: {exc.message} {exc.errors or ''}".strip())
            record.status = status
        data = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("X-GitHub-Request-Id", f"FAKE:{len(self.requests)}")
        base_limit = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999",
                      "X-RateLimit-Reset": str(int(time.time()) + 3600), "X-RateLimit-Used": "1"}
        for key, value in {**base_limit, **headers}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if data:
            handler.wfile.write(data)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.remaining <= 0:
                continue
            if fault.method and fault.method != method:
                continue
            if fault.path and not re.search(fault.path, path):
                continue
            fault.remaining -= 1
            return fault
        return None

    def _fault_error(self, fault: Fault) -> HttpError:
        if fault.kind == "secondary":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return HttpError(403, SECONDARY_MESSAGE, headers=headers)
        if fault.kind == "primary":
            reset = str(int(time.time()) + 1)
            headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset, "X-RateLimit-Used": "5000"}
            return HttpError(fault.status, "API rate limit exceeded for installation ID 1.", headers=headers)
        return HttpError(fault.status, "Server Error" if fault.status != 502 else "Bad Gateway")

    def _dispatch(self, method: str, path: str, query: dict[str, list[str]], headers: Any, raw: bytes,
                  record: Recorded) -> tuple[int, Any, dict[str, str]]:
        route = None
        for m, pattern, name, allowed in ROUTES:
            match = pattern.match(path)
            if match and m == method:
                route = (name, match.groupdict(), allowed)
                break
        if route is None:
            raise HttpError(404, "Not Found", violation=True)
        name, params, allowed = route
        token = self._authenticate(headers)
        if not headers.get("User-Agent"):
            raise HttpError(403, "Request forbidden by administrative rules. Please make sure your request has a "
                            "User-Agent header", violation=True)
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise HttpError(422, f"unknown query parameter {unknown[0]!r}", violation=True)
        body = self._parse_body(method, name, headers, raw)
        record.body = body
        if "owner" in params:
            if f"{params['owner']}/{params['repo']}".lower() != self.repo.full_name.lower():
                raise HttpError(404, "Not Found")
        if name in WRITES and not token.write:
            raise HttpError(403, "Resource not accessible by integration" if token.kind == "app"
                            else "Must have admin rights to Repository.")
        handler = getattr(self, "_h_" + name)
        result = handler(token=token, query=query, body=body, **{k: v for k, v in params.items()
                                                                  if k not in ("owner", "repo")})
        status, payload, extra = (result + ({},))[:3] if isinstance(result, tuple) else (200, result, {})
        return status, payload, extra

    def _authenticate(self, headers: Any) -> Token:
        auth = headers.get("Authorization")
        if not auth:
            raise HttpError(401, "Requires authentication", violation=True)
        match = re.fullmatch(r"(token|Bearer) (\S+)", auth)
        if not match:
            raise HttpError(401, "Bad credentials", violation=True)
        token = self.tokens.get(match.group(2))
        if token is None:
            raise HttpError(401, "Bad credentials")
        return token

    def _parse_body(self, method: str, name: str, headers: Any, raw: bytes) -> Any:
        if method in ("GET", "DELETE"):
            if raw:
                raise HttpError(400, f"{method} with a body", violation=True)
            return None
        if "application/json" not in (headers.get("Content-Type") or ""):
            raise HttpError(415, "Unsupported 'Content-Type': expected application/json", violation=True)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise HttpError(400, "Problems parsing JSON", violation=True) from None
        if name == "add_labels":
            return body
        schema = BODIES[name]
        if not isinstance(body, dict):
            raise HttpError(422, "Invalid request.\n\nFor 'links/0/schema', not an object.", violation=True)
        for key, value in body.items():
            if key not in schema:
                raise HttpError(422, f'Invalid request.\n\n"{key}" is not a permitted key.', violation=True)
            types, _ = schema[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise HttpError(422, f"Invalid request.\n\nFor '{key}', {value!r} is not a {types[0].__name__}.",
                                violation=True)
        for key, (_, required) in schema.items():
            if required and key not in body:
                raise HttpError(422, f'Invalid request.\n\n"{key}" wasn\'t supplied.', violation=True)
        return body

    # -- JSON shapes -----------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return f"{self.api_url}{path}"

    def _web(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def _user(self, login: str) -> dict[str, Any]:
        return {"login": login, "id": abs(hash(login)) % 10**7, "type": self.users.get(login, "User"),
                "url": self._api(f"/users/{quote(login)}"), "html_url": self._web(login), "site_admin": False}

    def _repo_json(self, token: Token | None = None, full_name: str | None = None) -> dict[str, Any]:
        full = full_name or self.repo.full_name
        owner, name = full.split("/")
        data = {"id": abs(hash(full)) % 10**7, "name": name, "full_name": full, "owner": self._user(owner),
                "private": False, "fork": full != self.repo.full_name, "html_url": self._web(full),
                "url": self._api(f"/repos/{full}"), "default_branch": self.repo.default_branch,
                "pulls_url": self._api(f"/repos/{full}/pulls{{/number}}")}
        if token is not None and token.kind == "user":  # GitHub adds this for user tokens only
            data["permissions"] = {"admin": False, "maintain": False, "push": token.write,
                                   "triage": token.write, "pull": True}
        return data

    def _label(self, name: str) -> dict[str, Any]:
        return {"id": abs(hash(name)) % 10**7, "name": name, "color": "ededed", "default": False,
                "description": None, "url": self._api(f"/repos/{self.repo.full_name}/labels/{quote(name)}")}

    def _pull_json(self, pr: dict[str, Any]) -> dict[str, Any]:
        full, n = self.repo.full_name, pr["number"]
        head_owner = pr["head_repo"].split("/")[0]
        return {
            "url": self._api(f"/repos/{full}/pulls/{n}"), "id": n + 500000, "number": n, "state": pr["state"],
            "html_url": self._web(f"{full}/pull/{n}"), "issue_url": self._api(f"/repos/{full}/issues/{n}"),
            "comments_url": self._api(f"/repos/{full}/issues/{n}/comments"),
            "statuses_url": self._api(f"/repos/{full}/statuses/{self._head_sha(pr)}"),
            "title": pr["title"], "body": pr["body"], "user": self._user(pr["author"]),
            "labels": [self._label(x) for x in pr["labels"]], "draft": pr["draft"], "merged": False,
            "maintainer_can_modify": pr["maintainer_can_modify"],
            "requested_reviewers": [self._user(u) for u in pr["requested_reviewers"]],
            "requested_teams": [{"slug": t, "name": t} for t in pr["requested_teams"]],
            "head": {"label": f"{head_owner}:{pr['head_ref']}", "ref": pr["head_ref"], "sha": self._head_sha(pr),
                     "user": self._user(head_owner), "repo": self._repo_json(full_name=pr["head_repo"])},
            "base": {"label": f"{self.repo.owner}:{pr['base_ref']}", "ref": pr["base_ref"],
                     "sha": self._rev_parse(f"refs/heads/{pr['base_ref']}") or "0" * 40,
                     "user": self._user(self.repo.owner), "repo": self._repo_json()},
            "created_at": pr["created_at"], "updated_at": pr["updated_at"],
        }

    def _comment_json(self, c: dict[str, Any]) -> dict[str, Any]:
        full = self.repo.full_name
        return {"id": c["id"], "url": self._api(f"/repos/{full}/issues/comments/{c['id']}"),
                "html_url": self._web(f"{full}/pull/{c['issue']}#issuecomment-{c['id']}"),
                "issue_url": self._api(f"/repos/{full}/issues/{c['issue']}"), "body": c["body"],
                "user": self._user(c["login"]), "created_at": c["created_at"], "updated_at": c["updated_at"]}

    def _status_json(self, s: dict[str, Any]) -> dict[str, Any]:
        return {"id": s["id"], "url": self._api(f"/repos/{self.repo.full_name}/statuses/{s['sha']}"),
                "state": s["state"], "description": s["description"], "target_url": s["target_url"],
                "context": s["context"], "created_at": s["created_at"], "updated_at": s["created_at"],
                "creator": self._user(s["creator"])}

    def _page(self, items: list[Any], query: dict[str, list[str]], path: str) -> tuple[int, Any, dict[str, str]]:
        try:
            per_page = int(query.get("per_page", ["30"])[0])
            page = int(query.get("page", ["1"])[0])
        except ValueError:
            raise HttpError(422, "per_page and page must be integers", violation=True) from None
        if not 1 <= per_page <= 100 or page < 1:
            raise HttpError(422, "per_page must be 1..100 and page at least 1", violation=True)
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            params = {k: v[0] for k, v in query.items()} | {"page": str(page + 1), "per_page": str(per_page)}
            last = {**params, "page": str((len(items) + per_page - 1) // per_page)}
            headers["Link"] = (f'<{self._api(path)}?{urlencode(params)}>; rel="next", '
                               f'<{self._api(path)}?{urlencode(last)}>; rel="last"')
        return 200, chunk, headers

    # -- git -------------------------------------------------------------------------------------

    def _rev_parse(self, ref: str) -> str | None:
        if self.repo.origin is None:
            return None
        result = subprocess.run(["git", "--git-dir", str(self.repo.origin), "rev-parse", "--verify", "-q",
                                 f"{ref}^{{commit}}"], capture_output=True, text=True)
        return result.stdout.strip() or None

    def _head_sha(self, pr: dict[str, Any]) -> str:
        if pr["head_repo"] == self.repo.full_name:
            live = self._rev_parse(f"refs/heads/{pr['head_ref']}")
            if live:
                pr["sha"] = live
        return pr["sha"]

    def _resolve(self, ref: str) -> str:
        if ref in self.repo.extra_shas:
            return ref
        sha = self._rev_parse(ref) if re.fullmatch(r"[0-9a-f]{40}", ref) else self._rev_parse(f"refs/heads/{ref}")
        if not sha:
            raise HttpError(422, f"No commit found for SHA: {ref}")
        return sha

    # -- handlers --------------------------------------------------------------------------------

    def _next_number(self) -> int:
        number = self.repo.next_number
        self.repo.next_number += 1
        return number

    def _new_pull(self, number: int, title: str, body: str, head_ref: str, base_ref: str, author: str, *,
                  head_repo: str | None = None, sha: str = "", draft: bool = False,
                  maintainer_can_modify: bool = False) -> dict[str, Any]:
        return {"number": number, "title": title, "body": body, "head_ref": head_ref, "base_ref": base_ref,
                "author": author, "head_repo": head_repo or self.repo.full_name, "sha": sha, "state": "open",
                "labels": [], "requested_reviewers": [], "requested_teams": [], "draft": draft,
                "maintainer_can_modify": maintainer_can_modify, "created_at": _now(), "updated_at": _now()}

    def _get_pr(self, number: str) -> dict[str, Any]:
        pr = self.repo.pulls.get(int(number))
        if pr is None:
            raise HttpError(404, "Not Found")
        return pr

    def _h_get_user(self, token: Token, **_: Any) -> Any:
        if token.kind == "app":
            raise HttpError(403, "Resource not accessible by integration")
        return self._user(token.login)

    def _h_rate_limit(self, **_: Any) -> Any:
        core = {"limit": 5000, "remaining": 4999, "reset": int(time.time()) + 3600, "used": 1}
        return {"resources": {"core": core}, "rate": core}

    def _h_get_repo(self, token: Token, **_: Any) -> Any:
        return self._repo_json(token)

    def _h_list_pulls(self, query: dict[str, list[str]], **_: Any) -> Any:
        state = query.get("state", ["open"])[0]
        if state not in ("open", "closed", "all"):
            raise HttpError(422, f"Invalid value for 'state': {state}", violation=True)
        pulls = [p for p in self.repo.pulls.values() if state == "all" or p["state"] == state]
        if "head" in query:
            head = query["head"][0]
            if ":" not in head:
                raise HttpError(422, "'head' must be 'user:ref-name' or 'organization:ref-name'", violation=True)
            user, ref = head.split(":", 1)
            pulls = [p for p in pulls if p["head_repo"].split("/")[0].lower() == user.lower() and p["head_ref"] == ref]
        if "base" in query:
            pulls = [p for p in pulls if p["base_ref"] == query["base"][0]]
        return self._page([self._pull_json(p) for p in pulls], query, f"/repos/{self.repo.full_name}/pulls")

    def _h_create_pull(self, token: Token, body: dict[str, Any], **_: Any) -> Any:
        head = body["head"]
        ref = head.split(":", 1)[1] if ":" in head else head
        if "title" not in body and "issue" not in body:
            raise HttpError(422, 'Invalid request.\n\n"title" wasn\'t supplied.', violation=True)
        if not self._rev_parse(f"refs/heads/{body['base']}"):
            raise HttpError(422, "Validation Failed", [{"resource": "PullRequest", "field": "base", "code": "invalid"}])
        if not self._rev_parse(f"refs/heads/{ref}"):
            raise HttpError(422, "Validation Failed", [{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        for pr in self.open_pulls():
            if pr["head_ref"] == ref and pr["head_repo"] == self.repo.full_name and pr["base_ref"] == body["base"]:
                raise HttpError(422, "Validation Failed", [{
                    "resource": "PullRequest", "code": "custom",
                    "message": f"A pull request already exists for {self.repo.owner}:{ref}."}])
        number = self._next_number()
        pr = self._new_pull(number, body.get("title", ""), body.get("body", ""), ref, body["base"], token.login,
                            draft=body.get("draft", False),
                            maintainer_can_modify=body.get("maintainer_can_modify", False))
        self.repo.pulls[number] = pr
        return 201, self._pull_json(pr)

    def _h_get_pull(self, number: str, **_: Any) -> Any:
        return self._pull_json(self._get_pr(number))

    def _h_update_pull(self, number: str, body: dict[str, Any], **_: Any) -> Any:
        pr = self._get_pr(number)
        if "state" in body and body["state"] not in ("open", "closed"):
            raise HttpError(422, "Validation Failed", [{"field": "state", "code": "invalid"}], violation=True)
        if "base" in body and not self._rev_parse(f"refs/heads/{body['base']}"):
            raise HttpError(422, "Validation Failed", [{"resource": "PullRequest", "field": "base", "code": "invalid"}])
        for key, target in (("title", "title"), ("body", "body"), ("state", "state"), ("base", "base_ref"),
                            ("maintainer_can_modify", "maintainer_can_modify")):
            if key in body:
                pr[target] = body[key]
        pr["updated_at"] = _now()
        return self._pull_json(pr)

    def _h_request_reviewers(self, number: str, body: dict[str, Any], **_: Any) -> Any:
        pr = self._get_pr(number)
        users, teams = body.get("reviewers", []), body.get("team_reviewers", [])
        if not all(isinstance(x, str) for x in users + teams):
            raise HttpError(422, "Invalid request.\n\nreviewers must be strings.", violation=True)
        if not users and not teams:
            raise HttpError(422, "Invalid request.\n\nNo reviewers given.", violation=True)
        if any(u.lower() == pr["author"].lower() for u in users):
            raise HttpError(422, "Review cannot be requested from pull request author.")
        if any(u not in self.collaborators for u in users):
            raise HttpError(422, "Reviews may only be requested from collaborators. One or more of the users or "
                            f"teams you specified is not a collaborator of the {self.repo.full_name} repository.")
        if any(t not in self.teams for t in teams):
            raise HttpError(422, "Reviews may only be requested from collaborators. One or more of the teams you "
                            f"specified is not a collaborator of the {self.repo.full_name} repository.")
        pr["requested_reviewers"] = list(dict.fromkeys(pr["requested_reviewers"] + users))
        pr["requested_teams"] = list(dict.fromkeys(pr["requested_teams"] + teams))
        return 201, self._pull_json(pr)

    def _h_list_reviews(self, number: str, query: dict[str, list[str]], **_: Any) -> Any:
        pr = self._get_pr(number)
        full = self.repo.full_name
        reviews = [{"id": r["id"], "user": self._user(r["login"]), "body": r["body"], "state": r["state"],
                    "commit_id": r["commit_id"], "submitted_at": r["submitted_at"],
                    "html_url": self._web(f"{full}/pull/{pr['number']}#pullrequestreview-{r['id']}"),
                    "pull_request_url": self._api(f"/repos/{full}/pulls/{pr['number']}")}
                   for r in self.repo.reviews.get(pr["number"], [])]
        return self._page(reviews, query, f"/repos/{full}/pulls/{number}/reviews")

    def _h_get_issue(self, number: str, **_: Any) -> Any:
        pr = self._get_pr(number)
        full = self.repo.full_name
        return {"url": self._api(f"/repos/{full}/issues/{number}"), "number": pr["number"], "id": pr["number"],
                "title": pr["title"], "body": pr["body"], "state": pr["state"], "user": self._user(pr["author"]),
                "labels": [self._label(x) for x in pr["labels"]], "html_url": self._web(f"{full}/pull/{number}"),
                "pull_request": {"url": self._api(f"/repos/{full}/pulls/{number}")}}

    def _h_list_labels(self, number: str, query: dict[str, list[str]], **_: Any) -> Any:
        pr = self._get_pr(number)
        return self._page([self._label(x) for x in pr["labels"]], query,
                          f"/repos/{self.repo.full_name}/issues/{number}/labels")

    def _h_add_labels(self, number: str, body: Any, **_: Any) -> Any:
        pr = self._get_pr(number)
        names = body.get("labels") if isinstance(body, dict) else body
        if isinstance(body, dict) and set(body) - {"labels"}:
            raise HttpError(422, "Invalid request.\n\nOnly \"labels\" is permitted.", violation=True)
        if not isinstance(names, list) or not names:
            raise HttpError(422, "Invalid request.\n\nlabels must be a non-empty array.", violation=True)
        names = [n.get("name") if isinstance(n, dict) else n for n in names]
        if not all(isinstance(n, str) and 0 < len(n) <= 50 for n in names):
            raise HttpError(422, "Validation Failed", [{"resource": "Label", "field": "name", "code": "invalid"}],
                            violation=True)
        pr["labels"] = list(dict.fromkeys(pr["labels"] + names))
        return [self._label(x) for x in pr["labels"]]

    def _h_remove_label(self, number: str, name: str, **_: Any) -> Any:
        pr = self._get_pr(number)
        label = unquote(name)
        if label not in pr["labels"]:
            raise HttpError(404, "Label does not exist")
        pr["labels"].remove(label)
        return [self._label(x) for x in pr["labels"]]

    def _h_list_comments(self, number: str, query: dict[str, list[str]], **_: Any) -> Any:
        self._get_pr(number)
        comments = sorted((c for c in self.repo.comments.values() if c["issue"] == int(number)),
                          key=lambda c: c["id"])
        return self._page([self._comment_json(c) for c in comments], query,
                          f"/repos/{self.repo.full_name}/issues/{number}/comments")

    def _h_create_comment(self, number: str, token: Token, body: dict[str, Any], **_: Any) -> Any:
        self._get_pr(number)
        _check_comment_body(body["body"])
        comment = self.add_comment(int(number), token.login, body["body"])
        return 201, self._comment_json(comment)

    def _h_update_comment(self, id: str, token: Token, body: dict[str, Any], **_: Any) -> Any:  # noqa: A002
        comment = self.repo.comments.get(int(id))
        if comment is None:
            raise HttpError(404, "Not Found")
        _check_comment_body(body["body"])
        comment["body"] = body["body"]
        comment["updated_at"] = _now()
        return self._comment_json(comment)

    def _h_get_commit(self, ref: str, **_: Any) -> Any:
        sha = self._resolve(ref)
        full = self.repo.full_name
        return {"sha": sha, "node_id": "C_" + sha[:10], "url": self._api(f"/repos/{full}/commits/{sha}"),
                "html_url": self._web(f"{full}/commit/{sha}"),
                "commit": {"message": "", "tree": {"sha": "0" * 40, "url": ""}}, "parents": [], "files": []}

    def _latest_statuses(self, sha: str) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for status in self.repo.statuses.get(sha, []):
            latest[status["context"].lower()] = status
        return list(latest.values())

    def _h_combined_status(self, ref: str, query: dict[str, list[str]], **_: Any) -> Any:
        sha = self._resolve(ref)
        latest = self._latest_statuses(sha)
        states = {s["state"] for s in latest}
        state = ("failure" if states & {"error", "failure"} else "pending" if not latest or "pending" in states
                 else "success")
        full = self.repo.full_name
        return {"state": state, "sha": sha, "total_count": len(latest), "statuses": [self._status_json(s)
                                                                                      for s in latest],
                "repository": self._repo_json(), "commit_url": self._api(f"/repos/{full}/commits/{sha}"),
                "url": self._api(f"/repos/{full}/commits/{sha}/status")}

    def _h_list_statuses(self, ref: str, query: dict[str, list[str]], **_: Any) -> Any:
        sha = self._resolve(ref)
        items = [self._status_json(s) for s in reversed(self.repo.statuses.get(sha, []))]
        return self._page(items, query, f"/repos/{self.repo.full_name}/commits/{ref}/statuses")

    def _h_create_status(self, sha: str, token: Token, body: dict[str, Any], **_: Any) -> Any:
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise HttpError(422, f"No commit found for SHA: {sha}", violation=True)
        sha = self._resolve(sha)
        if body["state"] not in ("error", "failure", "pending", "success"):
            raise HttpError(422, "Validation Failed", [{"resource": "Status", "field": "state", "code": "custom",
                                                        "message": "state is not included in the list"}],
                            violation=True)
        description = body.get("description")
        if description is not None and len(description) > 140:
            raise HttpError(422, "Validation Failed", [{"resource": "Status", "code": "custom", "field":
                                                        "description", "message": "description is too long "
                                                        "(maximum is 140 characters)"}], violation=True)
        if len(self.repo.statuses.get(sha, [])) >= 1000:
            raise HttpError(422, "Validation Failed: This SHA and context has reached the maximum number of statuses.")
        status = {"id": next(self._ids), "sha": sha, "state": body["state"], "description": description,
                  "target_url": body.get("target_url"), "context": body.get("context", "default"),
                  "created_at": _now(), "creator": token.login}
        self.repo.statuses.setdefault(sha, []).append(status)
        return 201, self._status_json(status)

    def _h_get_permission(self, user: str, **_: Any) -> Any:
        if user not in self.users:
            raise HttpError(404, "Not Found")
        role = self.collaborators.get(user, "read")  # a public repository: everyone can read
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        return {"permission": legacy, "role_name": role, "user": self._user(user)}


    # -- settings and pull-request files --------------------------------------------------------

    def _h_list_pull_files(self, number: str, query: dict[str, list[str]], **_: Any) -> Any:
        """The files of the pull request's diff (base...head) from the origin repository, as GitHub lists them."""
        pr = self._get_pr(number)
        head = self._head_sha(pr)
        base = self._rev_parse(f"refs/heads/{pr['base_ref']}") or ""
        git = ["git", "--git-dir", str(self.repo.origin)]
        start = subprocess.run([*git, "merge-base", base, head], capture_output=True, text=True).stdout.strip()
        names = subprocess.run([*git, "diff", "--name-status", "--no-renames", start, head], capture_output=True,
                               text=True).stdout.splitlines()
        files = []
        for line in names:
            status, name = line.split("\t", 1)
            patch = subprocess.run([*git, "diff", "--no-color", start, head, "--", name], capture_output=True,
                                   text=True).stdout
            hunks = patch[patch.index("@@"):] if "@@" in patch else ""
            full = self.repo.full_name
            files.append({"sha": "0" * 40, "filename": name,
                          "status": {"A": "added", "D": "removed"}.get(status[0], "modified"),
                          "additions": hunks.count("\n+"), "deletions": hunks.count("\n-"),
                          "changes": hunks.count("\n+") + hunks.count("\n-"),
                          "blob_url": self._web(f"{full}/blob/{head}/{name}"),
                          "raw_url": self._web(f"{full}/raw/{head}/{name}"),
                          "contents_url": self._api(f"/repos/{full}/contents/{name}?ref={head}"),
                          "patch": hunks.rstrip("\n")})
        return self._page(files, query, f"/repos/{self.repo.full_name}/pulls/{number}/files")

    def _settings(self) -> None:
        if not self.repo.settings_readable:
            raise HttpError(403, "Resource not accessible by integration")

    def _h_get_fork_approval(self, **_: Any) -> Any:
        self._settings()
        if self.repo.fork_pr_approval is None:
            raise HttpError(404, "Not Found")
        return {"approval_policy": self.repo.fork_pr_approval}

    def _h_get_protection(self, branch: str, **_: Any) -> Any:
        self._settings()
        if self.repo.protection is None or unquote(branch) != self.repo.default_branch:
            raise HttpError(404, "Branch not protected")
        return self.repo.protection

    def _h_get_branch_rules(self, branch: str, query: dict[str, list[str]], **_: Any) -> Any:
        rules = self.repo.rules if unquote(branch) == self.repo.default_branch else []
        return self._page(rules, query, f"/repos/{self.repo.full_name}/rules/branches/{branch}")


def _check_comment_body(body: str) -> None:
    if not body.strip():
        raise HttpError(422, "Validation Failed", [{"resource": "IssueComment", "code": "missing_field",
                                                    "field": "body"}], violation=True)
    if len(body) > 65536:
        raise HttpError(422, "Validation Failed", [{"resource": "IssueComment", "code": "custom", "field": "body",
                                                    "message": "body is too long (maximum is 65536 characters)"}],
                        violation=True)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
