"""`batchgate worker` told to stop (SIGTERM) while it holds leases, mid-submission: it exits within its drain time
(plus the hand-back) and leaves no lease behind, so another worker takes the work over at once."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from proxy.settings import Settings
from proxy.store import keys
from proxy.worker.context import PAUSE_AT_ENV, PAUSE_MARKER_ENV
from proxy.worker.process import run_worker_process
from tests.support.deferred_env import chat_body, deferred_env
from tests.support.stack import MODELS
from tests.support.waiting import wait_until

DRAIN = 1.0  # worker.drain_timeout
HAND_BACK = 10.0  # a few Redis writes; generous for a loaded machine


async def test_sigterm_stops_a_worker_holding_leases_within_its_drain_time(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_AT_ENV, "after_upload")  # holding its group's flush lease and the batch's lease
    monkeypatch.setenv(PAUSE_MARKER_ENV, str(marker))
    worker_section = {"drain_timeout": DRAIN, "lease": 30, "tick": 0.1}
    async with deferred_env(tmp_path, redis_url, worker=worker_section) as env:
        await env.accept(chat_body(MODELS[0], "a question"))
        settings = Settings(config=env.config_path, redis_url=redis_url, metrics_port=0)
        worker = asyncio.create_task(run_worker_process(settings, env.runtime.config))
        await wait_until(lambda: marker.exists() or worker.done(), timeout=60, what="the worker paused")
        assert not worker.done(), worker
        leases = keys.lease(keys.group_tag(MODELS[0]), "*")
        assert len(await env.store.client.keys(leases)) == 2

        stopped_at = time.monotonic()
        signal.raise_signal(signal.SIGTERM)  # the worker's own handler, on this event loop
        await asyncio.wait({worker}, timeout=DRAIN + HAND_BACK)
        assert worker.done(), f"the worker still runs {time.monotonic() - stopped_at:.1f}s after SIGTERM"
        worker.result()  # a clean exit
        assert await env.store.client.keys(leases) == []
