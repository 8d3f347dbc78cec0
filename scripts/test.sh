#!/usr/bin/env bash
# Sets up everything and runs the whole test suite: lint, types, then pytest (2 processes, real Redis).
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
.venv/bin/pytest -n 2 -q -p no:cacheprovider --durations=25 "$@"
