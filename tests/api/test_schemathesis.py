"""Schemathesis over the server's own OpenAPI document, one pytest subtest per operation.

Every generated request (valid and invalid, from the examples, fuzzing and coverage
phases) must get an answer that is not a server error, whose status the operation
documents (its 2xx, or the `4XX`/`5XX` error ranges every operation declares), whose
content type and body match what is documented for that status, and, when it is a
4xx, that is the error body `{code, detail, extra, status_code}` every dltHub client
parses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.harness import HERE, Server, copy_workspace

pytestmark = pytest.mark.integration

EXAMPLES = 15
ERROR_KEYS = {"code", "detail", "extra", "status_code"}
# streams until its run ends / replaces packages / re-reads the workspace from disk /
# may revoke `local-admin`, the key the fuzzer itself sends: each has its own tests
SKIPPED = r"/log-stream$|/-upload$|/-reload$|/api-keys/\{id_or_name\}/-revoke$"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("st") / "ws"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def real_ids(server: Server) -> dict[str, list[str]]:
    """Ids that exist, so requests get past the 404s into the routes' own code."""
    done = server.start_run("ok")["id"]
    server.wait_run(done)
    running = server.start_run("slow", parameters={"seconds": 60})["id"]
    org = server.get("/api/v1/organizations")["items"][0]["id"]
    return {
        "ws": [server.ws_id],
        "job_id": [j["id"] for j in server.jobs().values()],
        "run_id": [done, running],
        "org": [org],
    }


@pytest.fixture(scope="module")
def api_schema(server: Server, real_ids: dict[str, list[str]]) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {server.key}"},
            "generation": {"database": "none"},
        }
    )
    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)

    @loaded.hook
    def flatmap_path_parameters(_ctx: Any, path_parameters: dict[str, Any]) -> Any:
        """The real workspace id 3 times in 4; a real job/run/org id every other time."""
        if not path_parameters:
            return st.just(path_parameters)
        fields = {}
        for name, value in path_parameters.items():
            real = real_ids.get(name)
            if name == "ws":
                fields[name] = st.sampled_from([*real_ids["ws"] * 3, value])
            elif real:
                fields[name] = st.one_of(st.sampled_from(real), st.just(value))
            else:
                fields[name] = st.just(value)
        return st.fixed_dictionaries(fields)

    return loaded


def error_body(_ctx: Any, response: Any, _case: Any) -> None:
    """A 4xx is JSON with `{code, detail, extra, status_code}`, its status repeated."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, f"not the error body: {body!r}"
    assert body["status_code"] == response.status_code, body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["detail"], str) and body["detail"], body


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """Schemathesis 4.32 renames the node through `Function._nodeid`, gone in pytest 9.2."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_body,
]

schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=SKIPPED)


def aim(case: schemathesis.Case, real_ids: dict[str, list[str]]) -> None:
    """Coverage-phase cases (not drawn by Hypothesis, so the hook above does not see them)
    get the real ids too, except in the parameter the scenario is about."""
    meta = case.meta
    if meta is None or meta.phase.name != "coverage" or not case.path_parameters:
        return
    about = meta.phase.data.parameter
    for name in case.path_parameters:
        if name in real_ids and name != about:
            case.path_parameters[name] = real_ids[name][0]


def call(case: schemathesis.Case, server: Server, checks: list[Any]) -> None:
    case.call_and_validate(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, checks=checks
    )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_operations_answer_no_server_error_and_keep_their_schema(
    case: schemathesis.Case, server: Server, real_ids: dict[str, list[str]]
) -> None:
    aim(case, real_ids)
    call(case, server, CHECKS)


def test_stored_logs_answer_their_documented_content_type(
    api_schema: Any, server: Server, real_ids: dict[str, list[str]]
) -> None:
    """A real run's stored log: NDJSON, the media type the document gives its 200."""
    operation = api_schema["/logs/v1/workspaces/{ws}/job-runs/{run_id}/logs"]["GET"]
    case = operation.Case(path_parameters={"ws": server.ws_id, "run_id": real_ids["run_id"][0]})
    response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == ["application/x-ndjson"]
    case.validate_response(response, checks=CHECKS)
