"""Vertex AI batch prediction for Gemini models over httpx, behind the same BatchClient protocol as the others.

Wire format (https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-from-cloud-storage,
REST `projects.locations.batchPredictionJobs`, `Authorization: Bearer <OAuth access token>`):
- `POST {base}/v1/projects/{p}/locations/{l}/batchPredictionJobs` with `{"displayName", "model":
  "publishers/google/models/{m}", "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [gs://...]}},
  "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": gs://...}}}` answers the
  BatchPredictionJob: `name` (`projects/.../batchPredictionJobs/{id}`), `state` `JOB_STATE_PENDING|QUEUED|RUNNING|
  SUCCEEDED|PARTIALLY_SUCCEEDED|FAILED|CANCELLING|CANCELLED|EXPIRED|...`, `createTime`, `completionStats`
  (`successfulCount`, `failedCount`, `incompleteCount`, int64 strings), `error` (`{code, message}`) and, once
  written, `outputInfo.gcsOutputDirectory`.
- `GET {base}/v1/{name}`, `POST {base}/v1/{name}:cancel`, `GET .../batchPredictionJobs?filter=&pageSize=&pageToken=`.
- Input lines are `{"request": GenerateContentRequest}`; the output directory holds `predictions*.jsonl` lines
  `{"request", "response"}` or `{"request", "status": "<error>"}` (the request echoed). A job that ends early
  (cancelled, expired) exports the rows that finished.

Requests and responses are translated by litellm's Gemini translation (gemini_translation.py, the sync lane's,
with `custom_llm_provider="vertex_ai"`); results are read by gemini_batch's `result_line`. Each line carries its
custom_id in the request's `labels` (`batchgate_id`; Vertex's GenerateContentRequest takes labels and the output
echoes the request), so a line joins back to its job whatever order the output is in.

`prepare` writes the JSONL and uploads it at once to `gs://{bucket}/{folder}/{run}/input.jsonl` (ref
`gcs-<count>-<run>`, usable from any host); the job writes under `.../{run}/output`; `cleanup` deletes every object
under `.../{run}/`. Jobs are named `batchgate-<digest of the metadata>` (gemini_batch's `display_name`):
`find_batches` lists the jobs with that display name created since the submission began.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxy.providers import lenient
from proxy.providers.base import (
    BatchInfo,
    BatchIssue,
    BatchState,
    ErrorClass,
    PreparedInput,
    ProviderError,
    ResultLine,
)
from proxy.providers.batch_http import batch_http, provider_errors
from proxy.providers.gemini_batch import STATES as GEMINI_STATES
from proxy.providers.gemini_batch import display_name, google_answer, result_line
from proxy.providers.gemini_translation import GeminiRefusal, generate_request
from proxy.providers.google_token import GoogleToken
from proxy.providers.vertex_gcs import GcsObjects, GcsPath, json_line

log = logging.getLogger("batchgate.providers.vertex_batch")

PROVIDER = "vertex_ai"
DEFAULT_LOCATION = "us-central1"  # litellm's default Vertex location
MAX_FILE_BYTES = 1024 * 1024 * 1024  # one batch input file
MAX_REQUESTS = 200_000  # requests in one Gemini batch prediction job
LABEL = "batchgate_id"  # the request label carrying a line's custom_id
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{1,63}$")  # what Google accepts as a label value
FOLDER = "batchgate"
PREPARED = re.compile(r"^gcs-(?P<requests>[0-9]+)-(?P<run>[0-9a-f]{32})$")
LIST_PAGE = 100
MAX_LIST_PAGES = 20
CLOCK_SKEW = 60.0
# litellm params that route a Vertex call (project, region, credentials) rather than shape its request
ROUTING_PARAMS = frozenset(
    {"vertex_project", "vertex_location", "vertex_credentials", "vertex_ai_project", "vertex_ai_location",
     "vertex_ai_credentials"}
)  # fmt: skip
STATES: Mapping[str, BatchState] = {
    **GEMINI_STATES,
    "jobstatepartiallysucceeded": BatchState.COMPLETED,
    "jobstatepaused": BatchState.IN_PROGRESS,
    "jobstateupdating": BatchState.IN_PROGRESS,
}
STATUS_CODES: Mapping[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


@dataclass(frozen=True, slots=True)
class VertexTarget:
    """Where a deployment's jobs run: `base_url` is the API host root (`https://{location}-aiplatform.googleapis
    .com`, or the simulator's), `bucket` the GCS folder (`gs://bucket[/folder]`) inputs and outputs go through,
    `token` a static OAuth access token, else `credentials` (litellm's `vertex_credentials`: a file's path or its
    JSON), else Application Default Credentials (google_token.GoogleToken)."""

    base_url: str
    project: str
    location: str
    bucket: str
    token: str | None
    credentials: str | Mapping[str, Any] | None = None


def vertex_target(
    *, api_base: str | None, bucket: str | None, token: str | None, params: Mapping[str, Any]
) -> VertexTarget:
    """Where a deployment's jobs run: project and location as litellm reads them (`vertex_project` /
    `vertex_location` in its params, else VERTEXAI_PROJECT / VERTEXAI_LOCATION; location default us-central1), the
    host from `api_base` or the location. ValueError (its reason) without a project or a usable bucket."""
    project = _param(params, "project") or os.environ.get("VERTEXAI_PROJECT")
    location = _param(params, "location") or os.environ.get("VERTEXAI_LOCATION") or DEFAULT_LOCATION
    if not project:
        raise ValueError("vertex_ai batches need vertex_project (or VERTEXAI_PROJECT)")
    GcsPath.parse(bucket or "")  # refused now rather than at the first batch
    credentials = params.get("vertex_credentials") or params.get("vertex_ai_credentials")
    return VertexTarget(api_base or vertex_host(location), project, location, bucket or "", token, credentials)


def _param(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(f"vertex_{name}") or params.get(f"vertex_ai_{name}")
    return str(value) if value else None


def vertex_host(location: str) -> str:
    """The regional API host of a location (`global` has no region prefix)."""
    prefix = "" if location == "global" else f"{location}-"
    return f"https://{prefix}aiplatform.googleapis.com"


def request_params(extra_params: Mapping[str, Any]) -> dict[str, Any]:
    """The deployment's litellm params that shape a request (routing params left out)."""
    return {key: value for key, value in extra_params.items() if key not in ROUTING_PARAMS}


