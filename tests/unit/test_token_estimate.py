"""The enqueued-token estimate never falls below the true count (litellm.token_counter, tiktoken) on the texts
that bytes / 4 under-counted, and stays within a stated factor of it."""

from __future__ import annotations

import litellm
import orjson
import pytest

from proxy.token_estimate import estimate_tokens

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog while the committee reviews the quarterly budget. " * 4,
    "digits": "3141592653 5897932384 6264338327 9502884197 1693993751 0582097494 " * 4,
    "code": "def f(x):\n    return {k: v**2 for k, v in x.items() if v > 0}  # ok\n" * 4,
    "cjk": "这是一个关于批处理的问题，请用中文详细回答。東京の天気はどうですか。" * 4,  # noqa: RUF001
    "hangul": "한국어 문장도 포함됩니다 오늘 날씨가 좋네요 " * 6,
    "devanagari": "यह एक परीक्षण वाक्य है जो हिंदी में लिखा गया है। " * 4,
    "emoji": "🚀🔥😀👍🏽🎉🧪🌍💡 " * 20,
    "rare_cjk": "𠀀𠀁𠀂𪚥𠮷 " * 10,
}
MAX_OVER = 3.5  # the estimate's stated ceiling, as a multiple of the true count


def batch_line(model: str, text: str) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return orjson.dumps({"custom_id": "dfr_x", "method": "POST", "url": "/v1/chat/completions", "body": body})


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo"])  # o200k_base and cl100k_base
@pytest.mark.parametrize("kind", list(TEXTS))
def test_the_estimate_is_at_least_the_true_count_and_within_the_stated_factor(model: str, kind: str) -> None:
    text = TEXTS[kind]
    true = litellm.token_counter(model=model, messages=[{"role": "user", "content": text}])
    estimate = estimate_tokens(batch_line(model, text))
    assert true <= estimate <= MAX_OVER * true, (true, estimate)


UNDER_COUNTED = [("gpt-4o-mini", "emoji"), ("gpt-4o-mini", "rare_cjk"), ("gpt-3.5-turbo", "hangul"),
                 ("gpt-3.5-turbo", "devanagari")]  # fmt: skip


@pytest.mark.parametrize(("model", "kind"), UNDER_COUNTED)
def test_bytes_over_four_under_counted_what_the_estimate_covers(model: str, kind: str) -> None:
    line = batch_line(model, TEXTS[kind])
    true = litellm.token_counter(model=model, messages=[{"role": "user", "content": TEXTS[kind]}])
    assert len(line) / 4 < true <= estimate_tokens(line)


def test_the_weights_per_character() -> None:
    assert estimate_tokens(b"") == 0
    assert estimate_tokens(b"abcdef") == 2
    assert estimate_tokens(b"abcdefg") == 3  # rounded up
    assert estimate_tokens("中文".encode()) == 2
    assert estimate_tokens("é".encode()) == 1
    assert estimate_tokens("🚀".encode()) == 4
    assert estimate_tokens(b"\xff\xfe") == 2  # invalid UTF-8: one replacement character a byte
