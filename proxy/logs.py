"""Logging: one structured line per request (JSON when asked), request ids, secrets redacted: the configured
secret values themselves and their encodings (`mask_secrets_in_logs`), and anything shaped like a key."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import orjson

from proxy.providers.redaction import Redactor

ACCESS_LOGGER = "batchgate.access"
_SECRET_PATTERN = re.compile(r"(sk-[A-Za-z0-9_-]{6,}|whsec_[A-Za-z0-9+/=]{6,}|Bearer\s+\S+)")
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def redact(text: str) -> str:
    """Mask anything shaped like an API key, a webhook secret or a bearer token."""
    return _SECRET_PATTERN.sub(lambda match: match.group(0)[:5] + "***", text)


class SecretMaskingFormatter(logging.Formatter):
    """A formatter that masks the configured secret values (set by `mask_secrets_in_logs`) and key shapes."""

    redactor: Redactor = Redactor(())

    def redact(self, text: str) -> str:
        return redact(self.redactor.text(text))


class JsonFormatter(SecretMaskingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                entry[key] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(SecretMaskingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{key}={value}" for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES)
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return self.redact(line)


def mask_secrets_in_logs(secrets: Iterable[str], logger: logging.Logger | None = None) -> int:
    """Mask these secret values (and their encodings) in every line that the handlers of `logger` (default:
    the root logger) write with a SecretMaskingFormatter; replaces the values set before. Returns how many
    handlers now mask them."""
    redactor = Redactor(secrets)
    masking = 0
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler.formatter, SecretMaskingFormatter):
            handler.formatter.redactor = redactor
            masking += 1
    return masking


def configure_logging(level: str, *, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # No line shows the caller's file and line, the thread or the process: not gathering them for every record
    # (a walk of the stack each) is the logging HOWTO's "Optimization"; measured ~3% of the CPU under load.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for noisy in ("httpx", "httpcore", "LiteLLM", "litellm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
