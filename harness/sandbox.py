"""The operating-system boundary around the candidate's code: bubblewrap, the uid drop, the CPU clock.

Every process that runs code from train.py (the training worker, the two model processes of the
scoring) is started through `Sandbox.popen`. With bubblewrap ("isolation: bwrap") it gets:

    --unshare-pid --unshare-net --unshare-ipc --unshare-uts   its own PID namespace (no other process
                                                             visible; killing its init kills the whole
                                                             tree), no network, no shared SysV IPC
    --die-with-parent --new-session                          nothing outlives the harness; no TIOCSTI
    --clearenv + an explicit environment                     no secret of the caller's environment
    a filesystem built from an allowlist                     /usr (and the usrmerge links), the few /etc
                                                             files the loader needs, the Python prefixes,
                                                             the harness read-only at /opt/autoresearch,
                                                             the candidate's train.py read-only, a
                                                             private scratch directory (the only
                                                             writable place, also $HOME) and a tmpfs /tmp;
                                                             never /, /root, /home, the checkout, the
                                                             data cache or the validation data
    uid 65534 (nobody), no groups, no capabilities,          as root, bwrap runs privileged with every
    PR_SET_NO_NEW_PRIVS                                      capability dropped but SETUID/SETGID, and the
                                                             entry point (drop_privileges) gives those up
                                                             before it imports anything; as a normal user,
                                                             bwrap maps the caller to 65534 in a user
                                                             namespace with --disable-userns

Where bubblewrap is missing or cannot create namespaces (`probe()`), the same processes are plain
subprocesses ("isolation: none"): a scrubbed environment, their own session, the harness as a child
subreaper (so a double-forked or setsid escapee is re-parented to it and killed), and the in-process
layer of harness/integrity.py. The supervisor prints one line saying so.

The CPU clock (`CpuCounter`) counts the CPU time of everything the sandbox runs: a cgroup (v1
cpuacct or v2 cpu.stat) created per run when the harness may create one, which charges every task
that ever ran in it, exited or not; otherwise a /proc walk over the harness's descendants
(utime + stime + cutime + cstime; a reaped process's time is in its reaper's cutime, and orphans are
re-parented to the sandbox's init or to the harness, a subreaper). The /proc walk misses one thing:
a process whose parent ignores SIGCHLD is reaped by the kernel with its time charged to nobody, so
a candidate that runs short-lived children that way between two samples gets that work for free.
metrics.json names the counter in use (`cpu_counter`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

NOBODY = 65534  # the uid and gid candidate code runs as
INSIDE_ROOT = "/opt/autoresearch"  # where the harness is mounted in the sandbox (PYTHONPATH)
INSIDE_SCRATCH = "/scratch"  # the private writable directory, also $HOME
INSIDE_PYCACHE = f"{INSIDE_ROOT}/pycache"  # the trusted bytecode directory, read-only
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "localtime", "alternatives")
USRMERGE_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
NVIDIA_DIRS = ("/usr/local/nvidia", "/usr/local/cuda", "/usr/lib/x86_64-linux-gnu/nvidia", "/run/nvidia")
INSTALL_HINT = (
    "install bubblewrap (`apt-get install bubblewrap`); on Ubuntu 23.10+ also allow unprivileged user "
    "namespaces (`sysctl kernel.apparmor_restrict_unprivileged_userns=0`) or run the harness as root"
)

# Tests only: read by the supervisor from its own environment, never passed into a sandbox.
ENV_FORCE_NONE = "AUTORESEARCH_TEST_ISOLATION_NONE"  # "1": behave as if bubblewrap could not start
ENV_INPROCESS_OFF = "AUTORESEARCH_TEST_NO_INPROCESS"  # "1": no static scan, no audit hook


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg: int) -> None:
    if _libc().prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def drop_privileges() -> None:
    """In the sandbox, before anything else: no root, no groups, no capabilities, no way back.
    Called by the entry points of harness/worker.py and harness/modelproc.py."""
    if os.environ.pop("AUTORESEARCH_KEEP_UID", None) == "1":
        pass  # isolation none, as root, with a Python nobody cannot reach: stays the caller's uid
    elif os.getuid() == 0 or os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if os.getuid() == 0 and os.environ.get("AUTORESEARCH_ISOLATION") == "bwrap":
        raise RuntimeError("could not drop root before running candidate code")
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(os.environ.get("HOME") or "/")


def set_subreaper() -> None:
    """Orphans of our descendants are re-parented to us (so a setsid/double-fork escapee is found)."""
    with contextlib.suppress(OSError, AttributeError):
        prctl(PR_SET_CHILD_SUBREAPER, 1)


# ------------------------------------------------------------------------------------------------
# Probing bubblewrap
# ------------------------------------------------------------------------------------------------

_PROBE: dict = {}


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.strip().split()[-1] if out.strip() else "?"


def probe() -> tuple[str, str]:
    """("bwrap", version) when bubblewrap can build our sandbox here, else ("none", why). Cheap
    (one `bwrap ... true`, about 5 ms), cached per process."""
    if "result" in _PROBE:
        return _PROBE["result"]
    if os.environ.get(ENV_FORCE_NONE) == "1":
        res = ("none", f"{ENV_FORCE_NONE}=1 (tests only)")
    elif (path := bwrap_path()) is None:
        res = ("none", "bubblewrap (bwrap) is not installed")
    else:
        argv = [
            path,
            *_ns_flags(),
            "--ro-bind",
            "/usr",
            "/usr",
            *_usrmerge(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            "/usr/bin/true",
        ]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            ok, why = p.returncode == 0, (p.stderr.strip() or f"exit {p.returncode}")
        except (OSError, subprocess.SubprocessError) as e:
            ok, why = False, str(e)
        res = (
            ("bwrap", bwrap_version(path)) if ok else ("none", f"bubblewrap cannot create namespaces: {why}")
        )
    _PROBE["result"] = res
    return res


def _ns_flags() -> list[str]:
    flags = [
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
    ]
    if os.getuid() == 0:
        # Privileged: no user namespace; every capability goes but the two the entry point needs to
        # become nobody, and it gives those up before it runs anything else.
        flags += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        flags += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"]
    return flags


def _usrmerge() -> list[str]:
    out = []
    for name in USRMERGE_LINKS:
        p = Path("/") / name
        if p.is_symlink():
            out += ["--symlink", os.readlink(p), f"/{name}"]
        elif p.is_dir():
            out += ["--ro-bind", str(p), f"/{name}"]
    return out


# ------------------------------------------------------------------------------------------------
# The filesystem view
# ------------------------------------------------------------------------------------------------


def python_roots() -> list[str]:
    """The directories this interpreter and its packages live in (bound read-only)."""
    import site
    import sysconfig

    roots = {sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths = sysconfig.get_paths()
    roots.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))
    with contextlib.suppress(AttributeError):
        roots.update(site.getsitepackages())
    roots.add(os.path.dirname(os.path.realpath(sys.executable)))
    out = []
    for r in sorted(roots, key=len):
        r = os.path.realpath(r)
        if not os.path.isdir(r) or r.startswith("/usr/") or r == "/usr":
            continue  # under /usr: already there
        if any(r == o or r.startswith(o + "/") for o in out):
            continue
        out.append(r)
    return out


class View:
    """A bwrap argument list that builds a filesystem from an allowlist, with the parents of every
    bind created world-traversable (bwrap makes them 0700, which nobody could not traverse)."""

    def __init__(self):
        self.args: list[str] = []
        self.dirs: set[str] = {"/"}

    def _parents(self, dest: str) -> None:
        parts = Path(dest).parent.parts[1:]
        cur = ""
        for p in parts:
            cur += "/" + p
            if cur not in self.dirs:
                self.dirs.add(cur)
                self.args += ["--perms", "0755", "--dir", cur]

    def ro(self, src: str, dest: str | None = None) -> None:
        dest = dest or src
        self._parents(dest)
        self.args += ["--ro-bind", src, dest]

    def rw(self, src: str, dest: str) -> None:
        self._parents(dest)
        self.args += ["--bind", src, dest]

    def dev(self, src: str) -> None:
        self._parents(src)
        self.args += ["--dev-bind", src, src]


def _cuda_paths() -> tuple[list[str], list[str]]:
    """(device nodes, read-only dirs) a CUDA process needs: /dev/nvidia*, the driver's libraries."""
    devs = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
    if Path("/dev/dri").is_dir():
        devs.append("/dev/dri")
    dirs = []
    for d in NVIDIA_DIRS:
        real = os.path.realpath(d)  # /usr/local/cuda is often a link: bind what it points to, once
        if os.path.isdir(real) and not real.startswith("/usr/") and real not in dirs:
            dirs.append(real)  # under /usr it is already in the view (binds are recursive)
    if os.path.isdir("/sys"):
        dirs.append("/sys")
    return devs, dirs


