"""Bad input against a real `headwater up`: always a 4xx error body, never a 500.

Every answer here must be JSON `{code, detail, extra, status_code}`: malformed JSON,
wrong types, huge bodies, unknown ids, workspaces, routes and methods, out-of-range
query parameters. Each request goes on a new connection: after a 500 the server
drops the connection, and one failure must not make the next test fail.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.harness import HERE, Server, copy_workspace

pytestmark = pytest.mark.integration

ERROR_KEYS = {"code", "detail", "extra", "status_code"}
FIVE_MB = 5 * 1024 * 1024
# a JSON string with a lone UTF-16 surrogate: valid JSON syntax, but no Unicode text
LONE_SURROGATE = '"\\ud800"'


def start(tmp_path_factory: pytest.TempPathFactory, name: str) -> Server:
    return Server(copy_workspace(HERE / "workspace", tmp_path_factory.mktemp(name) / "ws")).start(
        wait_warm=False
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start(tmp_path_factory, "bad-input")
    yield srv
    srv.stop()


def send(srv: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {srv.key}", **kw.pop("headers", {})}
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        return http.request(method, path, headers=headers, **kw)


def send_json(srv: Server, method: str, path: str, raw: str | bytes) -> httpx.Response:
    """`raw` as the body, byte for byte, declared as JSON."""
    body = raw.encode() if isinstance(raw, str) else raw
    return send(srv, method, path, content=body, headers={"Content-Type": "application/json"})


def error(srv: Server, resp: httpx.Response, status: int, code: str | None = None) -> dict:
    """The error body with `status` (and `code`); on anything else the server log's tail."""
    where = f"{resp.request.method} {resp.request.url.path}"
    assert resp.status_code == status, (
        f"{where}: {resp.status_code} {resp.text[:500]}\n{srv.log()[-4000:]}"
    )
    assert resp.headers["content-type"].startswith("application/json"), (where, resp.headers)
    body = resp.json()
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, (where, body)
    assert body["status_code"] == status, (where, body)
    assert isinstance(body["code"], str) and body["code"], (where, body)
    assert isinstance(body["detail"], str) and body["detail"].strip(), (where, body)
    if code is not None:
        assert body["code"] == code, (where, body)
    return body


# -- malformed JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{"job_ids": [', id="truncated"),
        pytest.param("job_ids=x", id="not-json"),
        pytest.param("{'job_ids': ['x']}", id="single-quotes"),
        pytest.param('{"job_ids": ["x"],}', id="trailing-comma"),
        pytest.param('{"job_ids": ["x"]} {}', id="two-documents"),
        pytest.param("[]", id="array"),
        pytest.param('"job_ids"', id="string"),
        pytest.param("null", id="null"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_json_body_is_a_400(server: Server, raw: str) -> None:
    resp = send_json(server, "POST", f"{server.w}/jobs/-trigger", raw)
    error(server, resp, 400, "invalid_request")


def test_malformed_json_detail_says_where(server: Server) -> None:
    body = error(
        server, send_json(server, "POST", f"{server.w}/jobs/-trigger", '{"job_ids": ['), 400
    )
    assert "JSON" in body["detail"], body


def test_body_that_is_not_utf8_is_a_400(server: Server) -> None:
    resp = send_json(server, "POST", f"{server.w}/jobs/-trigger", b'{"job_ids": ["\xff\xfe"]}')
    error(server, resp, 400)


def test_deeply_nested_json_is_a_400(server: Server) -> None:
    depth = 100_000  # 200 kB: under the body limit, far past any parser's recursion
    resp = send_json(server, "POST", f"{server.w}/jobs/-trigger", "[" * depth + "]" * depth)
    error(server, resp, 400)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/job-runs"),
        ("POST", "/job-runs/-cancel"),
        ("POST", "/api-keys"),
        ("POST", "/scripts/trigger"),
        ("POST", "/-deploy"),
        ("PATCH", ""),
        ("PATCH", "/variables"),
    ],
)
def test_every_json_route_answers_malformed_json_with_a_400(
    server: Server, method: str, path: str
) -> None:
    error(server, send_json(server, method, f"{server.w}{path}", "{nope"), 400, "invalid_request")


