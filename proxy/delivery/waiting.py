"""Waiting for a job's answer without a polling loop: one shared pub/sub connection per process.

Final writes publish on `keys.job_events(job_id)`. A `JobWaiters` dispatcher holds ONE Redis pub/sub connection for
all the callers waiting in this process (held connections, long-polls): it subscribes to a job's channel while at
least one caller waits for that job, and a reader task wakes the waiters of a channel when a message arrives.
1,000 held clients cost one Redis connection and 1,000 asyncio events, not 1,000 connections.

No answer can slip through: a waiter registers, waits until Redis has CONFIRMED the subscription, and only then
reads the job; an answer written before the read is seen by the read, one written after it is announced. A
(re)subscription confirmation also wakes the channel's waiters, so after the connection is re-established (when
messages may have been lost) every waiter reads its job again. The reader task ends when nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from proxy.redis_client import open_pubsub
from proxy.store import keys
from proxy.store.jobs import JobStore, valid_job_id
from proxy.store.records import JobView, decoded

log = logging.getLogger("batchgate.delivery")

CONFIRM_TIMEOUT = 10.0
READ_TIMEOUT = 1.0
RECONNECT_PAUSE = 0.5


class JobWaiters:
    """The per-process dispatcher (see the module docstring)."""

    def __init__(self, client: redis.asyncio.Redis, jobs: JobStore) -> None:
        self._client = client
        self._jobs = jobs
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.stopping = asyncio.Event()  # set when the server stops: held calls end now, long polls answer now

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._listeners.values())

    @property
    def channels(self) -> int:
        return len(self._listeners)

    async def read(self, job_id: str) -> JobView | None:
        return await self._jobs.get(job_id)

    async def wait(self, job_id: str, seconds: float) -> JobView | None:
        """The job once it is final, or as it stands after `seconds` (None when it does not exist)."""
        if not valid_job_id(job_id):
            return None
        end = time.monotonic() + max(0.0, seconds)
        async with self.watching(job_id) as woken:
            while True:
                woken.clear()
                view = await self._jobs.get(job_id)
                left = end - time.monotonic()
                if view is None or view.is_final or left <= 0:
                    return view
                if self.stopping.is_set():
                    return view
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_either(woken, self.stopping), timeout=left)

    @contextlib.asynccontextmanager
    async def watching(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the job's channel speaks; the subscription is confirmed before this yields."""
        channel = keys.job_events(job_id)
        event = asyncio.Event()
        confirmed = await self._add(channel, event)
        try:
            try:
                await asyncio.wait_for(asyncio.shield(confirmed), timeout=CONFIRM_TIMEOUT)
            except TimeoutError:
                log.warning("pub/sub subscription not confirmed in time", extra={"channel": channel})
            yield event
        finally:
            await asyncio.shield(self._remove(channel, event))

    async def _add(self, channel: str, event: asyncio.Event) -> asyncio.Future[None]:
        async with self._lock:
            listeners = self._listeners.setdefault(channel, set())
            listeners.add(event)
            confirmed = self._confirmations.get(channel)
            if confirmed is None or len(listeners) == 1:
                confirmed = self._confirmations[channel] = asyncio.get_running_loop().create_future()
                try:
                    pubsub = await self._ensure_pubsub()
                    await pubsub.subscribe(channel)
                except RedisError:
                    log.warning("pub/sub subscribe failed; the reader will retry", exc_info=True)
                    self._drop_pubsub()
            self._ensure_reader()
            return confirmed

    async def _remove(self, channel: str, event: asyncio.Event) -> None:
        async with self._lock:
            listeners = self._listeners.get(channel)
            if listeners is None:
                return
            listeners.discard(event)
            if listeners:
                return
            del self._listeners[channel]
            pending = self._confirmations.pop(channel, None)
            if pending is not None and not pending.done():
                pending.cancel()
            if self._pubsub is not None:
                with contextlib.suppress(RedisError):
                    await self._pubsub.unsubscribe(channel)

    async def _ensure_pubsub(self) -> PubSub:
        if self._pubsub is None:
            self._pubsub = await open_pubsub(self._client)
        return self._pubsub

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            task = asyncio.get_running_loop().create_task(pubsub.aclose())  # type: ignore[no-untyped-call,unused-ignore]
            task.add_done_callback(lambda done: done.exception() if not done.cancelled() else None)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            async with self._lock:
                if not self._listeners:
                    self._drop_pubsub()
                    self._reader = None
                    return
                pubsub = self._pubsub
                if pubsub is None:
                    pubsub = await self._resubscribe()
            if pubsub is None:
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            try:
                message = await pubsub.get_message(timeout=READ_TIMEOUT)
            except (RedisError, OSError):
                log.warning("pub/sub connection lost; resubscribing", exc_info=True)
                async with self._lock:
                    if self._pubsub is pubsub:
                        self._drop_pubsub()
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            if message is not None:
                self._dispatch(message)

    async def _resubscribe(self) -> PubSub | None:
        """A fresh connection subscribed to every channel still waited on (called with the lock held)."""
        try:
            pubsub = await self._ensure_pubsub()
            await pubsub.subscribe(*self._listeners)
        except RedisError:
            self._drop_pubsub()
            return None
        return pubsub

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = decoded(message.get("type"))
        channel = decoded(message.get("channel"))
        if kind == "subscribe":
            confirmed = self._confirmations.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind != "message":
            return
        for event in self._listeners.get(channel, ()):
            event.set()


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
