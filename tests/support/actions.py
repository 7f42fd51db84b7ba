"""A small GitHub Actions runner for .github/workflows/autoresearch.yml, to play a tick as a fork runs it.

It reads the workflow with a YAML parser and runs its jobs in order, each as GitHub would:
- the job's `if:` and each step's, evaluated with GitHub's expression rules (`&&`/`||` return an
  operand, `!`, `==`/`!=`, success()/failure()/cancelled()/always(), fromJSON) over the contexts
  the workflow uses (github, inputs, vars, secrets, env, needs, steps);
- a GITHUB_TOKEN per job holding exactly the job's `permissions:` (registered with the fake
  GitHub, which enforces them), and secrets only where an expression names them;
- `run:` steps in bash, with the env the workflow gives them (workflow, job and step `env:`),
  GITHUB_OUTPUT / GITHUB_STEP_SUMMARY files, and `autoresearch-ci` on PATH (this checkout's code);
- the actions the workflow uses, played for what they do to the job: checkout (a clone of the fake's
  bare repository, shallow unless fetch-depth: 0), upload/download-artifact (one store per run:
  uploading a name that exists fails unless `overwrite: true`, as upload-artifact v4+ does),
  upload-pages-artifact (no overwrite at all), deploy-pages; setup, sandbox and configure-pages
  are no-ops (this machine is provisioned already).

`rerun(job)` plays "Re-run jobs": same run id, attempt + 1, the run's artifacts and the other jobs'
results kept. What it does not model: runners and their labels, timeouts, caches, matrices.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "autoresearch.yml"


# ----------------------------------------------------------------------------------------------
# expressions


class ExprError(ValueError):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|,|\[|\]|\.)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_-]*|\*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"cannot read {text[pos:]!r} in {text!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def truthy(v) -> bool:
    return v not in (None, False, 0, "") and not (isinstance(v, float) and v != v)


def _num(v) -> float:
    if v is None:
        return 0.0
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip()) if v.strip() else 0.0
        except ValueError:
            return float("nan")
    return float("nan")


def _eq(a, b) -> bool:
    """GitHub's ==: strings ignore case; operands of different types are compared as numbers
    (null and '' are 0, true is 1)."""
    if type(a) is type(b) or (isinstance(a, str) and isinstance(b, str)):
        return a.lower() == b.lower() if isinstance(a, str) else a == b
    return _num(a) == _num(b)


def to_str(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


class _Parser:
    def __init__(self, text: str, ctx: dict, funcs: dict):
        self.toks, self.i, self.ctx, self.funcs, self.text = _tokens(text), 0, ctx, funcs, text

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, value=None):
        kind, val = self.peek()
        if value is not None and val != value:
            raise ExprError(f"expected {value!r} in {self.text!r}")
        self.i += 1
        return kind, val

    def parse(self):
        v = self.or_()
        if self.i != len(self.toks):
            raise ExprError(f"trailing {self.toks[self.i :]} in {self.text!r}")
        return v

    def or_(self):
        v = self.and_()
        while self.peek()[1] == "||":
            self.take()
            right = self.and_()
            v = v if truthy(v) else right
        return v

    def and_(self):
        v = self.cmp()
        while self.peek()[1] == "&&":
            self.take()
            right = self.cmp()
            v = right if truthy(v) else v
        return v

    def cmp(self):
        v = self.unary()
        while self.peek()[1] in ("==", "!=", "<", ">", "<=", ">="):
            _, op = self.take()
            r = self.unary()
            if op in ("==", "!="):
                v = _eq(v, r) if op == "==" else not _eq(v, r)
            else:
                a, b = _num(v), _num(r)
                v = {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
        return v

    def unary(self):
        if self.peek()[1] == "!":
            self.take()
            return not truthy(self.unary())
        return self.postfix()

    def postfix(self):
        v = self.primary()
        while self.peek()[1] in (".", "["):
            if self.take()[1] == ".":
                _, name = self.take()
                v = v.get(name) if isinstance(v, dict) else None
            else:
                key = self.or_()
                self.take("]")
                v = v.get(to_str(key)) if isinstance(v, dict) else None
        return v

    def primary(self):
        kind, val = self.take()
        if kind == "str":
            return val[1:-1].replace("''", "'")
        if kind == "num":
            return float(val)
        if val == "(":
            v = self.or_()
            self.take(")")
            return v
        if kind == "id":
            if val in ("true", "false"):
                return val == "true"
            if val == "null":
                return None
            if self.peek()[1] == "(":
                self.take("(")
                args = []
                while self.peek()[1] != ")":
                    args.append(self.or_())
                    if self.peek()[1] == ",":
                        self.take()
                self.take(")")
                fn = self.funcs.get(val.lower())
                if fn is None:
                    raise ExprError(f"unknown function {val}")
                return fn(*args)
            return self.ctx.get(val)
        raise ExprError(f"unexpected {val!r} in {self.text!r}")


def _functions(status: str) -> dict:
    return {
        "fromjson": lambda s: json.loads(s),
        "tojson": lambda v: json.dumps(v),
        "contains": lambda a, b: (
            (to_str(b).lower() in to_str(a).lower()) if not isinstance(a, list) else any(_eq(x, b) for x in a)
        ),
        "startswith": lambda a, b: to_str(a).lower().startswith(to_str(b).lower()),
        "format": lambda f, *a: re.sub(r"\{(\d+)\}", lambda m: to_str(a[int(m.group(1))]), f),
        "success": lambda: status == "success",
        "failure": lambda: status == "failure",
        "cancelled": lambda: status == "cancelled",
        "always": lambda: True,
    }


def evaluate(expr: str, ctx: dict, status: str = "success"):
    return _Parser(expr, ctx, _functions(status)).parse()


def interpolate(value, ctx: dict, status: str = "success"):
    """A workflow value with its ${{ }} expressions evaluated: a value that is one expression keeps
    its type (an `if:`), anything else becomes a string."""
    if not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\s*\$\{\{(.*?)\}\}\s*", value, re.S)
    if whole:
        return evaluate(whole.group(1), ctx, status)
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: to_str(evaluate(m.group(1), ctx, status)), value, flags=re.S)


def condition(text, ctx: dict, status: str) -> bool:
    """An `if:`: a bare expression, ${{ }} optional; no `if:` means success()."""
    if text is None:
        return status == "success"
    if isinstance(text, bool):
        return text
    text = text.strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.S)
    expr = m.group(1) if m else text
    uses_status = re.search(r"\b(success|failure|cancelled|always)\(\)", expr)
    ok = truthy(evaluate(expr, ctx, status))
    return ok if uses_status else ok and status == "success"


# ----------------------------------------------------------------------------------------------
# the workflow


def load(path: Path = WORKFLOW) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["on"] = doc.get("on", doc.pop(True, None))  # YAML 1.1 reads a bare `on` as true
    return doc


def job_permissions(doc: dict, job: str) -> dict[str, str]:
    perms = doc["jobs"][job].get("permissions", doc.get("permissions"))
    return dict(perms or {})


def secrets_named(value) -> set[str]:
    """Secret names an expression anywhere in `value` reads."""
    return set(re.findall(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)", json.dumps(value)))


def secrets_exposed(value) -> set[str]:
    """Secret names whose value `value` hands on (a bare `secrets.X`, not the boolean `secrets.X != ''`)."""
    text = json.dumps(value)
    out = set()
    for m in re.finditer(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)(\s*!=\s*'')?", text):
        if not m.group(2):
            out.add(m.group(1))
    return out


# ----------------------------------------------------------------------------------------------
# the runner


@dataclass
class StepRun:
    job: str
    name: str
    status: str  # success | failure | skipped
    env: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""


@dataclass
class JobRun:
    name: str
    result: str  # success | failure | skipped | cancelled
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepRun] = field(default_factory=list)
    summary: str = ""
    token: str | None = None
    attempt: int = 1


class Run:
    """One workflow run of a fork: the fake GitHub, the repository's secrets and variables, an event."""

    def __init__(
        self,
        gh,
        tmp: Path,
        *,
        secrets: dict[str, str] | None = None,
        variables: dict[str, str] | None = None,
        inputs: dict | None = None,
        event: str = "schedule",
        run_id: int = 4242,
        machine_env: dict[str, str] | None = None,
        workflow: Path = WORKFLOW,
    ):
        self.gh = gh
        self.tmp = tmp
        self.doc = load(workflow)
        self.secrets = dict(secrets or {})
        self.vars = dict(variables or {})
        self.inputs = dict(inputs or {})
        self.event = event
        self.run_id = run_id
        self.attempt = 1
        self.machine_env = dict(machine_env or {})
        self.artifacts: dict[str, dict[str, bytes]] = {}
        self.deployed: list[str] = []  # pages artifacts deployed
        self.jobs: dict[str, JobRun] = {}
        self._n = 0
        bin_dir = tmp / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / "autoresearch-ci"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m autoresearch_ci.cli "$@"\n')
        shim.chmod(0o755)
        self.bin_dir = bin_dir

    # -- contexts ---------------------------------------------------------------------------------

    def _github(self, token: str | None) -> dict:
        return {
            "token": token,
            "run_id": str(self.run_id),
            "run_attempt": str(self.attempt),
            "repository": self.gh.slug,
            "event_name": self.event,
            "server_url": "https://github.test",
            "api_url": self.gh.base_url,
        }

    def _ctx(self, token, needs: dict, env: dict, steps: dict) -> dict:
        inputs = {
            k: self.inputs.get(k) for k in (self.doc["on"].get("workflow_dispatch") or {}).get("inputs", {})
        }
        if self.event == "workflow_dispatch":
            spec = self.doc["on"]["workflow_dispatch"]["inputs"]
            inputs = {k: self.inputs.get(k, v.get("default")) for k, v in spec.items()}
        return {
            "github": self._github(token),
            "inputs": inputs,
            "vars": dict(self.vars),
            "secrets": {**self.secrets, "GITHUB_TOKEN": token},
            "env": env,
            "needs": needs,
            "steps": steps,
            "runner": {"temp": str(self.tmp / "runner-temp")},
        }

    def _needs(self, job: dict) -> dict:
        names = job.get("needs") or []
        names = [names] if isinstance(names, str) else names
        return {
            n: {
                "result": self.jobs[n].result if n in self.jobs else "skipped",
                "outputs": self.jobs[n].outputs if n in self.jobs else {},
            }
            for n in names
        }

    # -- playing ------------------------------------------------------------------------------------

    def play(self, *, stop_after: str | None = None, start_after: str | None = None) -> dict[str, JobRun]:
        """The workflow's jobs in file order (a valid order of its `needs`), each once; from the job
        after `start_after` and up to `stop_after` when given."""
        names = list(self.doc["jobs"])
        if start_after is not None:
            names = names[names.index(start_after) + 1 :]
        for name in names:
            self.job(name)
            if name == stop_after:
                break
        return self.jobs

    def rerun(self, name: str) -> JobRun:
        """ "Re-run jobs" on one job: the same run, the next attempt."""
        self.attempt += 1
        return self.job(name)

    def job(self, name: str) -> JobRun:
        job = self.doc["jobs"][name]
        needs = self._needs(job)
        # A job's default `if` is success(): every needed job succeeded.
        all_ok = all(n["result"] == "success" for n in needs.values())
        ctx = self._ctx(None, needs, {}, {})
        cond = job.get("if")
        if cond is None:
            run_it = all_ok
        else:
            text = cond.strip()
            m = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.S)
            expr = m.group(1) if m else text
            status_fn = "success" if all_ok else "failure"
            uses_status = re.search(r"\b(success|failure|cancelled|always)\(\)", expr)
            ok = truthy(evaluate(expr, ctx, status_fn))
            run_it = ok if uses_status else ok and all_ok
        if not run_it:
            self.jobs[name] = JobRun(name, "skipped", attempt=self.attempt)
            return self.jobs[name]

        self._n += 1
        token = f"ghs_{name}_{self.run_id}_{self.attempt}_{self._n}"
        self.gh.add_token(token, job_permissions(self.doc, name))
        workdir = self.tmp / "jobs" / f"{self._n:02d}-{name}-{self.attempt}"
        workdir.mkdir(parents=True)
        env: dict[str, str] = {}
        for k, v in (self.doc.get("env") or {}).items():
            env[k] = to_str(interpolate(v, self._ctx(token, needs, env, {})))
        for k, v in (job.get("env") or {}).items():
            env[k] = to_str(interpolate(v, self._ctx(token, needs, env, {})))
        run = JobRun(name, "success", token=token, attempt=self.attempt)
        steps_ctx: dict[str, dict] = {}
        state = "success"
        checkout: Path | None = None
        for i, step in enumerate(job["steps"]):
            ctx = self._ctx(token, needs, env, steps_ctx)
            label = step.get("name") or step.get("uses") or f"step {i}"
            if not condition(step.get("if"), ctx, state):
                run.steps.append(StepRun(name, label, "skipped"))
                continue
            step_env = {**env, **{k: to_str(interpolate(v, ctx)) for k, v in (step.get("env") or {}).items()}}
            files = workdir / f"step{i}"
            files.mkdir()
            out_file, summary_file = files / "output", files / "summary.md"
            out_file.touch()
            summary_file.touch()
            try:
                if "uses" in step:
                    with_ = {k: to_str(interpolate(v, ctx)) for k, v in (step.get("with") or {}).items()}
                    checkout = self._uses(step["uses"], with_, workdir, checkout, step_env, out_file)
                    sr = StepRun(name, label, "success", step_env)
                else:
                    sr = self._run(name, label, to_str(interpolate(step["run"], ctx)), checkout or workdir,
                                   step_env, token, out_file, summary_file)  # fmt: skip
            except StepFailed as e:
                sr = StepRun(name, label, "failure", step_env, stderr=str(e))
            run.steps.append(sr)
            outputs = _read_outputs(out_file)
            if step.get("id"):
                steps_ctx[step["id"]] = {"outputs": outputs, "outcome": sr.status, "conclusion": sr.status}
            run.summary += summary_file.read_text(encoding="utf-8")
            if sr.status == "failure":
                state = "failure"
        run.result = state
        ctx = self._ctx(token, needs, env, steps_ctx)
        run.outputs = {k: to_str(interpolate(v, ctx)) for k, v in (job.get("outputs") or {}).items()}
        self.jobs[name] = run
        return run

    def _run(self, job, label, script, cwd, step_env, token, out_file, summary_file) -> StepRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "ANTHROPIC_", "MODAL_"))}
        env.update(self.machine_env)
        env.update(
            {
                "PATH": f"{self.bin_dir}:{env.get('PATH', '')}",
                "PYTHONPATH": os.pathsep.join(
                    p for p in [self.machine_env.get("PYTHONPATH", ""), str(REPO)] if p
                ),
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_REPOSITORY": self.gh.slug,
                "GITHUB_API_URL": self.gh.base_url,
                "GITHUB_SERVER_URL": "https://github.test",
                "GITHUB_RUN_ID": str(self.run_id),
                "GITHUB_RUN_ATTEMPT": str(self.attempt),
                "GITHUB_OUTPUT": str(out_file),
                "GITHUB_STEP_SUMMARY": str(summary_file),
                "GITHUB_WORKSPACE": str(cwd),
            }
        )
        env.update(step_env)
        proc = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        return StepRun(
            job, label, "success" if proc.returncode == 0 else "failure", step_env, proc.stdout, proc.stderr
        )

    def _uses(self, uses: str, with_: dict, workdir: Path, checkout: Path | None, env: dict, out_file: Path):
        action = uses.split("@")[0]
        if action == "actions/checkout":
            dest = workdir / "checkout"
            depth = int(with_.get("fetch-depth", "1") or 1)
            ref = with_.get("ref") or self.gh.default_branch
            cmd = ["git", "clone", "-q", *(["--depth", str(depth)] if depth else []), "-b", ref]
            subprocess.run(
                [*cmd, f"file://{self.gh.git.dir}", str(dest)], check=True, capture_output=True, timeout=120
            )
            return dest
        here = checkout or workdir
        if action in ("./.github/actions/setup", "./.github/actions/sandbox", "actions/configure-pages"):
            return checkout  # this machine is provisioned: python, torch, the package, the corpus
        if action == "actions/upload-artifact":
            self._store(with_["name"], here / with_["path"], with_.get("overwrite") == "true", with_)
            return checkout
        if action == "actions/download-artifact":
            name = with_["name"]
            if name not in self.artifacts:
                raise StepFailed(f"Unable to download artifact(s): Artifact not found for name: {name}")
            dest = here / with_.get("path", ".")
            for rel, data in self.artifacts[name].items():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / rel).write_bytes(data)
            return checkout
        if action == "actions/upload-pages-artifact":
            self._store(with_.get("name") or "github-pages", here / with_["path"], False, {})
            return checkout
        if action == "actions/deploy-pages":
            name = with_.get("artifact_name") or "github-pages"
            if name not in self.artifacts:
                raise StepFailed(f"No artifact named {name} was found for this workflow run")
            self.deployed.append(name)
            out_file.write_text(f"page_url=https://{self.gh.owner}.github.test/{self.gh.name}/\n")
            return checkout
        raise StepFailed(f"the emulator does not know {uses}")

    def _store(self, name: str, path: Path, overwrite: bool, with_: dict) -> None:
        if name in self.artifacts and not overwrite:
            raise StepFailed(
                "Failed to CreateArtifact: Received non-retryable error: Failed request: (409) Conflict: "
                "an artifact with this name already exists on the workflow run"
            )
        files = {}
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    files[str(f.relative_to(path))] = f.read_bytes()
        elif path.is_file():
            files[path.name] = path.read_bytes()
        if not files and with_.get("if-no-files-found") == "error":
            raise StepFailed(f"No files were found with the provided path: {path}")
        self.artifacts[name] = files

    # -- looking at it ------------------------------------------------------------------------------

    def step_log(self, job: str) -> str:
        r = self.jobs[job]
        return "\n".join(f"--- {s.name} [{s.status}]\n{s.stdout}\n{s.stderr}" for s in r.steps)


class StepFailed(RuntimeError):
    pass


def _read_outputs(path: Path) -> dict[str, str]:
    out = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and "=" not in line.split("<<")[0]:
            key, delim = line.split("<<", 1)
            buf, i = [], i + 1
            while i < len(lines) and lines[i] != delim:
                buf.append(lines[i])
                i += 1
            out[key] = "\n".join(buf)
        elif "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
        i += 1
    return out
