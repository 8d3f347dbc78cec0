"""One webhook POST, through the SSRF guard: resolve now, check every address, connect to the checked address.

The request goes to `scheme://<checked IP>:port/path` with the `Host` header (and, for https, the TLS SNI name and
certificate check) set to the callback's host name, so a DNS answer that changes after the check cannot redirect
the connection. Redirects are never followed; proxies from the environment are ignored (they would connect for us).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

from proxy.delivery.ssrf import parse_callback, resolve

USER_AGENT = "batchgate-webhooks/1"


@dataclass(frozen=True, slots=True)
class SendResult:
    status: int | None  # None: no HTTP answer (connection error, timeout)
    error: str

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookSender:
    def __init__(self, *, timeout: float) -> None:
        # no keep-alive: a pooled connection is keyed by IP, and two callback hosts may share one IP
        self.client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, allow_hosts: Iterable[str], seconds: float
    ) -> SendResult:
        """POST the body; raises UnsafeCallback when the guard refuses the URL or what it resolves to now."""
        target = parse_callback(url, allow_hosts)
        try:
            addresses = await resolve(target, within=seconds)
        except (OSError, TimeoutError) as exc:
            return SendResult(None, f"DNS resolution failed: {exc or type(exc).__name__}")
        address = addresses[0]
        shown = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and target.literal is None else {}
        request = self.client.build_request(
            "POST",
            f"{target.scheme}://{shown}:{target.port}{target.target}",
            content=body,
            headers={
                **headers,
                "host": target.host_header,
                "content-type": "application/json",
                "user-agent": USER_AGENT,
            },
            extensions={**extensions, "timeout": httpx.Timeout(seconds).as_dict()},
        )
        try:
            response = await self.client.send(request)
            await response.aclose()
        except httpx.TimeoutException:
            return SendResult(None, f"timed out after {seconds:g}s")
        except httpx.HTTPError as exc:
            return SendResult(None, f"{type(exc).__name__}: {exc}"[:300])
        return SendResult(response.status_code, "" if response.is_success else f"HTTP {response.status_code}")
