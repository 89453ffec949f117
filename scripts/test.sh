#!/usr/bin/env bash
# Sets up everything the tests need, then runs them all (unit, integration, end-to-end).
# Usage: sudo scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/pytest -q "$@"
