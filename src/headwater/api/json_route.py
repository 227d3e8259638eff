"""JSON request bodies parsed by orjson, so only text the store can hold gets past them.

FastAPI parses a JSON body with the standard library, which takes lone UTF-16
surrogates (`"\\ud800"`), `NaN`, `Infinity` and integers of any size: text that
SQLite cannot encode, numbers orjson cannot render when the run is read back.
`JSONRoute` parses the body with orjson instead (which refuses all of those), and
also refuses NUL (U+0000, which PostgreSQL text cannot hold) and integers orjson
would silently turn into floats. Each refusal is a 400 error body before the route
runs, so nothing of such a body is ever stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from headwater.api.responses import ApiError

# the integers orjson parses as integers; past them it parses a float, losing digits
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
# in a document already known to be valid JSON: a string, or a number and its parts
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|(-?\d+)(\.\d+)?([eE][-+]?\d+)?')


def parse_json(body: bytes, what: str = "request body") -> Any:
    """The JSON document in `body`, or an `ApiError` 400 saying what is wrong with it."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as ex:
        raise _invalid(f"{what} is not valid JSON: {ex}", "body") from ex
    if _check_text(value, what):
        _check_integers(body, what)
    return value


def _invalid(detail: str, key: str) -> ApiError:
    return ApiError(400, detail, "invalid_request", [{"key": key, "message": detail}])


def _check_text(value: Any, what: str) -> bool:
    """Refuse NUL in any string or key; whether the document holds a float."""
    has_float = False
    stack: list[tuple[Any, str]] = [(value, "body")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise _invalid(f"{where}: {what} holds a NUL character (\\u0000)", where)
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise _invalid(
                        f"{where}: {what} holds a NUL character (\\u0000) in a key", where
                    )
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}.{i}") for i, child in enumerate(item))
        elif isinstance(item, float):
            has_float = True
    return has_float


def _check_integers(body: bytes, what: str) -> None:
    """Refuse integer literals past 64 bits (orjson made them floats: the digits are gone)."""
    for match in _TOKEN.finditer(body):
        digits, fraction, exponent = match.groups()
        if digits is None or fraction is not None or exponent is not None:
            continue
        if len(digits) >= 19 and not MIN_INT <= int(digits) <= MAX_INT:
            raise _invalid(
                f"{what} holds the integer {digits[:40].decode()}"
                f"{'...' if len(digits) > 40 else ''}, outside the 64-bit range",
                "body",
            )


class JSONRequest(Request):
    """A request whose `json()` is `parse_json`: FastAPI reads JSON bodies through it."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """The route class of every router that takes a JSON body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return parse_with_orjson
