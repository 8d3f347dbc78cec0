"""OpenAI Batch API wire format: input-file validation, the batch object, output and error file lines."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proxy.simulator.batches import INFINITY, BatchLine, BatchView, LineRequest, Status, ValidationIssue
from proxy.simulator.embeddings import BATCH_ENDPOINTS as EMBEDDINGS_ENDPOINTS
from proxy.simulator.embeddings import (
    MAX_BATCH_INPUTS,
    embedding_answer,
    embedding_problem,
    embedding_response,
    inputs_of,
)
from proxy.simulator.openai_chat import chat_problem, completion, store_problem
from proxy.simulator.options import SimulatorOptions
from proxy.simulator.prompt_cache import PromptCache
from proxy.simulator.rate_headers import request_id
from proxy.simulator.responses import ENDPOINT as RESPONSES_ENDPOINT
from proxy.simulator.responses import response_answer, response_object, response_problem

CHAT_ENDPOINT = "/v1/chat/completions"
AZURE_CHAT_ENDPOINT = "/chat/completions"  # Azure's batch endpoint is often given without /v1
AZURE_STATUSES = {  # Azure's documented REST example spells statuses capitalised ("Validating")
    Status.VALIDATING: "Validating",
    Status.IN_PROGRESS: "InProgress",
    Status.FINALIZING: "Finalizing",
    Status.COMPLETED: "Completed",
    Status.FAILED: "Failed",
    Status.EXPIRED: "Expired",
    Status.CANCELLING: "Cancelling",
    Status.CANCELLED: "Cancelled",
}
MAX_REPORTED_ISSUES = 100
ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_exceeded", 500: "server_error"}
UNFINISHED_ERRORS = {
    Status.EXPIRED: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    Status.CANCELLED: ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


class _InputChecker:
    def __init__(self, endpoint: str, options: SimulatorOptions, cache: PromptCache | None = None) -> None:
        self.endpoint = endpoint
        self.options = options
        self.cache = cache
        self.requests: list[LineRequest] = []
        self.issues: list[ValidationIssue] = []
        self.custom_ids: set[str] = set()
        self.models: set[str] = set()
        self.embedding_inputs = 0

    def issue(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(self.issues) < MAX_REPORTED_ISSUES:
            self.issues.append(ValidationIssue(code, message, line, param))

    def check(self, number: int, raw: bytes) -> None:
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            item = None
        if not isinstance(item, dict):
            self.issue("invalid_json_line", "This line is not parseable as valid JSON.", number)
            return
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            self.issue("missing_required_parameter", "Missing required parameter: 'custom_id'.", number, "custom_id")
            return
        if custom_id in self.custom_ids:
            self.issue(
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request. "
                "The custom_id parameter must be unique for each request in a batch.",
                number,
                "custom_id",
            )
            return
        self.custom_ids.add(custom_id)
        if item.get("method") != "POST":
            self.issue("invalid_method", "The method must be 'POST'.", number, "method")
        if item.get("url") != self.endpoint:
            self.issue(
                "invalid_url",
                f"The URL {item.get('url')!r} does not match the batch endpoint {self.endpoint!r}.",
                number,
                "url",
            )
        self.check_body(number, custom_id, item.get("body"))

    def check_body(self, number: int, custom_id: str, body: Any) -> None:
        if not isinstance(body, dict):
            self.issue("missing_required_parameter", "Missing required parameter: 'body'.", number, "body")
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self.issue(
                "missing_required_parameter",
                "Missing required parameter: 'body.model'.",
                number,
                "body.model",
            )
            return
        if body.get("stream"):
            self.issue("invalid_request", "Streaming is not supported in batch requests.", number, "body.stream")
            return
        self.models.add(model)
        if len(self.models) > 1:
            self.issue(
                "mismatched_model",
                "All requests in a batch must use the same model.",
                number,
                "body.model",
            )
        embeddings = self.endpoint in EMBEDDINGS_ENDPOINTS
        responses = self.endpoint == RESPONSES_ENDPOINT
        problem = embedding_problem(body) if embeddings else response_problem(body) if responses else chat_problem(body)
        if embeddings and problem is None:
            self.embedding_inputs += len(inputs_of(body))
            if self.embedding_inputs > MAX_BATCH_INPUTS:
                self.issue(
                    "too_many_embedding_inputs",
                    f"A {self.endpoint} batch may contain at most {MAX_BATCH_INPUTS} embedding inputs across "
                    "all its requests.",
                    number,
                    "body.input",
                )
                return
        if problem and self.options.invalid_body_fails_batch:
            param = f"body.{problem[1]}" if problem[1] else "body"
            self.issue("invalid_request", problem[0], number, param)
            return
        if problem is None and self.options.metadata_requires_store and not (embeddings or responses):
            problem = store_problem(body)  # the line is answered 400, the batch runs
        if embeddings or responses:
            answer = None if problem else embedding_answer(body) if embeddings else response_answer(body)
            message = problem[0] if problem else None
            self.requests.append(LineRequest(custom_id, str(body.get("model", "")), answer, message))
            return
        line = LineRequest.from_body(custom_id, body, problem[0] if problem else None)
        if self.cache is not None and line.answer is not None:
            line = dataclasses.replace(line, answer=self.cache.openai(body, line.answer))
        self.requests.append(line)


def check_input_file(
    path: Path, *, endpoint: str, options: SimulatorOptions, cache: PromptCache | None = None
) -> tuple[list[LineRequest], list[ValidationIssue]]:
    """Parse a batch input file line by line (blocking: use a thread). Issues make the batch `failed`.

    A line whose body the endpoint refuses is an issue (naming its 1-based line and `body.<param>`) when
    `options.invalid_body_fails_batch`, else that line alone is answered 400; `metadata` without `store` is
    always that line's 400 (when `options.metadata_requires_store`). `cache`: the provider's prompt cache, which
    a line with `prompt_cache_key` reads (prompt_cache.py)."""
    checker = _InputChecker(endpoint, options, cache)
    max_lines = options.max_batch_lines
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            count += 1
            if count > max_lines:
                checker.issue("too_many_requests", f"A batch may contain at most {max_lines} requests.", number)
                break
            checker.check(number, raw)
    if count == 0:
        checker.issue("empty_file", "The input file contains no requests.", None)
    return checker.requests, checker.issues


def _timestamp(moment: float | None) -> int | None:
    return None if moment is None or moment == INFINITY else int(moment)


def azure_timestamp(moment: float | None) -> str | None:
    """Azure's ISO text with 7 fractional digits: `2024-07-19T17:13:57.2491382+00:00`."""
    if moment is None or moment == INFINITY:
        return None
    whole = datetime.fromtimestamp(int(moment), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{round((moment % 1) * 10**7):07d}+00:00"


AZURE_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def azure_batch_object(current: BatchView, files: tuple[str | None, str | None]) -> dict[str, Any]:
    """The batch as Azure's documented REST example shows it: capitalised status, ISO timestamps, null counts."""
    payload = batch_object(current, files)
    timeline, record = current.timeline, current.record
    ended = current.seen(timeline.end_at)
    moments = {
        "created_at": record.created_at,
        "in_progress_at": current.seen(timeline.in_progress_at),
        "expires_at": record.expires_at,
        "finalizing_at": current.seen(timeline.finalizing_at),
        "cancelling_at": current.seen(timeline.cancelling_at),
    }
    end_field = f"{timeline.end_status.value}_at"
    for name in AZURE_TIMESTAMPS:
        payload[name] = azure_timestamp(ended if name == end_field else moments.get(name))
    payload["status"] = AZURE_STATUSES[current.status]
    payload["request_counts"] = {"total": None, "completed": None, "failed": None}
    return payload


def batch_object(current: BatchView, files: tuple[str | None, str | None]) -> dict[str, Any]:
    record, timeline = current.record, current.timeline
    ended = current.seen(timeline.end_at)
    end_status = timeline.end_status if ended is not None else None
    total, succeeded, failed = current.counts
    input_tokens, output_tokens = current.tokens
    cached_tokens = sum(
        line.answer.cache_read_tokens for line in current.finished if line.succeeded and line.answer is not None
    )
    errors = None
    if record.issues:
        named = record.options.validation_names_line
        errors = {
            "object": "list",
            "data": [
                {"code": issue.code, "message": issue.message, "param": issue.param,
                 "line": issue.line if named else None}
                for issue in record.issues
            ],
        }  # fmt: skip
    return {
        "id": record.id,
        "object": "batch",
        "endpoint": record.attributes["endpoint"],
        "model": record.lines[0].model if record.lines else None,
        "errors": errors,
        "input_file_id": record.attributes["input_file_id"],
        "completion_window": record.attributes["completion_window"],
        "status": current.status.value,
        "output_file_id": files[0],
        "error_file_id": files[1],
        "created_at": int(record.created_at),
        "in_progress_at": _timestamp(current.seen(timeline.in_progress_at)),
        "expires_at": _timestamp(record.expires_at),
        "finalizing_at": _timestamp(current.seen(timeline.finalizing_at)),
        "completed_at": _timestamp(ended if end_status is Status.COMPLETED else None),
        "failed_at": _timestamp(ended if end_status is Status.FAILED else None),
        "expired_at": _timestamp(ended if end_status is Status.EXPIRED else None),
        "cancelling_at": _timestamp(current.seen(timeline.cancelling_at)),
        "cancelled_at": _timestamp(ended if end_status is Status.CANCELLED else None),
        "request_counts": {"total": total, "completed": succeeded, "failed": failed},
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "metadata": record.attributes["metadata"],
    }


def _line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


def _response_line(line: BatchLine, finished_at: float) -> bytes:
    if line.answer is not None and line.answer.embedding is not None:
        body: dict[str, Any] = embedding_response(line.model, line.answer)
    elif line.answer is not None and line.answer.response:
        body = response_object(line.model, line.answer, {"store": False}, created=int(finished_at))
    elif line.answer is not None:
        body = completion(line.model, line.answer, service_tier="default", created=int(finished_at))
    else:
        error_type = ERROR_TYPES.get(line.status_code, "server_error")
        body = {"error": {"message": line.error_message, "type": error_type, "param": None, "code": None}}
    response = {"status_code": line.status_code, "request_id": request_id(), "body": body}
    return orjson.dumps({"id": _line_id(), "custom_id": line.custom_id, "response": response, "error": None})


def result_lines(current: BatchView) -> Iterator[tuple[bool, bytes]]:
    """The lines of an ended batch as (goes to the error file?, line), in finishing order: successes go to the
    output file; lines answered 4xx/5xx to the error file (or the output file, per `line_errors_file`);
    unfinished lines (expired / cancelled) to the error file."""
    start = current.timeline.in_progress_at
    http_errors_to_error_file = current.record.options.line_errors_file == "error"
    for line in current.finished:
        yield (not line.succeeded and http_errors_to_error_file), _response_line(line, start + line.finish_offset)
    unfinished = UNFINISHED_ERRORS.get(current.status)
    if unfinished is not None:
        code, message = unfinished
        for raw in _unfinished_lines(current, code, message):
            yield True, raw


def _unfinished_lines(current: BatchView, code: str, message: str) -> Iterator[bytes]:
    for line in current.unfinished:
        error = {"code": code, "message": message}
        yield orjson.dumps({"id": _line_id(), "custom_id": line.custom_id, "response": None, "error": error})
