"""`batchgate serve`: the API under uvicorn, with the in-process worker and the config reloader."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time

import uvicorn

from proxy.app import BackgroundService, create_app
from proxy.embedded_redis import die_with_parent
from proxy.heap import settle_after_startup
from proxy.http_protocol import OpenAIErrorHttpToolsProtocol
from proxy.runtime import Runtime
from proxy.settings import Config, Settings

logger = logging.getLogger("batchgate")
LISTEN_BACKLOG = 4096
SYNC_SHUTDOWN_GRACE = 30  # seconds a synchronous call in flight may take to finish once the server stops


class PortUnavailable(RuntimeError):
    """The API's address cannot be bound (taken, or not ours to bind); the message names host and port."""


def bind_listener(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything else starts (no worker runs without an API).
    Raises PortUnavailable naming the address and the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        listener.close()
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another batchgate (or another server) "
            "running there? Choose another with --port or BATCHGATE_PORT."
        ) from None
    listener.set_inheritable(True)
    return listener


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which on stopping gives held calls `hold_grace` seconds before it ends them (their
    clients retry and re-attach); synchronous calls in flight get uvicorn's whole graceful-shutdown time."""

    def __init__(self, config: uvicorn.Config, *, stopping: asyncio.Event, hold_grace: float) -> None:
        super().__init__(config)
        self.stopping = stopping
        self.hold_grace = hold_grace

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().call_later(self.hold_grace, self.stopping.set)
        await super().shutdown(sockets)


def serve(settings: Settings, config: Config, listener: socket.socket | None = None, *, processes: int = 1) -> None:
    """Run the API on `listener` (bound here from settings when not given) until SIGTERM/SIGINT. On stopping,
    held calls get `worker.drain_timeout` seconds to end before they are ended (the client retries and
    re-attaches); synchronous calls in flight get SYNC_SHUTDOWN_GRACE seconds (they cannot be handed back).

    `processes` > 1: that many serving processes accept on the one listening socket (the others are forked
    here, once it is bound, and die with this one); only this process runs the worker, every one its own
    config reloader."""
    listener = listener or bind_listener(settings.host, settings.port)
    host, port = listener.getsockname()[:2]
    logger.info(
        "batchgate listening on http://%s:%s (worker %s, %d serving process%s)",
        host,
        port,
        "in-process" if settings.worker else "off",
        processes,
        "" if processes == 1 else "es",
    )
    serving = settings.model_copy(update={"worker": False})
    children = [_fork_serving(serving, config, listener) for _ in range(processes - 1)]
    try:
        _serve_one(settings, config, listener)
    finally:
        _stop_children(children, grace=_graceful_seconds(config) + 5)


def _serve_one(settings: Settings, config: Config, listener: socket.socket) -> None:
    stopping = asyncio.Event()
    app = create_app(settings, config, background=background_services(settings), stopping=stopping)
    server = DrainingServer(
        uvicorn.Config(
            app,
            loop="uvloop",
            http=OpenAIErrorHttpToolsProtocol,
            access_log=False,  # batchgate writes its own access line (proxy/logs.py)
            proxy_headers=False,  # nothing reads the client address; the middleware cost ~2% of the CPU
            log_level="warning",
            timeout_keep_alive=75,
            timeout_graceful_shutdown=_graceful_seconds(config),
            backlog=LISTEN_BACKLOG,
        ),
        stopping=stopping,
        hold_grace=config.worker.drain_timeout,
    )
    server.run(sockets=[listener])


def _graceful_seconds(config: Config) -> int:
    return max(SYNC_SHUTDOWN_GRACE, round(config.worker.drain_timeout) + 1)


def _fork_serving(settings: Settings, config: Config, listener: socket.socket) -> int:
    """A serving process on the same listener (no worker); returns its pid. The child never returns."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        die_with_parent()
        _serve_one(settings, config, listener)
        code = 0
    except SystemExit as exc:  # the signal handler's normal exit after a graceful shutdown
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        os._exit(code)  # never run the parent's cleanup (embedded Redis, data lock) in a child


def _stop_children(children: list[int], *, grace: float) -> None:
    """SIGTERM the serving processes, wait up to `grace` seconds for them to drain, then SIGKILL the rest."""
    for pid in children:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in children:
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                _signal(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def background_services(settings: Settings) -> list[BackgroundService]:
    from proxy.config_watch import watch_config  # noqa: PLC0415

    services: list[BackgroundService] = [settle_heap, watch_config]
    if settings.worker:
        from proxy.worker.process import run_in_app  # noqa: PLC0415

        services.append(run_in_app)
    return services


async def settle_heap(runtime: Runtime) -> None:
    """Runs once the runtime is built (litellm's price map loaded): see proxy/heap.py."""
    frozen = settle_after_startup()
    logger.debug("startup heap frozen", extra={"objects": frozen})
