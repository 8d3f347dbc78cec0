"""Google Cloud Storage objects over the JSON API (httpx), for the Vertex AI batch adapter's inputs and outputs.

Wire format (https://cloud.google.com/storage/docs/json_api, Bearer token with a storage scope):
- upload: `POST {root}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}` with the bytes;
- download: `GET {root}/storage/v1/b/{bucket}/o/{object, URL-encoded}?alt=media`;
- list: `GET {root}/storage/v1/b/{bucket}/o?prefix=...` (`items[].name`, paged by `nextPageToken`);
- delete: `DELETE {root}/storage/v1/b/{bucket}/o/{object}` (404: already gone).
Errors are Google's `{"error": {"code", "message"}}`; a missing bucket or object is 404 (ErrorClass.NOT_FOUND).
`STORAGE_EMULATOR_HOST` (the variable Google's storage clients read) points `root` at an emulator.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson

from proxy.providers import lenient
from proxy.providers.batch_http import batch_http, provider_errors
from proxy.providers.gemini_batch import google_answer

GCS_ROOT = "https://storage.googleapis.com"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
READ_CHUNK = 1 << 20
LIST_PAGE = 1000
MAX_LIST_PAGES = 50
# JSONL as plain bytes: gcp-storage-emulator parses any `application/json*` upload as one JSON document
OBJECT_TYPE = "application/octet-stream"


def gcs_root() -> str:
    """The JSON API root: an emulator's when `STORAGE_EMULATOR_HOST` names one (read when a client is built)."""
    emulator = os.environ.get(EMULATOR_ENV, "").strip().rstrip("/")
    if not emulator:
        return GCS_ROOT
    return emulator if "://" in emulator else f"http://{emulator}"


@dataclass(frozen=True, slots=True)
class GcsPath:
    """`gs://bucket/name`; `name` may be a folder prefix (no leading slash)."""

    bucket: str
    name: str

    @classmethod
    def parse(cls, uri: str) -> GcsPath:
        """ValueError unless `uri` is `gs://bucket[/name]` (a bare bucket name is taken as `gs://bucket`)."""
        rest = uri.removeprefix("gs://")
        bucket, _, name = rest.partition("/")
        if not bucket or any(char in bucket for char in " ?#"):
            raise ValueError(f"not a GCS bucket or gs:// URI: {uri!r}")
        return cls(bucket, name.strip("/"))

    def child(self, name: str) -> GcsPath:
        return GcsPath(self.bucket, f"{self.name}/{name}" if self.name else name)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


class GcsObjects:
    """Objects in GCS for one credential (`auth` sets its OAuth access token: google_token.GoogleToken)."""

    def __init__(self, *, auth: httpx.Auth | None, timeout: float, root: str | None = None) -> None:
        self._http = batch_http(base_url=(root or gcs_root()).rstrip("/") + "/", headers={}, timeout=timeout, auth=auth)

    async def upload(self, target: GcsPath, source: Path, size: int) -> None:
        """Upload a local file of `size` bytes as `target` (one media upload: the inputs are at most 1 GB)."""
        with provider_errors():
            response = await self._http.post(
                f"upload/storage/v1/b/{quote(target.bucket, safe='')}/o",
                params={"uploadType": "media", "name": target.name},
                content=_chunks(source),
                headers={"content-type": OBJECT_TYPE, "content-length": str(size)},
            )
        google_answer(response)

    async def names(self, folder: GcsPath) -> list[str]:
        """The names of the objects under `folder` (a prefix), sorted."""
        found: list[str] = []
        params: dict[str, str | int] = {"prefix": folder.name, "maxResults": LIST_PAGE}
        for _ in range(MAX_LIST_PAGES):
            with provider_errors():
                response = await self._http.get(f"storage/v1/b/{quote(folder.bucket, safe='')}/o", params=params)
            page = google_answer(response)
            items = page.get("items")
            for item in items if isinstance(items, list) else []:
                name = lenient.text(lenient.mapping(item).get("name"))
                if name is not None:
                    found.append(name)
            token = lenient.text(page.get("nextPageToken"))
            if token is None:
                break
            params["pageToken"] = token
        return sorted(found)

    async def lines(self, source: GcsPath) -> AsyncIterator[bytes]:
        """The object's non-empty lines, streamed."""
        with provider_errors():
            async with self._http.stream("GET", _object_url(source), params={"alt": "media"}) as response:
                if response.status_code >= 400:
                    await response.aread()
                    google_answer(response)
                async for text in response.aiter_lines():
                    if text.strip():
                        yield text.encode()

    async def delete(self, target: GcsPath) -> None:
        """Delete one object (missing is fine)."""
        with provider_errors():
            response = await self._http.delete(_object_url(target))
        if response.status_code not in (204, 404):
            google_answer(response)

    async def aclose(self) -> None:
        await self._http.aclose()


def _object_url(target: GcsPath) -> str:
    return f"storage/v1/b/{quote(target.bucket, safe='')}/o/{quote(target.name, safe='')}"


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk


def json_line(raw: bytes) -> dict[str, object] | None:
    """One JSONL line as an object, or None (logged) when it is not one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        lenient.skipped_line("not JSON", raw)
        return None
    return value if isinstance(value, dict) else None
