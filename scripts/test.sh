#!/usr/bin/env bash
# Sets up everything and runs the whole test suite: lint, types, then pytest (real Redis). Most of the suite's time
# is waiting (simulated turnarounds, deadlines, subprocess start-up): 4 pytest processes on 2 cores keep both busy,
# and worksteal hands the last long tests to whichever process is free instead of leaving one idle at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-system-deps.sh
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'

export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest -n 4 --dist worksteal -q -p no:cacheprovider --durations=25 "$@"
