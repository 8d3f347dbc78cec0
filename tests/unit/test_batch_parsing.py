"""Tolerant parsing of provider batch objects and result lines: the documented shapes of Azure, Together and xAI
read by the OpenAI adapter's parser, Anthropic's counts before the end, and any JSON value at all yielding a
BatchInfo or a ProviderError (a ResultLine or None for lines), never another exception."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.jobs.timing import remaining_estimate
from proxy.providers import anthropic_batch, lenient, openai_batch
from proxy.providers.base import BatchInfo, BatchIssue, BatchState, ErrorClass, ProviderError, ResultLine

# Azure OpenAI's documented REST example of a batch (Batch API how-to, "Track batch job progress").
AZURE_VALIDATING = {
    "cancelled_at": None,
    "cancelling_at": None,
    "completed_at": None,
    "completion_window": "24h",
    "created_at": "2024-07-19T17:13:57.2491382+00:00",
    "error_file_id": None,
    "expired_at": None,
    "expires_at": "2024-07-20T17:13:57.1918498+00:00",
    "failed_at": None,
    "finalizing_at": None,
    "id": "batch_fe3f047a-de39-4068-9008-346795bfc1db",
    "in_progress_at": None,
    "input_file_id": "file-21006e70789246658b86a1fc205899a4",
    "errors": None,
    "metadata": None,
    "object": "batch",
    "output_file_id": None,
    "request_counts": {"total": None, "completed": None, "failed": None},
    "status": "Validating",
}

# Together's documented create answer: the batch wrapped as {"job": {...}}, upper-case status, ISO times.
TOGETHER_JOB = {
    "job": {
        "id": "01234567-8901-2345-6789-012345678901",
        "user_id": "user_789xyz012",
        "input_file_id": "file-input123abc456def",
        "file_size_bytes": 1048576,
        "status": "IN_PROGRESS",
        "job_deadline": "2024-01-15T15:30:00Z",
        "created_at": "2024-01-15T14:30:00Z",
        "endpoint": "/v1/chat/completions",
        "progress": 75,
        "model_id": "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
        "output_file_id": "file-output789xyz012ghi",
        "error_file_id": "file-errors456def789jkl",
        "error": "<string>",
        "completed_at": "2024-01-15T15:45:30Z",
    },
    "warning": "<string>",
}

# xAI: a batch carries counters and no status.
XAI_BATCH = {
    "batch_id": "batch_4b1c2e4a-6f0e-4d0b-9d39-3f2b8f0a7c11",
    "name": "evaluation-run-42",
    "create_time": "2025-08-12T09:30:11.123456Z",
    "expire_time": "2025-08-13T09:30:11.123456Z",
    "cancel_time": None,
    "state": {"num_requests": 10, "num_pending": 3, "num_success": 6, "num_error": 1, "num_cancelled": 0},
}


def test_azures_documented_batch_reads_as_validating_with_unknown_counts() -> None:
    info = openai_batch.batch_info(AZURE_VALIDATING)
    assert info.batch_id == "batch_fe3f047a-de39-4068-9008-346795bfc1db"
    assert info.state is BatchState.VALIDATING
    expected = datetime(2024, 7, 19, 17, 13, 57, 249138, tzinfo=UTC).timestamp()
    assert info.created_at == pytest.approx(expected, abs=1e-6)
    assert (info.total, info.completed, info.failed, info.done, info.progress) == (None, None, None, None, None)
    assert (info.metadata, info.output_file_id, info.error_file_id, info.errors) == ({}, None, None, None)


def test_togethers_wrapped_job_reads_as_in_progress() -> None:
    info = openai_batch.batch_info(TOGETHER_JOB)
    assert (info.batch_id, info.state) == ("01234567-8901-2345-6789-012345678901", BatchState.IN_PROGRESS)
    assert info.created_at == datetime(2024, 1, 15, 14, 30, tzinfo=UTC).timestamp()
    assert (info.output_file_id, info.error_file_id) == ("file-output789xyz012ghi", "file-errors456def789jkl")
    assert (info.total, info.progress) == (None, None)  # a percentage is not a count of lines


def test_xais_counters_give_counts_and_no_status_means_still_running() -> None:
    info = openai_batch.batch_info(XAI_BATCH)
    assert (info.batch_id, info.state) == ("batch_4b1c2e4a-6f0e-4d0b-9d39-3f2b8f0a7c11", BatchState.IN_PROGRESS)
    assert (info.total, info.completed, info.failed, info.done) == (10, 6, 1, 7)
    assert info.progress == pytest.approx(0.7)
    assert info.created_at == datetime(2025, 8, 12, 9, 30, 11, 123456, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("in_progress", BatchState.IN_PROGRESS),
        ("InProgress", BatchState.IN_PROGRESS),
        ("IN_PROGRESS", BatchState.IN_PROGRESS),
        ("Validating", BatchState.VALIDATING),
        ("Finalizing", BatchState.FINALIZING),
        ("Completed", BatchState.COMPLETED),
        ("FAILED", BatchState.FAILED),
        ("Expired", BatchState.EXPIRED),
        ("Cancelling", BatchState.CANCELLING),
        ("canceled", BatchState.CANCELLED),
        ("CANCELLED", BatchState.CANCELLED),
    ],
)
def test_statuses_are_case_folded(status: str, state: BatchState) -> None:
    assert openai_batch.batch_info({"id": "b", "status": status}).state is state


def test_an_unknown_status_is_still_running_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "batchgate.providers"):
        states = [openai_batch.batch_info({"id": f"b{n}", "status": "Paused_For_Tea"}).state for n in range(3)]
        anthropic_batch.batch_info({"id": "m", "processing_status": "Paused_For_Tea"})
    assert states == [BatchState.IN_PROGRESS] * 3
    assert sum("Paused_For_Tea" in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1721409237, 1721409237.0),
        (1721409237.5, 1721409237.5),
        ("1721409237", 1721409237.0),
        ("2024-07-19T17:13:57Z", 1721409237.0),
        ("2024-07-19T17:13:57.2491382+00:00", 1721409237.249138),
        ("2024-07-19T19:13:57.2491382+02:00", 1721409237.249138),
        ("2024-07-19T17:13:57", 1721409237.0),  # no offset: UTC
        ("yesterday", None),
        (None, None),
        (True, None),
        (float("nan"), None),
        ("1e400", None),
        (-5, None),
    ],
)
def test_timestamps_are_epoch_seconds_or_iso_text(value: Any, seconds: float | None) -> None:
    found = lenient.timestamp(value)
    assert found == (None if seconds is None else pytest.approx(seconds, abs=1e-6))


def test_counts_are_read_leniently() -> None:
    counts = {"total": "12", "completed": 5.0, "failed": None}
    info = openai_batch.batch_info({"id": "b", "status": "in_progress", "request_counts": counts})
    assert (info.total, info.completed, info.failed, info.done, info.progress) == (12, 5, None, None, None)
    silly = {"total": -3, "completed": True, "failed": "many"}
    info = openai_batch.batch_info({"id": "b", "status": "in_progress", "request_counts": silly})
    assert (info.total, info.completed, info.failed) == (None, None, None)


def test_anthropic_counts_are_unknown_until_the_batch_ends() -> None:
    counts = {"processing": 5, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    running = anthropic_batch.batch_info({"id": "m", "processing_status": "in_progress", "request_counts": counts})
    assert (running.total, running.completed, running.failed, running.progress) == (5, None, None, None)
    ended_counts = {**counts, "processing": 0, "succeeded": 4, "errored": 1}
    ended = anthropic_batch.batch_info(
        {"id": "m", "processing_status": "ENDED", "request_counts": ended_counts, "results_url": "https://r"}
    )
    assert (ended.state, ended.total, ended.completed, ended.failed, ended.progress) == (
        BatchState.COMPLETED, 5, 4, 1, 1.0
    )  # fmt: skip


@pytest.mark.parametrize("item", [None, [], "batch", {"status": "completed"}, {"id": ""}, {"id": {"nested": 1}}])
def test_an_object_that_cannot_be_read_is_a_transient_provider_error(item: Any) -> None:
    for parse in (openai_batch.batch_info, anthropic_batch.batch_info):
        with pytest.raises(ProviderError) as raised:
            parse(item)
        assert (raised.value.classification, raised.value.code) == (ErrorClass.TRANSIENT, lenient.MALFORMED_CODE)


def test_result_lines_that_are_not_json_or_lack_a_custom_id_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    good = {"custom_id": "job-1", "response": {"status_code": 200, "body": {"id": "x"}}}
    with caplog.at_level(logging.WARNING, "batchgate.providers"):
        lines = [
            openai_batch.parse_result_line(raw)
            for raw in ("{not json", '"just a string"', '{"response": {"status_code": 200}}', orjson.dumps(good))
        ]
    assert [line.custom_id if line else None for line in lines] == [None, None, None, "job-1"]
    assert sum("skipping an unreadable batch result line" in r.getMessage() for r in caplog.records) == 3
    odd = openai_batch.result_line({"custom_id": "job-2", "response": {"status_code": "200", "body": "text"}})
    assert odd is not None
    assert (odd.body, odd.status_code, odd.outcome.value) == (None, 200, "errored")


def test_unknown_progress_is_no_information_not_zero_progress() -> None:
    overdue = {"now": 5000.0, "started_at": 0.0, "turnaround": 3600.0}
    assert remaining_estimate(**overdue, progress=None) == 0.0  # the safety margin alone decides
    assert remaining_estimate(**overdue, progress=0.5) == pytest.approx(5000.0)
    assert remaining_estimate(now=1000.0, started_at=0.0, turnaround=3600.0, progress=None) == 2600.0
    assert BatchInfo("b", BatchState.IN_PROGRESS, 0.0, {}, total=10, completed=None, failed=0).progress is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FIELDS = (
    "id", "batch_id", "status", "processing_status", "created_at", "create_time", "request_counts", "state",
    "metadata", "output_file_id", "error_file_id", "errors", "results_url", "cancel_initiated_at", "job",
    "custom_id", "response", "error", "result",
)  # fmt: skip
SHAPED = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8)
COUNTS = st.dictionaries(
    st.sampled_from(("total", "completed", "failed", "succeeded", "errored", "canceled", "expired", "processing")),
    JSON,
)
NEAR_MISS = st.builds(
    lambda base, counts: {**base, "id": "b1", "request_counts": counts, "state": counts}, SHAPED, COUNTS
)
ANY_OBJECT = JSON | SHAPED | NEAR_MISS | SHAPED.map(lambda job: {"job": job})


@settings(max_examples=400, deadline=None)
@given(ANY_OBJECT)
def test_any_json_value_is_a_batch_info_or_a_provider_error(item: Any) -> None:
    for parse in (openai_batch.batch_info, anthropic_batch.batch_info):
        try:
            info = parse(item)
        except ProviderError:
            continue
        assert isinstance(info, BatchInfo)
        assert isinstance(info.state, BatchState)
        assert info.progress is None or 0.0 <= info.progress <= 1.0


@settings(max_examples=400, deadline=None)
@given(ANY_OBJECT)
def test_any_json_value_is_a_result_line_or_none(item: Any) -> None:
    for parse in (openai_batch.result_line, anthropic_batch.result_line):
        line = parse(item)
        assert line is None or isinstance(line, ResultLine)
    raw = orjson.dumps(item)
    assert openai_batch.parse_result_line(raw) == openai_batch.result_line(orjson.loads(raw))


def test_a_failed_batchs_errors_become_issues_with_their_codes_and_lines() -> None:
    item = {
        "id": "batch_f",
        "status": "failed",
        "errors": {
            "object": "list",
            "data": [
                {"code": "invalid_request", "message": "Invalid role.", "param": "body.messages", "line": 3},
                {"code": "token_limit_exceeded", "message": "Enqueued token limit reached.", "line": None},
                "not an entry",
            ],
        },
    }
    info = openai_batch.batch_info(item)
    assert info.state is BatchState.FAILED
    assert info.issues == (
        BatchIssue("invalid_request", "Invalid role.", 3),
        BatchIssue("token_limit_exceeded", "Enqueued token limit reached.", None),
    )
    assert info.errors == "line 3: Invalid role.; Enqueued token limit reached."
    assert openai_batch.batch_info({"id": "batch_ok", "status": "completed", "errors": None}).issues == ()
