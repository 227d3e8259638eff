"""Request limits the server checks before any route runs.

`BodyLimit`: a huge body gets a 413 instead of eating the server's memory.
`RejectNul`: a NUL (`%00`) in the URL's path or query gets a 400; no id, name or
query value may hold one, and PostgreSQL text cannot.
"""

from __future__ import annotations

from typing import Any

from headwater.api.responses import ApiError, dumps

MAX_BODY = 1024 * 1024
MAX_UPLOAD = 200 * 1024 * 1024
MAX_BEACON = 16 * 1024 * 1024
"""What a run's dlt may send in one telemetry PUT: a state holds every schema of a pipeline."""

MAX_PARAMETERS = 1000
MAX_PARAMETER_NAME = 200
MAX_PARAMETER_VALUE = 128 * 1024
MAX_PARAMETERS_BYTES = 512 * 1024
"""A run's parameters: how many, a name's characters, one value's and all of them as JSON."""


class BodyTooLarge(ApiError):
    """Raised while the body streams in: an `ApiError`, so the route's caller
    (FastAPI reading the body, or a route reading it itself) answers our 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes", "payload_too_large")


def check_parameters(parameters: dict[str, Any] | None) -> None:
    """A 400 or 413 when a run's parameters are more than a run may be given."""
    if not parameters:
        return
    if len(parameters) > MAX_PARAMETERS:
        raise ApiError(
            413,
            f"{len(parameters)} parameters; a run takes at most {MAX_PARAMETERS}",
            "too_many_parameters",
        )
    total = 0
    for name, value in parameters.items():
        if not name or len(name) > MAX_PARAMETER_NAME:
            raise ApiError(
                400,
                f"parameter name {name[:40]!r}{'...' if len(name) > 40 else ''} must be 1 to"
                f" {MAX_PARAMETER_NAME} characters",
                "invalid_parameters",
            )
        try:
            size = len(dumps(value))
        except (TypeError, ValueError):  # nothing JSON could carry; its text's size will do
            size = len(repr(value).encode())
        if size > MAX_PARAMETER_VALUE:
            raise ApiError(
                413,
                f"parameter {name!r} is {size} bytes as JSON; one value may be at most"
                f" {MAX_PARAMETER_VALUE}",
                "parameters_too_large",
            )
        total += size + len(name.encode())
    if total > MAX_PARAMETERS_BYTES:
        raise ApiError(
            413,
            f"the parameters are {total} bytes as JSON; a run takes at most {MAX_PARAMETERS_BYTES}",
            "parameters_too_large",
        )


def _limit_for(path: str) -> int:
    if path.endswith("/-upload"):
        return MAX_UPLOAD
    if "/-beacon/" in path:
        return MAX_BEACON
    return MAX_BODY


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
            await _answer(send, BodyTooLarge(limit))
            return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as ex:
            if not started:
                await _answer(send, ex)


class RejectNul:
    """ASGI middleware: 400 when the decoded path or the query string holds a NUL."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string") or b""
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                where = "path" if "\x00" in scope["path"] else "query"
                detail = (
                    f"the URL's {where} holds a NUL character (%00), which no id or name may hold"
                )
                await _answer(send, ApiError(400, detail, "invalid_request"))
                return
        await self.app(scope, receive, send)


async def _answer(send: Any, ex: ApiError) -> None:
    body = dumps(
        {"code": ex.code, "detail": ex.detail, "extra": ex.extra, "status_code": ex.status_code}
    )
    await send(
        {
            "type": "http.response.start",
            "status": ex.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
