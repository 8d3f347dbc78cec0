"""Builds one completion client and one batch client per configured model, sharing one connection pool.

Which adapters a deployment gets follows from its provider (`litellm_params.model` = `provider/model`):

| provider | synchronous calls | batches |
| --- | --- | --- |
| `openai`, `groq` | OpenAICompletionClient (raw bytes, aiohttp) | OpenAIBatchClient (Groq: under `/openai/v1`) |
| other OpenAI-shaped (below) | OpenAICompletionClient | none: never deferred (`NO_BATCH_API` says why) |
| `anthropic` | LitellmCompletionClient | AnthropicBatchClient (Message Batches) |
| `mistral` | OpenAICompletionClient | MistralBatchClient (`/v1/batch/jobs`) |
| `xai` | OpenAICompletionClient | XaiBatchClient (counters, paged results) |
| `azure` | LitellmCompletionClient | OpenAIBatchClient at the Azure resource (azure_batch), with `batch_deployment` |
| `gemini` | LitellmCompletionClient | GeminiBatchClient (Gemini API Batch Mode) |
| `bedrock` | LitellmCompletionClient | BedrockBatchClient (jobs on S3): Claude, `batch_s3_bucket` + `batch_role_arn` |
| `vertex_ai` | LitellmCompletionClient | VertexBatchClient (batch prediction jobs on GCS), with `batch_gcs_bucket` |
| any other litellm provider | LitellmCompletionClient | none: never deferred |

Only a batch API batchgate speaks at the paths, prices and shapes it was built for gets the batch lane: a provider
with another shape sent to the OpenAI adapter fails every batch until the deadline guard pays list price.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from proxy.endpoints import Endpoint, queue_group, split_group
from proxy.errors import InvalidRequest
from proxy.providers.base import BatchClient, CompletionClient, ErrorClass, ProviderError
from proxy.providers.litellm_clients import close_cached_clients
from proxy.providers.openai_http import OpenAICompletionClient, RetryPolicy, SharedSession
from proxy.settings import Config, LitellmParams, ModelDeployment

# Providers that speak OpenAI's chat-completions and batch wire format, and where they live by default.
OPENAI_SHAPED_BASES: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "hosted_vllm": "http://localhost:8000/v1",
    "groq": "https://api.groq.com/openai/v1",
    "xai": "https://api.x.ai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "mistral": "https://api.mistral.ai/v1",
}
ANTHROPIC_BASE = "https://api.anthropic.com"
# where the simulated upstream serves a provider whose batch API has its own paths (its face's prefix)
SIMULATOR_FACES: Mapping[str, str] = {"mistral": "/mistral", "xai": "/xai"}
GEMINI_BASE = "https://generativelanguage.googleapis.com/v1beta"  # litellm's default for `gemini/...`
GEMINI_KEY_ENV = ("GEMINI_API_KEY", "GOOGLE_API_KEY")  # where litellm finds a Gemini key the config does not give
PRICE_FIELDS = frozenset(LitellmParams.model_fields)
DEFAULT_BEDROCK_MIN_RECORDS = 100  # Bedrock's default quota of records per batch job (bedrock_batch.py)

BatchApi = Literal["openai", "anthropic", "mistral", "xai", "azure", "gemini", "bedrock", "vertex"]
# Groq's batch API is OpenAI's shape (24h..7d windows); it is billed at 75% of list (proxy/pricing.py)
BATCH_APIS: Mapping[str, BatchApi] = {
    "openai": "openai",
    "groq": "openai",
    "anthropic": "anthropic",
    "mistral": "mistral",  # /v1/batch/jobs (proxy/providers/mistral_batch.py)
    "xai": "xai",  # counters, paged results (proxy/providers/xai_batch.py)
    "gemini": "gemini",  # Gemini API Batch Mode (gemini_batch.py)
}
# Azure's batches run on a Global-Batch deployment: an azure model is batchable once `batch_deployment` names one
AZURE_NO_DEPLOYMENT = "no batch_deployment (the Global-Batch deployment its batch lines name) is configured"
# Vertex AI's batch jobs read and write GCS: a vertex_ai model is batchable once `batch_gcs_bucket` names a bucket
VERTEX_NO_BUCKET = "no batch_gcs_bucket (the GCS bucket its batch inputs and outputs go through) is configured"
VERTEX_TOKEN_ENV = "VERTEXAI_ACCESS_TOKEN"  # noqa: S105 - where the batch lane finds an access token the config lacks
NOT_SPOKEN = "batchgate does not speak its batch API yet"
# Bedrock's batch jobs read from and write to S3 and run as a service role: both come from the config
BEDROCK_NOT_SET = "no batch_s3_bucket and batch_role_arn (the S3 location and service role of its batch jobs)"
BEDROCK_NOT_CLAUDE = "batchgate writes Bedrock batch records for Anthropic Claude models only"
NO_BATCH_API: Mapping[str, str] = {
    "together_ai": NOT_SPOKEN,  # its own job objects ({"job": ...})
    "fireworks_ai": NOT_SPOKEN,  # batch inference jobs over datasets
    "hosted_vllm": "has no batch API",
    "deepseek": "has no batch API",  # its discount is off-peak hours, not batches
}
# Providers whose batch API (as batchgate speaks it) takes each endpoint besides chat; a provider not listed keeps
# that endpoint's calls on the sync lane. Anthropic's Message Batches take only messages.
ENDPOINT_BATCH_PROVIDERS: Mapping[Endpoint, frozenset[str]] = {
    # azure: a Global Batch of `/embeddings` lines; gemini: asyncBatchEmbedContent (gemini_embedding.py)
    Endpoint.EMBEDDINGS: frozenset({"openai", "azure", "gemini"}),
    # OpenAI's Batch API takes `/v1/responses` lines (its `endpoint` enum); no other batch API batchgate speaks does
    Endpoint.RESPONSES: frozenset({"openai"}),
}
# OpenAI-shaped providers that serve `/v1/responses` themselves (relayed byte for byte); any other provider's
# Responses calls go through litellm.aresponses (proxy/providers/litellm_responses.py)
RESPONSES_RAW_PROVIDERS = frozenset({"openai", "xai", "groq"})


def batch_api(deployment: ModelDeployment) -> BatchApi | None:
    """The batch API a deployment's provider offers batchgate, or None when its calls can only go synchronously."""
    params = deployment.litellm_params
    if params.provider == "azure":
        return "azure" if params.batch_deployment else None
    if params.provider == "bedrock":
        return "bedrock" if bedrock_reason(params) is None else None
    if params.provider == "vertex_ai":
        return "vertex" if params.batch_gcs_bucket else None
    return BATCH_APIS.get(params.provider)


