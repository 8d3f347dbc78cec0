"""Container healthcheck: exit 0 when the URL answers 2xx within the timeout, 1 otherwise.

The slim base image has no curl; this uses only the standard library.
Usage: python healthcheck.py [URL] [TIMEOUT_SECONDS]   (default http://127.0.0.1:8080/healthz, 4 s)
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/healthz"
DEFAULT_TIMEOUT = 4.0


def is_healthy(url: str, timeout: float) -> bool:
    if not url.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    timeout = float(argv[2]) if len(argv) > 2 else DEFAULT_TIMEOUT
    return 0 if is_healthy(url, timeout) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
