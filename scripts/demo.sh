#!/usr/bin/env bash
# The main job on one machine with no accounts: local git, a local process, the offline proposer,
# the corpus shipped by a Python package and the small `cpu` preset. Installs into .venv first
# (scripts/setup.sh), never into your own Python.
# Usage: bash scripts/demo.sh [ITERATIONS] [WORKSPACE]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-3}
workspace=${2:-.autoresearch/demo}
bash scripts/setup.sh
VENV=${AUTORESEARCH_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
python -m harness prepare --preset cpu
if [ ! -d "$workspace/.git" ]; then
  autoresearch-ci init "$workspace"
fi
autoresearch-ci loop --repo "$workspace" --iterations "$iterations"
echo
echo "Look around (after: source $VENV/bin/activate):"
echo "  autoresearch-ci status --repo $workspace"
echo "  autoresearch-ci dashboard serve --repo $workspace"
