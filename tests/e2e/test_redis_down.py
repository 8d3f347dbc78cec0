"""With Redis down, nothing is accepted that cannot be kept: deferred calls get a 503, sync calls still answer."""

from __future__ import annotations

from pathlib import Path

import httpx

from proxy.simulator.engine import expected_content
from tests.support.servers import RedisServer
from tests.support.stack import MASTER_KEY, running_stack

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "are you there?"}]}
HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}


def test_deferred_calls_get_503_while_redis_is_down_and_work_again_after(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        with running_stack(tmp_path, redis_server.url) as stack:
            url = stack.url + "/v1/chat/completions"
            assert httpx.post(url, json=BODY, headers={**HEADERS, "x-batch-deadline": "4h"}).status_code == 202

            redis_server.stop()
            refused = httpx.post(url, json=BODY, headers={**HEADERS, "x-batch-deadline": "4h"}, timeout=30)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "service_unavailable"
            assert refused.headers["retry-after"] == "1"
            listing = httpx.get(stack.url + "/v1/deferred", headers=HEADERS, timeout=30)
            assert listing.status_code == 503
            synchronous = httpx.post(url, json=BODY, headers=HEADERS, timeout=30)
            assert synchronous.status_code == 200
            assert synchronous.json()["choices"][0]["message"]["content"] == expected_content(BODY)

            redis_server.start()
            again = httpx.post(url, json=BODY, headers={**HEADERS, "x-batch-deadline": "4h"}, timeout=30)
            assert again.status_code == 202, again.text
            jobs = httpx.get(stack.url + "/v1/deferred", headers=HEADERS).json()["data"]
            assert len(jobs) == 2, "the job accepted before the outage survived the restart (append-only file)"
    finally:
        redis_server.stop()
