"""The guard: what a candidate may change, checked before anything trains.

A rule in program.md is a norm; this is the boundary. `check()` is pure (data in, reasons out):

- only the editable files (train.py) may change; adding or deleting a file is rejected by name;
- protected paths (the harness, workflows, the config, this package) must be byte-identical:
  "the harness is locked: harness/x.py changed";
- train.py must compile (the SyntaxError's line is reported);
- the change must do something: an empty diff, or one that only touches comments, blank lines or
  docstrings (equal ASTs), is "no functional change";
- a change of seeds alone is rejected: after numbers assigned to names containing "seed" and the
  arguments of *seed*() calls are normalised, the ASTs are equal. A new seed is a new draw of the
  noise, not an idea (the kept "random seed 42 -> 137" step of autoresearch's teaser run).

`run_guard_command()` runs the optional guard_command (tests, lint) with a hard timeout, in an
environment that carries only what a shell command needs (SAFE_ENV) and never a secret (the same
rule as the harness's: runners.process.without_secrets).
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from autoresearch_ci.runners.process import without_secrets

if TYPE_CHECKING:
    from autoresearch_ci.config import Config

# Plain-language names for the usual protected paths.
LOCK_NAMES = {
    "harness/": "the harness is locked",
    ".github/": "the workflows are locked",
    "autoresearch_ci/": "the loop's code is locked",
    "dashboard/": "the dashboard is locked",
    "autoresearch.toml": "the config is locked",
    "pyproject.toml": "the project file is locked",
    "program.md": "the research program is locked (the human edits it)",
}

# Environment variables a guard command may see (plus LC_*); everything else is dropped.
SAFE_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "USER",
    "VIRTUAL_ENV",
    "CI",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "AUTORESEARCH_CACHE",
)
OUTPUT_TAIL_CHARS = 4000
DRAIN_SECONDS = 10.0  # after the kill, how long to wait for the output pipe to close
# Calls whose positional arguments are a seed although their name does not say so.
SEEDED_CONSTRUCTORS = {"default_rng", "Random", "RandomState", "PRNGKey", "PCG64", "Philox"}


@dataclass
class GuardResult:
    ok: bool
    reasons: list[str] = field(default_factory=list)


def _norm(path: str) -> str:
    p = str(PurePosixPath(path.replace("\\", "/")))
    return p[2:] if p.startswith("./") else p


def _protected_by(path: str, protected: Sequence[str]) -> str | None:
    for q in protected:
        root = q.rstrip("/")
        if path == root or path.startswith(root + "/"):
            return q
    return None


# ----------------------------------------------------------------------------------------------
# AST comparison


def _is_seed_name(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "seed" in name.lower()


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


class _ZeroNumbers(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, int | float | complex) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(0), node)
        return node


class _SeedNormaliser(ast.NodeTransformer):
    """Replace every number that only picks a seed with 0: values assigned to *seed* names,
    seed=... keyword arguments, and the arguments of calls named *seed* (manual_seed, random.seed)
    or of RNG constructors (np.random.default_rng(42), random.Random(42))."""

    def _zero(self, node: ast.AST | None) -> ast.AST | None:
        return None if node is None else _ZeroNumbers().visit(node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        self.generic_visit(node)
        if any(_is_seed_name(t) for t in node.targets):
            node.value = self._zero(node.value)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        self.generic_visit(node)
        if _is_seed_name(node.target):
            node.value = self._zero(node.value)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        if _is_seed_name(node.target):
            node.value = self._zero(node.value)
        return node

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        self.generic_visit(node)
        if node.arg and "seed" in node.arg.lower():
            node.value = self._zero(node.value)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = _call_name(node)
        if "seed" in name.lower() or name in SEEDED_CONSTRUCTORS:
            node.args = [self._zero(a) for a in node.args]
        return node


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop statements that are bare string literals (docstrings, string 'comments')."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [
                s
                for s in body
                if not (
                    isinstance(s, ast.Expr)
                    and isinstance(s.value, ast.Constant)
                    and isinstance(s.value.value, str)
                )
            ]
            node.body = kept or [ast.Pass()]
    return tree


def _dump(source: str, normalise_seeds: bool = False) -> str:
    tree = _strip_docstrings(ast.parse(source))
    if normalise_seeds:
        tree = _SeedNormaliser().visit(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def change_kind(old: str, new: str) -> str:
    """'none' (identical text), 'cosmetic' (equal ASTs: comments, blank lines, docstrings),
    'seed-only', or 'functional'. Both sources must parse."""
    if old == new:
        return "none"
    if _dump(old) == _dump(new):
        return "cosmetic"
    if _dump(old, normalise_seeds=True) == _dump(new, normalise_seeds=True):
        return "seed-only"
    return "functional"


# ----------------------------------------------------------------------------------------------
# the check


def check(
    changed_paths: Sequence[str],
    old_files: Mapping[str, str],
    new_files: Mapping[str, str],
    cfg: Config,
) -> GuardResult:
    """Judge a candidate's change before it runs.

    changed_paths: what the forge says differs between base and candidate (any path outside the
    editable files is rejected by name, whether it was added, changed or deleted). old_files /
    new_files: path -> text at the base and at the candidate, at least for the editable files; an
    editable file missing from one side did not exist there (it was added or deleted)."""
    editable = [_norm(p) for p in cfg.editable_files]
    old = {_norm(k): v for k, v in old_files.items()}
    new = {_norm(k): v for k, v in new_files.items()}
    reasons: list[str] = []

    changed = sorted({_norm(p) for p in changed_paths})
    for p in changed:
        # Callers pass the texts of the editable files, so only for those does absence mean "did not exist".
        how = "deleted" if p in old and p not in new else "changed"
        if p in editable and p in new and p not in old:
            how = "added"
        lock = _protected_by(p, cfg.protected_paths)
        if lock:
            reasons.append(f"{LOCK_NAMES.get(lock, f'{lock} is protected')}: {p} {how}")
        elif p not in editable:
            reasons.append(f"only {', '.join(editable)} may change: {p} {how}")
        elif how != "changed":
            reasons.append(f"{'adding' if how == 'added' else 'deleting'} files is not allowed: {p} {how}")

    kinds: dict[str, str] = {}
    for p in editable:
        if p not in new or p not in old:
            continue
        if p.endswith(".py"):
            try:
                compile(new[p], p, "exec", dont_inherit=True)
            except (SyntaxError, ValueError) as e:  # ValueError: null bytes in the source
                where = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
                reasons.append(f"{p} does not compile: {where}")
                continue
            try:
                kinds[p] = change_kind(old[p], new[p])
            except SyntaxError:  # the base itself does not parse: compare the text
                kinds[p] = "none" if old[p] == new[p] else "functional"
        else:
            kinds[p] = "none" if old[p] == new[p] else "functional"

    values = set(kinds.values())
    if "functional" in values or reasons:
        pass  # a real change (a seed or comment edit beside it is fine), or already rejected
    elif "seed-only" in values:
        seeds = ", ".join(p for p, k in kinds.items() if k == "seed-only")
        reasons.append(
            f"{seeds}: only a random seed changed; a new seed is a new draw of the noise, not an idea"
        )
    elif "cosmetic" in values:
        reasons.append("no functional change: only comments, blank lines or docstrings differ")
    else:
        reasons.append("no change: the candidate is identical to its base")
    return GuardResult(ok=not reasons, reasons=reasons)


# ----------------------------------------------------------------------------------------------
# the optional guard command


def command_env() -> dict[str, str]:
    """The guard command's environment: the allowlist above, and never a secret."""
    return without_secrets({k: v for k, v in os.environ.items() if k in SAFE_ENV or k.startswith("LC_")})


def run_guard_command(command: str, workdir: Path | str, timeout: float) -> tuple[bool, str]:
    """Run `command` in a shell in `workdir` with a clean environment. (ok, tail of stdout+stderr).

    The command runs in its own process group, so a timeout kills everything it started, not just
    the shell."""
    try:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=str(workdir),
            env=command_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        return False, f"guard command could not start: {e}"
    try:
        out, _ = proc.communicate(timeout=timeout)
        text = out.decode("utf-8", errors="replace")
        tail = text[-OUTPUT_TAIL_CHARS:]
        if proc.returncode != 0:
            return False, f"{tail}\n[guard command exited with {proc.returncode}]".lstrip()
        return True, tail
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it may have finished just now
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, _ = proc.communicate(timeout=DRAIN_SECONDS)
        except subprocess.TimeoutExpired:  # something left the group (setsid) and still holds the pipe
            proc.stdout.close()
            proc.wait()
            out = b"[output lost: a process the command started outlived it and kept its output open]"
        tail = out.decode("utf-8", errors="replace")[-OUTPUT_TAIL_CHARS:]
        return False, f"{tail}\n[guard command timed out after {timeout:g} s and was killed]".lstrip()
