"""OpenAI's files + batches API over httpx (also Azure, vLLM, Groq, the simulator: the same wire format).

Uploads stream from a file on disk and result files are read line by line, so a 50,000-line batch is never
held whole in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from proxy.providers.base import BatchInfo, BatchState, LineOutcome, ResultLine

CHAT_ENDPOINT = "/v1/chat/completions"
LIST_PAGE = 100
MAX_LIST_PAGES = 50
UNFINISHED_CODES = {"batch_expired": LineOutcome.EXPIRED, "batch_cancelled": LineOutcome.CANCELLED}


class BatchApiError(Exception):
    """The provider refused a files/batches call."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


KEEPALIVE_EXPIRY = 2.0


class OpenAIBatchClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float = 60.0,
        completion_window: str = "24h",
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Idle connections are dropped after 2 s: servers commonly close them after 5 s (uvicorn does), and a
        # request sent on a connection the server is closing fails with "server disconnected".
        transport = httpx.AsyncHTTPTransport(retries=2, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY))
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout, transport=transport
        )
        self._completion_window = completion_window

    async def upload_file(self, path: Path, *, filename: str) -> str:
        with path.open("rb") as handle:
            response = await self._http.post(
                "files", data={"purpose": "batch"}, files={"file": (filename, handle, "application/jsonl")}
            )
        file_id: str = json_or_raise(response)["id"]
        return file_id

    async def create_batch(self, input_file_id: str, *, metadata: Mapping[str, str]) -> BatchInfo:
        response = await self._http.post(
            "batches",
            json={
                "input_file_id": input_file_id,
                "endpoint": CHAT_ENDPOINT,
                "completion_window": self._completion_window,
                "metadata": dict(metadata),
            },
        )
        return batch_info(json_or_raise(response))

    async def retrieve_batch(self, batch_id: str) -> BatchInfo:
        return batch_info(json_or_raise(await self._http.get(f"batches/{batch_id}")))

    async def cancel_batch(self, batch_id: str) -> BatchInfo:
        return batch_info(json_or_raise(await self._http.post(f"batches/{batch_id}/cancel")))

    async def find_batches(self, *, metadata_key: str, metadata_value: str) -> list[BatchInfo]:
        """Batches (newest first, the most recent pages) whose metadata carries the given pair."""
        found: list[BatchInfo] = []
        params: dict[str, str | int] = {"limit": LIST_PAGE}
        for _ in range(MAX_LIST_PAGES):
            page = json_or_raise(await self._http.get("batches", params=params))
            data = page.get("data") or []
            for item in data:
                if (item.get("metadata") or {}).get(metadata_key) == metadata_value:
                    found.append(batch_info(item))
            if not page.get("has_more") or not data:
                break
            params["after"] = data[-1]["id"]
        return found

    async def result_lines(self, batch: BatchInfo) -> AsyncIterator[ResultLine]:
        """The output file's lines, then the error file's, streamed and parsed one by one."""
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            async with self._http.stream("GET", f"files/{file_id}/content") as response:
                if response.status_code >= 400:
                    await response.aread()
                    json_or_raise(response)
                async for text in response.aiter_lines():
                    if text.strip():
                        yield result_line(orjson.loads(text))

    async def aclose(self) -> None:
        await self._http.aclose()


def json_or_raise(response: httpx.Response, *, code_field: str = "code") -> dict[str, Any]:
    """The JSON object of a successful answer; a BatchApiError with the provider's message otherwise
    (`code_field`: where the provider puts its error code: OpenAI `code`, Anthropic `type`)."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 400 or not isinstance(payload, dict):
        error = payload.get("error") if isinstance(payload, dict) else None
        message = error.get("message") if isinstance(error, dict) else response.text[:500]
        code = error.get(code_field) if isinstance(error, dict) else None
        raise BatchApiError(response.status_code, str(message), code=code)
    return payload


def batch_info(item: Mapping[str, Any]) -> BatchInfo:
    counts = item.get("request_counts") or {}
    return BatchInfo(
        batch_id=item["id"],
        state=BatchState(item["status"]),
        created_at=float(item.get("created_at") or 0),
        metadata=dict(item.get("metadata") or {}),
        total=int(counts.get("total") or 0),
        completed=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        output_file_id=item.get("output_file_id"),
        error_file_id=item.get("error_file_id"),
        errors=_errors_text(item.get("errors")),
    )


def _errors_text(errors: Any) -> str | None:
    if not isinstance(errors, dict):
        return None
    messages = [
        (f"line {entry['line']}: " if entry.get("line") else "") + str(entry.get("message"))
        for entry in errors.get("data") or []
        if isinstance(entry, dict)
    ]
    return "; ".join(messages) or None


def result_line(item: Mapping[str, Any]) -> ResultLine:
    custom_id = str(item.get("custom_id"))
    response = item.get("response")
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        request_id = response.get("request_id") if isinstance(response.get("request_id"), str) else None
        if 200 <= status < 300:
            return ResultLine(custom_id, LineOutcome.SUCCEEDED, status, body, request_id=request_id)
        found = body.get("error") if isinstance(body, dict) else None
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        return ResultLine(
            custom_id,
            LineOutcome.ERRORED,
            status,
            body if isinstance(body, dict) else None,
            error_code=error.get("code") or error.get("type"),
            error_message=error.get("message"),
            request_id=request_id,
        )
    raw_error = item.get("error")
    unfinished: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = unfinished.get("code")
    return ResultLine(
        custom_id,
        UNFINISHED_CODES.get(str(code), LineOutcome.ERRORED),
        None,
        None,
        error_code=code,
        error_message=unfinished.get("message"),
    )
