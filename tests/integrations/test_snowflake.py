"""`headwater snowflake-sql`: the generated SQL, and its procedure run against a real server.

Snowflake itself is not here, so the integration tests run the procedure's Python exactly
as printed (between the `$$` markers) with a stand-in for Snowflake's `_snowflake` module,
and do the same with the handler from the seed blog post, changed only in its URL and
workspace id. The PostgreSQL function is checked against a stand-in `net.http_post` with
pg_net's signature, whose recorded request is then sent to the server for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from headwater.integrations.snowflake import (
    IntegrationError,
    endpoint,
    handler_source,
    postgres_sql,
    snowflake_sql,
)
from tests.integration.harness import HERE, Server, copy_workspace

WS = "3f2b0c1e-0000-4000-8000-000000000001"
PG_URL = os.environ.get("HEADWATER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "000_0953ee1de1240510.txt"

# The seed's procedure body, verbatim (dltHub wants the full `jobs.__deployment__.` ref;
# Headwater accepts it as well as the bare name).
SEED_HANDLER = """\
import _snowflake, requests, json

WORKSPACE_ID = '<the dlthub workspace id>'

def main(session, job_name, dry_run):
    job_ref = f'jobs.__deployment__.{job_name}'
    url = f'https://api.dlthub.com/api/v1/workspaces/{WORKSPACE_ID}/scripts/trigger'
    headers = {
        'Authorization': f'Bearer {_snowflake.get_generic_secret_string("api_key")}',
        'Content-Type': 'application/json',
    }
    payload = {'job_refs': [job_ref], 'dry_run': bool(dry_run)}
    r = requests.post(url, headers=headers, data=json.dumps(payload), timeout=30)
    r.raise_for_status()
    return r.json()
"""


def between_dollars(sql: str) -> str:
    """The text between the (only) pair of `$$` markers, exactly as printed."""
    parts = sql.split("$$")
    assert len(parts) == 3, f"expected one $$ ... $$ block, found {len(parts) - 1} markers"
    body = parts[1]
    assert body.startswith("\n")
    return body[1:]


def load_handler(source: str, key: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Exec a procedure's Python with `_snowflake` stood in for; return its `main`."""
    fake = types.ModuleType("_snowflake")
    setattr(fake, "get_generic_secret_string", lambda name: key if name == "api_key" else None)  # noqa: B010
    monkeypatch.setitem(sys.modules, "_snowflake", fake)
    namespace: dict[str, Any] = {"__name__": "snowflake_handler"}
    exec(compile(source, "<procedure>", "exec"), namespace)
    return namespace["main"]


# -- unit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host_port", "trigger_url"),
    [
        (
            "https://headwater.example.com",
            "headwater.example.com:443",
            f"https://headwater.example.com/api/v1/workspaces/{WS}/scripts/trigger",
        ),
        (
            "https://headwater.example.com:8443/",
            "headwater.example.com:8443",
            f"https://headwater.example.com:8443/api/v1/workspaces/{WS}/scripts/trigger",
        ),
        (
            "http://hw.internal/base/",
            "hw.internal:80",
            f"http://hw.internal/base/api/v1/workspaces/{WS}/scripts/trigger",
        ),
    ],
)
def test_endpoint_host_port_and_path(url: str, host_port: str, trigger_url: str) -> None:
    ep = endpoint(url, WS)
    assert ep.host_port == host_port
    assert ep.trigger_url == trigger_url
    sql = snowflake_sql(url, WS)
    assert f"value_list = ('{host_port}');" in sql
    assert repr(trigger_url) in sql
    assert f"'{trigger_url}'" in postgres_sql(url, WS)


