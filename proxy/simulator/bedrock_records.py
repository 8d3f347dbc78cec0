"""The Bedrock face's side of S3: reading a job's input records and writing its output, on a real S3-compatible
server (moto's server or MinIO in tests), through boto3. Blocking: call these in a thread.

Input: JSONL of `{"recordId", "modelInput"}`. A line that is not a JSON object with an object `modelInput`, a
duplicate recordId, fewer records than the minimum or more than the maximum fail the whole job (Bedrock's
validation); a `modelInput` Claude refuses (no `anthropic_version`, no `max_tokens`, bad messages) is that
record's 400 and the job runs. Output: `<output uri>/<job id>/<input name>.out` with one line per processed
record, `{"recordId", "modelInput", "modelOutput" | "error": {"errorCode", "errorMessage"}}`, and
`manifest.json.out` with the counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.simulator.anthropic_face import message_object, params_problem
from proxy.simulator.batches import BatchView, LineRequest
from proxy.simulator.options import SimulatorOptions

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
MAX_RECORDS = 50_000


class S3Problem(Exception):
    """The input or output location cannot be used (no bucket, no object): Bedrock's ValidationException."""


@dataclass(frozen=True, slots=True)
class ParsedInput:
    requests: list[LineRequest]
    problems: list[str]  # non-empty: the job fails at validation


def s3_client(options: SimulatorOptions) -> Any:
    import boto3  # noqa: PLC0415 - only the Bedrock face needs it
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(
        "s3",
        endpoint_url=options.s3_endpoint_url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def read_input(s3: Any, uri: str) -> bytes:
    """The input object's bytes; S3Problem when the bucket or the object is missing."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    bucket, key = split_uri(uri)
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise S3Problem(f"The provided input S3 URI {uri} is not accessible ({code}).") from None
    return body


def check_output(s3: Any, uri: str) -> None:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    bucket, _ = split_uri(uri)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        raise S3Problem(f"The provided output S3 URI {uri} is not accessible (NoSuchBucket).") from None


def parse_input(raw: bytes, *, model_id: str, job_arn: str, options: SimulatorOptions) -> ParsedInput:
    requests: list[LineRequest] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            item = None
        if not isinstance(item, dict) or not isinstance(item.get("modelInput"), dict):
            return ParsedInput([], [f"Invalid JSONL on line {number}: expected {{recordId, modelInput}}."])
        record_id = item.get("recordId") or f"{number:011d}"
        if not isinstance(record_id, str) or record_id in seen:
            return ParsedInput([], [f"Line {number}: recordId {record_id!r} is not a unique string."])
        seen.add(record_id)
        model_input = item["modelInput"]
        problem = params_problem({**model_input, "model": model_id}, options)
        if problem is None and model_input.get("anthropic_version") != BEDROCK_ANTHROPIC_VERSION:
            problem = f"anthropic_version: must be {BEDROCK_ANTHROPIC_VERSION!r}"
        if problem is None and "model" in model_input:
            problem = "model: Extra inputs are not permitted"
        requests.append(LineRequest.from_body(record_id, {**model_input, "model": model_id}, problem))
    if len(requests) < options.bedrock_min_records:
        problem = (
            f"Batch job {job_arn} contains less records ({len(requests)}) than the required minimum of: "
            f"{options.bedrock_min_records}"
        )
        return ParsedInput([], [problem])
    if len(requests) > min(MAX_RECORDS, options.max_batch_lines):
        return ParsedInput([], [f"Batch job {job_arn} contains more records than the maximum of {MAX_RECORDS}."])
    return ParsedInput(requests, [])


def write_output(s3: Any, current: BatchView, *, input_uri: str, output_uri: str, job_id: str) -> None:
    """Write the records processed by now and the manifest (a job that failed validation writes nothing)."""
    if current.record.issues:
        return
    inputs = _model_inputs(read_input(s3, input_uri))
    bucket, prefix = split_uri(output_uri.rstrip("/"))
    folder = f"{prefix}/{job_id}" if prefix else job_id
    name = input_uri.rsplit("/", 1)[-1]
    lines = []
    for line in current.finished:
        record: dict[str, Any] = {"recordId": line.custom_id, "modelInput": inputs.get(line.custom_id, {})}
        if line.answer is not None and line.succeeded:
            record["modelOutput"] = message_object(line.model, line.answer)
        else:
            record["error"] = {"errorCode": line.status_code, "errorMessage": line.error_message or "error"}
        lines.append(orjson.dumps(record))
    s3.put_object(Bucket=bucket, Key=f"{folder}/{name}.out", Body=b"\n".join(lines) + (b"\n" if lines else b""))
    total, succeeded, failed = current.counts
    input_tokens, output_tokens = current.tokens
    manifest = {
        "totalRecordCount": total,
        "processedRecordCount": succeeded + failed,
        "successRecordCount": succeeded,
        "errorRecordCount": failed,
        "inputTokenCount": input_tokens,
        "outputTokenCount": output_tokens,
    }
    s3.put_object(Bucket=bucket, Key=f"{folder}/manifest.json.out", Body=orjson.dumps(manifest))


def _model_inputs(raw: bytes) -> Mapping[str, Any]:
    inputs: dict[str, Any] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            item = orjson.loads(line)
            inputs[str(item.get("recordId") or f"{number:011d}")] = item.get("modelInput")
    return inputs
