"""Which request field a provider's batch lane cannot carry with the meaning the sync lane gives it.

Both lanes share one translation per provider (the body as-is for OpenAI-shaped providers; litellm's for
Anthropic), so almost every field means the same on both (docs/field-lanes.md). What remains is what the
sync lane does on the way out and a batch line cannot: litellm fetches an `http://` image URL for an Anthropic
call and sends the image inline, while a Message Batch request would hand Anthropic the plain-http URL
itself. Such a call stays on the sync lane, and the decision says which field kept it there.

A few fields the provider has no counterpart for are dropped by litellm on every lane (docs/field-lanes.md,
"dropped"); `dropped_fields` names them so the decision header says so instead of dropping them silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def batch_blocker(body: Mapping[str, Any], batch_api: str | None) -> str | None:
    """The field (a path such as `messages[1].content[0].image_url`, and why) that the `batch_api` lane
    ("openai", "anthropic", None) cannot carry as the sync lane does; None when it carries them all."""
    if batch_api != "anthropic":
        return None
    for index, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, Mapping) else None
        for position, part in enumerate(content if isinstance(content, list) else ()):
            if _plain_http_image(part):
                return (
                    f"messages[{index}].content[{position}].image_url: an http:// image URL, which the sync lane "
                    "fetches and sends inline"
                )
    return None


# Fields litellm drops for Anthropic on every lane, because Claude has nothing that means the same.
ANTHROPIC_DROPPED: Mapping[str, str] = {
    "seed": "Anthropic has no seed",
    "response_format.type=json_object": "Anthropic has no schema-less JSON mode (a json_schema is carried)",
    "service_tier": "Anthropic's service tiers are not OpenAI's",
}


def dropped_fields(body: Mapping[str, Any], provider: str) -> tuple[str, ...]:
    """The request fields (keys of ANTHROPIC_DROPPED) that `provider` ("anthropic", "openai", ...) answers
    without on every lane; OpenAI-shaped providers are sent the body as written and drop nothing here."""
    if provider != "anthropic":
        return ()
    response_format = body.get("response_format")
    present = {
        "seed": body.get("seed") is not None,
        "response_format.type=json_object": isinstance(response_format, Mapping)
        and response_format.get("type") == "json_object",
        "service_tier": body.get("service_tier") is not None,
    }
    return tuple(name for name in ANTHROPIC_DROPPED if present[name])


def _plain_http_image(part: Any) -> bool:
    if not isinstance(part, Mapping) or part.get("type") != "image_url":
        return False
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    return isinstance(url, str) and url[:7].lower() == "http://"
