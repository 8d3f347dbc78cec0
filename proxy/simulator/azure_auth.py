"""Azure OpenAI's request rules, as strict as the real service, for the OpenAI face's handlers at Azure's paths.

- v1: `/openai/v1/chat/completions`, `/openai/v1/files...`, `/openai/v1/batches...`, with
  `Authorization: Bearer <key>`;
- legacy: `/openai/deployments/{deployment}/chat/completions`, `/openai/files...`, `/openai/batches...`, each with
  `?api-version=`, and `api-key: <key>`.

A legacy call without `api-version` is answered 404 "Resource not found", and a key sent the other style's way
401, as Azure answers them; a Microsoft Entra ID token (the `azure_ad_token` knob) is a Bearer token on either
style. Files take `expires_after` of 14 to 30 days only.
"""

from __future__ import annotations

from starlette.requests import Request

from proxy.errors import NotFound, Unauthorized

AZURE_PREFIX = "/openai/"
V1_PREFIX = "/openai/v1/"
MIN_EXPIRES_AFTER_S = 14 * 24 * 3600  # Azure: expires_after.seconds from 1209600 ...
MAX_EXPIRES_AFTER_S = 30 * 24 * 3600  # ... to 2592000
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)


def is_azure(request: Request) -> bool:
    """Whether the request came in at one of Azure's paths."""
    return request.url.path.startswith(AZURE_PREFIX)


def is_legacy(request: Request) -> bool:
    return is_azure(request) and not request.url.path.startswith(V1_PREFIX)


def authorize(request: Request, api_key: str | None, *, ad_token: str | None = None) -> None:
    """Legacy: `api-version` present and the key in `api-key`; v1: the key as a Bearer token. `api_key` None
    accepts any non-empty key. `ad_token`: a Microsoft Entra ID token, accepted as a Bearer token on both styles
    (as Azure accepts one). Raises NotFound (no api-version) or Unauthorized."""
    if is_legacy(request) and not request.query_params.get("api-version"):
        raise NotFound("Resource not found", code="404")
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    bearer = bearer.strip() if scheme.lower() == "bearer" else ""
    if ad_token is not None and bearer == ad_token:
        return
    key = request.headers.get("api-key", "") if is_legacy(request) else bearer
    key = key.strip()
    if not key or (api_key is not None and key != api_key):
        raise Unauthorized(ACCESS_DENIED, code="401")


def check_expiry(seconds: int | None, param: str) -> str | None:
    """Why an Azure `expires_after` (seconds) is refused, or None when it is accepted (or not given)."""
    if seconds is None or MIN_EXPIRES_AFTER_S <= seconds <= MAX_EXPIRES_AFTER_S:
        return None
    return f"Invalid '{param}.seconds': expected an integer from {MIN_EXPIRES_AFTER_S} to {MAX_EXPIRES_AFTER_S}."
