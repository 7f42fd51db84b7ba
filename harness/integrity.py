"""The in-process layer, a second line behind the sandbox (harness/sandbox.py) and the out-of-process
scoring (harness/scorer.py): env scrubbing, hashing, a static scan and an audit hook.

It is all that stands between a candidate and the harness's files when the sandbox cannot start
("isolation: none"), and a tripwire when it can. Tests switch it off (AUTORESEARCH_TEST_NO_INPROCESS=1)
to show the operating-system layer holds by itself. The layers:

- `scrub_env`: the worker starts with an allowlisted environment, so no token or key reaches it.
- `static_scan`: before `train.py` is imported, its AST is checked for the tools one would need to
  bend the metric (ctypes, gc, audit/trace hooks, torch dispatch overrides, frame introspection,
  harness internals, monkeypatching torch/math/time/builtins). Honest training code needs none.
- `AuditGuard`: a `sys.addaudithook` hook. It turns opening validation data (or the raw text it came
  from) outside the evaluator's own short read window, writing into the harness or the data cache,
  handing a protected path to a subprocess, patching torch.Tensor, adding another audit hook, or
  walking the garbage collector into a violation: the caller gets PermissionError and the run is
  marked invalid whether or not the candidate catches the exception. In the worker the run ends at
  the first violation (`on_violation`): its verdict is settled, so the model processes never start
  and a GPU does not train on for nothing.

Code that runs in the same process can, with enough effort, undo any of this; that is why it is the
second line, not the first.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import os
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------------------------
# The environment of the training process
# ------------------------------------------------------------------------------------------------

# What the worker may inherit. LD_LIBRARY_PATH is not in the design sketch's list, but GPU hosts
# often need it to find libcuda/cudnn; it names directories, never credentials.
ENV_ALLOW = (
    "PATH",
    "HOME",
    "LANG",
    "LC_*",
    "TMPDIR",
    "PYTHONPATH",
    "LD_LIBRARY_PATH",
    "CUDA_*",
    "NVIDIA_*",
    "TORCH*",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_*",
    "OMP_NUM_THREADS",
    "MKL_*",
    "AUTORESEARCH_CACHE",
    "XDG_CACHE_HOME",
)
# Dropped even when an allowlist pattern matches (TORCH_HUB_TOKEN, CUDA_..._KEY): belt and braces.
ENV_DENY = ("*TOKEN*", "*KEY*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*", "*AUTH*")


def env_allowed(name: str) -> bool:
    up = name.upper()
    if any(fnmatch.fnmatchcase(up, p) for p in ENV_DENY):
        return False
    return any(fnmatch.fnmatchcase(up, p) for p in ENV_ALLOW)


def scrub_env(env: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of `env`: what the training process may see."""
    return {k: v for k, v in env.items() if env_allowed(k)}


# ------------------------------------------------------------------------------------------------
# Hashes
# ------------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def harness_files(root: Path = HARNESS_DIR) -> list[Path]:
    """The files that make up the locked harness (the presets live in harness/presets.py)."""
    return sorted(root.glob("*.py"))


def harness_sha256(root: Path = HARNESS_DIR) -> str:
    """sha256 over the sorted harness/*.py files, names included (a rename changes it too)."""
    h = hashlib.sha256()
    for p in harness_files(root):
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Static scan of train.py
# ------------------------------------------------------------------------------------------------

CONTRACT = (
    "train.py defines `def train(ctx) -> torch.nn.Module`, gets its data only from ctx.train_batches(), "
    "and uses torch and the standard library without reaching into the harness, the interpreter or "
    "torch's dispatch machinery"
)

# Modules whose import is a violation (the module itself or anything under it).
BANNED_MODULES = {
    "ctypes": "raw memory access",
    "cffi": "raw memory access",
    "gc": "reaching objects through the garbage collector",
    "importlib": "loading code around the harness",
    "builtins": "patching builtins",
    "torch.library": "overriding torch operators",
    "torch.overrides": "intercepting torch functions",
    "torch.utils._python_dispatch": "intercepting torch dispatch",
    "torch._C._functorch": "dispatch internals",
    "harness.context": "harness internals",
    "harness.evaluate": "harness internals",
    "harness.scorer": "harness internals",
    "harness.sandbox": "harness internals",
    "harness.channel": "harness internals",
    "harness.cuda_ipc": "harness internals",
    "harness.modelproc": "harness internals",
    "harness.compile_cache": "harness internals",
    "harness.bytecode": "harness internals",
    "harness.protocol": "harness internals",
    "harness.integrity": "harness internals",
    "harness.supervisor": "harness internals",
    "harness.worker": "harness internals",
    "harness.data": "harness internals",
    "harness.dataloader": "harness internals",
    "harness.corpus": "harness internals",
    "harness.tokenizer": "harness internals",
    "harness.climbmix": "harness internals",
    "harness.mfu": "harness internals",
    "harness.presets": "harness internals",
}
# What `from harness import X` may name: the public exceptions, nothing else.
HARNESS_PUBLIC = {"TrainingDiverged"}

