"""Running the worker: inside the API process (`batchgate serve`) or on its own (`batchgate worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from proxy.config_watch import watch_config
from proxy.metrics import metrics_server
from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Config, Settings
from proxy.worker.runner import Worker

log = logging.getLogger("batchgate.worker")


async def run_in_app(runtime: Runtime) -> None:
    """A background service of the API process: runs until the app shuts down (the task is cancelled)."""
    await Worker(runtime).run()


async def run_worker_process(settings: Settings, config: Config, *, burst: bool = False) -> None:
    """`batchgate worker [--burst]`. Like the API, it reloads the live config (policy, keys, prices, delivery) on
    SIGHUP and when the file changes (proxy/config_watch.py). SIGTERM/SIGINT stop it gracefully: no new work is
    taken, work in flight finishes within `worker.drain_timeout`, and what has not finished by then is handed back
    to the other workers (leases released, sync calls re-queued). A second signal hands back at once.

    Its metrics are served on BATCHGATE_METRICS_PORT (0: not served)."""
    runtime = build_runtime(settings, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker = Worker(runtime)
    running = asyncio.create_task(worker.run(burst=burst, stop=stop))
    watching = asyncio.create_task(watch_config(runtime), name="config-watch")

    def on_signal() -> None:
        if stop.is_set():
            running.cancel()
            return
        drain = runtime.config.worker.drain_timeout
        log.info("stopping: finishing the work in flight", extra={"worker": worker.ctx.worker_id, "drain": drain})
        stop.set()
        loop.call_later(drain, running.cancel)

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_signal)
    server = metrics_server(runtime.metrics, settings.metrics_port) if settings.metrics_port else None
    try:
        await asyncio.wait({running})
    finally:
        watching.cancel()
        if not running.done():  # this coroutine itself was cancelled
            running.cancel()
        await asyncio.wait({running, watching})
        if server is not None:
            server.close()
        await close_runtime(runtime)
    if not running.cancelled():
        running.result()  # a crash of the worker loop is the process's crash


run_worker = run_worker_process
