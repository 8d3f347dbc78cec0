"""A real GCS-compatible server on loopback for the Vertex AI tests: gcp-storage-emulator (the JSON API: media
uploads, downloads, listing, deletes), in memory, in a thread of the test process."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.providers.vertex_gcs import EMULATOR_ENV
from tests.support.deferred_env import VERTEX_BUCKET
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


@contextlib.contextmanager
def vertex_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A GCS server holding VERTEX_BUCKET, named by STORAGE_EMULATOR_HOST (for batchgate and its worker
    processes); yields the simulator knobs of a Vertex AI face that reads and writes it."""
    with gcs_server(VERTEX_BUCKET) as url:
        monkeypatch.setenv(EMULATOR_ENV, url)
        yield {"gcs_url": url}


def application_default_credentials(directory: Path, simulator_url: str) -> Path:
    """A real Application Default Credentials file (workload identity federation: an `external_account` JSON, what
    `gcloud iam workload-identity-pools create-cred-config` writes) whose subject token is a local file and whose
    token endpoint is the simulator's STS face (proxy/simulator/google_oauth.py): google-auth exchanges and
    refreshes it as in production. Point GOOGLE_APPLICATION_CREDENTIALS at the path returned."""
    subject = directory / "subject-token"
    subject.write_text("a-workload-identity-token")
    audience = "//iam.googleapis.com/locations/global/workloadIdentityPools/batchgate-tests/providers/simulator"
    config = {"type": "external_account", "audience": audience,
              "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_url": f"{simulator_url}/v1/token",
              "credential_source": {"file": str(subject)}}  # fmt: skip
    path = directory / "application_default_credentials.json"
    path.write_text(json.dumps(config))
    return path
