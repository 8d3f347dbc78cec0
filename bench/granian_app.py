"""batchgate's ASGI app for granian (bench/bench_sync.py `--granian`): built as `batchgate serve --no-worker` builds it
(settings from BATCHGATE_* variables, the config file, the heap settled after startup), served by granian instead of
uvicorn. A bench target only: `serve` keeps uvicorn for its OpenAI-shaped answers to malformed HTTP and its drain
of held calls on stopping (see bench/RESULTS.md, issue 17)."""

from __future__ import annotations

import asyncio

from proxy.app import create_app
from proxy.logs import configure_logging
from proxy.request_log import RequestLogMiddleware
from proxy.serve import background_services
from proxy.settings import Settings, load_config


def app() -> RequestLogMiddleware:
    """granian's `--factory` entry point."""
    settings = Settings(worker=False)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    return create_app(
        settings, load_config(settings.config), background=background_services(settings), stopping=asyncio.Event()
    )