def encode_request(
    custom_id: str, body: Mapping[str, Any], *, model: str, extra_params: Mapping[str, Any] | None = None
) -> bytes:
    """One input line, `{"request": GenerateContentRequest}` with the custom_id in its labels, for an OpenAI chat
    body translated as litellm translates it for `vertex_ai`. ProviderError(BAD_LINE, custom_id=...) when the
    body does not translate or the custom_id is no label value (batchgate's job ids always are)."""
    message = f"The batch line id {custom_id!r} is not a Vertex AI label value (lowercase letters, digits, _ -)."
    if LABEL_VALUE.match(custom_id):
        try:
            request = generate_request(
                body, model=model, extra_params=request_params(extra_params or {}), provider=PROVIDER
            )
            labels = lenient.string_pairs(request.get("labels"))
            request["labels"] = {**labels, LABEL: custom_id}
            return orjson.dumps({"request": request})
        except GeminiRefusal as exc:
            message = str(exc)
        except (TypeError, ValueError, RecursionError) as exc:
            message = f"The request body cannot be written as a Vertex AI batch request: {exc}."
    raise ProviderError(
        400, message, code="invalid_batch_line", classification=ErrorClass.BAD_LINE, custom_id=custom_id
    )


class VertexBatchClient:
    """Vertex AI batch prediction jobs for one deployment (`upstream_model` without `vertex_ai/`)."""

    def __init__(
        self,
        target: VertexTarget,
        *,
        upstream_model: str,
        timeout: float = 60.0,
        staging_dir: Path | None = None,
        extra_params: Mapping[str, Any] | None = None,
        gcs_root: str | None = None,
    ) -> None:
        # one token for the jobs and their objects, refreshed for both
        auth = GoogleToken(target.token, target.credentials)
        self._http = batch_http(base_url=target.base_url.rstrip("/") + "/v1/", headers={}, timeout=timeout, auth=auth)
        self._gcs = GcsObjects(auth=auth, timeout=timeout, root=gcs_root)
        self._parent = f"projects/{target.project}/locations/{target.location}"
        self._folder = GcsPath.parse(target.bucket).child(FOLDER)
        self._model = upstream_model.removeprefix(f"{PROVIDER}/")
        self._extra = dict(extra_params or {})
        self._staging = staging_dir or Path(tempfile.gettempdir()) / "batchgate-vertex"

    def _run(self, prepared: str) -> tuple[GcsPath, int]:
        found = PREPARED.match(prepared)
        if found is None:
            raise ProviderError(404, f"No prepared Vertex AI batch input {prepared!r}.", code="not_found")
        return self._folder.child(found["run"]), int(found["requests"])

    # the input

    async def prepare(
        self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], *, metadata: Mapping[str, str]
    ) -> PreparedInput:
        """Write the JSONL input and upload it to the bucket (see the module notes)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        run = uuid.uuid4().hex
        staging = self._staging / f"{run}.jsonl"
        try:
            count, size = await self._stage(requests, staging)
            if count == 0:
                return PreparedInput("", 0)
            if size > MAX_FILE_BYTES or count > MAX_REQUESTS:
                raise ProviderError(
                    413,
                    f"A Vertex AI batch input is at most {MAX_FILE_BYTES} bytes and {MAX_REQUESTS} requests.",
                    code="request_too_large",
                    classification=ErrorClass.BAD_REQUEST,
                )
            await self._gcs.upload(self._folder.child(run).child("input.jsonl"), staging, size)
            return PreparedInput(f"gcs-{count}-{run}", count)
        finally:
            staging.unlink(missing_ok=True)

    async def _stage(self, requests: AsyncIterable[tuple[str, Mapping[str, Any]]], out_path: Path) -> tuple[int, int]:
        count = size = 0
        with out_path.open("wb") as out:
            async for custom_id, body in requests:
                # litellm's translation is CPU work: off the event loop
                line = await asyncio.to_thread(
                    encode_request, custom_id, body, model=self._model, extra_params=self._extra
                )
                count += 1
                size += len(line) + 1
                out.write(line)
                out.write(b"\n")
        return count, size

    async def create(self, prepared: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        run, _ = self._run(prepared)
        job = {
            "displayName": display_name(metadata),
            "model": f"publishers/google/models/{self._model}",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [run.child("input.jsonl").uri]}},
            "outputConfig": {
                "predictionsFormat": "jsonl",
                "gcsDestination": {"outputUriPrefix": run.child("output").uri},
            },
        }
        with provider_errors():
            response = await self._http.post(f"{self._parent}/batchPredictionJobs", json=job)
        try:
            return job_info(google_answer(response), metadata=metadata)
        except ProviderError as exc:
            if exc.status != 404:
                raise
            # a missing input is a 400; a 404 here is the model or location: preparing again would not help
            raise ProviderError(404, exc.message, code=exc.code, classification=ErrorClass.BAD_REQUEST) from None

    async def cleanup(self, prepared: str) -> None:
        """Delete the run's objects: its input and whatever the job wrote (missing is fine)."""
        if not prepared:
            return
        run, _ = self._run(prepared)
        for name in await self._gcs.names(GcsPath(run.bucket, run.name + "/")):
            await self._gcs.delete(GcsPath(run.bucket, name))

    # the job

    async def retrieve(self, batch_id: str) -> BatchInfo:
        with provider_errors():
            response = await self._http.get(batch_id)
        return job_info(google_answer(response))

    async def cancel(self, batch_id: str) -> BatchInfo:
        with provider_errors():
            response = await self._http.post(f"{batch_id}:cancel", json={})
        google_answer(response)
        return await self.retrieve(batch_id)

    async def results(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The ended job's rows from every `predictions*.jsonl` in its output directory, each translated into an
        OpenAI chat.completion (or error) and joined back by its label."""
        if not batch.output_file_id:
            return
        directory = GcsPath.parse(batch.output_file_id)
        for name in await self._gcs.names(GcsPath(directory.bucket, directory.name + "/")):
            if not name.rsplit("/", 1)[-1].startswith("predictions") or not name.endswith(".jsonl"):
                continue
            async for raw in self._gcs.lines(GcsPath(directory.bucket, name)):
                row = json_line(raw)
                if row is None:
                    continue
                key, item = row_item(row)
                line = await asyncio.to_thread(result_line, key, item, self._model)
                if line is None:
                    lenient.skipped_line("no batchgate_id label", raw)
                else:
                    yield line

    # crash recovery

    async def find_batches(self, metadata: Mapping[str, str], *, since: float, prepared: str) -> list[BatchInfo]:
        """Jobs created since `since` whose display name is this metadata's, newest first."""
        display = display_name(metadata)
        earliest = since - CLOCK_SKEW
        found: list[BatchInfo] = []
        params: dict[str, str | int] = {"pageSize": LIST_PAGE, "filter": f'display_name="{display}"'}
        for _ in range(MAX_LIST_PAGES):
            with provider_errors():
                response = await self._http.get(f"{self._parent}/batchPredictionJobs", params=params)
            page = google_answer(response)
            jobs = page.get("batchPredictionJobs")
            for job in jobs if isinstance(jobs, list) else []:
                if lenient.mapping(job).get("displayName") != display:
                    continue
                try:
                    info = job_info(job, metadata=metadata)
                except ProviderError as exc:
                    log.warning("skipping an unreadable listed job: %s", exc)
                    continue
                if info.created_at >= earliest:
                    found.append(info)
            token = lenient.text(page.get("nextPageToken"))
            if token is None:
                break
            params["pageToken"] = token
        return sorted(found, key=lambda info: info.created_at, reverse=True)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._gcs.aclose()


def job_info(job: Any, *, metadata: Mapping[str, str] | None = None) -> BatchInfo:
    """A BatchPredictionJob as BatchInfo; once it has ended, `output_file_id` is its GCS output directory."""
    if not isinstance(job, dict):
        raise lenient.malformed("batch prediction job", job)
    name = lenient.text(job.get("name"))
    if name is None:
        raise lenient.malformed("batch prediction job (no name)", job)
    state = lenient.batch_state(job.get("state"), STATES)
    stats = lenient.mapping(job.get("completionStats"))
    succeeded = lenient.count(stats.get("successfulCount")) or 0
    failed = lenient.count(stats.get("failedCount")) or 0
    incomplete = lenient.count(stats.get("incompleteCount")) or 0
    directory = lenient.text(lenient.mapping(job.get("outputInfo")).get("gcsOutputDirectory"))
    error = lenient.mapping(job.get("error"))
    message = lenient.text(error.get("message"))
    code = lenient.count(error.get("code"))
    return BatchInfo(
        batch_id=name,
        state=state,
        created_at=lenient.timestamp(job.get("createTime")) or 0.0,
        metadata=dict(metadata or {}),
        total=(succeeded + failed + incomplete) if stats else None,
        completed=succeeded if stats else None,
        failed=failed if stats else None,
        output_file_id=directory if state.is_terminal else None,
        errors=message,
        issues=(BatchIssue(str(code) if code is not None else None, message),) if message else (),
    )


def row_item(row: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """An output row as (custom_id from the echoed request's labels, a gemini_batch result item: `{"response"}`
    or `{"error": {code, message, status}}`)."""
    labels = lenient.mapping(lenient.mapping(row.get("request")).get("labels"))
    key = lenient.identifier(labels.get(LABEL))
    response = row.get("response")
    if isinstance(response, dict) and response:
        return key, {"response": response}
    return key, {"error": status_error(row.get("status"))}


def status_error(status: Any) -> dict[str, Any]:
    """A failed row's `status` (text, often `"<reason>: {google error JSON}"`) as a Google error object; a
    status that names no code is taken as a server error (retried)."""
    text = lenient.text(status) or "The request failed."
    start = text.find("{")
    if start >= 0:
        try:
            embedded = lenient.mapping(lenient.mapping(orjson.loads(text[start:])).get("error"))
        except orjson.JSONDecodeError:
            embedded = {}
        code = lenient.count(embedded.get("code"))
        if code is not None:
            return {"code": code, "message": lenient.text(embedded.get("message")) or text,
                    "status": lenient.text(embedded.get("status"))}  # fmt: skip
    named = next((code for name, code in STATUS_CODES.items() if name in text), 500)
    return {"code": named, "message": text, "status": None}
