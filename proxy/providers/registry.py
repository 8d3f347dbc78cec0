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
| any other litellm provider | LitellmCompletionClient | none: never deferred |

Only a batch API batchgate speaks at the paths, prices and shapes it was built for gets the batch lane: a provider
with another shape sent to the OpenAI adapter fails every batch until the deadline guard pays list price.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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

BatchApi = Literal["openai", "anthropic", "mistral", "xai", "azure", "gemini"]
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
NOT_SPOKEN = "batchgate does not speak its batch API yet"
NO_BATCH_API: Mapping[str, str] = {
    "together_ai": NOT_SPOKEN,  # its own job objects ({"job": ...})
    "fireworks_ai": NOT_SPOKEN,  # batch inference jobs over datasets
    "hosted_vllm": "has no batch API",
    "deepseek": "has no batch API",  # its discount is off-peak hours, not batches
}
# Providers whose batch API (as batchgate speaks it) takes each endpoint besides chat; a provider not listed keeps
# that endpoint's calls on the sync lane. Anthropic's Message Batches take only messages.
ENDPOINT_BATCH_PROVIDERS: Mapping[Endpoint, frozenset[str]] = {Endpoint.EMBEDDINGS: frozenset({"openai"})}


def batch_api(deployment: ModelDeployment) -> BatchApi | None:
    """The batch API a deployment's provider offers batchgate, or None when its calls can only go synchronously."""
    params = deployment.litellm_params
    if params.provider == "azure":
        return "azure" if params.batch_deployment else None
    return BATCH_APIS.get(params.provider)


def no_batch_reason(deployment: ModelDeployment, endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS) -> str | None:
    """Why a deployment's calls to `endpoint` are never deferred to the batch lane, naming its provider (None:
    batchable)."""
    provider = deployment.litellm_params.provider
    if batch_api(deployment) is None:
        if provider == "azure":
            return f"azure: {AZURE_NO_DEPLOYMENT}"
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
    model = deployment.litellm_params.upstream_model
    if kind in ("openai", "xai"):  # xAI's batch input is OpenAI's line shape
        from proxy.providers.openai_batch import MAX_FILE_BYTES, encode_line  # noqa: PLC0415 - deferred calls only

        return encode_line(custom_id, body, model=model, url=endpoint.path), MAX_FILE_BYTES
    if kind == "azure":
        from proxy.providers.azure_batch import AZURE_CHAT_ENDPOINT  # noqa: PLC0415
        from proxy.providers.openai_batch import MAX_FILE_BYTES, encode_line  # noqa: PLC0415

        batch_model = deployment.litellm_params.batch_deployment or model
        return encode_line(custom_id, body, model=batch_model, url=AZURE_CHAT_ENDPOINT), MAX_FILE_BYTES
    if kind == "anthropic":
        from proxy.providers.anthropic_batch import MAX_BODY_BYTES, encode_request  # noqa: PLC0415

        request, _ = encode_request(
            custom_id, body, model=model, custom_id=custom_id, extra_params=litellm_extra(deployment)
        )
        return request, MAX_BODY_BYTES
    if kind == "mistral":
        from proxy.providers import mistral_batch  # noqa: PLC0415 - deferred calls only

        return mistral_batch.encode_line(custom_id, body), mistral_batch.MAX_FILE_BYTES
    if kind == "gemini":
        from proxy.providers import gemini_batch  # noqa: PLC0415 - deferred calls only

        line = gemini_batch.encode_request(custom_id, body, model=model, extra_params=litellm_extra(deployment))
        return line, gemini_batch.MAX_FILE_BYTES
    return None


def batch_input_limit(deployment: ModelDeployment | None, endpoint: Endpoint) -> int | None:
    """The most inputs one provider batch of `endpoint` may carry across all its lines (OpenAI: 50,000 embedding
    inputs), or None when only the line count is limited."""
    if deployment is None or endpoint is not Endpoint.EMBEDDINGS or batch_api(deployment) != "openai":
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