# -- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/jobs/-trigger", {"job_ids": "x"}, "body.job_ids"),
        ("POST", "/jobs/-trigger", {"job_ids": ["x"], "dry_run": "maybe"}, "body.dry_run"),
        ("POST", "/jobs/-trigger", {"job_ids": [1, 2]}, "body.job_ids.0"),
        ("POST", "/jobs/-trigger", {"selectors": {"tag": "x"}}, "body.selectors"),
        ("POST", "/jobs/-trigger", {"job_ids": ["x"], "parameters": [1]}, "body.parameters"),
        ("POST", "/jobs/-trigger", {"job_ids": ["x"], "refresh": {}}, "body.refresh"),
        ("POST", "/job-runs", {"job_id": 5}, "body.job_id"),
        ("POST", "/job-runs", {}, "body.job_id"),
        ("POST", "/job-runs/-cancel", {"job_run_ids": "x"}, "body.job_run_ids"),
        ("POST", "/api-keys", {"name": "k", "scope": "root"}, "body.scope"),
        ("POST", "/api-keys", {"name": "k", "expires_in_days": -1}, "body.expires_in_days"),
        ("POST", "/api-keys", {"name": ""}, "body.name"),
        ("PATCH", "", {"name": 5}, "body.name"),
        ("PATCH", "/variables", {"upserts": "A=1"}, "body.upserts"),
        ("POST", "/scripts/trigger", {"job_refs": "ok"}, "body.job_refs"),
        (
            "POST",
            "/-deploy",
            {"job_definition_engine_version": "two", "job_definition_hash": "h", "jobs": []},
            "body.job_definition_engine_version",
        ),
    ],
)
def test_wrong_types_are_a_400_naming_the_field(
    server: Server, method: str, path: str, body: Any, field: str
) -> None:
    resp = send(server, method, f"{server.w}{path}", json=body)
    answer = error(server, resp, 400, "invalid_request")
    assert field in answer["detail"], answer
    assert any(item["key"] == field for item in answer["extra"]), answer


# -- huge bodies ------------------------------------------------------------------------------


def test_five_megabyte_body_is_a_413(server: Server) -> None:
    body = json.dumps({"job_ids": ["x"], "pad": "x" * FIVE_MB})
    resp = send_json(server, "POST", f"{server.w}/jobs/-trigger", body)
    answer = error(server, resp, 413, "payload_too_large")
    assert "larger than" in answer["detail"], answer


def test_five_megabyte_body_on_a_route_without_body_is_a_413(server: Server) -> None:
    resp = send_json(server, "POST", f"{server.w}/jobs/nope/-pause", "x" * FIVE_MB)
    error(server, resp, 413, "payload_too_large")


