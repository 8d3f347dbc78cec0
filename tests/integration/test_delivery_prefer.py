"""`Prefer: wait=N` (long-poll) on the original call and on GET /v1/deferred/{id}; `Prefer: respond-async`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.simulator.engine import expected_content
from proxy.worker.process import run_in_app
from tests.support.stack import MASTER_KEY, Stack, running_stack

DEFER = {"X-Batch-Deadline": "1h"}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    simulator = {"turnaround_s": 1.2, "validating_s": 0.1, "finalizing_s": 0.1}
    with running_stack(
        tmp_path, redis_url, background=[run_in_app], simulator=simulator, delivery={"default": "hold"}
    ) as stack:
        yield stack


def test_prefer_wait_and_respond_async(stack: Stack) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "long-poll me"}]}
    with stack.client(timeout=60) as client:
        # respond-async beats the configured hold: 202 at once with the job
        raw = client.chat.completions.with_raw_response.create(
            **body, extra_headers={**DEFER, "Prefer": "respond-async"}
        )
        assert raw.status_code == 202
        assert raw.headers["preference-applied"] == "respond-async"
        job = raw.http_response.json()
        assert job["object"] == "chat.completion.deferred"
        assert job["status"] == "queued"  # answered as accepted, not held for the answer (a timing check flaked)
        assert raw.headers["location"] == f"/v1/deferred/{job['id']}"

        # wait=0: nothing ready yet, 202 with the job as it stands
        raw = client.chat.completions.with_raw_response.create(**body, extra_headers={**DEFER, "Prefer": "wait=0"})
        assert raw.status_code == 202
        assert raw.headers["preference-applied"] == "wait=0"

        # wait=20: the ChatCompletion arrives within the wait
        raw = client.chat.completions.with_raw_response.create(**body, extra_headers={**DEFER, "Prefer": "wait=20"})
        assert raw.status_code == 200
        assert raw.headers["preference-applied"] == "wait=20"
        assert raw.parse().choices[0].message.content == expected_content(body)

        # both: respond-async answers at once, whichever comes first
        raw = client.chat.completions.with_raw_response.create(
            **body, extra_headers={**DEFER, "Prefer": "wait=10, respond-async"}
        )
        assert raw.status_code == 202
        assert raw.headers["preference-applied"] == "respond-async"

        # preferences batchgate does not know are ignored (RFC 7240 §2): the configured hold applies
        raw = client.chat.completions.with_raw_response.create(
            **body, extra_headers={**DEFER, "Prefer": "handling=lenient, return=minimal"}
        )
        assert raw.status_code == 200
        assert "preference-applied" not in raw.headers
        assert raw.parse().choices[0].message.content == expected_content(body)

    # GET with Prefer: wait long-polls the first job to its answer (no client-side polling loop)
    with httpx.Client(base_url=stack.url, timeout=30, headers={"authorization": f"Bearer {MASTER_KEY}"}) as http:
        got = http.get(f"/v1/deferred/{job['id']}", headers={"prefer": "wait=20"})
        assert got.headers["preference-applied"] == "wait=20"
        assert got.json()["status"] == "completed"
        assert got.json()["response"]["choices"][0]["message"]["content"] == expected_content(body)
        plain = http.get(f"/v1/deferred/{job['id']}")
        assert "preference-applied" not in plain.headers