def test_snowflake_sql_objects_and_names() -> None:
    sql = snowflake_sql("https://headwater.example.com", WS)
    assert "create or replace network rule headwater.public.nr_headwater\n  mode = egress" in sql
    assert "type = host_port" in sql
    assert "create or replace secret headwater.public.se_headwater_api_key" in sql
    assert "type = generic_string" in sql
    assert (
        "secret_string = '<paste a trigger key from: headwater key create --name snowflake"
        " --scope trigger>';"
    ) in sql
    assert "create or replace external access integration i_headwater" in sql
    assert "allowed_network_rules = (headwater.public.nr_headwater)" in sql
    assert "allowed_authentication_secrets = (headwater.public.se_headwater_api_key)" in sql
    assert (
        "create or replace procedure headwater.public.p_trigger_headwater_job(\n"
        "  job_name string,\n  dry_run boolean default false\n)"
    ) in sql
    for line in (
        "returns variant",
        "language python",
        "runtime_version = '3.12'",
        "packages = ('snowflake-snowpark-python', 'requests')",
        "handler = 'main'",
        "external_access_integrations = (i_headwater)",
        "secrets = ('api_key' = headwater.public.se_headwater_api_key)",
    ):
        assert f"\n{line}\n" in sql, line
    assert WS in sql
    assert sql.rstrip().endswith("to role <role>;")
    # the body between the markers is handler_source, byte for byte
    assert between_dollars(sql) == handler_source("https://headwater.example.com", WS)


def test_names_follow_the_procedure_and_overrides() -> None:
    sql = snowflake_sql("https://h.example.com", WS, "meta.load.p_trigger")
    assert "network rule meta.load.nr_headwater" in sql
    assert "secret meta.load.se_headwater_api_key" in sql
    assert "procedure meta.load.p_trigger(" in sql
    sql = snowflake_sql(
        "https://h.example.com",
        WS,
        "p_trigger",
        network_rule="meta.integration.nr_hw",
        secret="meta.integration.se_hw",
        integration="i_hw",
    )
    assert "network rule meta.integration.nr_hw" in sql
    assert "secrets = ('api_key' = meta.integration.se_hw)" in sql
    assert "external_access_integrations = (i_hw)" in sql
    assert "procedure p_trigger(" in sql
    pg = postgres_sql("https://h.example.com", WS, "p_trigger")
    assert "create or replace function public.p_trigger(" in pg
    assert "from public.headwater_secret where name = 'api_key'" in pg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://h.example.com"}, "http"),
        ({"url": "https://h.example.com/?x=1"}, "plain base URL"),
        ({"url": "https://user:pw@h.example.com"}, "plain base URL"),
        ({"url": "https://h.example.com/a'b"}, "quotes"),
        ({"url": "https://h.example.com/$$"}, r"\$\$"),
        ({"workspace_id": "a/b"}, "workspace id"),
        ({"procedure": "a.b.c.d"}, "--procedure"),
        ({"procedure": "x; drop table t"}, "--procedure"),
        ({"integration": "db.i_hw"}, "--integration"),
    ],
)
def test_bad_input_is_refused(kwargs: dict[str, str], match: str) -> None:
    args = {"url": "https://h.example.com", "workspace_id": WS, **kwargs}
    with pytest.raises(IntegrationError, match=match):
        snowflake_sql(**args)


def test_handler_source_compiles_and_builds_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    source = handler_source("https://headwater.example.com", WS)
    compile(source, "<procedure>", "exec")
    main = load_handler(source, "dlt_sa_test", monkeypatch)
    sent: dict[str, Any] = {}

    class Answer:
        status_code = 201

        def json(self) -> Any:
            return {"triggered": [], "failed": []}

    def post(url: str, **kw: Any) -> Answer:
        sent.update(url=url, **kw)
        return Answer()

    monkeypatch.setattr(main.__globals__["requests"], "post", post)
    assert main(None, "load", None) == {"triggered": [], "failed": []}
    assert sent["url"] == f"https://headwater.example.com/api/v1/workspaces/{WS}/scripts/trigger"
    assert sent["headers"]["Authorization"] == "Bearer dlt_sa_test"
    assert sent["data"] == '{"job_refs": ["load"], "dry_run": false}'
    assert sent["timeout"] == 30


def test_postgres_sql_documents_pg_net_is_asynchronous() -> None:
    sql = postgres_sql("https://headwater.example.com", WS)
    assert "create or replace function headwater.p_trigger_headwater_job(" in sql
    assert "net.http_post(" in sql
    for arg in ("url :=", "body :=", "params :=", "headers :=", "timeout_milliseconds := 30000"):
        assert arg in sql
    comments = "\n".join(line for line in sql.splitlines() if line.startswith("--"))
    assert "ASYNCHRONOUS" in comments and "net._http_response" in comments
    assert "COMMITS" in comments