def test_five_megabyte_chunked_body_is_a_413(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"job_ids": ["x"], "pad": "'
        for _ in range(FIVE_MB // 65536):
            yield b"x" * 65536
        yield b'"}'

    resp = send(
        server,
        "POST",
        f"{server.w}/jobs/-trigger",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert "content-length" not in resp.request.headers  # streamed: only the body tells
    error(server, resp, 413, "payload_too_large")


# -- unknown ids, workspaces, routes and methods ----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/job-runs/{unknown}", "job_run_not_found"),
        ("POST", "/job-runs/{unknown}/-cancel", "job_run_not_found"),
        ("GET", "/jobs/{unknown}", "job_not_found"),
        ("POST", "/jobs/{unknown}/-pause", "job_not_found"),
        ("POST", "/jobs/{unknown}/-resume", "job_not_found"),
        ("POST", "/jobs/{unknown}/-archive", "job_not_found"),
        ("POST", "/jobs/{unknown}/-unarchive", "job_not_found"),
        ("GET", "/deployments/{unknown}", "deployment_not_found"),
        ("GET", "/deployments/{unknown}/files", "deployment_not_found"),
        ("GET", "/configurations/{unknown}", "configuration_not_found"),
        ("POST", "/api-keys/{unknown}/-revoke", "api_key_not_found"),
        ("POST", "/webhooks/{unknown}", "webhook_not_found"),
    ],
)
def test_unknown_id_is_a_404_with_its_code(
    server: Server, method: str, path: str, code: str
) -> None:
    unknown = str(uuid.uuid4())
    resp = send(server, method, server.w + path.format(unknown=unknown))
    body = error(server, resp, 404, code)
    assert unknown in body["detail"], body


def test_unknown_run_id_for_logs_is_a_404(server: Server) -> None:
    path = f"/logs/v1/workspaces/{server.ws_id}/job-runs/{uuid.uuid4()}/logs"
    error(server, send(server, "GET", path), 404, "job_run_not_found")


def test_run_for_an_unknown_job_is_a_404(server: Server) -> None:
    resp = send(server, "POST", f"{server.w}/job-runs", json={"job_id": str(uuid.uuid4())})
    error(server, resp, 404, "job_not_found")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("GET", "/jobs", None),
        ("GET", "/jobs/{job}", None),
        ("POST", "/jobs/-trigger", {"job_ids": ["x"]}),
        ("GET", "/job-runs", None),
        ("POST", "/job-runs/-cancel", {"job_run_ids": []}),
        ("GET", "/api-keys", None),
        ("GET", "/members", None),
        ("GET", "/deployments", None),
        ("GET", "/variables", None),
        ("PATCH", "/variables", {"upserts": []}),
        ("POST", "/scripts/trigger", {"job_refs": ["ok"]}),
        ("GET", "/me", None),
    ],
)
def test_unknown_workspace_is_a_404(server: Server, method: str, path: str, body: Any) -> None:
    other = str(uuid.uuid4())
    job = server.job_id("ok")
    url = f"/api/v1/workspaces/{other}{path.format(job=job)}"
    answer = error(server, send(server, method, url, json=body), 404, "workspace_not_found")
    assert other in answer["detail"], answer


def test_unknown_workspace_for_logs_is_a_404(server: Server) -> None:
    path = f"/logs/v1/workspaces/{uuid.uuid4()}/job-runs/{uuid.uuid4()}/logs"
    error(server, send(server, "GET", path), 404, "workspace_not_found")


def test_unknown_organization_is_a_404(server: Server) -> None:
    resp = send(server, "GET", f"/api/v1/organizations/{uuid.uuid4()}")
    error(server, resp, 404, "organization_not_found")


@pytest.mark.parametrize(
    "path", ["/nope", "/api/v1/nope", "/api/v2/workspaces", "/api/v1/workspaces/{ws}/nope/x"]
)
def test_unknown_route_is_a_404_error_body(server: Server, path: str) -> None:
    error(server, send(server, "GET", path.format(ws=server.ws_id)), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/jobs"),
        ("PUT", "/jobs/-trigger"),
        ("DELETE", "/job-runs/-cancel"),
        ("POST", "/members"),
        ("DELETE", "/variables"),
    ],
)
def test_wrong_method_is_a_405_error_body(server: Server, method: str, path: str) -> None:
    error(server, send(server, method, f"{server.w}{path}"), 405, "method_not_allowed")


