"""Masks provider secrets in anything that may reach a caller or a log line."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"
MIN_SECRET_LENGTH = 6


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
        self._secret_bytes = tuple(s.encode() for s in self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def bytes(self, value: bytes) -> bytes:
        for secret in self._secret_bytes:
            if secret in value:
                value = value.replace(secret, MASK.encode())
        return value
