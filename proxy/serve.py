"""`batchgate serve`: the API under uvicorn, with the in-process worker and the config reloader."""

from __future__ import annotations

import logging

import uvicorn

from proxy.app import BackgroundService, create_app
from proxy.http_protocol import OpenAIErrorHttpToolsProtocol
from proxy.settings import Config, Settings

logger = logging.getLogger("batchgate")
GRACEFUL_SHUTDOWN_SECONDS = 30


def serve(settings: Settings, config: Config) -> None:
    app = create_app(settings, config, background=background_services(settings))
    logger.info(
        "batchgate listening on http://%s:%s (worker %s)",
        settings.host,
        settings.port,
        "in-process" if settings.worker else "off",
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=OpenAIErrorHttpToolsProtocol,
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        backlog=4096,
    )


def background_services(settings: Settings) -> list[BackgroundService]:
    from proxy.config_watch import watch_config  # noqa: PLC0415

    services: list[BackgroundService] = [watch_config]
    if settings.worker:
        from proxy.worker.process import run_in_app  # noqa: PLC0415

        services.append(run_in_app)
    return services
