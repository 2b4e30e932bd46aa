"""Request body size limit that answers in the API's JSON error format.

FastAPI's own `max_body_size` would do the counting, but whenever Content-Length announces too much it
replaces *any* response with a plain-text "Content Too Large"; clients of this API get JSON errors with a
`detail` everywhere, so the limit is enforced here instead: an announced oversized body is refused before
a byte of it is read, and a chunked body is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_detail(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes (see --max-body-bytes)"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0 or size > self.limit:
                detail = too_large_detail(self.limit) if size > self.limit else "invalid Content-Length header"
                await _json_error(send, 413 if size > self.limit else 400, detail)
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises HTTPExceptions from body reading, so the app's handler renders it.
                    raise HTTPException(413, too_large_detail(self.limit))
            return message

        await self.app(scope, limited_receive, send)


async def _json_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
