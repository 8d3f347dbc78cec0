"""`batchgate serve`: the API under uvicorn, with the in-process worker and the config reloader."""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

from proxy.app import BackgroundService, create_app
from proxy.http_protocol import OpenAIErrorHttpToolsProtocol
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


def serve(settings: Settings, config: Config, listener: socket.socket | None = None) -> None:
    """Run the API on `listener` (bound here from settings when not given) until SIGTERM/SIGINT. On stopping,
    held calls get `worker.drain_timeout` seconds to end before they are ended (the client retries and
    re-attaches); synchronous calls in flight get SYNC_SHUTDOWN_GRACE seconds (they cannot be handed back)."""
    listener = listener or bind_listener(settings.host, settings.port)
    stopping = asyncio.Event()
    app = create_app(settings, config, background=background_services(settings), stopping=stopping)
    host, port = listener.getsockname()[:2]
    logger.info(
        "batchgate listening on http://%s:%s (worker %s)", host, port, "in-process" if settings.worker else "off"
    )
    server = DrainingServer(
        uvicorn.Config(
            app,
            loop="uvloop",
            http=OpenAIErrorHttpToolsProtocol,
            access_log=False,
            log_level="warning",
            timeout_keep_alive=75,
            timeout_graceful_shutdown=max(SYNC_SHUTDOWN_GRACE, round(config.worker.drain_timeout) + 1),
            backlog=LISTEN_BACKLOG,
        ),
        stopping=stopping,
        hold_grace=config.worker.drain_timeout,
    )
    server.run(sockets=[listener])


def background_services(settings: Settings) -> list[BackgroundService]:
    from proxy.config_watch import watch_config  # noqa: PLC0415

    services: list[BackgroundService] = [watch_config]
    if settings.worker:
        from proxy.worker.process import run_in_app  # noqa: PLC0415

        services.append(run_in_app)
    return services
