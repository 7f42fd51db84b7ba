#!/usr/bin/env bash
# The project's test command (what CI runs): installs into .venv (scripts/setup.sh, with the dev
# extra) and the system tools the tests drive, then runs lint and the whole suite from .venv.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
VENV=${AUTORESEARCH_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
# Debian's Chromium drives the dashboard's browser test (no browser download at install time), and
# bubblewrap is the sandbox the harness runs candidates in. Installed only where we may (root + apt).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing ${missing[*]} (apt)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "test: could not install ${missing[*]}: the tests that need them will say so"
fi
python -m ruff check .
# One pytest worker per core and one more (pytest-xdist): a worker whose test waits on its harness
# run's sandboxes, or sleeps in a clock test, leaves its core to the others, and beside a competing
# load one more runnable process gets the suite a larger share of the machine. Measured on 2 cores
# (fresh clone, `.ci/run`): 3 workers 417-450 s quiet and 484-532 s beside a spinning core, against
# 423 s and 534 s for 2; 4 workers were no faster beside the spinning core (490 s against 479 s, and
# later 499.9 s against 499.5-500.6 s). The modules whose fixture trains a loop stay on one worker
# each (xdist_group).
# AUTORESEARCH_TEST_WORKERS=0 runs everything in this process.
# --durations: the slowest tests at the end of every log, so a slower suite says where its time went.
workers=${AUTORESEARCH_TEST_WORKERS:-$(($(nproc 2>/dev/null || echo 1) + 1))}
python -m pytest -n "$workers" --dist loadgroup --durations=15 "$@"
