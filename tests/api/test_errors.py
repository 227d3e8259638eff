"""Every error of Headwater's own that reaches the API answers the one error body: its
class's code, and the status its class declares (a 500 when it declares none)."""

from __future__ import annotations

import asyncio
from unittest.mock import MagicMock

import httpx
import pytest
from fastapi import FastAPI

from headwater.api.app import create_app
from headwater.api.context import ApiContext
from headwater.api.responses import ApiError
from headwater.core.errors import HeadwaterError
from headwater.workspace.triggers import JobRefError
from tests.core.test_errors import _own_error_classes

WITH_STATUS = sorted(
    (c for c in _own_error_classes() if getattr(c, "status", None) is not None),
    key=lambda c: c.__qualname__,
)
WITHOUT_STATUS = sorted(
    (
        c
        for c in _own_error_classes()
        if getattr(c, "status", None) is None and not issubclass(c, ApiError)
    ),
    key=lambda c: c.__qualname__,
)


def app_raising(ex: BaseException) -> FastAPI:
    ctx = ApiContext(
        store=MagicMock(),
        ws_id="ws",
        base_url=lambda: "http://test",
        reload_manifest=MagicMock(),
        manifest_status=MagicMock(),
        packages=MagicMock(),
        accept_package=MagicMock(),
        deploy=MagicMock(),
        variables=MagicMock(),
    )
    app = create_app(ctx)

    @app.get("/raise")
    def raising() -> None:
        raise ex

    return app


def answer(ex: BaseException) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_raising(ex), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/raise")

    return asyncio.run(get())


def bare(cls: type[BaseException], message: str) -> BaseException:
    """An instance with only its message, whatever its constructor takes."""
    ex = cls.__new__(cls)
    Exception.__init__(ex, message)
    return ex


def test_errors_with_a_status_are_a_few_of_them() -> None:
    names = {c.__qualname__ for c in WITH_STATUS}
    assert {"ManifestError", "PackageTooLarge", "JobRefError", "TooManyPayloads"} <= names


@pytest.mark.parametrize("cls", WITH_STATUS, ids=lambda c: c.__qualname__)
def test_an_error_with_a_status_answers_its_code(cls: type[HeadwaterError]) -> None:
    resp = answer(bare(cls, "what went wrong"))
    assert resp.status_code == cls.status
    assert resp.json() == {
        "code": cls.code,
        "detail": "what went wrong",
        "extra": None,
        "status_code": cls.status,
    }


@pytest.mark.parametrize("cls", WITHOUT_STATUS, ids=lambda c: c.__qualname__)
def test_an_error_without_a_status_is_a_500_that_says_nothing_more(
    cls: type[HeadwaterError],
) -> None:
    resp = answer(bare(cls, "a secret detail"))
    assert resp.status_code == 500
    assert resp.json()["code"] == "internal_error"
    assert "secret" not in resp.text


def test_an_ambiguous_job_ref_is_a_400_with_the_candidates() -> None:
    resp = answer(
        JobRefError("load", "job name 'load' is ambiguous", ["jobs.a.load", "jobs.b.load"])
    )
    assert resp.status_code == 400
    assert resp.json() == {
        "code": "ambiguous_job_ref",
        "detail": "job name 'load' is ambiguous",
        "extra": {"candidates": ["jobs.a.load", "jobs.b.load"]},
        "status_code": 400,
    }
    unknown = answer(JobRefError("nope", "no job 'nope' in this workspace"))
    assert unknown.status_code == 404 and unknown.json()["code"] == "job_not_found"


def test_an_api_error_answers_as_it_was_raised() -> None:
    resp = answer(ApiError(418, "short and stout", "teapot", [{"key": "k", "message": "m"}]))
    assert resp.status_code == 418
    assert resp.json() == {
        "code": "teapot",
        "detail": "short and stout",
        "extra": [{"key": "k", "message": "m"}],
        "status_code": 418,
    }
