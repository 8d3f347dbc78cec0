"""An Azure deployment's endpoint and credentials, resolved as LiteLLM resolves them.

A field the deployment's `litellm_params` omits is read from litellm's environment variables: `api_base` from
`AZURE_API_BASE`, `api_key` from `AZURE_API_KEY`, `api_version` from `AZURE_API_VERSION`, and a Microsoft Entra ID
(Azure AD) token, `azure_ad_token`, from `AZURE_AD_TOKEN`. A key wins over a token (as in litellm); a token alone
is sent as `Authorization: Bearer <token>` by both lanes. Tokens are taken as given: nothing refreshes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.settings import LitellmParams

ENV_NAMES = {
    "api_base": "AZURE_API_BASE",
    "api_key": "AZURE_API_KEY",
    "api_version": "AZURE_API_VERSION",
    "azure_ad_token": "AZURE_AD_TOKEN",
}


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """Where an Azure resource is and how to call it (None: neither the config nor the environment says)."""

    api_base: str | None
    api_key: str | None
    api_version: str | None
    ad_token: str | None

    @property
    def configured(self) -> bool:
        """The config or the environment names a resource or a credential (else the simulator may serve it)."""
        return any((self.api_base, self.api_key, self.ad_token))

    def litellm_params(self) -> dict[str, Any]:
        """What litellm is given besides `api_base` and `api_key`: the version and the Entra ID token."""
        given = {"api_version": self.api_version, "azure_ad_token": self.ad_token}
        return {name: value for name, value in given.items() if value}


def azure_settings(params: LitellmParams, environ: Mapping[str, str] | None = None) -> AzureSettings:
    """The deployment's Azure settings: each field from `params`, else from its environment variable."""
    env = os.environ if environ is None else environ
    extra = params.model_extra or {}

    def pick(name: str, configured: Any) -> str | None:
        value = configured if configured else env.get(ENV_NAMES[name])
        return str(value) if value else None

    return AzureSettings(
        api_base=pick("api_base", params.api_base),
        api_key=pick("api_key", params.api_key.get_secret_value() if params.api_key else None),
        api_version=pick("api_version", extra.get("api_version")),
        ad_token=pick("azure_ad_token", params.azure_ad_token.get_secret_value() if params.azure_ad_token else None),
    )
