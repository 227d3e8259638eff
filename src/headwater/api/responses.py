"""JSON answers and the error body every client of the dltHub API parses."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException
from fastapi.responses import JSONResponse


class JSONBody(JSONResponse):
    """orjson with `Z` datetimes: the clients compare them with aware `now`.

    A JSONResponse subclass, so the OpenAPI document describes answers as JSON.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_UTC_Z)


class ApiError(HTTPException):
    """An answer of `{code, detail, extra, status_code}` with the given status."""

    def __init__(self, status_code: int, detail: str, code: str, extra: Any = None) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.code = code
        self.extra = extra


def error_body(status: int, detail: str, code: str, extra: Any = None) -> JSONBody:
    return JSONBody(
        {"code": code, "detail": detail, "extra": extra, "status_code": status}, status_code=status
    )


MAX_INT = 2**31 - 1
"""Bound of integer query parameters: larger numbers get a 400, never a database overflow."""
