"""What Claude refuses, or cannot answer as OpenAI would, checked before a call leaves on ANY lane.

The sync lane (litellm) and the batch lane (anthropic_translation) both ask `refusal` first, so a call is
refused the same way on both, with a 400 naming the field, instead of being sent and refused by Anthropic
or having a field dropped that changes the answer's shape:
- `temperature` with `top_p` on Claude 4.5 and later (Anthropic refuses the pair);
- `temperature` above 1 (Anthropic's ceiling; OpenAI's is 2);
- `n` above 1 (Anthropic answers one choice);
- `logprobs` / `top_logprobs` (Anthropic returns no log probabilities);
- `input_audio` content parts (Anthropic takes no audio; litellm would drop the part and send an empty turn).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# claude-sonnet-4-5-20250929, claude-haiku-4-5, claude-opus-4-1, claude-3-5-sonnet: (major, minor)
CLAUDE_VERSION = re.compile(r"claude-(?:(?:opus|sonnet|haiku)-)?(\d+)(?:-(\d{1,2}))?(?=-|$)")
EXCLUSIVE_SAMPLING_FROM = (4, 5)
MAX_TEMPERATURE = 1.0  # OpenAI's ceiling is 2


class ClaudeRefusal(ValueError):
    """A call Claude refuses or cannot answer as asked; `param` names the field to blame."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model name, or None when the name carries no version."""
    match = CLAUDE_VERSION.search(model)
    return None if match is None else (int(match.group(1)), int(match.group(2) or 0))


def refusal(body: Mapping[str, Any], model: str) -> ClaudeRefusal | None:
    """Why the OpenAI chat `body` cannot go to Claude `model` as asked, or None."""
    version = claude_version(model)
    exclusive = version is not None and version >= EXCLUSIVE_SAMPLING_FROM
    if exclusive and body.get("temperature") is not None and body.get("top_p") is not None:
        return ClaudeRefusal(
            f"`temperature` and `top_p` cannot both be specified for {model}; send only one of them.", param="top_p"
        )
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature > MAX_TEMPERATURE:
        return ClaudeRefusal(
            f"{model} takes a temperature from 0 to {MAX_TEMPERATURE:g}; got {temperature}.", param="temperature"
        )
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return ClaudeRefusal(f"{model} answers one choice per call; `n` must be 1.", param="n")
    if body.get("logprobs") is True or body.get("top_logprobs") is not None:
        return ClaudeRefusal(f"{model} returns no log probabilities; leave out `logprobs`.", param="logprobs")
    for index, message in enumerate(body.get("messages") or ()):
        content = message.get("content") if isinstance(message, Mapping) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, Mapping) and part.get("type") == "input_audio":
                return ClaudeRefusal(
                    f"{model} takes no audio input (messages[{index}] has an input_audio part).",
                    param=f"messages[{index}].content",
                )
    return None
