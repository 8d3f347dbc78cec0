"""The container image: the Dockerfile's promises (no hadolint in Debian, so they are parsed and asserted), the
lock file it installs, the healthcheck script it runs, and the CLI commands the deployments call."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path, PurePosixPath

import pytest

from tests.deploy.tools import DEPLOY, REPO_ROOT
from tests.support.servers import free_port

DOCKERFILE = DEPLOY / "Dockerfile"
HEALTHCHECK = DEPLOY / "healthcheck.py"
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim(-bookworm)?(@sha256:[0-9a-f]{64})?$")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            pairs.append((keyword.upper(), " ".join(arguments.split())))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def arguments_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == keyword]


def test_base_image_is_a_pinned_python_311_slim_in_every_stage() -> None:
    defaults = dict(arg.split("=", 1) for _, arg in instructions()[:1] if "=" in arg)
    assert instructions()[0][0] == "ARG"
    for stage in stages():
        image = arguments_of(stage, "FROM")[0].split(" AS ")[0]
        image = defaults.get(image.strip("${}"), image)
        assert PINNED_PYTHON.match(image), image
    assert len(stages()) >= 2, "multi-stage: the compiler stays in the build stage"
    assert "latest" not in DOCKERFILE.read_text(encoding="utf-8")


def test_runtime_stage_runs_batchgate_as_non_root_with_a_healthcheck() -> None:
    runtime = stages()[-1]
    users = arguments_of(runtime, "USER")
    assert users, "the runtime stage must switch user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert arguments_of(runtime, "ENTRYPOINT") == ['["batchgate"]']
    assert arguments_of(runtime, "CMD") == ['["serve", "--no-worker"]']
    assert "8080" in arguments_of(runtime, "EXPOSE")[0].split()
    healthcheck = arguments_of(runtime, "HEALTHCHECK")[0]
    assert '"python", "/usr/local/lib/batchgate/healthcheck.py", "http://127.0.0.1:8080/healthz"' in healthcheck
    environment = " ".join(arguments_of(runtime, "ENV"))
    for setting in ("LITELLM_LOCAL_MODEL_COST_MAP=True", "LITELLM_OFFLINE_MODE=true", "BATCHGATE_HOST=0.0.0.0"):
        assert setting in environment
    assert not any("apt-get" in run for run in arguments_of(runtime, "RUN")), "no build tools in the runtime"


def test_dependencies_come_from_the_lock_only() -> None:
    build = stages()[0]
    installs = [run for run in arguments_of(build, "RUN") if "pip install" in run]
    assert installs[0] == "pip install --no-deps -r requirements.lock"
    assert all("--no-deps" in install for install in installs), "nothing resolved outside the lock"


def test_lock_pins_every_direct_dependency_at_its_pyproject_version() -> None:
    lines = (REPO_ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    locked = {}
    for requirement in requirements:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", requirement), f"not pinned: {requirement}"
        name, _, version = requirement.partition("==")
        locked[canonical(name)] = version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in project["dependencies"]:
        name, _, version = re.sub(r"\[.*\]", "", dependency).partition("==")
        assert locked.get(canonical(name)) == version, f"{dependency} is not locked at that version"


def third_party_distributions_imported_by_proxy() -> set[str]:
    """The distributions whose top-level modules proxy/ imports (found in this venv's metadata)."""
    modules: set[str] = set()
    for path in (REPO_ROOT / "proxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"proxy", "__future__"}
    by_module = importlib.metadata.packages_distributions()
    missing = sorted(module for module in modules if module not in by_module)
    assert not missing, f"imported but not installed: {missing}"
    return {canonical(distribution) for module in modules for distribution in by_module[module]}


def test_everything_proxy_imports_is_in_the_lock() -> None:
    lines = (REPO_ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    locked = {canonical(line.partition("==")[0]) for line in lines if line and not line.startswith("#")}
    missing = third_party_distributions_imported_by_proxy() - locked
    assert not missing, f"the image would lack {sorted(missing)}"


def test_everything_proxy_imports_is_a_declared_dependency() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {canonical(re.split(r"[\[=<>!~ ]", dependency)[0]) for dependency in project["dependencies"]}
    transitive_by_design = {"starlette"}  # FastAPI's own foundation, pinned by the fastapi pin
    missing = third_party_distributions_imported_by_proxy() - declared - transitive_by_design
    assert not missing, f"pyproject.toml [project].dependencies lacks {sorted(missing)}"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for stage in stages():
        for arguments in arguments_of(stage, "COPY"):
            words = [word for word in shlex.split(arguments) if not word.startswith("--")]
            if any(word.startswith("--from") for word in shlex.split(arguments)):
                continue
            for source in words[:-1]:
                path = PurePosixPath(source.rstrip("/"))
                let_in = {str(path), *(str(parent) for parent in path.parents)}  # an allowed directory lets in all
                assert let_in & allowed, f"COPY {source} is excluded by .dockerignore"
                assert (REPO_ROOT / source).exists() or source == "README.md", f"COPY {source}: no such path"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", free_port()), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def healthcheck(*args: str) -> int:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], timeout=30, check=False).returncode


def test_healthcheck_script_passes_only_on_a_2xx(health_server: str) -> None:
    assert healthcheck(f"{health_server}/healthz", "2") == 0
    assert healthcheck(f"{health_server}/readyz", "2") == 1
    assert healthcheck(f"http://127.0.0.1:{free_port()}/healthz", "2") == 1
    assert healthcheck("file:///etc/passwd") == 1


@pytest.mark.parametrize(("command", "flag"), [(["serve", "--no-worker"], "--no-worker"), (["worker"], "--burst")])
def test_the_commands_the_deployments_run_exist(command: list[str], flag: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "proxy", command[0], "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert flag in completed.stdout


def test_the_console_script_is_batchgate() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "batchgate" in project["scripts"]
    assert Path(REPO_ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8").count('ENTRYPOINT ["batchgate"]') == 1
