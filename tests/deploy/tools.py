"""The command-line validators the deploy tests shell out to, and the paths they check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
INSTALL_HINT = "install it with scripts/install-deploy-tools.sh (CI must run that script before the tests)"


def require_tool(name: str) -> str:
    """The tool's path; a missing tool fails the test loudly instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: {INSTALL_HINT}", pytrace=False)
    return path


def run_tool(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; a non-zero exit fails the test with the tool's own output."""
    completed = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if completed.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {completed.returncode}\n{completed.stdout}\n{completed.stderr}",
            pytrace=False,
        )
    return completed