def bedrock_reason(params: LitellmParams) -> str | None:
    """Why a bedrock deployment has no batch lane (None: it has one)."""
    from proxy.providers.bedrock_batch import bedrock_model  # noqa: PLC0415 - a small module, no litellm

    if not bedrock_model(params.upstream_model):
        return BEDROCK_NOT_CLAUDE
    return None if params.batch_s3_bucket and params.batch_role_arn else BEDROCK_NOT_SET


def no_batch_reason(deployment: ModelDeployment, endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS) -> str | None:
    """Why a deployment's calls to `endpoint` are never deferred to the batch lane, naming its provider (None:
    batchable)."""
    provider = deployment.litellm_params.provider
    if batch_api(deployment) is None:
        if provider == "azure":
            return f"azure: {AZURE_NO_DEPLOYMENT}"
        if provider == "bedrock":
            return f"bedrock: {bedrock_reason(deployment.litellm_params)}"
        if provider == "vertex_ai":
            return f"vertex_ai: {VERTEX_NO_BUCKET}"
        return f"{provider}: {NO_BATCH_API.get(provider, NOT_SPOKEN)}"
    takes = ENDPOINT_BATCH_PROVIDERS.get(endpoint)
    if takes is not None and provider not in takes:
        return f"{provider}: its batch API does not take {endpoint.path}"
    return None


