"""CPU per Anthropic batch line: `messages_request` (the translation both lanes share) over 1,000 varied bodies
(plain, tools with a tool-call turn, json_schema, an image), after one warm-up line. Also times the intake
check a deferred Anthropic call pays (`check_batch_line`). Usage:

    LITELLM_LOCAL_MODEL_COST_MAP=True python bench/bench_claude_line.py [--lines 1000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from typing import Any

from proxy.providers.anthropic_translation import messages_request
from proxy.requests import ChatRequest, check_batch_line
from proxy.settings import Config

CLAUDE = "claude-haiku-4-5"

PNG = (  # one transparent pixel
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}


def body(index: int) -> dict[str, Any]:
    """The `index`th of four kinds of body, each with its own text."""
    text = f"question {index}: what is a batch?"
    kind = index % 4
    if kind == 0:
        return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}
    if kind == 1:
        return {
            "messages": [
                {"role": "user", "content": text},
                {"role": "assistant", "content": "", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
            "tools": [WEATHER],
            "tool_choice": "auto",
        }
    if kind == 2:
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        return {
            "messages": [{"role": "user", "content": text}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": True, "schema": schema}},
            "temperature": 0.2,
        }
    return {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": PNG}}],
            }
        ],
        "max_completion_tokens": 300,
    }


def run(lines: int) -> float:
    """CPU seconds for `lines` translations."""
    bodies = [body(i) for i in range(lines)]
    started = time.process_time()
    for item in bodies:
        messages_request(item, model=CLAUDE, extra_params={})
    return time.process_time() - started


def intake(lines: int) -> float:
    """CPU seconds for `lines` intake checks of deferred Anthropic calls (what the API process pays)."""
    config = Config.model_validate(
        {"model_list": [{"model_name": CLAUDE, "litellm_params": {"model": f"anthropic/{CLAUDE}", "api_key": "k"}}]}
    )
    chats = [ChatRequest(body={"model": CLAUDE, **body(i)}, model=CLAUDE, stream=False, size=0) for i in range(lines)]
    started = time.process_time()
    for chat in chats:
        check_batch_line(chat, config)
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm is imported on the first line
    started = time.process_time()
    messages_request(body(0), model=CLAUDE, extra_params={})
    print(f"first line (imports litellm): {time.process_time() - started:.2f} s CPU")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        run(args.lines)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        return 0
    seconds = run(args.lines)
    print(f"{args.lines} lines: {seconds:.2f} s CPU, {seconds / args.lines * 1000:.2f} ms CPU per line")
    seconds = intake(args.lines)
    print(f"{args.lines} intake checks: {seconds:.2f} s CPU, {seconds / args.lines * 1000:.2f} ms CPU per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
