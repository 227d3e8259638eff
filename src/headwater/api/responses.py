"""JSON answers and the error body every client of the dltHub API parses."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from headwater.core.errors import HeadwaterError


class JSONBody(JSONResponse):
    """orjson with `Z` datetimes: the clients compare them with aware `now`.

    A JSONResponse subclass, so the OpenAPI document describes answers as JSON.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_UTC_Z)


class ApiError(HeadwaterError, HTTPException):
    """An answer of `{code, detail, extra, status_code}` with the given status."""

    def __init__(self, status_code: int, detail: str, code: str, extra: Any = None) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.code = code
        self.status = status_code
        self.extra = extra

    def __str__(self) -> str:
        return str(self.detail)


def error_body(status: int, detail: str, code: str, extra: Any = None) -> JSONBody:
    return JSONBody(
        {"code": code, "detail": detail, "extra": extra, "status_code": status}, status_code=status
    )


MAX_INT = 2**31 - 1
"""Bound of integer query parameters: larger numbers get a 400, never a database overflow."""


class ErrorResponse(BaseModel):
    """What every 4xx and 5xx answer is: the dltHub API's `ErrorResponse`."""

    code: str = Field(description="what went wrong, e.g. `job_not_found`, `invalid_request`")
    detail: str = Field(description="for people: what went wrong, and where")
    extra: Any = Field(
        description="`null`, a list of `{key, message}` (which field is wrong), or `{reasons}`"
    )
    status_code: int = Field(description="the answer's HTTP status, repeated")


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "Refused: bad input (400), no or unknown key (401), not allowed (403),"
        " not found (404), wrong method (405), conflict (409), body too large (413)",
        "content": _ERROR_CONTENT,
    },
    "5XX": {"description": "Server error", "content": _ERROR_CONTENT},
}
"""The error answers of every operation. Documented as ranges: FastAPI then leaves out its
`422` (the server answers validation errors with a 400), and the log routes, whose 200 is
not JSON, still document JSON errors."""


def document_errors(app: FastAPI) -> None:
    """Add `ErrorResponse` to the app's OpenAPI components, which `ERROR_RESPONSES` names."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
