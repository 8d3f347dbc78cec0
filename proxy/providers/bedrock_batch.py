"""AWS Bedrock batch inference (model invocation jobs over S3) for Anthropic Claude models on Bedrock.

Wire format (Bedrock API reference: CreateModelInvocationJob, GetModelInvocationJob, ListModelInvocationJobs,
StopModelInvocationJob; the user guide's "Format and upload your batch inference data"; botocore's service model,
which boto3 signs and sends for us):

- input: a JSONL object in S3, one `{"recordId", "modelInput"}` per line; `modelInput` is the model's own
  InvokeModel body: for Claude, the Anthropic Messages body without `model`, with
  `"anthropic_version": "bedrock-2023-05-31"` (litellm's translation, as the Anthropic adapter makes it);
- `POST /model-invocation-job` `{jobName, roleArn, clientRequestToken, modelId, inputDataConfig:
  {s3InputDataConfig: {s3Uri, s3InputFormat: "JSONL"}}, outputDataConfig: {s3OutputDataConfig: {s3Uri}},
  timeoutDurationInHours, tags}` -> `{jobArn}`;
- a job: `status` (Submitted, Validating, Scheduled, InProgress, Completed, PartiallyCompleted, Failed, Stopping,
  Stopped, Expired), `message`, `submitTime`, the record counts;
- output: `<output uri>/<job id>/<input name>.out`, one `{"recordId", "modelInput", "modelOutput"}` or
  `{"recordId", "modelInput", "error": {"errorCode", "errorMessage"}}` per processed record, and
  `manifest.json.out` beside it.

Bedrock refuses a job with fewer records than the model's minimum (100 for most models; the deployment's
`batch_min_records`): `min_requests` tells the submitter to hold a queue below it (its jobs wait for more, or
for the deadline guard), and `prepare` refuses such an input rather than send a job certain to fail.
Why not litellm's `create_batch(custom_llm_provider="bedrock")`: it takes an OpenAI input file and keeps no
handle for finding a job again after a crash; its request translation for Claude is the one used here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from proxy.providers import lenient
from proxy.providers.anthropic_format import chat_error
from proxy.providers.anthropic_translation import chat_completion, messages_request
from proxy.providers.base import (
    BatchInfo,
    BatchState,
    ErrorClass,
    LineOutcome,
    PreparedInput,
    ProviderError,
    ResultLine,
)
from proxy.providers.bedrock_aws import AwsAccount, S3Location, call
from proxy.providers.claude_rules import ClaudeRefusal
from proxy.providers.litellm_completion import import_litellm

log = logging.getLogger("batchgate.providers.bedrock_batch")

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
DEFAULT_MIN_RECORDS = 100  # Bedrock's default quota "Minimum number of records per batch inference job"
MAX_RECORDS = 50_000  # default quota "Records per input file per batch inference job"
MAX_FILE_BYTES = 1024 * 1024 * 1024  # default quota "Batch inference input file size" (1 GB)
DEFAULT_TIMEOUT_HOURS = 24
JOB_PREFIX = "batchgate"
LIST_PAGE = 100
MAX_LIST_PAGES = 20
CLOCK_SKEW = 60.0
READ_CHUNK = 1 << 20  # bytes of output records read at a time
# records translated between two yields to the event loop: translation is litellm's (~1-3 ms a record on a loaded
# machine), and a worker's lease keepers must run meanwhile
LOOP_SLICE = 50
STATES = {
    "submitted": BatchState.VALIDATING,
    "validating": BatchState.VALIDATING,
    "scheduled": BatchState.VALIDATING,
    "inprogress": BatchState.IN_PROGRESS,
    "completed": BatchState.COMPLETED,
    "partiallycompleted": BatchState.COMPLETED,  # some records errored: their lines say why
    "failed": BatchState.FAILED,
    "stopping": BatchState.CANCELLING,
    "stopped": BatchState.CANCELLED,
    "expired": BatchState.EXPIRED,
}  # keyed by lenient.status_key


def translation_params(extra: Mapping[str, Any]) -> dict[str, Any]:
    """A deployment's litellm params less the AWS ones (region, credentials): not part of a record."""
    return {key: value for key, value in extra.items() if not key.startswith("aws_")}


