"""A worker killed (kill -9) in the middle of a webhook POST: after a restart the delivery is sent again, with the
same webhook-id, and the receiver gets it (at-least-once; the delivery's state lives in Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from proxy.jobs.service import accept
from proxy.policy.decision import Decision
from tests.integration.test_webhooks import SECRET, Receiver, receiving
from tests.support.deferred_env import ALICE, chat_body, deferred_env
from tests.support.servers import child_environment
from tests.support.waiting import wait_until

SECTIONS: dict[str, Any] = {
    "worker": {"lease": 1.5, "tick": 0.1, "poll_interval_min": 0.2, "poll_interval_max": 0.5, "safety_margin": 2},
    "delivery": {"webhook": {"secret": SECRET, "timeout": 1, "retry_period": 60, "allow_hosts": ["127.0.0.1"]}},
}


def start_worker(config_path: Path, redis_url: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "proxy", "worker", "--config", str(config_path), "--redis-url", redis_url]
    return subprocess.Popen(command, env=child_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_worker_killed_mid_delivery_still_delivers(tmp_path: Path, redis_url: str) -> None:
    receiver = Receiver(SECRET, hang_first=True)
    with receiving(receiver) as url:
        async with deferred_env(tmp_path, redis_url, **SECTIONS) as env:
            body = chat_body("gpt-4o-mini", "deliver me, whatever happens")
            decision = Decision(deferred=True, lane="batch", rule="t", reason="t", delivery="webhook", callback_url=url)
            job = await accept(env.store, env.runtime.config, ALICE, body, decision)

            first = start_worker(env.config_path, redis_url)
            try:
                await wait_until(
                    receiver.arrived.is_set, timeout=30
                )  # the POST is in flight: the worker waits for its answer
                os.kill(first.pid, signal.SIGKILL)
                first.wait(timeout=10)
            finally:
                if first.poll() is None:
                    first.kill()
            receiver.release.set()
            assert receiver.delivered() == []
            assert (await env.store.jobs.get(job.id)).status == "completed"  # type: ignore[union-attr]

            second = start_worker(env.config_path, redis_url)
            try:
                await wait_until(lambda: bool(receiver.delivered()), timeout=30)
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(timeout=20)
            [delivered] = receiver.delivered()
            assert delivered.headers["webhook-id"] == f"msg_{job.id}"
            assert delivered.verified["id"] == job.id
            assert delivered.verified["status"] == "completed"
