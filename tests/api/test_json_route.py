"""In-process: the JSON body parser, and the error body on an unhandled exception."""

from __future__ import annotations

from typing import Any

import pytest

from headwater.api.json_route import parse_json
from headwater.api.responses import ApiError
from tests.api.test_errors import answer


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'"\\ud800"', "surrogate"),
        (b'"\\udc00"', "surrogate"),
        (b"[NaN]", "not valid JSON"),
        (b"[-Infinity]", "not valid JSON"),
        (b"1e999", "infinity"),
        (b'{"a": "x\\u0000"}', "body.a: request body holds a NUL"),
        (b'{"a": [{"b\\u0000": 1}]}', "body.a.0: request body holds a NUL character"),
        (b"[1.5, 18446744073709551616]", "integer 18446744073709551616, outside the 64-bit"),
        (b"[0.5, -9223372036854775809]", "outside the 64-bit range"),
        (b"[0.5, " + b"9" * 100 + b"]", "99999999999999999999999999999999999999..."),
        (b"[" * 2000 + b"]" * 2000, "depth"),
    ],
)
def test_parse_json_refuses_what_the_store_cannot_hold(raw: bytes, says: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    assert caught.value.status_code == 400 and caught.value.code == "invalid_request"
    assert says in caught.value.detail, caught.value.detail
    assert caught.value.extra[0]["message"] == caught.value.detail


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"[18446744073709551615, -9223372036854775808]", [2**64 - 1, -(2**63)]),
        (b'[0.5, "99999999999999999999999999", 1]', [0.5, "9" * 26, 1]),
        (b'[0.5, "\\"99999999999999999999999999"]', [0.5, '"' + "9" * 26]),
        (b"[123456789012345678901234.5, 1e30, 2E-5]", [123456789012345678901234.5, 1e30, 2e-5]),
        (b'{"\\ud83d\\ude00": "\\u00e9"}', {"\U0001f600": "\u00e9"}),
    ],
)
def test_parse_json_keeps_what_the_store_can_hold(raw: bytes, value: Any) -> None:
    assert parse_json(raw) == value


def test_an_unhandled_exception_is_a_json_500_error_body() -> None:
    resp = answer(RuntimeError("a bug"))
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["status_code"] == 500 and body["code"] == "internal_error", body
    assert set(body) == {"code", "detail", "extra", "status_code"}
    assert "a bug" not in body["detail"]  # the server log has it, not the client
