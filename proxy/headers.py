"""Request header values as text: HTTP carries bytes, which the ASGI server hands over decoded as Latin-1.

A caller who writes a header in UTF-8 (a callback URL with an international host name) means UTF-8, so a value
is read back as the bytes it was and decoded as UTF-8; one that is not valid UTF-8, or longer than the bound, is
refused (400, OpenAI's shape, naming the header).
"""

from __future__ import annotations

from proxy.errors import InvalidRequest

MAX_HEADER_TEXT = 4096  # characters; a URL or key longer than this is not one batchgate takes


def header_text(value: str | None, *, param: str, max_length: int = MAX_HEADER_TEXT) -> str | None:
    """`value` (as the server decoded it, Latin-1) as the UTF-8 text the caller sent, stripped; None when absent
    or blank. Raises InvalidRequest (param=`param`) when it is not UTF-8 or longer than `max_length`."""
    if value is None or not value.strip():
        return None
    try:
        text = value.encode("latin-1").decode("utf-8").strip()
    except UnicodeError:
        raise InvalidRequest(f"{param} must be UTF-8 text.", param=param, code="invalid_header") from None
    if len(text) > max_length:
        raise InvalidRequest(f"{param} may be at most {max_length} characters.", param=param, code="invalid_header")
    return text