def trusted_pycache() -> str | None:
    """This process's bytecode directory when it is the harness's own (harness/protocol.py), else None."""
    from harness.protocol import trusted_pycache_dir

    prefix = sys.pycache_prefix
    trusted = os.path.realpath(trusted_pycache_dir())
    if prefix and os.path.realpath(prefix) == trusted and os.path.isdir(prefix):
        return prefix
    return None


def sandbox_env(scratch_inside: str, threads: int, extra: dict | None = None) -> dict[str, str]:
    """The whole environment of a sandboxed process: nothing inherited but what is named here."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch_inside,
        "USER": "nobody",
        "LOGNAME": "nobody",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONPATH": INSIDE_ROOT,
        # Bytecode comes only from the harness's own directory (written by trusted processes, bound
        # read-only here) and is never written: no .pyc beside any source is read or planted.
        "PYTHONPYCACHEPREFIX": INSIDE_PYCACHE,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "TORCHINDUCTOR_CACHE_DIR": f"{scratch_inside}/.cache/inductor",
        "TRITON_CACHE_DIR": f"{scratch_inside}/.cache/triton",
        "XDG_CACHE_HOME": f"{scratch_inside}/.cache",
        # The CUDA driver's cache of kernels it compiled from PTX (default ~/.nv/ComputeCache, lost
        # with the scratch): under .cache it is kept with the compile cache (harness/compile_cache.py).
        "CUDA_CACHE_PATH": f"{scratch_inside}/.cache/nv",
        "TORCHINDUCTOR_COMPILE_THREADS": "1",  # CUDA sandboxes: compile_threads(), in Sandbox.argv
    }
    for k in (
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "LD_LIBRARY_PATH",
        "NCCL_NVLS_ENABLE",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST",
        "NVSHMEM_DISABLE_NVLS",
    ):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update(extra or {})
    return env


MAX_COMPILE_THREADS = 32  # inductor's own cap
SHM_ARGS = ["--perms", "1777", "--tmpfs", "/dev/shm"]


def shm_args() -> list[str]:
    """A private, writable /dev/shm for a sandbox (bwrap's --dev makes one that only root may
    write): POSIX semaphores live there, and every multiprocessing pool needs them, inductor's
    parallel compile included. [] where this bwrap cannot set a tmpfs's mode (older ones): probed
    once, like `probe()`."""
    if "shm" not in _PROBE:
        argv = [bwrap_path() or "bwrap", *_ns_flags(), "--ro-bind", "/usr", "/usr", *_usrmerge(),
                "--proc", "/proc", "--dev", "/dev", *SHM_ARGS, "--", "/usr/bin/true"]  # fmt: skip
        try:
            ok = subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        _PROBE["shm"] = list(SHM_ARGS) if ok else []
    return _PROBE["shm"]


def compile_threads(cuda: bool) -> int:
    """Inductor's parallel compile workers for a sandboxed process. On CUDA the machine's cores
    (inductor's default): a cold torch.compile of the gpu preset's train.py spends most of its time
    compiling Triton kernels one after another in a single thread (benchmarks/README.md). On the CPU
    presets one: the clock there counts the CPU seconds of the whole sandbox, and a pool of workers
    on a 2-core machine only competes with the training."""
    if not cuda:
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(MAX_COMPILE_THREADS, n))


class Sandbox:
    """How candidate code is started for one run: bwrap when it works here, else plain processes."""

    def __init__(self, harness_dir: Path, run_dir: Path, *, isolation: str | None = None, hide=()):
        self.hide = [os.path.realpath(p) for p in hide if os.path.isdir(p)]  # emptied in the view
        self.harness_dir = Path(harness_dir).resolve()
        self.run_dir = Path(run_dir)
        mode, detail = probe()
        self.isolation = isolation or mode
        self.detail = detail
        # As root the candidate runs as nobody; without bwrap only where nobody can reach the
        # interpreter and the harness (a Python under /root, mode 0700, it cannot).
        self.root_drop = os.getuid() == 0 and (
            self.isolation == "bwrap"
            or _world_reachable(
                [
                    sys.executable,
                    os.path.realpath(sys.executable),
                    sys.prefix,
                    str(self.harness_dir),
                    str(self.run_dir),
                ]
            )
        )

    @property
    def version(self) -> str | None:
        return self.detail if self.isolation == "bwrap" else None

    def private_dir(self, name: str) -> Path:
        """A directory only the sandboxed uid (and root) may use: its scratch."""
        d = self.run_dir / name
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.root_drop:
            os.chown(d, NOBODY, NOBODY)
        return d

    def _etc(self) -> Path:
        d = self.run_dir / "etc"
        if not d.exists():
            d.mkdir(mode=0o755)
            (d / "passwd").write_text(
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/scratch:/bin/sh\n"
            )
            (d / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
            (d / "hosts").write_text("127.0.0.1 localhost\n")
        return d

    def argv(
        self,
        module: str,
        *,
        scratch: Path,
        ro_files: dict[str, Path],
        threads: int,
        cuda: bool,
        pass_fds: tuple[int, ...] = (),
        info_fd: int | None = None,
        extra_env: dict | None = None,
        compile_share: int = 1,
    ) -> tuple[list[str], dict[str, str], str]:
        """(argv, env, cwd) to run `python -m module` for candidate code. ro_files: inside path ->
        host path, bound read-only (train.py, the weights). compile_share: this process gets that
        fraction (1/n) of the compile workers (the scoring's model processes compile while the
        candidate trains, and leave it most of the cores)."""
        py = sys.executable  # not its realpath: a venv is found through the path it was started by
        shm = shm_args() if cuda and self.isolation == "bwrap" else []
        workers = compile_threads(cuda) if shm or self.isolation != "bwrap" else 1  # a pool needs /dev/shm
        workers = max(1, workers // max(1, compile_share))
        extra_env = {"TORCHINDUCTOR_COMPILE_THREADS": str(workers), **(extra_env or {})}
        flags = ["-s", "-P", "-X", "frozen_modules=on"]
        if self.isolation != "bwrap":
            env = sandbox_env(str(scratch), threads, extra_env)
            env["AUTORESEARCH_ISOLATION"] = "none"
            if os.getuid() == 0 and not self.root_drop:
                env["AUTORESEARCH_KEEP_UID"] = "1"
            env["PYTHONPATH"] = str(self.harness_dir.parent)
            env["PYTHONPYCACHEPREFIX"] = trusted_pycache() or str(scratch / ".pycache")
            return [py, *flags, "-m", module], env, str(scratch)
        v = View()
        v.args += ["--clearenv"]
        v.args += _ns_flags()
        # The fresh /proc, /dev and /tmp first: a bind below comes on top of them, so an interpreter
        # or a venv that lives under /tmp (a checkout cloned there) stays visible.
        v.args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        v.args += shm
        v.dirs.add("/tmp")  # keep the tmpfs's own mode (1777): never re-made 0755 as a bind's parent
        v.ro("/usr")
        v.args += _usrmerge()
        for name in ETC_FILES:
            p = Path("/etc") / name
            if p.exists():
                v.ro(str(p))
        etc = self._etc()
        for name in ("passwd", "group", "hosts"):
            v.ro(str(etc / name), f"/etc/{name}")
        roots = python_roots()
        for r in roots:
            v.ro(r)
        for h in self.hide:  # e.g. the offline corpus packages: they hold the validation text
            if any(h.startswith(r + "/") for r in roots):
                v.args += ["--tmpfs", h]
        v.ro(str(self.harness_dir), f"{INSIDE_ROOT}/harness")
        pyc = trusted_pycache()
        if pyc:
            v.ro(pyc, INSIDE_PYCACHE)
        else:
            v.args += ["--tmpfs", INSIDE_PYCACHE]
        for inside, host in ro_files.items():
            v.ro(str(host), inside)
        v.rw(str(scratch), INSIDE_SCRATCH)
        if cuda:
            devs, dirs = _cuda_paths()
            for d in devs:
                v.dev(d)
            for d in dirs:
                v.ro(d)
        if info_fd is not None:
            v.args += ["--info-fd", str(info_fd)]
        v.args += ["--chdir", "/"]  # the entry point moves to $HOME once it is nobody (0700, its own)
        env = sandbox_env(INSIDE_SCRATCH, threads, extra_env)
        env["AUTORESEARCH_ISOLATION"] = "bwrap"
        for k, val in env.items():
            v.args += ["--setenv", k, val]
        return [bwrap_path(), *v.args, "--", py, *flags, "-m", module], {}, "/"

    def popen(
        self,
        module: str,
        *,
        scratch: Path,
        ro_files: dict[str, Path],
        threads: int,
        cuda: bool,
        pass_fds: tuple[int, ...],
        log,
        cgroup: CgroupCounter | None = None,
        extra_env: dict | None = None,
        compile_share: int = 1,
    ) -> SandboxProcess:
        info_r = info_w = None
        if self.isolation == "bwrap":
            info_r, info_w = os.pipe()
        argv, env, cwd = self.argv(
            module,
            scratch=scratch,
            ro_files=ro_files,
            threads=threads,
            cuda=cuda,
            info_fd=info_w,
            extra_env=extra_env,
            compile_share=compile_share,
        )
        fds = tuple(pass_fds) + ((info_w,) if info_w is not None else ())
        join = cgroup.join_path if cgroup is not None else None
        bwrap = self.isolation == "bwrap"
        drop = self.root_drop and not bwrap  # plain processes drop here; bwrap's drop in the entry point

        def pre():
            if join:
                with open(join, "w") as f:
                    f.write(str(os.getpid()))
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if drop:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)

        proc = subprocess.Popen(
            argv,
            env=env or None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=fds,
            close_fds=True,
            start_new_session=True,
            preexec_fn=pre,
        )
        child = None
        if info_w is not None:
            os.close(info_w)
            child = _read_child_pid(info_r)
            os.close(info_r)
        return SandboxProcess(proc, child)


def _read_child_pid(fd: int, timeout: float = 30.0) -> int | None:
    """bwrap's --info-fd: {"child-pid": N}, the host pid of the namespace's init."""
    import select

    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            with contextlib.suppress(ValueError):
                return int(json.loads(buf)["child-pid"])
    return None


def _world_reachable(paths: list[str]) -> bool:
    import stat as _stat

    for p in paths:
        cur = Path(p).resolve()
        for d in [cur, *cur.parents]:
            try:
                mode = d.stat().st_mode
            except OSError:
                return False
            if _stat.S_ISDIR(mode) and not mode & _stat.S_IXOTH:
                return False
    return True


class SandboxProcess:
    def __init__(self, proc: subprocess.Popen, ns_init: int | None):
        self.proc = proc
        self.pid = proc.pid
        self.ns_init = ns_init  # bwrap: the PID namespace's init (killing it kills everything inside)

    def kill(self) -> None:
        """SIGKILL the whole tree: the namespace (bwrap) or the session and every descendant."""
        if self.ns_init:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.ns_init, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)

    def poll(self):
        return self.proc.poll()


def kill_descendants(root_pid: int | None = None, exclude: set[int] | None = None, rounds: int = 20) -> int:
    """SIGKILL every live descendant of `root_pid` (default: this process) but the processes in
    `exclude` and everything below them, and reap what is ours (not those). Returns how many were
    found. With this process a subreaper, orphans come back to it."""
    root = os.getpid() if root_pid is None else root_pid
    exclude = set(exclude or ())
    found = 0
    for _ in range(rounds):
        table = proc_table()
        live = set(proc_table(live_only=True))
        kids = descendants(table, root) & live
        for pid in exclude:
            kids -= {pid} | descendants(table, pid)
        if not kids:
            break
        found += len(kids)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        reap_children(keep=exclude)
        time.sleep(0.02)
    reap_children(keep=exclude)
    return found


def reap_children(keep: set[int] | None = None) -> None:
    """Reap zombie children (orphans re-parented to us) without waiting, but those in `keep`, whose
    exit status their Popen object still wants."""
    if not keep:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
    me = os.getpid()
    for pid, (ppid, _) in proc_table().items():
        if ppid == me and pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


# ------------------------------------------------------------------------------------------------
# /proc and the CPU clock
# ------------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def proc_table(live_only: bool = False) -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime + stime + cutime + cstime in seconds) for every process we can see
    (live_only: leave out zombies)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2 :].split()
        if live_only and rest[:1] == [b"Z"]:
            continue
        try:
            ppid = int(rest[1])
            t = sum(int(x) for x in rest[11:15]) / _TICK
        except (IndexError, ValueError):
            continue
        out[int(name)] = (ppid, t)
    return out


def descendants(procs: dict[int, tuple[int, float]], root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    out, stack = set(), [root]
    while stack:
        for c in kids.get(stack.pop(), []):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


class ProcCounter:
    """CPU seconds of this process's descendants, live (their cumulative times) plus reaped (our own
    RUSAGE_CHILDREN): see the module docstring for the one case it misses."""

    kind = "proc"

    def __init__(self, exclude: set[int] | None = None):
        self.exclude = set(exclude or ())  # processes not counted, with everything below them
        t = os.times()
        self._base = t.children_user + t.children_system

    def read(self) -> float:
        procs = proc_table()
        tree = descendants(procs, os.getpid())
        for pid in self.exclude:  # the scoring's model processes, started beside the training
            tree -= {pid} | descendants(procs, pid)
        live = sum(procs[p][1] for p in tree if p in procs)
        t = os.times()
        return live + (t.children_user + t.children_system - self._base)

    def close(self) -> None:
        pass


class CgroupCounter:
    """A cgroup made for one process tree: every task in it is charged, alive or exited."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.kind = kind
        self.join_path = str(path / "cgroup.procs")

    @classmethod
    def create(cls) -> CgroupCounter | None:
        name = f"autoresearch-{os.getpid()}-{secrets.token_hex(4)}"
        for kind, base in _cgroup_bases():
            d = base / name
            try:
                d.mkdir()
            except OSError:
                continue
            c = cls(d, kind)
            try:
                c.read()
                return c
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    d.rmdir()
        return None

    def read(self) -> float:
        if self.kind == "cgroup-v1":
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "usage_usec":
                return int(v) / 1e6
        raise ValueError("no usage_usec in cpu.stat")

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for p in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            reap_children()
            time.sleep(0.02)

    def close(self) -> None:
        self.kill_all()
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def _cgroup_bases() -> list[tuple[str, Path]]:
    """Where this process's own cgroups are, for cpuacct (v1) and the unified hierarchy (v2)."""
    mounts: dict[str, str] = {}
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            fstype, opts = rfields[0], rfields[-1].split(",")
            if fstype == "cgroup" and "cpuacct" in opts:
                mounts["v1"] = fields[4]
            elif fstype == "cgroup2":
                mounts["v2"] = fields[4]
        mine = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in mine:
        _, ctrls, path = line.split(":", 2)
        if "v1" in mounts and "cpuacct" in ctrls.split(","):
            out.append(("cgroup-v1", Path(mounts["v1"]) / path.lstrip("/")))
        if "v2" in mounts and ctrls == "":
            out.append(("cgroup-v2", Path(mounts["v2"]) / path.lstrip("/")))
    return out


def cpu_counter() -> CgroupCounter | ProcCounter:
    return CgroupCounter.create() or ProcCounter()