def test_seed_handler_copy_is_verbatim() -> None:
    if not SEED.exists():
        pytest.skip(f"the seed text is not beside the repository ({SEED})")
    assert SEED_HANDLER in SEED.read_text()


# -- against a real server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("snowflake") / "ws")
    srv = Server(ws).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def trigger_key(server: Server) -> str:
    proc = server.cli("key", "create", "--name", "snowflake", "--scope", "trigger")
    key = proc.stdout.strip()
    assert key.startswith("dlt_sa_"), proc.stdout + proc.stderr
    return key


def check_dry_run(server: Server, answer: dict[str, Any], runs_before: int) -> None:
    assert answer["failed"] == []
    (item,) = answer["triggered"]
    assert item["job_ref"] == "jobs.__deployment__.ok"
    assert item["status"] == "triggered"
    assert item["run_id"] is None and item["run"] is None
    assert len(server.runs("ok")) == runs_before


def check_real_run(server: Server, answer: dict[str, Any]) -> None:
    assert answer["failed"] == []
    (item,) = answer["triggered"]
    assert item["job_ref"] == "jobs.__deployment__.ok"
    assert item["status"] == "triggered"
    assert item["run_id"] and item["run"]["id"] == item["run_id"]
    run = server.wait_run(item["run_id"])
    assert run["status"] == "completed", run
    assert "ok ran" in server.user_output(run["id"])


