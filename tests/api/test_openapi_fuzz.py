"""Schemathesis over the server's own OpenAPI document: no server error, no broken shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.integration.harness import HERE, Server, copy_workspace

pytestmark = pytest.mark.integration

# streams until a run ends, replaces packages, re-reads the workspace, or revokes the
# key the fuzzer itself uses: covered by their own tests instead
SKIPPED = ("/log-stream", "/-upload", "/-reload", "/-revoke")
EXAMPLES = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("fuzz") / "ws"))
    srv.start(wait_warm=False)
    yield srv
    srv.stop()


def test_no_operation_answers_a_server_error_or_breaks_its_schema(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {server.key}"}
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if any(part in operation.path for part in SKIPPED):
            continue
        tested += 1

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            if case.path_parameters and "ws" in case.path_parameters:
                case.path_parameters["ws"] = server.ws_id  # the workspace most requests name
            case.call_and_validate(
                base_url=server.url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )

        try:
            check()
        except Exception as ex:  # collect every operation's failure, not only the first
            failures.append(f"{operation.method.upper()} {operation.path}: {ex}"[:2000])
    assert tested > 20
    assert not failures, "\n\n".join(failures) + "\n\n" + server.log()[-3000:]
