"""The Vertex AI adapter's pure parts: input lines (litellm's translation, the custom_id in the labels), job
states and counts, result rows joined back by label, and the registry's Vertex settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.providers.base import BatchState, ErrorClass, ProviderError
from proxy.providers.gemini_batch import result_line
from proxy.providers.google_token import GoogleToken
from proxy.providers.registry import ProviderRegistry
from proxy.providers.vertex_batch import LABEL, VertexBatchClient, encode_request, job_info, row_item
from proxy.settings import Config

MODEL = "gemini-2.5-flash"
BODY = {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_tokens": 20}  # fmt: skip


def test_a_line_is_litellm_s_vertex_request_with_the_custom_id_in_its_labels() -> None:
    routing = {"vertex_project": "p", "vertex_location": "europe-west4"}  # route the call, never enter the line
    line = orjson.loads(encode_request("dfr_0123456789_abcdef", BODY, model=MODEL, extra_params=routing))
    request = line["request"]
    assert request["labels"] == {LABEL: "dfr_0123456789_abcdef"}
    assert request["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert request["system_instruction"] == {"parts": [{"text": "Be brief."}]}
    assert request["generationConfig"]["max_output_tokens"] == 20
    assert "vertex_project" not in orjson.dumps(line).decode()


@pytest.mark.parametrize("custom_id", ["Job-UPPER", "x" * 64])
def test_a_custom_id_that_is_no_label_value_fails_its_own_line(custom_id: str) -> None:
    with pytest.raises(ProviderError) as refused:
        encode_request(custom_id, BODY, model=MODEL)
    assert (refused.value.classification, refused.value.custom_id) == (ErrorClass.BAD_LINE, custom_id)


@pytest.mark.parametrize(
    ("state", "expected", "output"),
    [
        ("JOB_STATE_QUEUED", BatchState.VALIDATING, None),
        ("JOB_STATE_RUNNING", BatchState.IN_PROGRESS, None),
        ("JOB_STATE_PARTIALLY_SUCCEEDED", BatchState.COMPLETED, "gs://b/out/prediction-model-1"),
        ("JOB_STATE_EXPIRED", BatchState.EXPIRED, "gs://b/out/prediction-model-1"),
    ],
)
def test_job_states_and_counts(state: str, expected: BatchState, output: str | None) -> None:
    job = {"name": "projects/p/locations/l/batchPredictionJobs/1", "state": state,
           "createTime": "2026-11-30T10:00:00.5Z", "outputInfo": {"gcsOutputDirectory": "gs://b/out/prediction-model-1"},
           "completionStats": {"successfulCount": "3", "failedCount": "1", "incompleteCount": "2"}}  # fmt: skip
    info = job_info(job)
    assert (info.state, info.output_file_id) == (expected, output)
    assert (info.total, info.completed, info.failed) == (6, 3, 1)
    assert info.created_at == 1796032800.5
    assert job_info({"name": "j", "state": "JOB_STATE_PENDING"}).total is None  # no stats yet: unknown


def test_result_rows_join_back_by_label_and_keep_the_error_s_status() -> None:
    request = {"contents": [], "labels": {LABEL: "job_1"}}
    google = {"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}
    key, item = row_item({"request": request, "status": f"Too Many Requests: {orjson.dumps(google).decode()}"})
    line = result_line(key, item, MODEL)
    assert line is not None
    assert (line.custom_id, line.status_code, line.error_code, line.transient) == (
        "job_1",
        429,
        "RESOURCE_EXHAUSTED",
        True,
    )
    key, item = row_item({"request": request, "status": "INVALID_ARGUMENT: the request is bad"})
    refused = result_line(key, item, MODEL)
    assert refused is not None
    assert (refused.status_code, refused.transient) == (400, False)
    assert row_item({"request": {"contents": []}, "status": "Internal error"}) == (
        None, {"error": {"code": 500, "message": "Internal error", "status": None}}
    )  # fmt: skip


def vertex_config(**params: Any) -> Config:
    litellm_params = {"model": f"vertex_ai/{MODEL}", "batch_gcs_bucket": "gs://bucket/jobs", **params}
    return Config.model_validate({"model_list": [{"model_name": "v", "litellm_params": litellm_params}]})


def test_the_registry_builds_a_vertex_client_once_project_and_bucket_are_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VERTEXAI_PROJECT", raising=False)
    monkeypatch.setenv("VERTEXAI_ACCESS_TOKEN", "ya29.token-from-the-environment")
    without_project = ProviderRegistry(vertex_config())
    assert without_project.batchable("v")
    with pytest.raises(ProviderError) as refused:
        without_project.batch("v")
    assert (refused.value.status, refused.value.classification) == (501, ErrorClass.BAD_REQUEST)
    assert "vertex_project" in refused.value.message
    not_a_bucket = ProviderRegistry(vertex_config(vertex_project="proj", batch_gcs_bucket="gs://"))
    with pytest.raises(ProviderError) as refused:
        not_a_bucket.batch("v")
    assert (refused.value.status, refused.value.classification) == (501, ErrorClass.BAD_REQUEST)
    registry = ProviderRegistry(vertex_config(vertex_project="proj", vertex_location="europe-west4"))
    assert isinstance(registry.batch("v"), VertexBatchClient)
    assert "ya29.token-from-the-environment" in registry.secrets()  # masked wherever it could leak


async def test_a_static_token_is_sent_as_it_is_and_missing_credentials_are_an_account_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await GoogleToken("ya29.static").token() == "ya29.static"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))  # google-auth's own error
    with pytest.raises(ProviderError) as refused:
        await GoogleToken(None).token()
    assert (refused.value.status, refused.value.classification) == (401, ErrorClass.ACCOUNT_PROBLEM)
    assert "missing.json" in refused.value.message
    with pytest.raises(ProviderError) as unreadable:  # a deployment's vertex_credentials of no kind google-auth has
        await GoogleToken(None, credentials='{"type": "nonsense"}').token()
    assert unreadable.value.classification is ErrorClass.ACCOUNT_PROBLEM
    assert "nonsense" in unreadable.value.message