@pytest.mark.integration
def test_printed_procedure_triggers_ok(
    server: Server, trigger_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql = server.cli("snowflake-sql", "--url", server.url).stdout
    assert f"value_list = ('127.0.0.1:{server.port}');" in sql
    assert f"/api/v1/workspaces/{server.ws_id}/scripts/trigger" in sql
    # the usage comments name one of the server's jobs
    example = re.search(r"call headwater\.public\.p_trigger_headwater_job\('(\w+)', true\);", sql)
    assert example and example.group(1) in server.jobs()
    main = load_handler(between_dollars(sql), trigger_key, monkeypatch)

    before = len(server.runs("ok"))
    check_dry_run(server, main(None, "ok", True), before)
    check_real_run(server, main(None, "ok", False))


@pytest.mark.integration
def test_printed_procedure_raises_with_the_servers_detail(
    server: Server, trigger_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    sql = server.cli("snowflake-sql", "--url", server.url).stdout
    main = load_handler(between_dollars(sql), trigger_key, monkeypatch)
    with pytest.raises(requests.HTTPError, match="404 for job 'nope': .*nope") as info:
        main(None, "nope", True)
    assert info.value.response.status_code == 404
    bad = load_handler(between_dollars(sql), "dlt_sa_not_a_key", monkeypatch)
    with pytest.raises(requests.HTTPError, match="401"):
        bad(None, "ok", True)


@pytest.mark.integration
def test_workspace_id_comes_from_the_running_server(server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "headwater.cli.main", "snowflake-sql", "--url", "https://x.io"],
        cwd=server.workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"https://x.io/api/v1/workspaces/{server.ws_id}/scripts/trigger" in proc.stdout
    given = server.cli("snowflake-sql", "--url", "https://x.io", "--workspace-id", "ws-1").stdout
    assert "https://x.io/api/v1/workspaces/ws-1/scripts/trigger" in given
    refused = server.cli("snowflake-sql", "--url", "ftp://x.io", check=False)
    assert refused.returncode == 1 and "http(s) URL" in refused.stderr


@pytest.mark.integration
def test_seed_handler_unchanged_but_url_and_workspace(
    server: Server, trigger_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = SEED_HANDLER.replace("https://api.dlthub.com", server.url).replace(
        "<the dlthub workspace id>", server.ws_id
    )
    assert source.count(server.url) == 1 and source.count(server.ws_id) == 1
    main = load_handler(source, trigger_key, monkeypatch)

    before = len(server.runs("ok"))
    check_dry_run(server, main(None, "ok", True), before)
    check_real_run(server, main(None, "ok", False))


# -- PostgreSQL ----------------------------------------------------------------------------------


def pg_connect() -> Any:
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(PG_URL.replace("+psycopg", ""), connect_timeout=3)
    except Exception as ex:  # unreachable server: nothing to check against
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {ex}")


@pytest.mark.postgres
def test_postgres_function_is_accepted_with_real_pg_net() -> None:
    with pg_connect() as conn:
        available = conn.execute(
            "select 1 from pg_available_extensions where name = 'pg_net'"
        ).fetchone()
        if not available:
            pytest.skip(
                "the pg_net extension is not installed on this PostgreSQL server"
                " (pg_available_extensions has no pg_net); the stand-in test below checks"
                " the function against pg_net's documented signature instead"
            )
        schema = f"hw_pgnet_{uuid.uuid4().hex[:8]}"
        sql = postgres_sql("https://headwater.example.com", WS, f"{schema}.p_trigger")
        try:
            conn.execute(sql)  # creating a LANGUAGE sql function resolves net.http_post
            row = conn.execute(
                f"select pg_get_function_identity_arguments('{schema}.p_trigger'::regproc)"
            ).fetchone()
            assert row == ("job_name text, dry_run boolean",)
        finally:
            conn.rollback()  # nothing is kept, and no request is ever sent


STAND_IN_PG_NET = """
create schema net;
create table net.calls (
  url text, body jsonb, params jsonb, headers jsonb, timeout_milliseconds int
);
create function net.http_post(
  url text,
  body jsonb default '{}'::jsonb,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int default 1000
) returns bigint language sql volatile as $f$
  insert into net.calls values (url, body, params, headers, timeout_milliseconds);
  select count(*) from net.calls;
$f$;
"""


@pytest.mark.integration
@pytest.mark.postgres
def test_postgres_function_sends_what_the_server_accepts(server: Server, trigger_key: str) -> None:
    """The printed function, minus `create extension`, against a stand-in `net.http_post`
    with pg_net's signature; the request it records is then sent to the server."""
    schema = f"hw_pgnet_{uuid.uuid4().hex[:8]}"
    args = ["--url", server.url, "--target", "postgres", "--procedure", f"{schema}.p_trigger"]
    sql = server.cli("snowflake-sql", *args).stdout
    assert re.search(r"^create extension if not exists pg_net;$", sql, re.M)
    sql = sql.replace("create extension if not exists pg_net;", "")
    with pg_connect() as conn:
        if conn.execute("select 1 from pg_namespace where nspname = 'net'").fetchone():
            pytest.skip("this database already has a `net` schema (pg_net installed?)")
        try:
            conn.execute(STAND_IN_PG_NET)
            conn.execute(sql)
            conn.execute(f"update {schema}.headwater_secret set value = %s", [trigger_key])
            assert conn.execute(f"select {schema}.p_trigger('ok', true)").fetchone() == (1,)
            assert conn.execute(f"select {schema}.p_trigger('ok')").fetchone() == (2,)
            calls = conn.execute(
                "select url, body, params, headers, timeout_milliseconds from net.calls"
            ).fetchall()
        finally:
            conn.rollback()
    assert [c[1] for c in calls] == [
        {"job_refs": ["ok"], "dry_run": True},
        {"job_refs": ["ok"], "dry_run": False},
    ]
    url, _, params, headers, timeout_ms = calls[0]
    assert url == f"{server.url}/api/v1/workspaces/{server.ws_id}/scripts/trigger"
    assert params == {} and timeout_ms == 30000
    assert headers == {"Authorization": f"Bearer {trigger_key}", "Content-Type": "application/json"}

    def send(call: tuple[Any, ...]) -> dict[str, Any]:
        url, body, _, headers, timeout_ms = call
        answer = httpx.post(url, json=body, headers=headers, timeout=timeout_ms / 1000)
        assert answer.status_code == 201, answer.text
        return answer.json()

    before = len(server.runs("ok"))
    check_dry_run(server, send(calls[0]), before)
    check_real_run(server, send(calls[1]))
