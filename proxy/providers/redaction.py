"""Masks secrets in anything that may reach a caller or a log line: by the configured secret values themselves
and their obvious encodings (base64 at any alignment, URL-encoding, JSON escaping), never by a pattern such as
`sk-`, so a key of any shape is caught whatever the provider echoes back."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 6
_B64_LEAD = {0: 0, 1: 2, 2: 3}  # characters of a base64 run that also carry bits of the bytes before the secret


def encodings(secret: str) -> set[str]:
    """`secret` and the forms it takes inside other text: URL-encoded, JSON-escaped, and base64 (standard and
    URL-safe alphabets) as it reads wherever it starts in a longer encoded run (e.g. `Basic` credentials)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    raw = secret.encode()
    for offset, lead in _B64_LEAD.items():
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            run = encode(b"\0" * offset + raw).decode().rstrip("=")
            if (offset + len(raw)) % 3:
                run = run[:-1]  # its last character also carries bits of whatever follows the secret
            forms.add(run[lead:])
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every configured secret (and its encodings) by MASK; secrets shorter than MIN_SECRET_LENGTH are
    ignored (masking them would mangle ordinary text)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                forms |= encodings(secret)
        self._forms = tuple(sorted(forms, key=len, reverse=True))  # longest first: no form masks part of another
        self._form_bytes = tuple(form.encode() for form in self._forms)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, value: str) -> str:
        for form in self._forms:
            if form in value:
                value = value.replace(form, MASK)
        return value

    def bytes(self, value: bytes) -> bytes:
        for form in self._form_bytes:
            if form in value:
                value = value.replace(form, MASK.encode())
        return value
