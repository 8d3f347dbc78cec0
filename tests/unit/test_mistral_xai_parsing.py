"""Reading Mistral jobs and xAI batches: statuses and counters to BatchState, labels, result lines, input lines."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.providers.base import BatchState, LineOutcome
from proxy.providers.mistral_batch import encode_line, job_info
from proxy.providers.xai_batch import batch_info, batch_name, name_labels, result_line

NOW = 1_800_000_000.0
LATER = "2027-06-01T00:00:00Z"  # after NOW
EARLIER = "2026-01-01T00:00:00Z"  # before NOW


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("QUEUED", BatchState.VALIDATING),
        ("RUNNING", BatchState.IN_PROGRESS),
        ("SUCCESS", BatchState.COMPLETED),
        ("FAILED", BatchState.FAILED),
        ("TIMEOUT_EXCEEDED", BatchState.EXPIRED),
        ("CANCELLATION_REQUESTED", BatchState.CANCELLING),
        ("CANCELLED", BatchState.CANCELLED),
    ],
)
def test_each_mistral_status_maps_to_its_state(status: str, state: BatchState) -> None:
    job = {"id": "j1", "status": status, "created_at": 1700000000, "total_requests": 4, "succeeded_requests": 3,
           "failed_requests": 1, "output_file": "f-out", "error_file": None, "metadata": {"batchgate_batch": "b"},
           "errors": [{"message": "bad line", "count": 2}]}  # fmt: skip
    info = job_info(job)
    assert info.state is state
    assert (info.total, info.completed, info.failed) == (4, 3, 1)
    assert (info.output_file_id, info.error_file_id) == ("f-out", None)
    assert info.metadata == {"batchgate_batch": "b"}
    assert info.errors == "bad line (x2)"
    assert info.created_at == 1700000000


def test_a_mistral_line_carries_custom_id_and_body_without_model_or_streaming() -> None:
    line = orjson.loads(encode_line("dfr_1", {"model": "m", "messages": [], "stream": True, "max_tokens": 5}))
    assert line == {"custom_id": "dfr_1", "body": {"messages": [], "max_tokens": 5}}


def xai(pending: int, requests: int = 4, **fields: Any) -> dict[str, Any]:
    state = {"num_requests": requests, "num_pending": pending, "num_success": requests - pending,
             "num_error": 0, "num_cancelled": 0}  # fmt: skip
    return {"batch_id": "batch_1", "name": batch_name({"batchgate_batch": "b", "batchgate_group": "g"}),
            "create_time": EARLIER, "expire_time": LATER, "state": state, **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("item", "state"),
    [
        (xai(0, requests=0), BatchState.VALIDATING),
        (xai(2), BatchState.IN_PROGRESS),
        (xai(0), BatchState.COMPLETED),
        (xai(2, expire_time=EARLIER), BatchState.EXPIRED),
        (xai(2, cancel_time=EARLIER), BatchState.CANCELLING),
        (xai(0, cancel_time=EARLIER), BatchState.CANCELLED),
        (xai(0, requests=0, cancel_time=EARLIER, cancel_by_xai_message="bad input"), BatchState.FAILED),
    ],
    ids=["reading-input", "running", "done", "expired", "cancelling", "cancelled", "refused"],
)
def test_xai_counters_and_times_give_the_state(item: dict[str, Any], state: BatchState) -> None:
    info = batch_info(item, now=NOW)
    assert info.state is state
    assert info.metadata == {"batchgate_batch": "b", "batchgate_group": "g"}
    if state is BatchState.FAILED:
        assert info.errors == "bad input"


def test_a_batch_name_not_written_by_batchgate_carries_no_label() -> None:
    assert name_labels("my-batch") == {}
    assert name_labels(None) == {}
    assert name_labels(batch_name({"k": "v=w"})) == {"k": "v=w"}


def test_xai_results_read_answers_and_errors() -> None:
    body = {"id": "resp-1", "object": "chat.completion", "choices": []}
    answered = result_line({"batch_request_id": "dfr_1", "batch_result": {"response": {"chat_get_completion": body}}})
    assert answered is not None
    assert (answered.outcome, answered.status_code, answered.body, answered.request_id) == (
        LineOutcome.SUCCEEDED, 200, body, "resp-1"
    )  # fmt: skip
    for code, status, transient in (("INVALID_ARGUMENT", 400, False), ("RESOURCE_EXHAUSTED", 429, True),
                                    ("INTERNAL", 500, True), (503, 503, True)):  # fmt: skip
        failed = result_line({"batch_request_id": "dfr_2", "batch_result": {"error": {"code": code, "message": "x"}}})
        assert failed is not None
        assert (failed.outcome, failed.status_code, failed.transient) == (LineOutcome.ERRORED, status, transient)
        assert failed.body is not None
        assert failed.body["error"]["message"] == "x"
    assert result_line({"batch_result": {}}) is None
