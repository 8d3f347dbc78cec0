"""A cheap estimate of the prompt tokens a batch line holds, never below the true count in practice.

Providers cap the prompt tokens of a model's open batches (the enqueued-token limit). Estimating them as JSONL
bytes / 4 under-counts every text that is not English: a CJK character is about one token but three UTF-8
bytes, an emoji up to three tokens in four bytes, and digit runs or code about one token per three characters.
An under-estimate is worse than an over-estimate: a batch the provider refuses for the limit while our estimate
says it fits is retried without end. So, per character of the line's JSON text:

- ASCII: 1/3 of a token (English prose is ~4-5 characters a token; digit groups and code ~3);
- other characters of the Basic Multilingual Plane (Cyrillic, Greek, Arabic, Hebrew, CJK, Hangul, Thai,
  Devanagari...): 1 token each;
- characters beyond it (4 UTF-8 bytes: emoji, rare CJK ideographs): 3 tokens each.

Measured against litellm.token_counter on whole batch lines (tests/unit/test_token_estimate.py holds the
bounds), the estimate is 1.0x-3.4x the true count: with gpt-4o-mini (o200k_base) ~2.3x on English prose, ~1.1x
on digits and code, ~2.0x on CJK and Hangul, ~2.4x on emoji, ~1.1x on rare CJK ideographs; with gpt-3.5-turbo
(cl100k_base) 1.0x-2.3x. It costs ~13 µs per 650-byte line (1,000 lines: 13 ms), against ~230 µs for tiktoken
(1,000 lines: 227 ms), which would also need each model's own encoding (docs/configuration.md).
"""

from __future__ import annotations

ASCII_CHARS_PER_TOKEN = 3
ASTRAL_TOKENS = 4  # a character outside the BMP is 4 UTF-8 bytes: a byte-level BPE makes at most 4 tokens of it


def estimate_tokens(line: bytes) -> int:
    """Estimated tokens of `line` (UTF-8 JSON text: a request body or a whole batch line); an invalid byte
    sequence counts as one replacement character."""
    text = line.decode("utf-8", errors="replace")
    ascii_chars = len(text.encode("ascii", errors="ignore"))
    astral = len(text.encode("utf-16-le")) // 2 - len(text)  # a surrogate pair per character beyond the BMP
    bmp_other = len(text) - ascii_chars - astral
    return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + bmp_other + ASTRAL_TOKENS * astral
