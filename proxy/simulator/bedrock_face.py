"""The Bedrock face, under `/bedrock`: the control plane of batch inference (model invocation jobs) as boto3's
`bedrock` client calls it (REST-JSON), over the same engine as the other faces, with input and output on a real
S3-compatible server (bedrock_records.py).

Shapes as proxy/providers/bedrock_batch.py documents them. Strict where Bedrock is: a request must be SigV4
signed (403 otherwise); `jobName`, `roleArn` and `clientRequestToken` must match their patterns and
`timeoutDurationInHours` be 24..168 (400 ValidationException, AWS's message); an unreadable input or output
location is a ValidationException at create; a repeated `clientRequestToken` returns the job it made; an
input under `bedrock_min_records` records fails the job at validation with Bedrock's message. Errors are
AWS's: the status, `x-amzn-ErrorType` and `{"message"}`. Jobs bill under their model id when they end.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from proxy.simulator import bedrock_records
from proxy.simulator.batches import INFINITY, BatchView, Status, ValidationIssue
from proxy.simulator.engine import BatchNotCancellable, BatchNotFound
from proxy.simulator.state import SimulatorState, simulator_state

FACE = "bedrock"
ACCOUNT = "123456789012"
REGION = "us-east-1"
ARN_PREFIX = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/"
PATTERNS = {
    "jobName": re.compile(r"^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}$"),
    "roleArn": re.compile(r"^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+$"),
    "clientRequestToken": re.compile(r"^[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}$"),
}
STATUSES = {
    Status.VALIDATING: "Validating",
    Status.IN_PROGRESS: "InProgress",
    Status.FINALIZING: "InProgress",
    Status.COMPLETED: "Completed",
    Status.FAILED: "Failed",
    Status.EXPIRED: "Expired",
    Status.CANCELLING: "Stopping",
    Status.CANCELLED: "Stopped",
}

router = APIRouter(prefix="/bedrock")


class AwsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _answer(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def aws_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AwsError)
    return Response(
        orjson.dumps({"message": exc.message}),
        status_code=exc.status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": exc.code},
    )


def signed(request: Request) -> None:
    if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 Credential="):
        raise AwsError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")


def _invalid(field: str, value: Any, constraint: str) -> AwsError:
    message = f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
    return AwsError(400, "ValidationException", message)


def _create_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise AwsError(400, "SerializationException", "The request body must be a JSON object.")
    for field, pattern in PATTERNS.items():
        value = body.get(field)
        if field == "clientRequestToken" and value is None:
            continue
        if not isinstance(value, str) or not pattern.match(value):
            raise _invalid(field, value, f"Member must satisfy regular expression pattern: {pattern.pattern[1:-1]}")
    model = body.get("modelId")
    if not isinstance(model, str) or "anthropic.claude" not in model:
        raise AwsError(400, "ValidationException", f"The provided model identifier is invalid: {model!r}.")
    source = ((body.get("inputDataConfig") or {}).get("s3InputDataConfig") or {}).get("s3Uri")
    target = ((body.get("outputDataConfig") or {}).get("s3OutputDataConfig") or {}).get("s3Uri")
    for field, uri in (("inputDataConfig", source), ("outputDataConfig", target)):
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise _invalid(f"{field}.s3Uri", uri, "Member must satisfy regular expression pattern: s3://.*")
    hours = body.get("timeoutDurationInHours", 24)
    if isinstance(hours, bool) or not isinstance(hours, int) or not 24 <= hours <= 168:
        raise _invalid("timeoutDurationInHours", hours, "Member must have value between 24 and 168")
    tags = body.get("tags") or []
    return {
        "face": FACE,
        "jobName": body["jobName"],
        "roleArn": body["roleArn"],
        "clientRequestToken": body.get("clientRequestToken"),
        "modelId": model,
        "input": source,
        "output": target,
        "timeoutDurationInHours": hours,
        "tags": {str(tag.get("key")): str(tag.get("value")) for tag in tags if isinstance(tag, dict)},
    }


def _s3(request: Request, state: SimulatorState) -> Any:
    client = getattr(request.app.state, "bedrock_s3", None)
    if client is None:
        client = bedrock_records.s3_client(state.engine.options)
        request.app.state.bedrock_s3 = client
    return client


@router.post("/model-invocation-job")
async def create_job(request: Request) -> Response:
    signed(request)
    state = simulator_state(request)
    engine = state.engine
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    attributes = _create_request(body)
    token = attributes["clientRequestToken"]
    for current in engine.batches_newest_first():
        theirs = current.record.attributes
        if theirs.get("face") == FACE and token is not None and theirs.get("clientRequestToken") == token:
            return _answer({"jobArn": current.record.id})
        if theirs.get("face") == FACE and theirs.get("jobName") == attributes["jobName"]:
            raise AwsError(400, "ConflictException", f"A job named {attributes['jobName']} already exists.")
    s3 = await asyncio.to_thread(_s3, request, state)
    job_arn = ARN_PREFIX + uuid.uuid4().hex[:12]
    try:
        raw = await asyncio.to_thread(bedrock_records.read_input, s3, attributes["input"])
        await asyncio.to_thread(bedrock_records.check_output, s3, attributes["output"])
    except bedrock_records.S3Problem as exc:
        raise AwsError(400, "ValidationException", str(exc)) from None
    parsed = await asyncio.to_thread(
        bedrock_records.parse_input, raw, model_id=attributes["modelId"], job_arn=job_arn, options=engine.options
    )
    issues = [ValidationIssue("invalid_input", problem) for problem in parsed.problems]
    await asyncio.to_thread(engine.create_batch, job_arn, parsed.requests, issues, attributes)
    return _answer({"jobArn": job_arn})


def _job(state: SimulatorState, identifier: str) -> BatchView:
    job_arn = identifier if identifier.startswith("arn:") else ARN_PREFIX + identifier
    try:
        current = state.engine.batch(job_arn)
    except BatchNotFound:
        current = None
    if current is None or current.record.attributes.get("face") != FACE:
        raise AwsError(404, "ResourceNotFoundException", f"The job {identifier} was not found.")
    return current


def _iso(moment: float | None) -> str | None:
    if moment is None or moment == INFINITY:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_object(current: BatchView) -> dict[str, Any]:
    record, attributes = current.record, current.record.attributes
    total, succeeded, failed = current.counts
    status = STATUSES[current.status]
    if status == "Completed" and failed:
        status = "PartiallyCompleted"
    ended = current.seen(current.timeline.end_at)
    job: dict[str, Any] = {
        "jobArn": record.id,
        "jobName": attributes["jobName"],
        "modelId": attributes["modelId"],
        "roleArn": attributes["roleArn"],
        "status": status,
        "submitTime": _iso(record.created_at),
        "lastModifiedTime": _iso(ended or current.now),
        "endTime": _iso(ended),
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": attributes["input"], "s3InputFormat": "JSONL"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": attributes["output"]}},
        "timeoutDurationInHours": attributes["timeoutDurationInHours"],
        "jobExpirationTime": _iso(record.expires_at),
        "totalRecordCount": total,
        "processedRecordCount": succeeded + failed,
        "successRecordCount": succeeded,
        "errorRecordCount": failed,
    }
    if attributes.get("clientRequestToken"):
        job["clientRequestToken"] = attributes["clientRequestToken"]
    if record.issues:
        job["message"] = "; ".join(issue.message for issue in record.issues)
    return {key: value for key, value in job.items() if value is not None}


async def _written(request: Request, state: SimulatorState, current: BatchView) -> BatchView:
    """The job, its output written to S3 once it has ended."""
    attributes = current.record.attributes
    if current.status.is_terminal and not attributes.get("written"):
        attributes["written"] = True
        s3 = await asyncio.to_thread(_s3, request, state)
        job_id = current.record.id.rsplit("/", 1)[-1]
        await asyncio.to_thread(
            bedrock_records.write_output,
            s3,
            current,
            input_uri=attributes["input"],
            output_uri=attributes["output"],
            job_id=job_id,
        )
    return current


@router.get("/model-invocation-job/{identifier:path}")
async def get_job(request: Request, identifier: str) -> Response:
    signed(request)
    state = simulator_state(request)
    return _answer(job_object(await _written(request, state, _job(state, identifier))))


@router.post("/model-invocation-job/{identifier:path}")
async def stop_job(request: Request, identifier: str) -> Response:
    """`POST /model-invocation-job/{jobIdentifier}/stop` (the identifier may be an ARN, slashes and all)."""
    signed(request)
    if not identifier.endswith("/stop"):
        raise AwsError(404, "UnknownOperationException", "Unknown operation.")
    state = simulator_state(request)
    current = _job(state, identifier.removesuffix("/stop"))
    try:
        state.engine.cancel_batch(current.record.id)
    except BatchNotCancellable:
        message = f"The job is {STATUSES[current.status]}: it cannot be stopped."
        raise AwsError(400, "ValidationException", message) from None
    return _answer({})


@router.get("/model-invocation-jobs")
async def list_jobs(request: Request) -> Response:
    """Jobs newest first, filtered by `submitTimeAfter` and `nameContains`, `maxResults` a page (token: offset)."""
    signed(request)
    state = simulator_state(request)
    query = request.query_params
    after = _moment(query.get("submitTimeAfter"))
    contains = query.get("nameContains") or ""
    size = int(query.get("maxResults") or 1000)
    offset = int(query.get("nextToken") or 0)
    jobs = [
        current
        for current in state.engine.batches_newest_first()
        if current.record.attributes.get("face") == FACE
        and current.record.created_at >= after
        and contains in current.record.attributes["jobName"]
    ]
    if query.get("sortOrder") == "Ascending":
        jobs.reverse()
    page = [job_object(await _written(request, state, job)) for job in jobs[offset : offset + size]]
    listing: dict[str, Any] = {"invocationJobSummaries": page}
    if offset + size < len(jobs):
        listing["nextToken"] = str(offset + size)
    return _answer(listing)


def _moment(raw: str | None) -> float:
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
