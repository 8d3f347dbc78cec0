"""Stored Responses API objects at the provider (`resp_...`): retrieve, cancel, delete, relayed byte for byte.

A stored response id names no model, so the call goes to each distinct upstream that serves `/v1/responses`
itself (ProviderRegistry.stored_responses, config order) until one knows the id: the first answer that is not a
404 is the answer; when every upstream answers 404 the last 404 is. No retries: a caller's GET or DELETE is cheap
to repeat, and a cancel must not be sent twice behind its back.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
from yarl import URL

from proxy.providers.base import ErrorClass, ProviderError, UpstreamResponse
from proxy.providers.openai_http import SharedSession, kept_headers
from proxy.providers.redaction import Redactor

NOT_FOUND = 404


async def stored_response_call(
    http: SharedSession, upstreams: Sequence[tuple[str, str | None]], method: str, path: str, query: str = ""
) -> UpstreamResponse | None:
    """`method` ("GET", "POST", "DELETE") on `/responses/<path>` of each upstream in turn (`query`: the caller's
    query string, passed on); None when there is no upstream to ask. Raises ProviderError (unreachable) when
    none answered."""
    answer: UpstreamResponse | None = None
    failure: Exception | None = None
    for base_url, api_key in upstreams:
        url = URL(f"{base_url.rstrip('/')}/responses/{path}" + (f"?{query}" if query else ""), encoded=True)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            async with http.get().request(method, url, headers=headers) as response:
                content = Redactor([api_key] if api_key else []).bytes(await response.read())
                answer = UpstreamResponse(response.status, content, kept_headers(response.headers))
        except (TimeoutError, aiohttp.ClientError) as exc:
            failure = exc
            continue
        if answer.status != NOT_FOUND:
            return answer
    if answer is None and failure is not None:
        raise ProviderError(
            None,
            "The upstream provider could not be reached.",
            code="upstream_unreachable",
            classification=ErrorClass.TRANSIENT,
        ) from failure
    return answer
