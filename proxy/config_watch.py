"""The config reloader as a background service of a process (the API or a `batchgate worker`): swaps the
Runtime's live config on file change or SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import redis

from proxy.policy.reload import ConfigReloader
from proxy.runtime import Runtime
from proxy.settings import Config

logger = logging.getLogger("batchgate.config")


async def watch_config(runtime: Runtime, *, poll_interval: float = 1.0) -> None:
    """Runs until cancelled. A valid new file replaces policy, keys, prices and delivery; an invalid one, or one
    whose static keys differ from the running config (a restart is needed), is refused (logged by the reloader
    with the differing keys, counted here) and the config in force stays."""

    async def on_reload(config: Config) -> None:
        runtime.apply_config(config)  # raises RestartRequired, a ConfigError, when static keys differ
        runtime.metrics.record_config_reload(applied=True)
        # an operator who fixed a key, quota or billing reloads: batch submission is tried again at once
        with contextlib.suppress(redis.RedisError):
            if await runtime.store.accounts.clear_all():
                logger.warning("config reloaded: provider account problems cleared, batch submission resumes")

    def on_refused(_reason: str) -> None:
        runtime.metrics.record_config_reload(applied=False)

    # Signal handlers can only be installed from the main thread (an app served from a test thread polls only).
    sighup = threading.current_thread() is threading.main_thread()
    async with ConfigReloader(
        runtime.settings.config, on_reload, on_refused=on_refused, poll_interval=poll_interval, handle_sighup=sighup
    ):
        await asyncio.Event().wait()
