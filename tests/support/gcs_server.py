"""A real GCS-compatible server on loopback for the Vertex AI tests: gcp-storage-emulator (the JSON API: media
uploads, downloads, listing, deletes), in memory, in a thread of the test process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from tests.support.servers import free_port


@contextlib.contextmanager
def gcs_server(*buckets: str) -> Iterator[str]:
    """The emulator's JSON API root URL, with `buckets` created; everything it held is gone on exit."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server: Any = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for bucket in buckets:
            httpx.post(url + "/storage/v1/b", json={"name": bucket}, timeout=10).raise_for_status()
        yield url
    finally:
        server.stop()


def object_names(url: str, bucket: str) -> list[str]:
    """Every object name in `bucket` (one page: the tests hold few)."""
    response = httpx.get(f"{url}/storage/v1/b/{bucket}/o", timeout=10)
    response.raise_for_status()
    return sorted(item["name"] for item in response.json().get("items", []))
