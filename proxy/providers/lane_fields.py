"""Which request field a provider's batch lane cannot carry with the meaning the sync lane gives it.

Both lanes share one translation per provider (the body as-is for OpenAI-shaped providers; litellm's for
Anthropic), so almost every field means the same on both (docs/field-lanes.md). What remains is what the
sync lane does on the way out and a batch line cannot: litellm fetches an `http://` image URL for an Anthropic
call and sends the image inline, while a Message Batch request would hand Anthropic the plain-http URL
itself. Such a call stays on the sync lane, and the decision says which field kept it there.
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


def _plain_http_image(part: Any) -> bool:
    if not isinstance(part, Mapping) or part.get("type") != "image_url":
        return False
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    return isinstance(url, str) and url[:7].lower() == "http://"