# -- query parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/jobs", {"limit": -1}, "query.limit"),
        ("/job-runs", {"limit": -1}, "query.limit"),
        ("/deployments", {"limit": -1}, "query.limit"),
        ("/members", {"limit": -1}, "query.limit"),
        ("/jobs", {"limit": "ten"}, "query.limit"),
        ("/jobs", {"limit": 1.5}, "query.limit"),
        ("/job-runs", {"limit": 10**30}, "query.limit"),
        ("/job-runs", {"offset": -1}, "query.offset"),
        ("/job-runs", {"offset": 2**63}, "query.offset"),
        ("/job-runs", {"number": 2**63}, "query.number"),
        ("/job-runs", {"status": "bogus"}, "query.status.0"),
        ("/job-runs", {"status": ["running", "bogus"]}, "query.status.1"),
        ("/jobs", {"is_archived": "maybe"}, "query.is_archived"),
    ],
)
def test_out_of_range_query_parameter_is_a_400_naming_it(
    server: Server, path: str, params: dict[str, Any], field: str
) -> None:
    answer = error(
        server, send(server, "GET", f"{server.w}{path}", params=params), 400, "invalid_request"
    )
    assert field in answer["detail"], answer


def test_limit_out_of_range_on_organizations_is_a_400(server: Server) -> None:
    resp = send(server, "GET", "/api/v1/organizations", params={"limit": -1})
    error(server, resp, 400, "invalid_request")


def test_idempotency_key_too_long_is_a_400(server: Server) -> None:
    resp = send(
        server,
        "POST",
        f"{server.w}/jobs/-trigger",
        json={"job_ids": ["x"]},
        headers={"Idempotency-Key": "k" * 256},
    )
    error(server, resp, 400, "invalid_request")


# -- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer", "not_authenticated"),
        ("Basic dXNlcjpwYXNz", "not_authenticated"),
        ("Bearer dlt_sa_not-a-key", "invalid_api_key"),
    ],
)
def test_missing_or_unknown_key_is_a_401_error_body(
    server: Server, header: str | None, code: str
) -> None:
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        resp = http.get(f"{server.w}/jobs", headers=headers)
    error(server, resp, 401, code)


# -- text the store cannot hold ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param("{w}/jobs/a%00b", {}, id="job-id"),
        pytest.param("{w}/job-runs", {"job_id": "a\x00b"}, id="query"),
        pytest.param("{w}/job-runs", {"a\x00b": "1"}, id="query-key"),
        pytest.param("/api/v1/workspaces/a%00b/jobs", {}, id="workspace"),
        pytest.param("/health%00", {}, id="no-key-needed"),
    ],
)
def test_nul_in_the_url_is_a_400(server: Server, path: str, params: dict[str, str]) -> None:
    """Refused before any route runs, whatever the database (PostgreSQL: see below)."""
    resp = send(server, "GET", path.format(w=server.w), params=params)
    answer = error(server, resp, 400, "invalid_request")
    assert "NUL" in answer["detail"], answer


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/jobs/-trigger", f'{{"job_ids": [{LONE_SURROGATE}]}}', id="job_ids"),
        pytest.param("POST", "/job-runs", f'{{"job_id": {LONE_SURROGATE}}}', id="job_id"),
        pytest.param(
            "POST", "/job-runs/-cancel", f'{{"job_run_ids": [{LONE_SURROGATE}]}}', id="run_ids"
        ),
        pytest.param(
            "PATCH",
            "/variables",
            f'{{"upserts": [{{"name": "A", "value": {LONE_SURROGATE}}}]}}',
            id="variable",
        ),
        pytest.param("PATCH", "", f'{{"name": {LONE_SURROGATE}}}', id="workspace-name"),
        pytest.param("POST", "/api-keys", f'{{"name": {LONE_SURROGATE}}}', id="key-name"),
        pytest.param("POST", "/webhooks/nope", f'{{"a": {LONE_SURROGATE}}}', id="webhook"),
    ],
)
def test_lone_surrogate_in_a_json_string_is_a_400(
    server: Server, method: str, path: str, body: str
) -> None:
    answer = error(server, send_json(server, method, f"{server.w}{path}", body), 400)
    assert "JSON" in answer["detail"] and "surrogate" in answer["detail"], answer


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        pytest.param('{"job_ids": ["x"], "parameters": {"a": NaN}}', "JSON", id="nan"),
        pytest.param('{"job_ids": ["x"], "parameters": {"a": Infinity}}', "JSON", id="infinity"),
        pytest.param('{"job_ids": ["x"], "parameters": {"a": 1e400}}', "infinity", id="1e400"),
        pytest.param('{"job_ids": ["a\\u0000b"]}', "body.job_ids.0", id="nul-in-string"),
        pytest.param('{"job_ids": ["x"], "parameters": {"\\u0000": 1}}', "NUL", id="nul-in-key"),
        pytest.param(f'{{"job_ids": ["x"], "parameters": {{"a": {2**64}}}}}', "64-bit", id="2**64"),
        pytest.param(
            f'{{"job_ids": ["x"], "parameters": {{"a": [1.5, {-(2**63) - 1}]}}}}',
            "64-bit",
            id="-2**63-1",
        ),
    ],
)
def test_json_the_store_cannot_hold_or_render_is_a_400(server: Server, raw: str, says: str) -> None:
    answer = error(server, send_json(server, "POST", f"{server.w}/jobs/-trigger", raw), 400)
    assert answer["code"] == "invalid_request", answer
    assert says in answer["detail"], answer


