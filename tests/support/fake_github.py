"""A fake GitHub: the REST routes the GitHub forge and `doctor` use, plus the auto-merge GraphQL
mutation, served on 127.0.0.1 and backed by a local bare git repository.

Tokens carry permissions, as GitHub's do. `token=` is an all-scopes GITHUB_TOKEN (every scope the
workflow `permissions:` key can grant, at write); `add_token(token, {"contents": "write", ...})`
adds one with exactly the scopes a job asks for. Every route names the scope it needs in ROUTES,
each row citing GitHub's documentation for it; a token without it gets GitHub's 403 ("Resource not
accessible by integration", with the X-Accepted-GitHub-Permissions header). What GITHUB_TOKEN can
never read (the repository's Actions settings and secrets: the `administration` and `secrets`
permissions) answers 403 to it and only an `admin=True` token (a fork owner's own) sees it. With
`enforce_git=True` a pre-receive hook in the bare repository applies the same rule to `git push`
(`contents: write`, GITHUB_TOKEN taken from the pushing process's environment) and the branch
rulesets (GH013), as GitHub's git server does.

The repository's state a fork owner controls is modelled too: its labels (none on a fresh fork;
adding a missing label to a PR creates it), Pages (`pages`), rulesets and branch protection on the
default branch, and the two Actions settings (`actions_settings`): with "Allow GitHub Actions to
create and approve pull requests" off, POST /pulls with a GITHUB_TOKEN answers GitHub's 403.

The git side is real: branches are the bare repository's refs (the forge pushes to it with git), a
squash merge really writes the squashed commit onto main with git, and deleting a branch deletes
the ref. Pull requests, comments, labels and statuses live in memory.

Faults are injected per route (`fail`, `rate_limit`): N responses with a status, before the request
is handled, or after it (the server did the work, the client saw an error: what makes a retried POST
dangerous). Every request is logged for assertions (`requests`, `count`).

Every `url` field is built from the server's own base_url, because PyGithub follows `url` fields
and asserts they have its host and port. Build clients against it with
`seconds_between_requests=None, seconds_between_writes=None` (no client-side throttling).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from autoresearch_ci.forge import gitcore as gitops
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.gitcore import GitError, MergeConflict

BOT_USER = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}

# The scopes a workflow's `permissions:` key can grant GITHUB_TOKEN (GitHub's "Controlling
# permissions for GITHUB_TOKEN", docs.github.com/en/actions/writing-workflows/choosing-what-your-
# workflow-does/controlling-permissions-for-github_token). `metadata: read` is always granted.
# `administration` and `secrets` are not among them: only a person's own token reaches those.
WORKFLOW_SCOPES = (
    "actions",
    "attestations",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
)
LEVELS = {"none": 0, "read": 1, "write": 2}
NOT_ACCESSIBLE = "Resource not accessible by integration"  # GitHub's 403 to an installation token
ACTIONS_MAY_NOT_OPEN_PRS = "GitHub Actions is not permitted to create or approve pull requests."

DOCS = "https://docs.github.com/en/rest"


@dataclass(frozen=True)
class Need:
    """What a route needs: any one of the (scope, level) pairs, and the page that says so.
    An empty `any_of` is `metadata: read`, which every token has."""

    any_of: tuple[tuple[str, str], ...]
    doc: str
    note: str = ""

    def header(self) -> str:  # X-Accepted-GitHub-Permissions, as GitHub spells the scopes
        return "; ".join(f"{s.replace('-', '_')}={lvl}" for s, lvl in self.any_of) or "metadata=read"


def need(*pairs: str, doc: str, note: str = "") -> Need:
    return Need(tuple(tuple(p.split("=")) for p in pairs), doc, note)


METADATA = ()  # no pair: metadata read, always granted

# Label creation is disputed: GitHub's page for "Create a label" (and "Add labels to an issue", which
# creates a label the repository lacks) accepts issues:write OR pull_requests:write, but since 2025
# GitHub answers 403 to a token with only pull-requests: write (docker-library/official-images#19241,
# orgs/community discussion #156181; actions/labeler's README: "Creating New Labels: Requires
# issues: write"). The fake applies the stricter rule; the workflow grants both.
LABEL_CREATION = need(
    "issues=write",
    doc=f"{DOCS}/issues/labels#create-a-label",
    note="documented as issues:write or pull_requests:write; enforced as issues:write since 2025",
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False  # handle the request first, then answer with the fault
    reset_in: float | None = None  # rate limit: X-RateLimit-Reset this many seconds ahead


@dataclass
class LoggedRequest:
    method: str
    path: str  # with the query string
    body: object
    status: int = 0
    token: str | None = None  # the token that sent it


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, *, headers: dict | None = None, doc: str | None = None, **extra
    ):
        self.status = status
        self.headers = headers or {}
        self.body = {"message": message, "documentation_url": doc or "https://docs.github.com/rest", **extra}


class FakeGitHub:
    def __init__(
        self,
        bare_repo: str | Path,
        slug: str = "octo/lab",
        token: str | None = "test-token",
        default_branch: str = "main",
        *,
        enforce_git: bool = False,
        labels: tuple[str, ...] | None = None,
    ):
        self.git = Git(bare_repo)
        self.slug = slug
        self.owner, self.name = slug.split("/")
        self.token = token
        self.default_branch = default_branch
        self.automerge = "clean"  # "clean" | "enable" | "merge" | "not-allowed"
        self.lock = threading.RLock()
        self.tokens: dict[str, dict] = {}  # token -> {"permissions": {...}, "admin": bool, "actions": bool}
        self.pulls: dict[int, dict] = {}
        self.comments: dict[int, dict] = {}
        self.issue_labels: dict[int, list[str]] = {}
        # The repository's labels. None (the default) keeps the old leniency: any name is known.
        self.labels: dict[str, dict] | None = (
            None if labels is None else {n: {"color": "ededed", "description": ""} for n in labels}
        )
        self.statuses: dict[str, list[dict]] = {}
        self.pages: dict | None = {"build_type": "workflow", "status": "built"}
        self.actions_settings = {
            "default_workflow_permissions": "write",
            "can_approve_pull_request_reviews": True,
        }
        self.secrets: set[str] = set()  # repository secret names (only an admin token can list them)
        self.variables: dict[str, str] = {}  # repository variables (likewise)
        self.rulesets: list[dict] = []  # see add_ruleset
        self.protection: dict[str, dict] = {}  # branch -> legacy protection {"required_status_checks": [...]}
        self.runs: dict[int, str] = {}  # workflow run id -> created_at
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self._next_id = 1
        self._token: str | None = None  # the token of the request being handled (under self.lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.enforce_git = enforce_git
        if token is not None:
            self.add_token(token, {s: "write" for s in WORKFLOW_SCOPES})
        if enforce_git:
            self._install_hook()

    # ---------------------------------------------------------------------------------- tokens

    def add_token(
        self, token: str, permissions: dict[str, str], *, admin: bool = False, actions: bool = True
    ) -> str:
        """A token with these scopes (`{"contents": "write", "pull-requests": "read"}`), as a job's
        `permissions:` block gives GITHUB_TOKEN (actions=True), or a person's token (actions=False;
        admin=True: the repository owner's, which also reads the Actions settings and secrets)."""
        for scope, level in permissions.items():
            if scope not in WORKFLOW_SCOPES or level not in LEVELS:
                raise ValueError(f"not a GITHUB_TOKEN permission: {scope}: {level}")
        with self.lock:
            self.tokens[token] = {"permissions": dict(permissions), "admin": admin, "actions": actions}
            self._write_token_file()
        return token

    def allows(self, token: str | None, n: Need) -> bool:
        t = self.tokens.get(token or "")
        if t is None:
            return False
        if t["admin"] or not n.any_of:
            return True
        perms = t["permissions"]
        return any(LEVELS[perms.get(scope, "none")] >= LEVELS[level] for scope, level in n.any_of)

    def add_ruleset(self, rules: list[str], *, bypass_actions: bool = False, name: str = "main") -> int:
        """An active branch ruleset on the default branch with these rule types ("update",
        "pull_request", "required_status_checks", ...); bypass_actions puts GitHub Actions on its
        bypass list. Returns its id."""
        rid = 100 + len(self.rulesets)
        self.rulesets.append(
            {"id": rid, "name": name, "rules": list(rules), "bypass_actions": bypass_actions, "checks": []}
        )
        self._write_token_file()
        return rid

    # ------------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake._handle(self)

            do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

            def log_message(self, *args):  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------------- git push permissions

    def _state_file(self) -> Path:
        return self.git.dir / "fake-github-state.json"

    def _write_token_file(self) -> None:
        if not self.enforce_git:
            return
        state = {
            "tokens": self.tokens,
            "default_branch": self.default_branch,
            "slug": self.slug,
            "rulesets": self.rulesets,
        }
        self._state_file().write_text(json.dumps(state), encoding="utf-8")

    def _install_hook(self) -> None:
        """A pre-receive hook that asks what GitHub's git server asks: does the pushing token have
        `contents: write`, and does a ruleset on the default branch forbid this update?"""
        hook = self.git.dir / "hooks" / "pre-receive"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(_PRE_RECEIVE.replace("@STATE@", str(self._state_file())), encoding="utf-8")
        hook.chmod(0o755)
        self._write_token_file()

    @property
    def base_url(self) -> str:
        assert self._server, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def repo_url(self) -> str:
        return f"{self.base_url}/repos/{self.slug}"

    # ------------------------------------------------------------------------- fault injection

    def fail(
        self,
        method: str,
        path_regex: str,
        status: int = 502,
        *,
        times: int = 1,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        after: bool = False,
        **extra,
    ) -> None:
        """The next `times` requests matching method and path (regex searched in the path without
        its query) get `status` with {"message": ...}; with after=True the request is handled first."""
        body = {
            "message": message
            or {401: "Bad credentials", 403: "Forbidden", 404: "Not Found", 502: "Bad Gateway"}.get(
                status, "error"
            ),
            **extra,
        }
        self.faults.append(
            Fault(method.upper(), re.compile(path_regex), status, times, body, headers or {}, after)
        )

    def rate_limit(self, method: str, path_regex: str, *, times: int = 1, reset_in: float = 1.0) -> None:
        """Primary rate limit: 403, X-RateLimit-Remaining: 0, X-RateLimit-Reset `reset_in` s ahead."""
        body = {"message": "API rate limit exceeded for installation ID 1."}
        self.faults.append(
            Fault(method.upper(), re.compile(path_regex), 403, times, body, {}, False, reset_in)
        )

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in self.log
            if (method is None or r.method == method.upper())
            and (path_regex is None or re.search(path_regex, r.path.split("?")[0]))
        ]

    def count(self, method: str, path_regex: str) -> int:
        return len(self.requests(method, path_regex))

    # ------------------------------------------------------------------------------ dispatch

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        auth = h.headers.get("Authorization") or ""
        token = auth.split(" ", 1)[1] if " " in auth else None
        split = urlsplit(h.path)
        path, query = unquote(split.path), {k: v[0] for k, v in parse_qs(split.query).items()}
        entry = LoggedRequest(h.command, h.path, body)
        entry.token = token
        with self.lock:
            self.log.append(entry)
            fault = self._take_fault(h.command, path)
            headers: dict[str, str] = {}
            if fault is not None and not fault.after:
                status, payload, headers = fault.status, fault.body, self._fault_headers(fault)
            elif token not in self.tokens:
                status, payload = 401, {"message": "Bad credentials"}
            else:
                self._token = token
                try:
                    status, payload = self._route(h.command, path, query, body)
                except ApiError as e:
                    status, payload, headers = e.status, e.body, e.headers
                if fault is not None:
                    status, payload, headers = fault.status, fault.body, self._fault_headers(fault)
            entry.status = status
        data = b"" if status == 204 else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("X-RateLimit-Limit", "5000")
        if "X-RateLimit-Remaining" not in headers:
            h.send_header("X-RateLimit-Remaining", "4999")
            h.send_header("X-RateLimit-Reset", str(int(time.time()) + 3600))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for f in self.faults:
            if f.times > 0 and f.method == method and f.pattern.search(path):
                f.times -= 1
                return f
        return None

    @staticmethod
    def _fault_headers(f: Fault) -> dict[str, str]:
        headers = dict(f.headers)
        if f.reset_in is not None:
            headers["X-RateLimit-Remaining"] = "0"
            headers["X-RateLimit-Reset"] = str(int(time.time() + f.reset_in))
        return headers

    def _route(self, method: str, path: str, query: dict, body) -> tuple[int, object]:
        if method == "POST" and path in ("/graphql", "/api/graphql"):
            return self._graphql(body or {})
        if path == "/rate_limit":
            core = {"limit": 5000, "remaining": 4999, "reset": int(time.time()) + 3600, "used": 1}
            return 200, {"resources": {"core": core}, "rate": core}
        prefix = f"/repos/{self.slug}"
        if not path.startswith("/repos/"):
            raise ApiError(404, "Not Found")
        if path != prefix and not path.startswith(prefix + "/"):
            raise ApiError(404, "Not Found")
        rest = path[len(prefix) :]
        for m, pattern, fn, needed in self._routes():
            match = re.fullmatch(pattern, rest)
            if m == method and match:
                self.require(needed)
                return fn(query, body, *match.groups())
        raise ApiError(404, "Not Found")

    def require(self, n: Need) -> None:
        """GitHub's answer to a token without the scope a route needs."""
        if not self.allows(self._token, n):
            kind = "integration" if self.tokens[self._token]["actions"] else "personal access token"
            raise ApiError(
                403,
                f"Resource not accessible by {kind}",
                headers={"X-Accepted-GitHub-Permissions": n.header()},
                doc=n.doc,
            )

    def _routes(self):
        """(method, path under /repos/{owner}/{repo}, handler, what it needs). The permission of
        each row is the one GitHub's REST reference gives under "Fine-grained access tokens for
        ..." on the page cited (the same permissions an installation token, GITHUB_TOKEN, needs)."""
        r, w = "read", "write"
        comments = f"{DOCS}/issues/comments"
        return [
            ("GET", r"", lambda q, b: (200, self._repo_json()),
             need(doc=f"{DOCS}/repos/repos#get-a-repository")),
            ("GET", r"/branches/(.+)", self._get_branch,
             need(f"contents={r}", doc=f"{DOCS}/branches/branches#get-a-branch")),
            ("GET", r"/git/ref/heads/(.+)", self._get_ref,
             need(f"contents={r}", doc=f"{DOCS}/git/refs#get-a-reference")),
            ("GET", r"/git/refs/heads/(.+)", self._get_ref,
             need(f"contents={r}", doc=f"{DOCS}/git/refs#get-a-reference")),
            ("POST", r"/git/refs", self._create_ref,
             need(f"contents={w}", doc=f"{DOCS}/git/refs#create-a-reference")),
            ("PATCH", r"/git/refs/heads/(.+)", self._update_ref,
             need(f"contents={w}", doc=f"{DOCS}/git/refs#update-a-reference")),
            ("DELETE", r"/git/refs/heads/(.+)", self._delete_ref,
             need(f"contents={w}", doc=f"{DOCS}/git/refs#delete-a-reference")),
            ("GET", r"/commits/([^/]+)", self._get_commit,
             need(f"contents={r}", doc=f"{DOCS}/commits/commits#get-a-commit")),
            ("GET", r"/commits/([^/]+)/statuses", self._list_statuses,
             need(f"statuses={r}", doc=f"{DOCS}/commits/statuses#list-commit-statuses-for-a-reference")),
            ("POST", r"/statuses/([0-9a-f]{40})", self._create_status,
             need(f"statuses={w}", doc=f"{DOCS}/commits/statuses#create-a-commit-status")),
            ("GET", r"/pulls", self._list_pulls,
             need(f"pull-requests={r}", doc=f"{DOCS}/pulls/pulls#list-pull-requests")),
            ("POST", r"/pulls", self._create_pull,
             need(f"pull-requests={w}", doc=f"{DOCS}/pulls/pulls#create-a-pull-request")),
            ("GET", r"/pulls/(\d+)", lambda q, b, n: (200, self._pull_json(self._pull(n))),
             need(f"pull-requests={r}", doc=f"{DOCS}/pulls/pulls#get-a-pull-request")),
            ("PATCH", r"/pulls/(\d+)", self._edit_pull,
             need(f"pull-requests={w}", doc=f"{DOCS}/pulls/pulls#update-a-pull-request")),
            ("GET", r"/pulls/(\d+)/merge", self._is_merged,
             need(f"pull-requests={r}", doc=f"{DOCS}/pulls/pulls#check-if-a-pull-request-has-been-merged")),
            ("PUT", r"/pulls/(\d+)/merge", self._merge_pull,
             need(f"contents={w}", doc=f"{DOCS}/pulls/pulls#merge-a-pull-request")),
            ("GET", r"/issues/(\d+)", lambda q, b, n: (200, self._issue_json(self._pull(n))),
             need(f"issues={r}", f"pull-requests={r}", doc=f"{DOCS}/issues/issues#get-an-issue")),
            ("GET", r"/issues/(\d+)/labels", lambda q, b, n: (200, self._labels_json(int(n))),
             need(f"issues={r}", f"pull-requests={r}", doc=f"{DOCS}/issues/labels#list-labels-for-an-issue")),
            ("POST", r"/issues/(\d+)/labels", self._add_labels,
             need(f"issues={w}", f"pull-requests={w}", doc=f"{DOCS}/issues/labels#add-labels-to-an-issue")),
            ("GET", r"/labels/([^/]+)", self._get_label,
             need(f"issues={r}", f"pull-requests={r}", doc=f"{DOCS}/issues/labels#get-a-label")),
            ("POST", r"/labels", self._create_label, LABEL_CREATION),
            ("GET", r"/issues/(\d+)/comments", self._list_comments,
             need(f"issues={r}", f"pull-requests={r}", doc=f"{comments}#list-issue-comments")),
            ("POST", r"/issues/(\d+)/comments", self._create_comment,
             need(f"issues={w}", f"pull-requests={w}", doc=f"{comments}#create-an-issue-comment")),
            ("GET", r"/issues/comments/(\d+)", lambda q, b, c: (200, self._comment(c)),
             need(f"issues={r}", f"pull-requests={r}", doc=f"{comments}#get-an-issue-comment")),
            ("PATCH", r"/issues/comments/(\d+)", self._edit_comment,
             need(f"issues={w}", f"pull-requests={w}", doc=f"{comments}#update-an-issue-comment")),
            ("DELETE", r"/issues/comments/(\d+)", self._delete_comment,
             need(f"issues={w}", f"pull-requests={w}", doc=f"{comments}#delete-an-issue-comment")),
            ("GET", r"/pages", self._get_pages,
             need(f"pages={r}", doc=f"{DOCS}/pages/pages#get-a-apiname-pages-site")),
            ("GET", r"/rules/branches/(.+)", self._branch_rules,
             need(doc=f"{DOCS}/repos/rules#get-rules-for-a-branch")),
            ("GET", r"/rulesets/(\d+)", self._get_ruleset,
             need(doc=f"{DOCS}/repos/rules#get-a-repository-ruleset")),
            ("GET", r"/actions/runs/(\d+)", self._get_run,
             need(f"actions={r}", doc=f"{DOCS}/actions/workflow-runs#get-a-workflow-run")),
            # Repository administration and secrets: no `permissions:` scope grants them to
            # GITHUB_TOKEN (the scopes GitHub lists stop at the WORKFLOW_SCOPES above).
            ("GET", r"/actions/permissions/workflow", self._workflow_permissions,
             need("administration=read",
                  doc=f"{DOCS}/actions/permissions#get-default-workflow-permissions-for-a-repository")),
            ("GET", r"/actions/variables/([A-Za-z0-9_]+)", self._get_variable,
             need("variables=read", doc=f"{DOCS}/actions/variables#get-a-repository-variable")),
            ("GET", r"/actions/secrets", self._list_secrets,
             need("secrets=read", doc=f"{DOCS}/actions/secrets#list-repository-secrets")),
        ]  # fmt: skip

    # ---------------------------------------------------------------------------------- json

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _repo_json(self) -> dict:
        owner = {
            "login": self.owner,
            "id": 1,
            "type": "Organization",
            "url": f"{self.base_url}/users/{self.owner}",
        }
        return {
            "id": 1,
            "node_id": "R_1",
            "name": self.name,
            "full_name": self.slug,
            "owner": owner,
            "private": False,
            "url": self.repo_url,
            "html_url": f"https://github.test/{self.slug}",
            "default_branch": self.default_branch,
            "allow_auto_merge": self.automerge != "not-allowed",
            "permissions": {"admin": False, "push": True, "pull": True},
        }

    def branch_sha(self, branch: str) -> str | None:
        return self.git.try_rev_parse(f"refs/heads/{branch}")

    def _ref_json(self, branch: str, sha: str) -> dict:
        url = f"{self.repo_url}/git/refs/heads/{branch}"
        return {
            "ref": f"refs/heads/{branch}",
            "node_id": f"REF_{branch}",
            "url": url,
            "object": {"sha": sha, "type": "commit", "url": f"{self.repo_url}/git/commits/{sha}"},
        }

    def _pull(self, number) -> dict:
        pr = self.pulls.get(int(number))
        if pr is None:
            raise ApiError(404, "Not Found")
        return pr

    def _head_sha(self, pr: dict) -> str:
        if pr["state"] == "open":
            live = self.branch_sha(pr["head"])
            if live:
                pr["head_sha"] = live
        return pr["head_sha"]

    def _pull_json(self, pr: dict) -> dict:
        n = pr["number"]
        head_sha = self._head_sha(pr)
        base_sha = self.branch_sha(pr["base"])
        return {
            "id": 1000 + n,
            "node_id": f"PR_{n}",
            "number": n,
            "state": pr["state"],
            "title": pr["title"],
            "body": pr["body"],
            "draft": False,
            "user": BOT_USER,
            "url": f"{self.repo_url}/pulls/{n}",
            "html_url": f"https://github.test/{self.slug}/pull/{n}",
            "issue_url": f"{self.repo_url}/issues/{n}",
            "comments_url": f"{self.repo_url}/issues/{n}/comments",
            "statuses_url": f"{self.repo_url}/statuses/{head_sha}",
            "head": {
                "ref": pr["head"],
                "sha": head_sha,
                "label": f"{self.owner}:{pr['head']}",
                # a PR from a fork (set "from_fork": "someone/repo" on the pull) names the fork
                "repo": {**self._repo_json(), "full_name": pr["from_fork"]}
                if pr.get("from_fork")
                else self._repo_json(),
            },
            "base": {
                "ref": pr["base"],
                "sha": base_sha,
                "label": f"{self.owner}:{pr['base']}",
                "repo": self._repo_json(),
            },
            "merged": pr["merged"],
            "merged_at": pr["merged_at"],
            "merge_commit_sha": pr["merge_commit_sha"],
            "mergeable": None if pr["merged"] else self._mergeable(pr),
            "mergeable_state": "clean",
            "labels": self._labels_json(n),
            "auto_merge": pr["auto_merge"],
            "created_at": pr["created_at"],
            "updated_at": _now(),
            "closed_at": pr["closed_at"],
        }

    def _issue_json(self, pr: dict) -> dict:
        n = pr["number"]
        return {
            "id": 2000 + n,
            "number": n,
            "state": pr["state"],
            "title": pr["title"],
            "body": pr["body"],
            "url": f"{self.repo_url}/issues/{n}",
            "html_url": f"https://github.test/{self.slug}/pull/{n}",
            "labels": self._labels_json(n),
            "user": BOT_USER,
            "pull_request": {"url": f"{self.repo_url}/pulls/{n}"},
        }

    def _labels_json(self, n: int) -> list[dict]:
        return [
            {
                "id": abs(hash(name)) % 10**6,
                "name": name,
                "color": "ededed",
                "url": f"{self.repo_url}/labels/{name}",
            }
            for name in self.issue_labels.get(n, [])
        ]

    def _mergeable(self, pr: dict) -> bool:
        base, head = self.branch_sha(pr["base"]), self._head_sha(pr)
        try:
            self.git.three_way(self.git.merge_base(base, head), base, head)
            return True
        except GitError:
            return False

    # -------------------------------------------------------------------------------- git refs

    def _get_branch(self, q, b, branch):
        sha = self.branch_sha(branch)
        if sha is None:
            raise ApiError(404, "Branch not found")
        prot = self.protection.get(branch)
        out = {
            "name": branch,
            "protected": prot is not None,
            "commit": {"sha": sha, "url": f"{self.repo_url}/commits/{sha}"},
            "protection_url": f"{self.repo_url}/branches/{branch}/protection",
        }
        if prot is not None:
            checks = prot.get("required_status_checks") or []
            out["protection"] = {
                "enabled": True,
                "required_status_checks": {"enforcement_level": "non_admins", "contexts": list(checks)},
            }
        return 200, out

    def _get_ref(self, q, b, branch):
        sha = self.branch_sha(branch)
        if sha is None:
            raise ApiError(404, "Not Found")
        return 200, self._ref_json(branch, sha)

    def _create_ref(self, q, body):
        ref, sha = body["ref"], body["sha"]
        if not ref.startswith("refs/heads/"):
            raise ApiError(422, "Reference name must start with 'refs/' and have at least two slashes.")
        if self.git.try_rev_parse(ref):
            raise ApiError(422, "Reference already exists")
        self.git.update_ref(ref, sha, gitops.ZERO_OID)
        return 201, self._ref_json(ref[len("refs/heads/") :], sha)

    def _update_ref(self, q, body, branch):
        old = self.branch_sha(branch)
        if old is None:
            raise ApiError(422, "Reference does not exist")
        if not body.get("force") and not self.git.is_ancestor(old, body["sha"]):
            raise ApiError(422, "Update is not a fast forward")
        self.git.update_ref(f"refs/heads/{branch}", body["sha"], old)
        return 200, self._ref_json(branch, body["sha"])

    def _delete_ref(self, q, b, branch):
        sha = self.branch_sha(branch)
        if sha is None:
            raise ApiError(422, "Reference does not exist")
        self.git.delete_ref(f"refs/heads/{branch}", sha)
        return 204, None

    # ----------------------------------------------------------------------- commits, statuses

    def _get_commit(self, q, b, rev):
        sha = self.git.try_rev_parse(rev)
        if sha is None:
            raise ApiError(422, f"No commit found for SHA: {rev}")
        parents = [{"sha": p, "url": f"{self.repo_url}/commits/{p}"} for p in self.git.parents(sha)]
        return 200, {
            "sha": sha,
            "url": f"{self.repo_url}/commits/{sha}",
            "parents": parents,
            "html_url": f"https://github.test/{self.slug}/commit/{sha}",
            "files": [],
            "commit": {"message": self.git.message(sha), "url": f"{self.repo_url}/git/commits/{sha}"},
        }

    def _create_status(self, q, body, sha):
        if self.git.try_rev_parse(sha) is None:
            raise ApiError(422, f"No commit found for SHA: {sha}")
        if body.get("state") not in ("error", "failure", "pending", "success"):
            raise ApiError(422, "Validation Failed", errors=[{"field": "state", "code": "invalid"}])
        if len(body.get("description") or "") > 140:
            raise ApiError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "field": "description",
                        "code": "custom",
                        "message": "description is too long (maximum is 140 characters)",
                    }
                ],
            )
        sid = self._new_id()
        status = {
            "id": sid,
            "state": body["state"],
            "description": body.get("description"),
            "context": body.get("context") or "default",
            "target_url": body.get("target_url"),
            "url": f"{self.repo_url}/statuses/{sha}",
            "created_at": _now(),
            "updated_at": _now(),
        }
        self.statuses.setdefault(sha, []).insert(0, status)
        return 201, status

    def _list_statuses(self, q, b, rev):
        return 200, self.statuses.get(self.git.try_rev_parse(rev) or rev, [])

    def latest_status(self, sha: str, context: str = "autoresearch/eval") -> dict | None:
        return next((s for s in self.statuses.get(sha, []) if s["context"] == context), None)

    # ------------------------------------------------------------------------------------ pulls

    def _list_pulls(self, q, b):
        state = q.get("state", "open")
        out = []
        for pr in sorted(self.pulls.values(), key=lambda p: -p["number"]):
            if state != "all" and pr["state"] != state:
                continue
            if "head" in q and f"{self.owner}:{pr['head']}" != q["head"]:
                continue
            if "base" in q and pr["base"] != q["base"]:
                continue
            out.append(self._pull_json(pr))
        return 200, out

    def _create_pull(self, q, body):
        # Checked before the request is validated (an assumption: GitHub's docs do not say in which
        # order; `doctor` relies on it to probe the setting without creating anything).
        if (
            self.tokens[self._token]["actions"]
            and not self.actions_settings["can_approve_pull_request_reviews"]
        ):
            raise ApiError(403, ACTIONS_MAY_NOT_OPEN_PRS, doc=f"{DOCS}/pulls/pulls#create-a-pull-request")
        head = body.get("head", "")
        if ":" in head:
            owner, head = head.split(":", 1)
            if owner != self.owner:
                raise ApiError(
                    422,
                    "Validation Failed",
                    errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}],
                )
        base = body.get("base") or self.default_branch
        head_sha = self.branch_sha(head)
        if head_sha is None or self.branch_sha(base) is None:
            raise ApiError(
                422,
                "Validation Failed",
                errors=[{"resource": "PullRequest", "field": "head", "code": "invalid"}],
            )
        for pr in self.pulls.values():
            if pr["state"] == "open" and pr["head"] == head and pr["base"] == base:
                raise ApiError(
                    422,
                    "Validation Failed",
                    errors=[
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {self.owner}:{head}.",
                        }
                    ],
                )
        n = max(self.pulls, default=0) + 1
        self.pulls[n] = {
            "number": n,
            "title": body.get("title", ""),
            "body": body.get("body") or "",
            "head": head,
            "base": base,
            "head_sha": head_sha,
            "state": "open",
            "merged": False,
            "merged_at": None,
            "merge_commit_sha": None,
            "auto_merge": None,
            "created_at": _now(),
            "closed_at": None,
        }
        self.git.update_ref(f"refs/pull/{n}/head", head_sha)  # as GitHub keeps it
        return 201, self._pull_json(self.pulls[n])

    def _edit_pull(self, q, body, n):
        pr = self._pull(n)
        for key in ("title", "body"):
            if key in body:
                pr[key] = body[key]
        if body.get("state") == "closed" and pr["state"] == "open":
            self._head_sha(pr)  # freeze the head before the branch may go
            pr["state"], pr["closed_at"] = "closed", _now()
        elif body.get("state") == "open" and pr["state"] == "closed" and not pr["merged"]:
            pr["state"], pr["closed_at"] = "open", None
        return 200, self._pull_json(pr)

    def _is_merged(self, q, b, n):
        if self._pull(n)["merged"]:
            return 204, None
        raise ApiError(404, "Not Found")

    def _merge_pull(self, q, body, n):
        pr = self._pull(n)
        body = body or {}
        if pr["merged"] or pr["state"] != "open":
            raise ApiError(405, "Pull Request is not mergeable")
        head = self._head_sha(pr)
        if body.get("sha") and body["sha"] != head:
            raise ApiError(409, "Head branch was modified. Review and try the merge again.")
        sha = self.do_merge(
            pr, body.get("merge_method", "merge"), body.get("commit_title"), body.get("commit_message")
        )
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}

    def do_merge(self, pr: dict, method: str, title: str | None = None, message: str | None = None) -> str:
        """Merge for real in the bare repository: squash = one new commit on main with the PR's
        changes; merge = a two-parent commit; main moves with compare-and-swap."""
        base_ref = f"refs/heads/{pr['base']}"
        base, head = self.git.rev_parse(base_ref), self._head_sha(pr)
        if method not in ("squash", "merge"):
            raise ApiError(405, f"{method.capitalize()} merges are not allowed on this repository.")
        try:
            changes = self.git.three_way(self.git.merge_base(base, head), base, head)
        except MergeConflict as e:
            raise ApiError(405, "Pull Request is not mergeable") from e
        n = pr["number"]
        title = title or (
            f"{pr['title']} (#{n})"
            if method == "squash"
            else f"Merge pull request #{n} from {self.owner}/{pr['head']}"
        )
        text = f"{title}\n\n{message}" if message else title
        parents = [base] if method == "squash" else [base, head]
        sha = self.git.commit_files(base, changes, text, parents=parents)
        self.git.update_ref(base_ref, sha, base)
        pr.update(
            state="closed",
            merged=True,
            merged_at=_now(),
            closed_at=_now(),
            merge_commit_sha=sha,
            head_sha=head,
        )
        return sha

    # ---------------------------------------------------------------------- labels and comments

    def _add_labels(self, q, body, n):
        self._pull(n)
        names = body if isinstance(body, list) else (body or {}).get("labels", [])
        if self.labels is not None:
            missing = [x for x in names if x not in self.labels]
            if missing:  # GitHub creates a label the repository lacks: a label write
                self.require(LABEL_CREATION)
                for x in missing:
                    self.labels[x] = {"color": "ededed", "description": ""}
        current = self.issue_labels.setdefault(int(n), [])
        current.extend(x for x in names if x not in current)
        return 200, self._labels_json(int(n))

    def _label_json(self, name: str) -> dict:
        meta = (self.labels or {}).get(name, {"color": "ededed", "description": ""})
        return {
            "id": abs(hash(name)) % 10**6,
            "node_id": f"LA_{abs(hash(name)) % 10**6}",
            "name": name,
            "color": meta["color"],
            "description": meta.get("description") or "",
            "default": False,
            "url": f"{self.repo_url}/labels/{quote(name)}",
        }

    def _get_label(self, q, b, name):
        if self.labels is not None and name not in self.labels:
            raise ApiError(404, "Not Found", doc=f"{DOCS}/issues/labels#get-a-label")
        return 200, self._label_json(name)

    def _create_label(self, q, body):
        name = (body or {}).get("name", "")
        if self.labels is None:
            self.labels = {}
        if name in self.labels:
            raise ApiError(
                422,
                "Validation Failed",
                errors=[{"resource": "Label", "code": "already_exists", "field": "name"}],
            )
        self.labels[name] = {
            "color": (body or {}).get("color", "ededed"),
            "description": (body or {}).get("description", ""),
        }
        return 201, self._label_json(name)

    # ------------------------------------------------------------- settings a fork owner controls

    def _get_pages(self, q, b):
        if self.pages is None:
            raise ApiError(404, "Not Found", doc=f"{DOCS}/pages/pages#get-a-apiname-pages-site")
        return 200, {
            "url": f"{self.repo_url}/pages",
            "status": self.pages.get("status", "built"),
            "build_type": self.pages["build_type"],
            "html_url": f"https://{self.owner}.github.test/{self.name}/",
            "public": True,
        }

    def _active_rulesets(self, branch: str) -> list[dict]:
        return self.rulesets if branch == self.default_branch else []

    def _branch_rules(self, q, b, branch):
        out = []
        for rs in self._active_rulesets(branch):
            for t in rs["rules"]:
                rule = {
                    "type": t,
                    "ruleset_source_type": "Repository",
                    "ruleset_source": self.slug,
                    "ruleset_id": rs["id"],
                }
                if t == "required_status_checks":
                    rule["parameters"] = {
                        "required_status_checks": [{"context": c} for c in rs.get("checks") or []],
                        "strict_required_status_checks_policy": False,
                    }
                out.append(rule)
        return 200, out

    def _get_ruleset(self, q, b, rid):
        rs = next((x for x in self.rulesets if x["id"] == int(rid)), None)
        if rs is None:
            raise ApiError(404, "Not Found")
        actions = self.tokens[self._token]["actions"]
        bypass = (
            "always" if (rs["bypass_actions"] and actions) or self.tokens[self._token]["admin"] else "never"
        )
        out = {
            "id": rs["id"],
            "name": rs["name"],
            "target": "branch",
            "source_type": "Repository",
            "source": self.slug,
            "enforcement": "active",
            "conditions": {"ref_name": {"include": ["~DEFAULT_BRANCH"], "exclude": []}},
            "rules": [{"type": t} for t in rs["rules"]],
            "current_user_can_bypass": bypass,
        }
        return 200, out

    def _get_run(self, q, b, run_id):
        created = self.runs.setdefault(int(run_id), _now())
        return 200, {
            "id": int(run_id),
            "name": "autoresearch",
            "status": "in_progress",
            "created_at": created,
            "run_started_at": _now(),
            "run_attempt": 1,
            "url": f"{self.repo_url}/actions/runs/{run_id}",
            "html_url": f"https://github.test/{self.slug}/actions/runs/{run_id}",
        }

    def _workflow_permissions(self, q, b):
        return 200, dict(self.actions_settings)

    def _get_variable(self, q, b, name):
        if name not in self.variables:
            raise ApiError(404, "Not Found")
        return 200, {"name": name, "value": self.variables[name]}

    def _list_secrets(self, q, b):
        names = sorted(self.secrets)
        return 200, {"total_count": len(names), "secrets": [{"name": n} for n in names]}

    def _comment_json(self, c: dict) -> dict:
        return {
            "id": c["id"],
            "node_id": f"IC_{c['id']}",
            "body": c["body"],
            "user": BOT_USER,
            "url": f"{self.repo_url}/issues/comments/{c['id']}",
            "html_url": f"https://github.test/{self.slug}/pull/{c['issue']}#issuecomment-{c['id']}",
            "issue_url": f"{self.repo_url}/issues/{c['issue']}",
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
        }

    def _comment(self, cid) -> dict:
        c = self.comments.get(int(cid))
        if c is None:
            raise ApiError(404, "Not Found")
        return self._comment_json(c)

    def _list_comments(self, q, b, n):
        self._pull(n)
        return 200, [self._comment_json(c) for c in self.comments.values() if c["issue"] == int(n)]

    def _create_comment(self, q, body, n):
        self._pull(n)
        cid = self._new_id()
        self.comments[cid] = {
            "id": cid,
            "issue": int(n),
            "body": body["body"],
            "created_at": _now(),
            "updated_at": _now(),
        }
        return 201, self._comment_json(self.comments[cid])

    def _edit_comment(self, q, body, cid):
        self._comment(cid)
        c = self.comments[int(cid)]
        c["body"], c["updated_at"] = body["body"], _now()
        return 200, self._comment_json(c)

    def _delete_comment(self, q, b, cid):
        self._comment(cid)
        del self.comments[int(cid)]
        return 204, None

    def comments_on(self, n: int) -> list[str]:
        return [c["body"] for c in self.comments.values() if c["issue"] == n]

    # --------------------------------------------------------------------------------- graphql

    def _graphql(self, body: dict) -> tuple[int, dict]:
        query = body.get("query", "")
        if "enablePullRequestAutoMerge" not in query:
            return 200, {"errors": [{"type": "NOT_SUPPORTED", "message": "the fake only knows auto-merge"}]}
        # The GraphQL docs list no permissions; enabling auto-merge is reported to need both
        # (orgs/community discussion #24686).
        for scope in ("pull-requests", "contents"):
            n = need(
                f"{scope}=write",
                doc="https://docs.github.com/en/graphql/reference/mutations#enablepullrequestautomerge",
            )
            if not self.allows(self._token, n):
                return 200, {"data": None, "errors": [{"type": "FORBIDDEN", "message": NOT_ACCESSIBLE}]}
        inp = (body.get("variables") or {}).get("input", {})
        pr = next((p for p in self.pulls.values() if f"PR_{p['number']}" == inp.get("pullRequestId")), None)
        if pr is None:
            return 200, {
                "data": None,
                "errors": [{"type": "NOT_FOUND", "message": "Could not resolve to a node"}],
            }
        if self.automerge == "not-allowed":
            return 200, {
                "data": {"enablePullRequestAutoMerge": None},
                "errors": [
                    {
                        "type": "UNPROCESSABLE",
                        "message": "Pull request Auto merge is not allowed for this repository",
                    }
                ],
            }
        if self.automerge == "clean":
            return 200, {
                "data": {"enablePullRequestAutoMerge": None},
                "errors": [
                    {
                        "type": "UNPROCESSABLE",
                        "message": "Pull request Pull request is in clean status",
                        "path": ["enablePullRequestAutoMerge"],
                    }
                ],
            }
        expected = inp.get("expectedHeadOid")
        if expected and expected != self._head_sha(pr):
            return 200, {
                "data": None,
                "errors": [{"type": "UNPROCESSABLE", "message": "Head sha didn't match"}],
            }
        pr["auto_merge"] = {
            "merge_method": inp.get("mergeMethod", "MERGE").lower(),
            "enabled_by": BOT_USER,
            "commit_title": inp.get("commitHeadline"),
            "commit_message": inp.get("commitBody"),
        }
        if self.automerge == "merge":  # the required checks pass at once: GitHub merges it
            self.do_merge(
                pr, pr["auto_merge"]["merge_method"], inp.get("commitHeadline"), inp.get("commitBody")
            )
        actor = {
            "avatarUrl": "",
            "login": BOT_USER["login"],
            "resourcePath": "/apps/github-actions",
            "url": "",
        }
        return 200, {"data": {"enablePullRequestAutoMerge": {"actor": actor, "clientMutationId": None}}}


