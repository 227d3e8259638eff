"""A request body limit, so a huge body gets a 413 instead of eating the server's memory."""

from __future__ import annotations

from typing import Any

from headwater.api.responses import dumps

MAX_BODY = 1024 * 1024
MAX_UPLOAD = 200 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


def _limit_for(path: str) -> int:
    return MAX_UPLOAD if path.endswith("/-upload") else MAX_BODY


class BodyLimit:
    """ASGI middleware: 413 when `Content-Length` or the streamed body passes the limit."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = _limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, limit)


async def _too_large(send: Any, limit: int) -> None:
    body = dumps(
        {
            "code": "payload_too_large",
            "detail": f"request body larger than {limit} bytes",
            "extra": None,
            "status_code": 413,
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
