#!/usr/bin/env bash
# The main job on one machine with no accounts: local git, a local process, the offline proposer,
# the corpus shipped by a Python package and the tiny `cpu` preset.
# Usage: bash scripts/demo.sh [ITERATIONS] [WORKSPACE]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-3}
workspace=${2:-.autoresearch/demo}
bash scripts/setup.sh
python3 -m harness prepare --preset cpu
if [ ! -d "$workspace/.git" ]; then
  autoresearch-ci init "$workspace"
fi
autoresearch-ci loop --repo "$workspace" --iterations "$iterations"
