"""The GitHub forge's git channel: what goes through git rather than the API. It fetches the commits
the clone lacks, pushes a candidate's branch (one commit built off the work tree, reused when an
earlier run pushed it) and persists the bookkeeping files on main, with the token as an https
credential when the checkout has none, and turns git's refusals into errors that say which
permission or rule to change. A mixin of GitHubForge (github.py), which sets the attributes below.
"""

from __future__ import annotations

import base64

from autoresearch_ci.forge.base import ForgeError, GitCheckout
from autoresearch_ci.forge.gitcore import GitError, PushRejected


class GitHubGit(GitCheckout):
    base_branch: str
    remote: str
    push_attempts: int
    backoff: float
    _token: str
    _git_auth_checked: bool

    def base_commit(self) -> str:
        return self._git(self.git.fetch_branch, self.remote, self.base_branch)

    def persist(self, paths: list[str], message: str) -> str:
        self._setup_git_auth()
        return self._git(
            self.git.commit_and_push,
            paths,
            message,
            branch=self.base_branch,
            remote=self.remote,
            attempts=self.push_attempts,
            backoff=self.backoff,
        )

    def _push_candidate_branch(
        self, branch: str, base_commit: str, files: dict[str, str], message: str
    ) -> str:
        """The candidate commit on the remote branch: reused when a previous run pushed it."""
        self._setup_git_auth()
        existing = self._git(self.git.ls_remote, self.remote, f"refs/heads/{branch}")
        if existing:
            self._have(existing, fetch_ref=f"refs/heads/{branch}")
            return existing
        self._have(base_commit)
        commit = self._git(self.git.commit_files, base_commit, files, message)
        try:
            self.git.push(self.remote, f"{commit}:refs/heads/{branch}")
        except PushRejected:  # someone created it between our look and our push
            theirs = self._git(self.git.ls_remote, self.remote, f"refs/heads/{branch}")
            if not theirs:
                raise
            self._have(theirs, fetch_ref=f"refs/heads/{branch}")
            return theirs
        except GitError as e:
            raise self._git_error(e) from e
        return commit

    def _have(self, *shas: str, fetch_ref: str | None = None) -> None:
        """Fetch from the remote whatever commits this clone does not have yet."""
        missing = [s for s in shas if not self.git.has_commit(s)]
        if not missing:
            return
        self._setup_git_auth()
        specs = [fetch_ref] if fetch_ref else []
        try:
            self.git.fetch(self.remote, *(specs or missing))
        except GitError:
            if not specs:
                raise
            self._git(self.git.fetch, self.remote, *missing)

    def _setup_git_auth(self) -> None:
        """Let git push over https with the token when nothing else provides credentials
        (actions/checkout does, through an http extraheader in the clone's config)."""
        if self._git_auth_checked:
            return
        self._git_auth_checked = True
        url = self.git.run("remote", "get-url", self.remote, check=False)
        if not url.startswith("https://"):
            return
        if self.git.run("config", "--get-regexp", r"^http\..*extraheader$", check=False):
            return
        host = "/".join(url.split("/")[:3]) + "/"
        basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
        n = int(self.git.env.get("GIT_CONFIG_COUNT", "0"))
        self.git.env.update(
            {
                "GIT_CONFIG_COUNT": str(n + 1),
                f"GIT_CONFIG_KEY_{n}": f"http.{host}.extraheader",
                f"GIT_CONFIG_VALUE_{n}": f"AUTHORIZATION: basic {basic}",
            }
        )

    def _git_error(self, e: GitError) -> ForgeError:
        text = str(e)
        low = text.lower()
        if "protected branch" in low or "gh006" in low or "gh013" in low:
            return ForgeError(
                f"{text}\n→ {self.base_branch} is protected: allow github-actions[bot] to push the "
                "ledger commit (bypass list of the rule), or the ledger cannot be kept on it"
            )
        if "returned error: 403" in low or ("permission to" in low and "denied" in low):
            return ForgeError(f"{text}\n→ the token cannot push: give the job `contents: write`")
        if "workflow" in low and "without `workflows` permission" in low:
            return ForgeError(
                f"{text}\n→ a change under .github/workflows needs the `workflows` permission; "
                "candidates must not touch workflows"
            )
        return ForgeError(text)