# Attribute or function names that have no honest use in a training script.
BANNED_NAMES = {
    "addaudithook": "installing an audit hook",
    "settrace": "tracing the interpreter",
    "setprofile": "profiling hooks on the interpreter",
    "_getframe": "frame introspection",
    "currentframe": "frame introspection",
    "_current_frames": "frame introspection",
    "f_back": "frame introspection",
    "f_locals": "frame introspection",
    "f_globals": "frame introspection",
    "tb_frame": "frame introspection",
    "gi_frame": "frame introspection",
    "cr_frame": "frame introspection",
    "__closure__": "reading closures",
    "getclosurevars": "reading closures",
    "cell_contents": "reading closures",
    "__self__": "reaching the objects behind bound methods",
    "__globals__": "reading function globals",
    "__code__": "replacing code objects",
    "__builtins__": "patching builtins",
    "__torch_function__": "intercepting torch functions",
    "__torch_dispatch__": "intercepting torch dispatch",
    "TorchFunctionMode": "intercepting torch functions",
    "TorchDispatchMode": "intercepting torch dispatch",
    "_python_dispatch": "intercepting torch dispatch",
    "_set_torch_function_mode": "intercepting torch functions",
    "_push_on_torch_function_stack": "intercepting torch functions",
    "_push_on_torch_dispatch_stack": "intercepting torch dispatch",
    "_exit": "leaving the process without the harness",
    "fdopen": "writing to the harness's file descriptors",
    "dup2": "rewiring the harness's file descriptors",
    "setsid": "escaping the harness's process group",
    "setpgid": "escaping the harness's process group",
    "start_new_session": "escaping the harness's process group",
    "killpg": "signalling the harness",
}
BANNED_CALLS = {
    "__import__": "dynamic imports",
    "exec": "running generated code",
    "eval": "running generated code",
    "compile": "compiling generated code",
    "breakpoint": "a debugger",
}

# Assigning attributes of these modules is monkeypatching (torch.backends.* etc. are allowed below).
PATCH_GUARDED_MODULES = (
    "torch",
    "numpy",
    "math",
    "time",
    "builtins",
    "sys",
    "random",
    "os",
    "harness",
    "functools",
)
PATCH_ALLOWED_PREFIXES = (
    "torch.backends.",
    "torch._dynamo.config.",
    "torch._inductor.config.",
    "torch._functorch.config.",
    "torch.fx.experimental._config.",
    "os.environ",
)