def bedrock_model(model_id: str) -> bool:
    """Whether batchgate writes batch records for this Bedrock model id: Anthropic Claude, by id or by inference
    profile (`anthropic.claude-…`, `us.anthropic.claude-…`)."""
    return model_id.split(".", 1)[-1].startswith("anthropic.claude") or model_id.startswith("anthropic.claude")


def encode_record(
    custom_id: str, body: Mapping[str, Any], *, model_id: str, extra_params: Mapping[str, Any] | None = None
) -> bytes:
    """One input record `{"recordId", "modelInput"}` (no newline) for an OpenAI chat body. A body that does not
    translate or encode raises ProviderError(BAD_LINE, custom_id=custom_id)."""
    try:
        request = messages_request(body, model=model_id, extra_params=extra_params or {})
        model_input = {k: v for k, v in request.params.items() if k != "model"}
        model_input["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
        if request.betas:
            model_input["anthropic_beta"] = sorted(request.betas)
        return orjson.dumps({"recordId": custom_id, "modelInput": model_input})
    except ClaudeRefusal as exc:
        message = exc.message
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        message = f"The request body cannot be written as a Bedrock batch record: {exc}."
    raise ProviderError(
        400, message, code="invalid_batch_line", classification=ErrorClass.BAD_LINE, custom_id=custom_id
    )


class BedrockBatchClient:
    """Model invocation jobs for one Bedrock model: inputs and outputs under `s3_uri` (`s3://bucket/prefix`),
    jobs run as `role_arn`. `min_requests` is the fewest records a job may carry."""

    def __init__(
        self,
        *,
        model_id: str,
        s3_uri: str,
        role_arn: str,
        account: AwsAccount,
        timeout: float = 60.0,
        min_records: int = DEFAULT_MIN_RECORDS,
        timeout_hours: int = DEFAULT_TIMEOUT_HOURS,
        extra_params: Mapping[str, Any] | None = None,
    ) -> None:
        self._model = model_id
        self._root = S3Location.parse(s3_uri)
        self._role_arn = role_arn
        self._account = account
        self._timeout = timeout
        self.min_requests = min_records
        self._timeout_hours = timeout_hours
        self._extra = translation_params(extra_params or {})
        self._clients: tuple[Any, Any] | None = None

    async def _aws(self) -> tuple[Any, Any]:
        if self._clients is None:
            self._clients = await call(self._account.clients, timeout=self._timeout)
        return self._clients

    async def prepare(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], *, metadata: Mapping[str, str]
    ) -> PreparedInput:
        """Write the records to a temporary file, then upload it to `<prefix>/input/<name>.jsonl`; the ref is its
        S3 URI. Fewer records than `min_requests` raise ProviderError (BAD_REQUEST, code `too_few_records`)
        and nothing is uploaded."""
        await asyncio.to_thread(import_litellm)  # seconds, the first time: not on the event loop
        handle, name = tempfile.mkstemp(prefix="bedrock-", suffix=".jsonl")
        path = Path(name)
        count = 0
        try:
            with os.fdopen(handle, "wb") as out:
                async for custom_id, body in requests:
                    out.write(encode_record(custom_id, body, model_id=self._model, extra_params=self._extra) + b"\n")
                    count += 1
                    if count % LOOP_SLICE == 0:
                        await asyncio.sleep(0)
            if count == 0:
                return PreparedInput("", 0)
            if count < self.min_requests:
                raise ProviderError(
                    400,
                    f"A Bedrock batch job for {self._model} takes at least {self.min_requests} records; "
                    f"{count} were given (too_few_records: held back rather than sent to fail).",
                    code="too_few_records",
                    classification=ErrorClass.BAD_REQUEST,
                )
            target = self._root.child(f"input/{uuid.uuid4().hex}.jsonl")
            _, s3 = await self._aws()
            await call(s3.upload_file, Filename=str(path), Bucket=target.bucket, Key=target.key)
            return PreparedInput(target.uri, count)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        """Start a job on the uploaded input; its name and client token derive from the input, so a create
        repeated for the same input (a retry, a crash) does not start a second job."""
        source = S3Location.parse(prepared)
        bedrock, _ = await self._aws()
        response = await call(
            bedrock.create_model_invocation_job,
            jobName=job_name(prepared, time.time()),
            roleArn=self._role_arn,
            clientRequestToken=input_token(prepared),
            modelId=self._model,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": source.uri, "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": self._output_of(source).uri + "/"}},
            timeoutDurationInHours=self._timeout_hours,
            tags=[{"key": key, "value": value} for key, value in metadata.items()],
        )
        job_arn = lenient.text(response.get("jobArn"))
        if job_arn is None:
            raise lenient.malformed("CreateModelInvocationJob answer", response)
        return job_info(await call(bedrock.get_model_invocation_job, jobIdentifier=job_arn), metadata)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        bedrock, _ = await self._aws()
        return job_info(await call(bedrock.get_model_invocation_job, jobIdentifier=batch_id), {})

    async def results(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The job's output records, read from S3 (none when it wrote no output: failed, or stopped early)."""
        if batch.output_file_id is None:
            return
        target = S3Location.parse(batch.output_file_id)
        _, s3 = await self._aws()
        descriptor, name = tempfile.mkstemp(prefix="bedrock-out-", suffix=".jsonl")
        os.close(descriptor)
        path = Path(name)
        try:
            try:
                await call(s3.download_file, Bucket=target.bucket, Key=target.key, Filename=str(path))
            except ProviderError as exc:
                if exc.classification is ErrorClass.NOT_FOUND or exc.status == 404:
                    return
                raise
            await asyncio.to_thread(import_litellm)  # seconds, the first time: not on the event loop
            records = await asyncio.to_thread(open_binary, path)
            try:
                while chunk := await asyncio.to_thread(records.readlines, READ_CHUNK):
                    for index, raw in enumerate(chunk, 1):
                        line = result_line(raw)
                        if line is not None:
                            yield line
                        if index % LOOP_SLICE == 0:
                            await asyncio.sleep(0)
            finally:
                await asyncio.to_thread(records.close)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def cancel(self, batch_id: str) -> BatchInfo:
        bedrock, _ = await self._aws()
        await call(bedrock.stop_model_invocation_job, jobIdentifier=batch_id)
        return await self.retrieve(batch_id)

    async def cleanup(self, prepared: str) -> None:
        """Delete the input object and every output object of jobs run on it."""
        if not prepared:
            return
        source = S3Location.parse(prepared)
        _, s3 = await self._aws()
        await call(s3.delete_object, Bucket=source.bucket, Key=source.key)
        output = self._output_of(source)
        listing = await call(s3.list_objects_v2, Bucket=output.bucket, Prefix=output.key + "/")
        for item in listing.get("Contents") or []:
            await call(s3.delete_object, Bucket=output.bucket, Key=str(item["Key"]))

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """Jobs submitted since `since` whose name carries the input's token and whose input is `prepared`,
        newest first."""
        bedrock, _ = await self._aws()
        after = datetime.fromtimestamp(max(0.0, since - CLOCK_SKEW), UTC)
        found: list[BatchInfo] = []
        token: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params: dict[str, Any] = {
                "submitTimeAfter": after,
                "nameContains": input_token(prepared)[:16],
                "sortBy": "CreationTime",
                "sortOrder": "Descending",
                "maxResults": LIST_PAGE,
            }
            if token:
                params["nextToken"] = token
            page = await call(bedrock.list_model_invocation_jobs, **params)
            for item in page.get("invocationJobSummaries") or []:
                source = (lenient.mapping(item.get("inputDataConfig")).get("s3InputDataConfig") or {}).get("s3Uri")
                if source == prepared:
                    found.append(job_info(item, metadata))
            token = lenient.text(page.get("nextToken"))
            if token is None:
                break
        return found

    def _output_of(self, source: S3Location) -> S3Location:
        """Where jobs on an input write: `<prefix>/output/<input name>` (one folder per input, for cleanup)."""
        return self._root.child("output/" + source.key.rsplit("/", 1)[-1].removesuffix(".jsonl"))

    async def aclose(self) -> None:
        clients, self._clients = self._clients, None
        for client in clients or ():
            client.close()


def open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


def input_token(prepared: str) -> str:
    """The idempotency token (and name part) of jobs on an input: hex, within Bedrock's token pattern."""
    return hashlib.sha256(prepared.encode()).hexdigest()[:32]


def job_name(prepared: str, now: float) -> str:
    """`batchgate-<input token>-<epoch s>`: within Bedrock's 63 characters and its name pattern."""
    return f"{JOB_PREFIX}-{input_token(prepared)[:16]}-{int(now)}"


def job_info(item: Any, metadata: Mapping[str, str]) -> BatchInfo:
    """A GetModelInvocationJob answer or a listed summary as a BatchInfo; the output file is the record file of
    the job's input (`<output uri>/<job id>/<input name>.out`)."""
    if not isinstance(item, Mapping):
        raise lenient.malformed("model invocation job", item)
    job_arn = lenient.text(item.get("jobArn"))
    if job_arn is None:
        raise lenient.malformed("model invocation job (no jobArn)", item)
    state = lenient.batch_state(item.get("status"), STATES)
    submitted = item.get("submitTime")
    created = submitted.timestamp() if isinstance(submitted, datetime) else lenient.timestamp(submitted)
    source = (lenient.mapping(item.get("inputDataConfig")).get("s3InputDataConfig") or {}).get("s3Uri")
    output = (lenient.mapping(item.get("outputDataConfig")).get("s3OutputDataConfig") or {}).get("s3Uri")
    output_file = None
    if isinstance(source, str) and isinstance(output, str):
        job_id = job_arn.rsplit("/", 1)[-1]
        output_file = f"{output.rstrip('/')}/{job_id}/{source.rsplit('/', 1)[-1]}.out"
    failed = lenient.count(item.get("errorRecordCount"))
    message = lenient.text(item.get("message"))
    return BatchInfo(
        batch_id=job_arn,
        state=state,
        created_at=created or 0.0,
        metadata=dict(metadata),
        total=lenient.count(item.get("totalRecordCount")),
        completed=lenient.count(item.get("successRecordCount")),
        failed=failed,
        output_file_id=output_file,
        errors=message if state is BatchState.FAILED else None,
    )


def result_line(raw: bytes) -> ResultLine | None:
    """One output record as a ResultLine (None for a blank or unreadable line, which is logged)."""
    if not raw.strip():
        return None
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        lenient.skipped_line("not JSON", raw)
        return None
    custom_id = lenient.identifier(item.get("recordId")) if isinstance(item, dict) else None
    if custom_id is None:
        lenient.skipped_line("no recordId", raw)
        return None
    output = item.get("modelOutput")
    if isinstance(output, dict) and item.get("error") is None:
        return ResultLine(custom_id, LineOutcome.SUCCEEDED, 200, chat_completion(output))
    error = lenient.mapping(item.get("error"))
    status = lenient.count(error.get("errorCode")) or 500
    message = str(error.get("errorMessage") or "The record was not processed.")
    kind = {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "api_error")
    _, body = chat_error({"type": kind, "message": message})
    return ResultLine(
        custom_id, LineOutcome.ERRORED, status, body, error_code=str(error.get("errorCode")), error_message=message
    )
