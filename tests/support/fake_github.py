"""A fake GitHub: the REST routes the GitHub forge uses, plus the auto-merge GraphQL mutation,
served on 127.0.0.1 and backed by a local bare git repository.

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
from urllib.parse import parse_qs, unquote, urlsplit

from autoresearch_ci.forge import gitcore as gitops
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.gitcore import GitError, MergeConflict

BOT_USER = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}


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


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra):
        self.status = status
        self.body = {"message": message, "documentation_url": "https://docs.github.com/rest", **extra}


class FakeGitHub:
    def __init__(
        self,
        bare_repo: str | Path,
        slug: str = "octo/lab",
        token: str = "test-token",
        default_branch: str = "main",
    ):
        self.git = Git(bare_repo)
        self.slug = slug
        self.owner, self.name = slug.split("/")
        self.token = token
        self.default_branch = default_branch
        self.automerge = "clean"  # "clean" | "enable" | "merge" | "not-allowed"
        self.lock = threading.RLock()
        self.pulls: dict[int, dict] = {}
        self.comments: dict[int, dict] = {}
        self.issue_labels: dict[int, list[str]] = {}
        self.statuses: dict[str, list[dict]] = {}
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self._next_id = 1
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

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
        split = urlsplit(h.path)
        path, query = unquote(split.path), {k: v[0] for k, v in parse_qs(split.query).items()}
        entry = LoggedRequest(h.command, h.path, body)
        with self.lock:
            self.log.append(entry)
            fault = self._take_fault(h.command, path)
            if fault is not None and not fault.after:
                status, payload, headers = fault.status, fault.body, self._fault_headers(fault)
            elif h.headers.get("Authorization") != f"token {self.token}":
                status, payload, headers = 401, {"message": "Bad credentials"}, {}
            else:
                try:
                    status, payload = self._route(h.command, path, query, body)
                except ApiError as e:
                    status, payload = e.status, e.body
                headers = {}
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
        for m, pattern, fn in self._routes():
            match = re.fullmatch(pattern, rest)
            if m == method and match:
                return fn(query, body, *match.groups())
        raise ApiError(404, "Not Found")

    def _routes(self):
        return [
            ("GET", r"", lambda q, b: (200, self._repo_json())),
            ("GET", r"/branches/(.+)", self._get_branch),
            ("GET", r"/git/ref/heads/(.+)", self._get_ref),
            ("GET", r"/git/refs/heads/(.+)", self._get_ref),
            ("POST", r"/git/refs", self._create_ref),
            ("PATCH", r"/git/refs/heads/(.+)", self._update_ref),
            ("DELETE", r"/git/refs/heads/(.+)", self._delete_ref),
            ("GET", r"/commits/([^/]+)", self._get_commit),
            ("GET", r"/commits/([^/]+)/statuses", self._list_statuses),
            ("POST", r"/statuses/([0-9a-f]{40})", self._create_status),
            ("GET", r"/pulls", self._list_pulls),
            ("POST", r"/pulls", self._create_pull),
            ("GET", r"/pulls/(\d+)", lambda q, b, n: (200, self._pull_json(self._pull(n)))),
            ("PATCH", r"/pulls/(\d+)", self._edit_pull),
            ("GET", r"/pulls/(\d+)/merge", self._is_merged),
            ("PUT", r"/pulls/(\d+)/merge", self._merge_pull),
            ("GET", r"/issues/(\d+)", lambda q, b, n: (200, self._issue_json(self._pull(n)))),
            ("GET", r"/issues/(\d+)/labels", lambda q, b, n: (200, self._labels_json(int(n)))),
            ("POST", r"/issues/(\d+)/labels", self._add_labels),
            ("GET", r"/issues/(\d+)/comments", self._list_comments),
            ("POST", r"/issues/(\d+)/comments", self._create_comment),
            ("GET", r"/issues/comments/(\d+)", lambda q, b, c: (200, self._comment(c))),
            ("PATCH", r"/issues/comments/(\d+)", self._edit_comment),
            ("DELETE", r"/issues/comments/(\d+)", self._delete_comment),
        ]

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
                "repo": self._repo_json(),
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
        return 200, {
            "name": branch,
            "protected": False,
            "commit": {"sha": sha, "url": f"{self.repo_url}/commits/{sha}"},
        }

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
        current = self.issue_labels.setdefault(int(n), [])
        current.extend(x for x in names if x not in current)
        return 200, self._labels_json(int(n))

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
