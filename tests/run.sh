#!/usr/bin/env bash
# Installs everything the tests need and runs them all: lint, types, then the suite.
# The README's test command and CI's .ci/run are both exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Browser tests drive Debian's Chromium (Playwright may not download its own browser here).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed; browser tests will be skipped (run as root to install)"
  fi
fi

# npm fetches GraphiQL's assets (checked against the hashes Strawberry's page pins).
if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[test]'
# GraphiQL's assets, served by the gateway itself (fetched with npm once).
.venv/bin/python -m gateway.graphiql
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