def encode_batch_line(
    deployment: ModelDeployment,
    body: Mapping[str, Any],
    *,
    custom_id: str,
    endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS,
) -> tuple[bytes, int] | None:
    """The batch line (OpenAI) or Message Batch request (Anthropic) the deployment's batch adapter writes for
    `body`, and the provider's byte limit for one; None when the deployment has no batch lane. Raises
    ProviderError(BAD_LINE) when the body cannot be written as one."""
    kind = batch_api(deployment) if no_batch_reason(deployment, endpoint) is None else None
    return None if kind is None else LINE_ENCODERS[kind](deployment, body, custom_id, endpoint)


# Each adapter's module is imported on first use: only deferred calls need it.
def _openai_line(
    deployment: ModelDeployment, body: Mapping[str, Any], custom_id: str, endpoint: Endpoint
) -> tuple[bytes, int]:
    from proxy.providers.openai_batch import MAX_FILE_BYTES, encode_line  # noqa: PLC0415

    model = deployment.litellm_params.upstream_model
    return encode_line(custom_id, body, model=model, url=endpoint.path), MAX_FILE_BYTES


def _azure_line(
    deployment: ModelDeployment, body: Mapping[str, Any], custom_id: str, endpoint: Endpoint
) -> tuple[bytes, int]:
    from proxy.providers.azure_batch import azure_batch_path  # noqa: PLC0415
    from proxy.providers.openai_batch import MAX_FILE_BYTES, encode_line  # noqa: PLC0415

    params = deployment.litellm_params
    url = azure_batch_path(endpoint is Endpoint.EMBEDDINGS)
    return encode_line(custom_id, body, model=params.batch_deployment or params.upstream_model, url=url), MAX_FILE_BYTES


def _anthropic_line(
    deployment: ModelDeployment, body: Mapping[str, Any], custom_id: str, endpoint: Endpoint
) -> tuple[bytes, int]:
    from proxy.providers.anthropic_batch import MAX_BODY_BYTES, encode_request  # noqa: PLC0415

    model = deployment.litellm_params.upstream_model
    extra = litellm_extra(deployment)
    request, _ = encode_request(custom_id, body, model=model, custom_id=custom_id, extra_params=extra)
    return request, MAX_BODY_BYTES


def _mistral_line(
    deployment: ModelDeployment, body: Mapping[str, Any], custom_id: str, endpoint: Endpoint
) -> tuple[bytes, int]:
    from proxy.providers import mistral_batch  # noqa: PLC0415

    return mistral_batch.encode_line(custom_id, body), mistral_batch.MAX_FILE_BYTES


def _gemini_line(
    deployment: ModelDeployment, body: Mapping[str, Any], custom_id: str, endpoint: Endpoint
) -> tuple[bytes, int]:
    from proxy.providers import gemini_batch  # noqa: PLC0415

    model, extra = deployment.litellm_params.upstream_model, litellm_extra(deployment)
    embeddings = endpoint is Endpoint.EMBEDDINGS
    line = gemini_batch.encode_lines(custom_id, body, model=model, extra_params=extra, embeddings=embeddings)
    return line, gemini_batch.MAX_FILE_BYTES


def _vertex_line(
    deployment: ModelDeployment, body: Mapping[str, Any], custom_id: str, endpoint: Endpoint
) -> tuple[bytes, int]:
    """Vertex AI: Gemini's translation (gemini_batch), its own line shape."""
    from proxy.providers import vertex_batch  # noqa: PLC0415

    model = deployment.litellm_params.upstream_model
    line = vertex_batch.encode_request(custom_id, body, model=model, extra_params=litellm_extra(deployment))
    return line, vertex_batch.MAX_FILE_BYTES


def _bedrock_line(
    deployment: ModelDeployment, body: Mapping[str, Any], custom_id: str, endpoint: Endpoint
) -> tuple[bytes, int]:
    from proxy.providers import bedrock_batch  # noqa: PLC0415

    extra = bedrock_batch.translation_params(litellm_extra(deployment))
    model = deployment.litellm_params.upstream_model
    line = bedrock_batch.encode_record(custom_id, body, model_id=model, extra_params=extra)
    return line, bedrock_batch.MAX_FILE_BYTES