# The pre-receive hook (a Python script) of `enforce_git`: git runs it with the pushing process's
# environment, which carries the job's GITHUB_TOKEN; messages go to the pusher as "remote: ...".
_PRE_RECEIVE = """#!/usr/bin/env python3
import json, os, sys
state = json.load(open("@STATE@"))
token = os.environ.get("GITHUB_TOKEN", "")
t = state["tokens"].get(token)
slug = state["slug"]
if t is None or not (t["admin"] or t["permissions"].get("contents") == "write"):
    sys.stderr.write(f"Permission to {slug}.git denied to github-actions[bot].\\n")
    url = "https://github.test/" + slug + "/"
    sys.stderr.write(f"fatal: unable to access '{url}': The requested URL returned error: 403\\n")
    sys.exit(1)
blocking = {"update", "pull_request", "required_status_checks", "required_signatures", "required_deployments"}
for line in sys.stdin:
    old, new, ref = line.split()
    if ref != "refs/heads/" + state["default_branch"]:
        continue
    for rs in state["rulesets"]:
        hit = sorted(blocking & set(rs["rules"]))
        if hit and not (rs["bypass_actions"] or t["admin"]):
            sys.stderr.write("error: GH013: Repository rule violations found for " + ref + ".\\n")
            sys.stderr.write("- " + ", ".join(hit) + " (ruleset " + rs["name"] + ")\\n")
            sys.exit(1)
"""
