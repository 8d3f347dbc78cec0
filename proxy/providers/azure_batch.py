"""Azure OpenAI Global Batch: OpenAI's files + batches wire format, addressed the Azure way.

A deployment is declared as LiteLLM users declare Azure (`model: azure/<real-time deployment>`, `api_base`: the
resource, `api_version`, `api_key`) plus `batch_deployment`, the Global-Batch deployment whose name is every batch
line's `model` (Azure runs batches only on a deployment of that type, with its own enqueued-token quota).

- `api_version` v1, latest or preview (or an `api_base` ending in `/openai/v1`): the v1 endpoint,
  `{resource}/openai/v1/files`, `.../batches`, with `Authorization: Bearer <key>`;
- a dated `api_version` (`2025-03-01-preview`), or none (DEFAULT_API_VERSION): the legacy endpoint,
  `{resource}/openai/files?api-version=...`, with `api-key: <key>`.

The same choice litellm makes for the synchronous calls of the deployment (`_is_azure_v1_api_version`).
Azure does not expire a global batch at 24 h (its status never becomes `expired` on its own: the deadline guard
bounds a job), accepts file expiries of 14 to 30 days only (so `file_expiry` is clamped into that range; without
one a resource holds only 500 batch files), and answers a create over the enqueued-token quota with 400
`token_limit_exceeded` in "fail-fast" regions (a TRANSIENT_CAPACITY ProviderError, which proxy/worker/capacity.py
backs off). Statuses (`Validating`), ISO timestamps and null counts are read by openai_batch.batch_info.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.providers.openai_batch import DEFAULT_FILE_EXPIRY, OpenAIBatchClient

V1_VERSIONS = frozenset({"v1", "latest", "preview"})
DEFAULT_API_VERSION = "2025-03-01-preview"  # a dated version with batches and file expiry (Azure's batch how-to)
AZURE_CHAT_ENDPOINT = "/chat/completions"  # the batch endpoint and line `url` in Azure's own samples
AZURE_EMBEDDINGS_ENDPOINT = "/embeddings"  # the same spelling for a Global Batch of embeddings
MIN_FILE_EXPIRY = 14 * 24 * 3600  # Azure: expires_after.seconds from 1209600 ...
MAX_FILE_EXPIRY = 30 * 24 * 3600  # ... to 2592000
_V1_SUFFIX = "/openai/v1"
_LEGACY_SUFFIX = "/openai"


@dataclass(frozen=True, slots=True)
class AzureEndpoint:
    """Where and how one Azure resource is called: the base URL of its files and batches, the credential
    header, and the query string every call carries (`api-version` on the legacy endpoint)."""

    base_url: str
    auth_headers: dict[str, str]
    params: dict[str, str]

    @property
    def v1(self) -> bool:
        return not self.params


def azure_endpoint(
    api_base: str, *, api_key: str | None, api_version: str | None, ad_token: str | None = None
) -> AzureEndpoint:
    """The endpoint of the resource at `api_base` (the resource root, `https://RES.openai.azure.com`; a trailing
    `/openai` or `/openai/v1` is accepted). v1 when `api_version` is v1/latest/preview or the base ends in
    `/openai/v1`; the legacy endpoint otherwise, at `api_version` (DEFAULT_API_VERSION when None). Without an
    `api_key`, a Microsoft Entra ID `ad_token` is sent as `Authorization: Bearer` on either endpoint."""
    base = api_base.rstrip("/")
    v1 = base.endswith(_V1_SUFFIX) or (api_version or "") in V1_VERSIONS
    root = base.removesuffix(_V1_SUFFIX).removesuffix(_LEGACY_SUFFIX)
    entra = {"Authorization": f"Bearer {ad_token}"} if ad_token else {}
    if v1:
        return AzureEndpoint(f"{root}{_V1_SUFFIX}/", {"Authorization": f"Bearer {api_key}"} if api_key else entra, {})
    return AzureEndpoint(
        f"{root}{_LEGACY_SUFFIX}/",
        {"api-key": api_key} if api_key else entra,
        {"api-version": api_version or DEFAULT_API_VERSION},
    )


def azure_file_expiry(seconds: int | None) -> int:
    """`file_expiry` moved into the range Azure accepts (14 to 30 days); None takes the shortest."""
    return min(max(seconds or DEFAULT_FILE_EXPIRY, MIN_FILE_EXPIRY), MAX_FILE_EXPIRY)


def azure_batch_path(embeddings: bool) -> str:
    """The batch `endpoint` (and every line's `url`) of an Azure batch of chat completions or of embeddings."""
    return AZURE_EMBEDDINGS_ENDPOINT if embeddings else AZURE_CHAT_ENDPOINT


def azure_batch_client(
    endpoint: AzureEndpoint,
    *,
    batch_deployment: str,
    timeout: float,
    file_expiry: int | None,
    embeddings: bool = False,
) -> OpenAIBatchClient:
    """An OpenAIBatchClient speaking to one Azure resource, writing `batch_deployment` as every line's model;
    `embeddings`: a batch of `/embeddings` lines instead of chat completions. Raises nothing; every later call
    raises ProviderError as OpenAIBatchClient does."""
    return OpenAIBatchClient(
        base_url=endpoint.base_url,
        api_key=None,
        upstream_model=batch_deployment,
        timeout=timeout,
        completion_window="24h",  # the only value Azure accepts ("any other value ... your job will fail")
        file_expiry=azure_file_expiry(file_expiry),
        auth_headers=endpoint.auth_headers,
        params=endpoint.params,
        endpoint=azure_batch_path(embeddings),
    )