@pytest.mark.parametrize(
    "value",
    [2**64 - 1, -(2**63), 1.5, "1" * 100, 1e300, 12345678901234567890.5],
    ids=["2**64-1", "-2**63", "float", "digits-in-a-string", "1e300", "long-float"],
)
def test_json_numbers_in_range_and_long_digit_strings_pass(server: Server, value: Any) -> None:
    """The 64-bit check reads number literals only, never the digits inside strings."""
    raw = json.dumps({"job_ids": ["nope"], "parameters": {"a": value, "b": "9" * 30}})
    resp = send_json(server, "POST", f"{server.w}/jobs/-trigger", raw)
    assert resp.status_code == 200, resp.text  # an unknown job is a `failed` item, not an error


def test_every_json_body_route_parses_with_orjson(server: Server) -> None:
    """Each operation the OpenAPI document gives a JSON body refuses a lone surrogate:
    a router that takes a body without `route_class=JSONRoute` fails here."""
    paths = send(server, "GET", "/openapi.json").json()["paths"]
    operations = [
        (method.upper(), path)
        for path, item in paths.items()
        for method, op in item.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert len(operations) >= 8, operations
    for method, path in operations:
        url = re.sub(r"\{(\w+)\}", lambda m: server.ws_id if m[1] == "ws" else "x", path)
        resp = send_json(server, method, url, f'{{"name": {LONE_SURROGATE}}}')
        answer = error(server, resp, 400, "invalid_request")
        assert "surrogate" in answer["detail"], (method, path, answer)


@pytest.fixture
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its own server: were these requests stored, they would break the run list."""
    srv = start(tmp_path_factory, "poison")
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    "value",
    [pytest.param(LONE_SURROGATE, id="lone-surrogate"), pytest.param("9" * 100, id="huge-int")],
)
def test_parameters_the_store_cannot_hold_are_a_400_and_store_no_run(
    fresh_server: Server, value: str
) -> None:
    srv = fresh_server
    job = srv.job_id("greet")
    for path, body in [
        ("/jobs/-trigger", f'{{"job_ids": ["{job}"], "parameters": {{"greeting": {value}}}}}'),
        ("/job-runs", f'{{"job_id": "{job}", "parameters": {{"greeting": {value}}}}}'),
        ("/job-runs", f'{{"job_id": "{job}", "profile": {value}}}'),
    ]:
        error(srv, send_json(srv, "POST", f"{srv.w}{path}", body), 400, "invalid_request")
    runs = send(srv, "GET", f"{srv.w}/job-runs", params={"job_id": job})
    assert runs.status_code == 200, f"{runs.status_code} {runs.text[:300]}\n{srv.log()[-3000:]}"
    assert runs.json()["items"] == [], runs.json()
    assert send(srv, "GET", f"{srv.w}/jobs").status_code == 200


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.store.conftest import PG_URL, _admin_dsn, require_postgres

    require_postgres()  # skips with a reason on a laptop, fails in CI
    name = f"hw_bad_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    ws = copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("bad-pg") / "ws")
    srv = Server(ws, "--db-url", url).start(wait_warm=False)
    yield srv
    srv.stop()
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/jobs/-trigger", {"job_ids": ["a\x00b"]}, id="body-id"),
        pytest.param("POST", "/api-keys", {"name": "a\x00b"}, id="key-name"),
        pytest.param("PATCH", "", {"name": "a\x00b"}, id="workspace-name"),
        pytest.param(
            "PATCH", "/variables", {"upserts": [{"name": "A", "value": "\x00"}]}, id="variable"
        ),
        pytest.param("POST", "/webhooks/nope", {"a\x00": 1}, id="webhook-key"),
    ],
)
def test_nul_in_a_json_body_is_a_400_on_postgresql(
    postgres_server: Server, method: str, path: str, body: Any
) -> None:
    resp = send(postgres_server, method, f"{postgres_server.w}{path}", json=body)
    answer = error(postgres_server, resp, 400, "invalid_request")
    assert "NUL" in answer["detail"], answer


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param("{w}/jobs/a%00b", {}, id="job-id"),
        pytest.param("{w}/job-runs/a%00b", {}, id="run-id"),
        pytest.param("{w}/job-runs", {"job_id": "a\x00b"}, id="query"),
        pytest.param("{w}/job-runs", {"a\x00b": "1"}, id="query-key"),
        pytest.param("/api/v1/workspaces/a%00b/jobs", {}, id="workspace"),
        pytest.param("/api/v1/organizations/a%00b", {}, id="organization"),
    ],
)
def test_nul_in_the_url_is_a_400_on_postgresql(
    postgres_server: Server, path: str, params: dict[str, str]
) -> None:
    url = path.format(w=postgres_server.w)
    answer = error(postgres_server, send(postgres_server, "GET", url, params=params), 400)
    assert answer["code"] == "invalid_request" and "NUL" in answer["detail"], answer


@pytest.mark.parametrize(
    ("parameters", "status", "code"),
    [
        pytest.param({f"p{i}": "x" for i in range(60_000)}, 413, "too_many_parameters", id="count"),
        pytest.param({"k" * 300: "x"}, 400, "invalid_parameters", id="long-name"),
        pytest.param({"greeting": "x" * 200_000}, 413, "parameters_too_large", id="long-value"),
        pytest.param(
            {f"p{i}": "x" * 100_000 for i in range(8)}, 413, "parameters_too_large", id="total"
        ),
    ],
)
def test_parameters_past_the_bounds_are_refused_and_store_no_run(
    server: Server, parameters: dict[str, str], status: int, code: str
) -> None:
    """Security 9c: 60,000 parameters were accepted, then the run failed."""
    srv = server
    job = srv.job_id("greet")
    before = send(srv, "GET", f"{srv.w}/job-runs", params={"job_id": job}).json()["total"]
    for path, body in [
        (f"{srv.w}/jobs/-trigger", {"job_ids": [job], "parameters": parameters}),
        (f"{srv.w}/job-runs", {"job_id": job, "parameters": parameters}),
        (f"{srv.w}/scripts/trigger", {"job_refs": ["greet"], "parameters": parameters}),
        (f"{srv.w}/webhooks/nope", parameters),
    ]:
        body_bytes = json.dumps(body).encode()
        if len(body_bytes) > 1024 * 1024:
            continue  # the body limit answers first
        detail = error(srv, send_json(srv, "POST", path, body_bytes), status, code)["detail"]
        assert "parameter" in detail
    after = send(srv, "GET", f"{srv.w}/job-runs", params={"job_id": job}).json()["total"]
    assert after == before
