#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs lint and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
# Debian's Chromium drives the dashboard's browser test (no browser download at install time).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the browser test will be skipped"
fi
python3 -m ruff check .
python3 -m pytest "$@"
