"""Builds one completion client and one batch client per configured model, sharing one connection pool."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequest
from proxy.providers.base import BatchClient, CompletionClient
from proxy.providers.openai_http import OpenAICompletionClient, RetryPolicy, SharedSession
from proxy.settings import Config, ModelDeployment

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


def is_simulated(deployment: ModelDeployment) -> bool:
    """A deployment with no provider key and no explicit api_base is served by the simulated upstream."""
    params = deployment.litellm_params
    return params.api_key is None and params.api_base is None


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
        for deployment in config.model_list:
            base_url, api_key = _endpoint(deployment, simulator_url)
            self._endpoints[deployment.model_name] = (base_url, api_key)
            self._completion[deployment.model_name] = OpenAICompletionClient(
                http=self._http,
                base_url=base_url,
                api_key=api_key,
                upstream_model=deployment.litellm_params.upstream_model,
                retry=retry,
            )

    def completion(self, model_name: str) -> CompletionClient:
        try:
            return self._completion[model_name]
        except KeyError:
            raise InvalidRequest(f"The model `{model_name}` does not exist.", param="model") from None

    def batch(self, model_name: str) -> BatchClient:
        client = self._batch.get(model_name)
        if client is None:
            from proxy.providers.openai_batch import OpenAIBatchClient  # noqa: PLC0415 - built on first use

            base_url, api_key = self._endpoints[model_name]
            client = OpenAIBatchClient(base_url=base_url, api_key=api_key, timeout=self._batch_timeout)
            self._batch[model_name] = client
        return client

    def secrets(self) -> list[str]:
        return [key for _, key in self._endpoints.values() if key]

    async def aclose(self) -> None:
        for client in self._batch.values():
            await client.aclose()
        await self._http.close()


def _endpoint(deployment: ModelDeployment, simulator_url: str | None) -> tuple[str, str | None]:
    params = deployment.litellm_params
    api_key = params.api_key.get_secret_value() if params.api_key else None
    if is_simulated(deployment) and simulator_url:
        return simulator_url.rstrip("/") + "/v1", "sk-simulated"
    if params.api_base:
        return params.api_base, api_key
    if params.provider not in OPENAI_SHAPED_BASES:
        raise ValueError(
            f"model {deployment.model_name}: provider {params.provider!r} needs an api_base "
            f"(OpenAI-shaped providers known without one: {', '.join(sorted(OPENAI_SHAPED_BASES))})"
        )
    return OPENAI_SHAPED_BASES[params.provider], api_key