class _Scanner(ast.NodeVisitor):
    def __init__(self):
        self.problems: list[str] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted module it refers to

    def flag(self, node: ast.AST, what: str, why: str) -> None:
        self.problems.append(f"line {getattr(node, 'lineno', '?')}: {what} ({why})")

    def _check_module(self, node: ast.AST, mod: str) -> None:
        for banned, why in BANNED_MODULES.items():
            if mod == banned or mod.startswith(banned + "."):
                self.flag(node, f"imports {mod}", why)
                return

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_module(node, a.name)
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                self.aliases[a.name.split(".")[0]] = a.name.split(".")[0]
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            self.flag(node, "a relative import", "train.py is a single file")
        self._check_module(node, mod)
        for a in node.names:
            full = f"{mod}.{a.name}" if mod else a.name
            self._check_module(node, full)
            if mod == "harness" and a.name not in HARNESS_PUBLIC:
                self.flag(
                    node, f"imports harness.{a.name}", f"only {', '.join(sorted(HARNESS_PUBLIC))} is public"
                )
            self.aliases[a.asname or a.name] = full
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in BANNED_NAMES:
            self.flag(node, f"uses .{node.attr}", BANNED_NAMES[node.attr])
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in BANNED_NAMES:
            self.flag(node, f"uses {node.id}", BANNED_NAMES[node.id])
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in BANNED_CALLS:
            self.flag(node, f"calls {f.id}()", BANNED_CALLS[f.id])
        if isinstance(f, ast.Name) and f.id in ("setattr", "delattr") and node.args:
            target = self._dotted(node.args[0])
            if target and self._guarded(target + "."):
                self.flag(node, f"{f.id}() on {target}", "monkeypatching a module the harness relies on")
        for kw in node.keywords:
            if kw.arg in BANNED_NAMES:
                self.flag(node, f"passes {kw.arg}=", BANNED_NAMES[kw.arg])
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in BANNED_NAMES:
            self.flag(node, f"defines {node.name}", BANNED_NAMES[node.name])
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _dotted(self, node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.aliases.get(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def _guarded(self, dotted: str) -> bool:
        root = dotted.split(".")[0]
        if root not in PATCH_GUARDED_MODULES:
            return False
        return not any(dotted.startswith(p) for p in PATCH_ALLOWED_PREFIXES)

    def _check_target(self, t: ast.AST) -> None:
        if isinstance(t, ast.Attribute):
            dotted = self._dotted(t)
            if dotted and self._guarded(dotted):
                self.flag(t, f"assigns {dotted}", "monkeypatching a module the harness relies on")
        elif isinstance(t, ast.Tuple | ast.List):
            for e in t.elts:
                self._check_target(e)

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_target(t)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_target(t)
        self.generic_visit(node)


def static_scan(source: str, filename: str = "train.py") -> list[str]:
    """Problems found in the source of train.py; empty when it is clean. A syntax error is returned
    as a problem too (the import would fail anyway; this way the message is the same shape)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        return [f"line {e.lineno}: syntax error: {e.msg}"]
    s = _Scanner()
    s.visit(tree)
    return s.problems


# ------------------------------------------------------------------------------------------------
# The audit hook
# ------------------------------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {  # event -> indices of path arguments that a write-like operation touches
    "os.rename": (0, 1),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.utime": (0,),
    "os.mkdir": (0,),
    "os.link": (0, 1),
    "os.symlink": (0, 1),
    "shutil.copyfile": (0, 1),
    "shutil.copytree": (0, 1),
    "shutil.move": (0, 1),
    "shutil.rmtree": (0,),
    "shutil.chown": (0,),
}
_SPAWN_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn"}
_GC_EVENTS = {"gc.get_referrers", "gc.get_referents", "gc.get_objects"}
WATCHED = frozenset({"open", "sys.addaudithook", "object.__setattr__", "object.__delattr__"}
                    | set(_PATH_EVENTS) | _SPAWN_EVENTS | _GC_EVENTS)  # fmt: skip


def _as_path(p) -> str | None:
    if isinstance(p, int) or p is None:
        return None
    try:
        return os.path.abspath(os.fsdecode(p))
    except (TypeError, ValueError):
        return None


def _flatten_strings(x, depth: int = 0) -> Iterable[str]:
    if depth > 3:
        return
    if isinstance(x, str | bytes | os.PathLike):
        try:
            yield os.fsdecode(x)
        except (TypeError, ValueError):
            return
    elif isinstance(x, list | tuple):
        for e in x:
            yield from _flatten_strings(e, depth + 1)


class AuditGuard:
    """The worker's audit hook and its state. Created once, before train.py is imported.

    protected: files and directories no code may open except the harness inside `reading_val()`
        (validation tokens, the raw validation text, the offline corpus packages);
    locked: directories nothing in the worker may write into (the harness, the data cache);
    private_fds: file descriptors only the harness may wrap (the event pipe).
    """

    def __init__(
        self,
        protected: Iterable[str | Path],
        locked: Iterable[str | Path],
        private_fds=(),
        candidate_files: Iterable[str | Path] = (),
    ):
        self.protected_dirs: list[str] = []
        self.protected_files: set[str] = set()
        self.protected_inodes: set[tuple[int, int]] = set()
        for p in protected:
            rp = os.path.realpath(p)
            if os.path.isdir(rp):
                self.protected_dirs.append(rp.rstrip(os.sep) + os.sep)
                for root, _, files in os.walk(rp):
                    for f in files[:5000]:
                        self._add_inode(os.path.join(root, f))
            else:
                self.protected_files.add(rp)
                self._add_inode(rp)
        self.locked_dirs = [os.path.realpath(p).rstrip(os.sep) + os.sep for p in locked]
        self.private_fds = set(private_fds)
        self.candidate_files = {os.path.realpath(p) for p in candidate_files}
        self.foreign_hooks: list[str] = []  # where libraries added audit hooks (allowed; for the record)
        self.needles = sorted({p.rstrip(os.sep) for p in [*self.protected_files, *self.protected_dirs]})
        self.violations: list[str] = []
        # Called with each violation before PermissionError is raised: the worker ends the run there
        # (see harness/worker.py), so nothing the candidate does next can matter or cost anything.
        self.on_violation: Callable[[str], None] | None = None
        self._state = {"val_open": False, "busy": False}
        self._installed = False
        import torch

        self._tensor_types = (torch.Tensor, torch._C.TensorBase, torch.nn.Parameter)

    def _add_inode(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            self.protected_inodes.add((st.st_dev, st.st_ino))

    # -- classification ---------------------------------------------------------------------------

    def is_protected(self, path: str) -> bool:
        rp = os.path.realpath(path)
        if rp in self.protected_files or any(
            rp.startswith(d) or rp + os.sep == d for d in self.protected_dirs
        ):
            return True
        try:
            st = os.stat(rp)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self.protected_inodes

    def is_locked(self, path: str) -> bool:
        rp = os.path.realpath(path)
        return any(rp.startswith(d) or rp + os.sep == d for d in self.locked_dirs)

    def mentions_protected(self, args) -> str | None:
        for s in _flatten_strings(args):
            for n in self.needles:
                if n in s:
                    return n
        return None

    # -- the hook ---------------------------------------------------------------------------------

    def _record(self, msg: str) -> None:
        if msg not in self.violations:
            self.violations.append(msg)
        if self.on_violation is not None:
            self.on_violation(msg)

    def violation(self, msg: str) -> None:
        self._record(msg)
        raise PermissionError(f"autoresearch harness: {msg}")

    def _hook(self, event: str, args: tuple) -> None:
        if event not in WATCHED or self._state["busy"]:
            return
        self._state["busy"] = True
        try:
            self._check(event, args)
        finally:
            self._state["busy"] = False

    def _check(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if isinstance(path, int):
                if path in self.private_fds and not self._state["val_open"]:
                    self.violation(f"opened the harness's private file descriptor {path}")
                return
            p = _as_path(path)
            if p is None:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
            )
            if writing and self.is_locked(p):
                self.violation(f"opened {p} for writing (the harness and the data cache are read-only)")
            if not self._state["val_open"] and self.is_protected(p):
                self.violation(f"opened {p} (validation data never enters training)")
            if p.startswith("/proc/") and p.rsplit("/", 1)[-1] in ("mem", "pagemap"):
                self.violation(f"opened {p} (reading process memory reaches the harness's objects)")
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args):
                    p = _as_path(args[i])
                    if p is not None and self.is_locked(p):
                        self.violation(f"{event} on {p} (the harness and the data cache are read-only)")
                    copies = event in (
                        "os.link",
                        "os.symlink",
                        "shutil.copyfile",
                        "shutil.copytree",
                        "shutil.move",
                    )
                    if p is not None and copies and self.is_protected(p):
                        self.violation(f"{event} of {p} (validation data never enters training)")
        elif event in _SPAWN_EVENTS:
            hit = self.mentions_protected(args)
            if hit:
                self.violation(
                    f"{event} with an argument naming {hit} (validation data never enters training)"
                )
        elif event in _GC_EVENTS:
            self.violation(f"{event} (walking the garbage collector can reach the harness's objects)")
        elif event == "sys.addaudithook":
            # Libraries may add hooks of their own (through the C API too: seen with torch 2.11 on
            # CUDA); only a call made directly from train.py's code is refused.
            caller = self._caller_file()
            if self._installed and caller in self.candidate_files:
                self._record("tried to add an audit hook")
                raise RuntimeError("autoresearch harness: audit hooks are reserved for the harness")
            if self._installed:
                self.foreign_hooks.append(caller or "?")
        elif event in ("object.__setattr__", "object.__delattr__"):
            obj = args[0] if args else None
            if isinstance(obj, type) and obj in self._tensor_types:
                name = args[1] if len(args) > 1 else "?"
                self.violation(f"patched {obj.__module__}.{obj.__qualname__}.{name}")

    def _caller_file(self) -> str | None:
        """The file of the Python frame that raised the current event. Frames: 0 this method,
        1 _check, 2 _hook, 3 the caller (a builtin such as sys.addaudithook has no frame of its own)."""
        try:
            return os.path.realpath(sys._getframe(3).f_code.co_filename)
        except ValueError:
            return None

    def install(self) -> None:
        sys.addaudithook(self._hook)
        self._installed = True

    # -- the evaluator's read window --------------------------------------------------------------

    def reading_val(self):
        """Context manager: the harness itself opens validation files inside it, nobody else."""
        guard = self

        class _Window:
            def __enter__(self):
                guard._state["val_open"] = True

            def __exit__(self, *exc):
                guard._state["val_open"] = False
                return False

        return _Window()
