"""The default body limit takes a vision call with a base64 image (4.4 MB), as providers do."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from proxy.settings import LimitsConfig
from tests.support.stack import MASTER_KEY, running_stack

IMAGE_BYTES = 3_320_000  # 4.4 MB once base64-encoded


def test_a_vision_body_of_4_4_mb_passes_on_the_default_limit(tmp_path: Path, redis_url: str) -> None:
    image = base64.b64encode(bytes(range(256)) * (IMAGE_BYTES // 256)).decode()
    content = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
    ]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    with running_stack(tmp_path, redis_url) as stack:
        response = httpx.post(
            stack.url + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {MASTER_KEY}"},
            timeout=60,
        )
        assert len(response.request.content) > 4_400_000
        assert response.status_code == 200, response.text[:300]
        too_large = httpx.post(
            stack.url + "/v1/chat/completions",
            content=b" " * (LimitsConfig().max_body_bytes + 1),
            headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
            timeout=60,
        )
        assert too_large.status_code == 413
