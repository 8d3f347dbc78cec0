"""ConfigReloader: reload the config on SIGHUP or file change; refuse an invalid one (or one the process
cannot take without a restart), keep the old."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from proxy.errors import ConfigError
from proxy.settings import Config, load_config

logger = logging.getLogger("batchgate.policy.reload")

OnReload = Callable[[Config], Awaitable[None] | None]
OnRefused = Callable[[str], None]
_Stamp = tuple[int, int, int] | None  # (mtime_ns, size, inode), None when the file is missing


class ConfigReloader:
    """Watches one config file. `on_reload(config)` receives each new valid config and may refuse it by raising
    ConfigError (e.g. RestartRequired); an invalid or refused file is logged, reported to `on_refused(reason)`,
    and the config in force stays. The file's stat is polled every
    `poll_interval` seconds and its contents compared; SIGHUP (or request_reload()) reloads unconditionally.
    """

    def __init__(
        self,
        path: Path,
        on_reload: OnReload,
        *,
        on_refused: OnRefused | None = None,
        poll_interval: float = 1.0,
        handle_sighup: bool = False,
    ) -> None:
        self.path = path
        self._on_reload = on_reload
        self._on_refused = on_refused
        self._poll_interval = poll_interval
        self._handle_sighup = handle_sighup
        self._wake = asyncio.Event()
        self._forced = False
        self._stamp: _Stamp = self._stat()
        self._digest = self._read_digest()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._handle_sighup:
            self._loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._task = asyncio.create_task(self._run(), name="config-reloader")

    async def stop(self) -> None:
        if self._loop is not None and self._handle_sighup:
            self._loop.remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> ConfigReloader:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    def request_reload(self) -> None:
        """Reload on the next turn even if the file looks unchanged (what SIGHUP does)."""
        self._forced = True
        self._wake.set()

    async def check_now(self, *, force: bool = False) -> bool | None:
        """Look at the file once: True = a new config applied, False = refused, None = unchanged."""
        stamp = self._stat()
        if not force and stamp == self._stamp:
            return None
        self._stamp = stamp
        digest = self._read_digest()
        if not force and digest == self._digest:
            return None
        self._digest = digest
        try:
            config = await asyncio.to_thread(load_config, self.path)
        except ConfigError as exc:
            self._refuse(str(exc))
            return False
        try:
            outcome = self._on_reload(config)
            if inspect.isawaitable(outcome):
                await outcome
        except ConfigError as exc:
            self._refuse(f"{self.path}: {exc}")
            return False
        logger.info("config reloaded from %s", self.path)
        return True

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()
            forced, self._forced = self._forced, False
            try:
                await self.check_now(force=forced)
            except Exception:
                logger.exception("config reload from %s failed; the previous config stays", self.path)

    def _refuse(self, reason: str) -> None:
        logger.error("config reload refused; the previous config stays in force: %s", reason)
        if self._on_refused is not None:
            self._on_refused(reason)

    def _stat(self) -> _Stamp:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _read_digest(self) -> bytes | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return None