LineEncoder = Callable[[ModelDeployment, Mapping[str, Any], str, Endpoint], tuple[bytes, int]]
LINE_ENCODERS: Mapping[BatchApi, LineEncoder] = {
    "openai": _openai_line,
    "xai": _openai_line,  # xAI's batch input is OpenAI's line shape
    "azure": _azure_line,
    "anthropic": _anthropic_line,
    "mistral": _mistral_line,
    "gemini": _gemini_line,
    "vertex": _vertex_line,
    "bedrock": _bedrock_line,
}


def batch_input_limit(deployment: ModelDeployment | None, endpoint: Endpoint) -> int | None:
    """The most inputs one provider batch of `endpoint` may carry across all its lines (OpenAI, and Azure's
    OpenAI-shaped Global Batch: 50,000 embedding inputs), or None when only the line count is limited."""
    if deployment is None or endpoint is not Endpoint.EMBEDDINGS or batch_api(deployment) not in ("openai", "azure"):
        return None
    from proxy.providers.openai_batch import MAX_EMBEDDING_INPUTS  # noqa: PLC0415 - deferred calls only

    return MAX_EMBEDDING_INPUTS


def batch_inputs(body: Mapping[str, Any], endpoint: Endpoint) -> int:
    """How many inputs `body` counts against `batch_input_limit` (1 for a chat call)."""
    if endpoint is not Endpoint.EMBEDDINGS:
        return 1
    from proxy.providers.openai_batch import embedding_inputs  # noqa: PLC0415 - deferred calls only

    return embedding_inputs(body)


def litellm_extra(deployment: ModelDeployment) -> dict[str, Any]:
    """The deployment's own litellm params (not its prices), passed to litellm's translation on every lane."""
    return {k: v for k, v in (deployment.litellm_params.model_extra or {}).items() if k not in PRICE_FIELDS}


def _client_extra(deployment: ModelDeployment, simulator_url: str | None) -> dict[str, Any]:
    """litellm_extra plus, for a real Azure resource, the api_version and Entra ID token the environment gives."""
    extra = litellm_extra(deployment)
    if deployment.litellm_params.provider == "azure" and not (is_simulated(deployment) and simulator_url):
        from proxy.providers.azure_config import azure_settings  # noqa: PLC0415

        extra |= azure_settings(deployment.litellm_params).litellm_params()
    return extra


def is_simulated(deployment: ModelDeployment) -> bool:
    """A deployment with no provider key and no explicit api_base is served by the simulated upstream (which
    speaks OpenAI's, Azure's, Anthropic's and Gemini's wire formats; other providers often take their credentials
    from the environment, so they are never simulated; an Azure one whose environment names it neither)."""
    params = deployment.litellm_params
    if params.provider == "azure":  # AZURE_API_BASE / AZURE_API_KEY / AZURE_AD_TOKEN name a real resource
        from proxy.providers.azure_config import azure_settings  # noqa: PLC0415

        return not azure_settings(params).configured
    simulable = params.provider in OPENAI_SHAPED_BASES or params.provider in ("anthropic", "gemini")
    return simulable and params.api_key is None and params.api_base is None


