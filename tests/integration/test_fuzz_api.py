"""Property-based fuzzing of the live API with schemathesis, from batchgate's own `/openapi.json`.

A real uvicorn on a loopback port, real Redis and the simulated upstream; every operation of the description
gets positive cases (data the schema allows) and negative ones (data it does not). Whatever arrives, the
answer is never a 5xx, and every error is OpenAI-shaped: `{"error": {"message", "type", "param", "code"}}`.
Only what these two properties need runs: no schemathesis response-schema checks, no shrinking, no deadlines.
Generating the cases is most of the cost (about three quarters of the CPU, measured): EXAMPLES_PER_MODE is the
knob between coverage and time (60: 1,202 cases).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.stack import MASTER_KEY, Stack, running_stack

# per operation and generation mode: 10 operations with parameters x 2 modes x 60, and the two health probes
EXAMPLES_PER_MODE = 60
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
ERROR_FIELDS = {"message": (str,), "type": (str,), "param": (str, type(None)), "code": (str, type(None))}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    # delivery.max_wait 0: a generated `Prefer: wait=N` must not hold the fuzzer for N seconds
    with running_stack(tmp_path, redis_url, delivery={"max_wait": "0s"}) as live:
        yield live


def error_shape_problem(response: requests.Response) -> str | None:
    """Why an error answer is not OpenAI-shaped (None when it is)."""
    try:
        body: Any = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"no error object: {body!r:.200}"
    for name, kinds in ERROR_FIELDS.items():
        if name not in error or not isinstance(error[name], kinds):
            return f"error.{name} missing or of the wrong type: {error!r:.200}"
    return None


def fuzz(operation: Any, mode: GenerationMode, base_url: str, session: requests.Session) -> int:
    """Send EXAMPLES_PER_MODE generated cases of `operation`; returns how many were sent."""
    sent = 0

    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, session=session, headers=AUTH, timeout=30)
        sent += 1
        shown = f"{case.method} {case.formatted_path} -> {response.status_code}\n{case.as_curl_command()}"
        assert response.status_code < 500, shown + f"\n{response.text[:500]}"
        if response.status_code >= 400:
            problem = error_shape_problem(response)
            assert problem is None, f"{shown}\n{problem}"

    try:
        one()
    except Unsatisfiable:
        assert mode == GenerationMode.NEGATIVE  # an operation with nothing to get wrong (no parameters, no body)
    return sent


@pytest.mark.timeout(300)  # about 50 s of CPU; on a machine shared by many runs the wall time is a few times that
def test_generated_requests_get_no_5xx_and_only_openai_shaped_errors(stack: Stack) -> None:
    document = httpx.get(stack.url + "/openapi.json", headers=AUTH, timeout=10).raise_for_status().json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11  # every route of the description, chat completions included
    assert any(op.path == "/v1/chat/completions" and op.method.upper() == "POST" for op in operations)
    assert any(op.path == "/v1/embeddings" and op.method.upper() == "POST" for op in operations)
    assert any(op.path == "/v1/responses" and op.method.upper() == "POST" for op in operations)
    sent = 0
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                sent += fuzz(operation, mode, stack.url, session)
    assert sent >= 1000, f"only {sent} cases were sent"
    print(f"schemathesis: {sent} cases over {len(operations)} operations")