def is_simulated(deployment: ModelDeployment) -> bool:
    """A deployment with no provider key and no explicit api_base is served by the simulated upstream (which
    speaks OpenAI's, Azure's, Anthropic's and Gemini's wire formats; other providers often take their credentials
    from the environment, so they are never simulated)."""
    params = deployment.litellm_params
    simulable = params.provider in OPENAI_SHAPED_BASES or params.provider in ("anthropic", "azure", "gemini")
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
        self._batch_timeout = limits.upstream_connect_timeout * 6
        self._endpoints: dict[str, tuple[str, str | None]] = {}
        self._batch_apis: dict[str, BatchApi | None] = {}
        self._no_batch: dict[str, str | None] = {}
        self._endpoint_batches: dict[str, dict[Endpoint, str | None]] = {}
        self._batch_settings: dict[str, tuple[str, str, int]] = {}
        self._litellm_extra: dict[str, dict[str, Any]] = {}
        self._batch_deployments: dict[str, str | None] = {}
        for deployment in config.model_list:
            name = deployment.model_name
            knobs = config.batch_knobs(name)
            self._batch_settings[name] = (
                deployment.litellm_params.upstream_model,
                knobs.completion_window,
                knobs.file_expiry,
            )
            self._batch_apis[name] = batch_api(deployment)
            self._no_batch[name] = no_batch_reason(deployment)
            self._endpoint_batches[name] = {
                endpoint: no_batch_reason(deployment, endpoint) for endpoint in ENDPOINT_BATCH_PROVIDERS
            }
            self._litellm_extra[name] = litellm_extra(deployment)
            self._batch_deployments[name] = deployment.litellm_params.batch_deployment
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
        return LitellmCompletionClient(
            model=params.model,
            api_base=api_base,
            api_key=api_key,
            retry=retry,
            timeout=timeout,
            extra_params=litellm_extra(deployment),
        )

    def _embedding_client(
        self, deployment: ModelDeployment, simulator_url: str | None, retry: RetryPolicy, timeout: float
    ) -> CompletionClient:
        """The deployment's client for `/v1/embeddings`: raw bytes for OpenAI-shaped providers, else litellm."""
        params = deployment.litellm_params
        if params.provider in OPENAI_SHAPED_BASES:
            base_url, api_key = _endpoint(deployment, simulator_url)
            return OpenAICompletionClient(
                http=self._http,
                base_url=base_url,
                api_key=api_key,
                upstream_model=params.upstream_model,
                retry=retry,
                path="/embeddings",
            )
        from proxy.providers.litellm_embedding import LitellmEmbeddingClient  # noqa: PLC0415

        api_base, api_key = _litellm_endpoint(deployment, simulator_url)
        return LitellmEmbeddingClient(
            model=params.model,
            api_base=api_base,
            api_key=api_key,
            retry=retry,
            timeout=timeout,
            extra_params=litellm_extra(deployment),
        )

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
        base_url, api_key = self._endpoints[model_name]
        upstream_model, completion_window, file_expiry = self._batch_settings[model_name]
        if kind == "azure":
            client = self._azure_batch(model_name, file_expiry)
        elif kind == "anthropic":
            from proxy.providers.anthropic_batch import AnthropicBatchClient  # noqa: PLC0415 - built on first use

            client = AnthropicBatchClient(
                base_url=base_url,
                api_key=api_key,
                upstream_model=upstream_model,
                timeout=self._batch_timeout,
                extra_params=self._litellm_extra[model_name],
            )
        elif kind == "mistral":
            from proxy.providers.mistral_batch import MistralBatchClient  # noqa: PLC0415 - built on first use

            client = MistralBatchClient(
                base_url=base_url, api_key=api_key, upstream_model=upstream_model, timeout=self._batch_timeout
            )
        elif kind == "xai":
            from proxy.providers.xai_batch import XaiBatchClient  # noqa: PLC0415 - built on first use

            client = XaiBatchClient(
                base_url=base_url, api_key=api_key, upstream_model=upstream_model, timeout=self._batch_timeout
            )
        elif kind == "gemini":
            from proxy.providers.gemini_batch import GeminiBatchClient  # noqa: PLC0415 - built on first use

            client = GeminiBatchClient(
                base_url=base_url,
                api_key=api_key,
                upstream_model=upstream_model,
                timeout=self._batch_timeout,
                extra_params=self._litellm_extra[model_name],
            )
        else:
            from proxy.providers.openai_batch import OpenAIBatchClient  # noqa: PLC0415 - built on first use

            client = OpenAIBatchClient(
                base_url=base_url,
                api_key=api_key,
                upstream_model=upstream_model,
                timeout=self._batch_timeout,
                completion_window=completion_window,
                file_expiry=file_expiry,
                endpoint=endpoint.path,
            )
        self._batch[group] = client
        return client

    def _azure_batch(self, model_name: str, file_expiry: int) -> BatchClient:
        """The Azure resource's batch client: the endpoint style its `api_version` picks, as litellm does."""
        from proxy.providers.azure_batch import azure_batch_client, azure_endpoint  # noqa: PLC0415

        base_url, api_key = self._endpoints[model_name]
        if not base_url:
            raise ProviderError(
                501,
                f"Model `{model_name}` has no batch lane: azure batches need the resource's api_base.",
                classification=ErrorClass.BAD_REQUEST,
            )
        version = self._litellm_extra[model_name].get("api_version")
        endpoint = azure_endpoint(base_url, api_key=api_key, api_version=str(version) if version else None)
        upstream_model, _, _ = self._batch_settings[model_name]
        return azure_batch_client(
            endpoint,
            batch_deployment=self._batch_deployments.get(model_name) or upstream_model,
            timeout=self._batch_timeout,
            file_expiry=file_expiry,
        )

    def secrets(self) -> list[str]:
        return [key for _, key in self._endpoints.values() if key]

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
    if base and params.provider == "anthropic":
        base = base.rstrip("/").removesuffix("/v1")
    return base, api_key


def _gemini_env_key() -> str | None:
    """The Gemini key litellm's sync lane would use when the config gives none (read when the client is built)."""
    return next((os.environ[name] for name in GEMINI_KEY_ENV if os.environ.get(name)), None)