class ProviderRegistry:
    def __init__(self, config: Config, *, simulator_url: str | None = None) -> None:
        limits = config.limits
        self._http = SharedSession(
            total_timeout=limits.upstream_timeout, connect_timeout=limits.upstream_connect_timeout
        )
        retry = RetryPolicy(
            max_attempts=config.retry.max_attempts,
            base_delay=config.retry.base_delay,
            max_delay=config.retry.max_delay,
            budget=config.retry.budget,
        )
        self._completion: dict[str, CompletionClient] = {}
        self._batch: dict[str, BatchClient] = {}
        self._batch_builders: Mapping[BatchApi, Callable[[str, Endpoint], BatchClient]] = {
            "openai": self._openai_batch,
            "azure": self._azure_batch,
            "anthropic": self._anthropic_batch,
            "mistral": self._mistral_batch,
            "xai": self._xai_batch,
            "gemini": self._gemini_batch,
            "vertex": self._vertex_batch,
            "bedrock": self._bedrock_batch,
        }
        self._batch_timeout = limits.upstream_connect_timeout * 6
        self._endpoints: dict[str, tuple[str, str | None]] = {}
        self._batch_apis: dict[str, BatchApi | None] = {}
        self._no_batch: dict[str, str | None] = {}
        self._endpoint_batches: dict[str, dict[Endpoint, str | None]] = {}
        self._providers: dict[str, str] = {}
        self._batch_settings: dict[str, tuple[str, str, int]] = {}
        self._litellm_extra: dict[str, dict[str, Any]] = {}
        self._batch_deployments: dict[str, str | None] = {}
        self._bedrock_params: dict[str, LitellmParams] = {}
        self._vertex: dict[str, ModelDeployment] = {}
        for deployment in config.model_list:
            name = deployment.model_name
            knobs = config.batch_knobs(name)
            self._batch_settings[name] = (
                deployment.litellm_params.upstream_model,
                knobs.completion_window,
                knobs.file_expiry,
            )
            self._batch_apis[name] = batch_api(deployment)
            self._providers[name] = deployment.litellm_params.provider
            self._no_batch[name] = no_batch_reason(deployment)
            self._endpoint_batches[name] = {
                endpoint: no_batch_reason(deployment, endpoint) for endpoint in ENDPOINT_BATCH_PROVIDERS
            }
            self._litellm_extra[name] = _client_extra(deployment, simulator_url)
            self._batch_deployments[name] = deployment.litellm_params.batch_deployment
            if deployment.litellm_params.provider == "bedrock":
                self._bedrock_params[name] = deployment.litellm_params
            if deployment.litellm_params.provider == "vertex_ai":
                self._vertex[name] = deployment
            if deployment.litellm_params.provider in OPENAI_SHAPED_BASES:
                base_url, api_key = _endpoint(deployment, simulator_url)
                self._endpoints[name] = (base_url, api_key)
                self._completion[name] = OpenAICompletionClient(
                    http=self._http,
                    base_url=base_url,
                    api_key=api_key,
                    upstream_model=deployment.litellm_params.upstream_model,
                    retry=retry,
                    reshape=deployment.litellm_params.provider != "openai",
                )
            else:
                self._completion[name] = self._litellm_client(deployment, simulator_url, retry, limits.upstream_timeout)
            self._completion[queue_group(name, Endpoint.EMBEDDINGS)] = self._embedding_client(
                deployment, simulator_url, retry, limits.upstream_timeout
            )
            self._completion[queue_group(name, Endpoint.RESPONSES)] = self._responses_client(
                deployment, simulator_url, retry, limits.upstream_timeout
            )

    def _litellm_client(
        self, deployment: ModelDeployment, simulator_url: str | None, retry: RetryPolicy, timeout: float
    ) -> CompletionClient:
        from proxy.providers.litellm_completion import LitellmCompletionClient  # noqa: PLC0415

        params = deployment.litellm_params
        api_base, api_key = _litellm_endpoint(deployment, simulator_url)
        default_base = {"azure": "", "gemini": GEMINI_BASE}.get(params.provider, ANTHROPIC_BASE)  # azure: from config
        if params.provider == "gemini" and api_key is None:  # the key litellm would read: masked, and for batches
            api_key = _gemini_env_key()
        self._endpoints[deployment.model_name] = (api_base or default_base, api_key)
        if params.provider == "vertex_ai" and api_key is None:  # the batch lane's access token: masked too
            self._endpoints[deployment.model_name] = (api_base or "", os.environ.get(VERTEX_TOKEN_ENV))
        return LitellmCompletionClient(
            model=params.model,
            api_base=api_base,
            api_key=api_key,
            retry=retry,
            timeout=timeout,
            extra_params=_client_extra(deployment, simulator_url),
        )

    def _embedding_client(
        self, deployment: ModelDeployment, simulator_url: str | None, retry: RetryPolicy, timeout: float
    ) -> CompletionClient:
        """The deployment's client for `/v1/embeddings`: raw bytes for OpenAI-shaped providers, else litellm."""
        from proxy.providers.litellm_embedding import LitellmEmbeddingClient  # noqa: PLC0415

        raw = deployment.litellm_params.provider in OPENAI_SHAPED_BASES
        return self._endpoint_client(
            deployment,
            simulator_url,
            retry,
            timeout,
            raw=raw,
            path="/embeddings",
            through_litellm=LitellmEmbeddingClient,
        )

    def _responses_client(
        self, deployment: ModelDeployment, simulator_url: str | None, retry: RetryPolicy, timeout: float
    ) -> CompletionClient:
        """The deployment's client for `/v1/responses`: raw bytes where the provider serves it, else litellm."""
        from proxy.providers.litellm_responses import LitellmResponsesClient  # noqa: PLC0415

        raw = deployment.litellm_params.provider in RESPONSES_RAW_PROVIDERS
        return self._endpoint_client(
            deployment,
            simulator_url,
            retry,
            timeout,
            raw=raw,
            path="/responses",
            through_litellm=LitellmResponsesClient,
        )

    def _endpoint_client(
        self,
        deployment: ModelDeployment,
        simulator_url: str | None,
        retry: RetryPolicy,
        timeout: float,
        *,
        raw: bool,
        path: str,
        through_litellm: Callable[..., CompletionClient],
    ) -> CompletionClient:
        """An endpoint's client: the provider's bytes relayed at `path` (`raw`), else `through_litellm`."""
        params = deployment.litellm_params
        if raw:
            base_url, api_key = _endpoint(deployment, simulator_url)
            return OpenAICompletionClient(
                http=self._http,
                base_url=base_url,
                api_key=api_key,
                upstream_model=params.upstream_model,
                retry=retry,
                path=path,
            )
        api_base, api_key = _litellm_endpoint(deployment, simulator_url)
        return through_litellm(
            model=params.model,
            api_base=api_base,
            api_key=api_key,
            retry=retry,
            timeout=timeout,
            extra_params=_client_extra(deployment, simulator_url),
        )

    def stored_responses(self) -> list[tuple[str, str | None]]:
        """(base_url, api_key) of each distinct upstream that serves `/v1/responses` itself, in config order:
        where a stored response (`resp_...`) is looked up, cancelled or deleted."""
        found: list[tuple[str, str | None]] = []
        for name, endpoint in self._endpoints.items():
            if self._providers.get(name) in RESPONSES_RAW_PROVIDERS and endpoint not in found:
                found.append(endpoint)
        return found

    @property
    def http(self) -> SharedSession:
        """The pooled HTTP session every OpenAI-shaped client shares."""
        return self._http

    def batchable(self, model_name: str) -> bool:
        """Whether the model's provider has a batch adapter (a model that has none is never deferred)."""
        return self._batch_apis.get(model_name) is not None

    def completion(self, model_name: str) -> CompletionClient:
        """The synchronous client of a model name (chat) or of a queue group (its endpoint's client)."""
        try:
            return self._completion[model_name]
        except KeyError:
            raise InvalidRequest(f"The model `{model_name}` does not exist.", param="model") from None

    def batch(self, model_name: str) -> BatchClient:
        """The model's batch client, built on first use with the deployment's upstream model, `completion_window`
        and `file_expiry` as the registry's config had them. ProviderError(501) when it has no batch API."""
        client = self._batch.get(model_name)
        if client is not None:
            return client
        group, (model_name, endpoint) = model_name, split_group(model_name)
        kind = self._batch_apis.get(model_name)
        if endpoint is not Endpoint.CHAT_COMPLETIONS and kind is not None:
            kind = kind if self._endpoint_batches.get(model_name, {}).get(endpoint) is None else None
        if kind is None:
            why = (
                self._endpoint_batches.get(model_name, {}).get(endpoint)
                or self._no_batch.get(model_name)
                or "unknown model"
            )
            raise ProviderError(
                501,
                f"Model `{model_name}` has no batch lane: {why}.",
                classification=ErrorClass.BAD_REQUEST,
            )
        client = self._batch_builders[kind](model_name, endpoint)
        self._batch[group] = client
        return client

    # Each adapter's module is imported when its first batch client is built.
    def _openai_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        from proxy.providers.openai_batch import OpenAIBatchClient  # noqa: PLC0415

        base_url, api_key = self._endpoints[model_name]
        upstream_model, completion_window, file_expiry = self._batch_settings[model_name]
        return OpenAIBatchClient(
            base_url=base_url,
            api_key=api_key,
            upstream_model=upstream_model,
            timeout=self._batch_timeout,
            completion_window=completion_window,
            file_expiry=file_expiry,
            endpoint=endpoint.path,
        )

    def _anthropic_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        from proxy.providers.anthropic_batch import AnthropicBatchClient  # noqa: PLC0415

        base_url, api_key = self._endpoints[model_name]
        return AnthropicBatchClient(
            base_url=base_url,
            api_key=api_key,
            upstream_model=self._batch_settings[model_name][0],
            timeout=self._batch_timeout,
            extra_params=self._litellm_extra[model_name],
        )

    def _mistral_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        from proxy.providers.mistral_batch import MistralBatchClient  # noqa: PLC0415

        return MistralBatchClient(**self._plain_batch_args(model_name))

    def _xai_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        from proxy.providers.xai_batch import XaiBatchClient  # noqa: PLC0415

        return XaiBatchClient(**self._plain_batch_args(model_name))

    def _plain_batch_args(self, model_name: str) -> dict[str, Any]:
        base_url, api_key = self._endpoints[model_name]
        upstream_model = self._batch_settings[model_name][0]
        return {
            "base_url": base_url,
            "api_key": api_key,
            "upstream_model": upstream_model,
            "timeout": self._batch_timeout,
        }

    def _gemini_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        from proxy.providers.gemini_batch import GeminiBatchClient  # noqa: PLC0415

        base_url, api_key = self._endpoints[model_name]
        return GeminiBatchClient(
            base_url=base_url,
            api_key=api_key,
            upstream_model=self._batch_settings[model_name][0],
            timeout=self._batch_timeout,
            extra_params=self._litellm_extra[model_name],
            embeddings=endpoint is Endpoint.EMBEDDINGS,
        )

    def _azure_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        """The Azure resource's batch client: the endpoint style its `api_version` picks, as litellm does."""
        from proxy.providers.azure_batch import azure_batch_client, azure_endpoint  # noqa: PLC0415

        base_url, api_key = self._endpoints[model_name]
        if not base_url:
            raise ProviderError(
                501,
                f"Model `{model_name}` has no batch lane: azure batches need the resource's api_base.",
                classification=ErrorClass.BAD_REQUEST,
            )
        version, token = (self._litellm_extra[model_name].get(name) for name in ("api_version", "azure_ad_token"))
        resource = azure_endpoint(
            base_url,
            api_key=api_key,
            api_version=str(version) if version else None,
            ad_token=str(token) if token else None,
        )
        upstream_model, _, file_expiry = self._batch_settings[model_name]
        return azure_batch_client(
            resource,
            batch_deployment=self._batch_deployments.get(model_name) or upstream_model,
            timeout=self._batch_timeout,
            file_expiry=file_expiry,
            embeddings=endpoint is Endpoint.EMBEDDINGS,
        )

    def _bedrock_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        from proxy.providers.bedrock_aws import AwsAccount  # noqa: PLC0415 - built on first use
        from proxy.providers.bedrock_batch import BedrockBatchClient  # noqa: PLC0415

        params = self._bedrock_params[model_name]
        extra = self._litellm_extra[model_name]
        assert params.batch_s3_bucket is not None  # batch_api said so
        assert params.batch_role_arn is not None
        bucket = params.batch_s3_bucket
        return BedrockBatchClient(
            model_id=params.upstream_model,
            s3_uri=bucket if bucket.startswith("s3://") else f"s3://{bucket}",
            role_arn=params.batch_role_arn,
            account=AwsAccount.from_params(extra),
            timeout=self._batch_timeout,
            min_records=params.batch_min_records or DEFAULT_BEDROCK_MIN_RECORDS,
            extra_params=extra,
        )

    def _vertex_batch(self, model_name: str, endpoint: Endpoint) -> BatchClient:
        """The Vertex AI batch client (vertex_batch.vertex_target: where its jobs run and with which token)."""
        from proxy.providers.vertex_batch import VertexBatchClient, vertex_target  # noqa: PLC0415

        params = self._vertex[model_name].litellm_params
        extra = self._litellm_extra[model_name]
        _, token = self._endpoints[model_name]
        try:
            target = vertex_target(api_base=params.api_base, bucket=params.batch_gcs_bucket, token=token, params=extra)
        except ValueError as exc:
            raise ProviderError(
                501, f"Model `{model_name}` has no batch lane: {exc}.", classification=ErrorClass.BAD_REQUEST
            ) from None
        upstream_model, _, _ = self._batch_settings[model_name]
        return VertexBatchClient(target, upstream_model=upstream_model, timeout=self._batch_timeout, extra_params=extra)

    def secrets(self) -> list[str]:
        from proxy.providers.bedrock_aws import CREDENTIAL_PARAMS, resolved  # noqa: PLC0415 - a small module

        aws = [
            resolved(value)
            for params in self._bedrock_params.values()
            for name, value in (params.model_extra or {}).items()
            if name in CREDENTIAL_PARAMS[1:] and value
        ]  # the secret key and session token, masked like provider keys
        keys = [key for _, key in self._endpoints.values() if key]
        tokens = [str(extra["azure_ad_token"]) for extra in self._litellm_extra.values() if extra.get("azure_ad_token")]
        return keys + tokens + [value for value in aws if value]

    async def aclose(self) -> None:
        for client in self._batch.values():
            await client.aclose()
        await self._http.close()
        await close_cached_clients()  # litellm's own, for this event loop


