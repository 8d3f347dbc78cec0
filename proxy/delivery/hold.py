"""Holding the connection of an unmodified client until its deferred answer exists.

The call waits `delivery.hold_heartbeat` seconds first WITHOUT sending anything: an answer (or failure) within
that time is sent with its true status. Only when the wait goes on does the held response commit `200` with
`content-type: application/json` and then send one space every `hold_heartbeat` seconds, so idle-timeout proxies
and load balancers see traffic (JSON allows leading whitespace; the openai clients parse it). When the job
completes, the provider's ChatCompletion follows the spaces.

Once 200 is committed a failure cannot change the status, and a body `{"error": ...}` under 200 would be parsed by
the openai client as a ChatCompletion whose `choices` is None (no exception). So a failure (or reaching
`delivery.max_wait`) writes the error object and then closes the connection WITHOUT finishing the chunked body:
the openai client raises `APIConnectionError` and, by default, retries. A short-lived marker (see
`store/holds.py`) lets that retry of the same call (same Idempotency-Key, or the same body from the same caller)
find the job at once and receive the error with its real status (`x-should-retry: false`), so the client raises
the matching typed exception (BadRequestError, InternalServerError, ...) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.delivery.answers import JSON, error_json, job_headers, timeout_json
from proxy.delivery.waiting import JobWaiters
from proxy.store.records import JobView

log = logging.getLogger("batchgate.delivery")

HEARTBEAT = b" "

OnUnfinished = Callable[[JobView], Awaitable[None]]


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


class ServerStopping(Exception):
    """The server is stopping while a call is held (JobWaiters.stopping)."""


class HeldResponse(StreamingResponse):
    """200 + JSON headers now, a space per heartbeat, then the ChatCompletion (or an error and a cut connection)."""

    def __init__(
        self,
        waiters: JobWaiters,
        view: JobView,
        *,
        heartbeat: float,
        remaining: float,
        waited_before: float,
        on_unfinished: OnUnfinished,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(_nothing(), status_code=200, media_type=JSON, headers={**job_headers(view), **(headers or {})})
        self.waiters = waiters
        self.view = view
        self.heartbeat = max(0.05, heartbeat)
        self.remaining = remaining
        self.waited_before = waited_before
        self.on_unfinished = on_unfinished

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            view = await self._wait(send, gone)
        except (asyncio.CancelledError, ServerStopping):
            # the server is stopping: end the connection unfinished, so the client sees a retryable connection
            # error; its retry (with its Idempotency-Key, or the SDK's marked retry) re-attaches to the job
            log.info("held call ended by shutdown; the job goes on", extra={"job_id": self.view.id})
            return
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if view is None:
            return  # the client left: the job goes on; a retry with the same Idempotency-Key re-attaches
        if view.status == "completed" and view.response is not None:
            await send({"type": "http.response.body", "body": view.response, "more_body": False})
            return
        body = error_json(view) if view.is_final else timeout_json(view, self.waited_before + self.remaining)
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await self.on_unfinished(view)
        log.warning(
            "held call ended without a ChatCompletion after its 200 was sent; closing the connection unfinished "
            "so the client raises",
            extra={"job_id": view.id, "status": view.status},
        )
        # returning without the final body message makes the server close the connection mid-body

    async def _wait(self, send: Send, gone: asyncio.Event) -> JobView | None:
        end = time.monotonic() + self.remaining
        view = self.view
        async with self.waiters.watching(view.id) as woken:
            while True:
                woken.clear()
                view = await self.waiters.read(view.id) or view
                left = end - time.monotonic()
                if view.is_final or left <= 0:
                    return view
                first = await _first(woken, gone, self.waiters.stopping, within=min(self.heartbeat, left))
                if first is gone:
                    return None
                if first is self.waiters.stopping:
                    raise ServerStopping
                if not woken.is_set() and not gone.is_set():
                    await send({"type": "http.response.body", "body": HEARTBEAT, "more_body": True})


async def _first(*events: asyncio.Event, within: float) -> asyncio.Event | None:
    """The first of the events to be set within `within` seconds (None when none was)."""
    for event in events:
        if event.is_set():
            return event
    tasks = {asyncio.create_task(event.wait()): event for event in events}
    try:
        done, _ = await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        return tasks[task]
    return None


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