def _endpoint(deployment: ModelDeployment, simulator_url: str | None) -> tuple[str, str | None]:
    params = deployment.litellm_params
    api_key = params.api_key.get_secret_value() if params.api_key else None
    if is_simulated(deployment) and simulator_url:
        face = SIMULATOR_FACES.get(params.provider, "")
        return simulator_url.rstrip("/") + face + "/v1", "sk-simulated"
    if params.api_base:
        return params.api_base, api_key
    if params.provider not in OPENAI_SHAPED_BASES:
        raise ValueError(
            f"model {deployment.model_name}: provider {params.provider!r} needs an api_base "
            f"(OpenAI-shaped providers known without one: {', '.join(sorted(OPENAI_SHAPED_BASES))})"
        )
    return OPENAI_SHAPED_BASES[params.provider], api_key


def _litellm_endpoint(deployment: ModelDeployment, simulator_url: str | None) -> tuple[str | None, str | None]:
    """(api_base, api_key) for litellm: Anthropic's base is the host root (litellm and the batch client add
    `/v1/messages...`), so a configured `.../v1` is cut back to the root."""
    params = deployment.litellm_params
    api_key = params.api_key.get_secret_value() if params.api_key else None
    if is_simulated(deployment) and simulator_url:
        root = simulator_url.rstrip("/")
        return (root + "/v1beta" if params.provider == "gemini" else root), "sk-simulated"
    base = params.api_base
    if params.provider == "azure":  # the config's, else litellm's AZURE_* environment variables
        from proxy.providers.azure_config import azure_settings  # noqa: PLC0415

        azure = azure_settings(params)
        return azure.api_base, azure.api_key
    if base and params.provider == "anthropic":
        base = base.rstrip("/").removesuffix("/v1")
    return base, api_key


def _gemini_env_key() -> str | None:
    """The Gemini key litellm's sync lane would use when the config gives none (read when the client is built)."""
    return next((os.environ[name] for name in GEMINI_KEY_ENV if os.environ.get(name)), None)
