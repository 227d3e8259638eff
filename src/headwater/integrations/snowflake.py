"""SQL that lets a warehouse trigger Headwater jobs through the `scripts/trigger` route.

`snowflake_sql` prints the four Snowflake objects a stored procedure needs to call out
(network rule, secret, external access integration, procedure); `handler_source` is the
procedure's Python, exactly as it appears between the `$$` markers. `postgres_sql` is
the same idea for PostgreSQL with the `pg_net` extension. All are pure functions of
the server's public URL and workspace id.

The procedure takes the bare job name (`load`): Headwater resolves bare and half
names itself, so unlike the managed service no `jobs.__deployment__.` prefix is needed
(a full ref works too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from headwater.core.errors import HeadwaterError

DEFAULT_PROCEDURE = "headwater.public.p_trigger_headwater_job"
DEFAULT_PG_FUNCTION = "headwater.p_trigger_headwater_job"
NETWORK_RULE = "nr_headwater"
SECRET = "se_headwater_api_key"
INTEGRATION = "i_headwater"
PG_SECRET_TABLE = "headwater_secret"
SNOWFLAKE_PLACEHOLDER = (
    "<paste a trigger key from: headwater key create --name snowflake --scope trigger>"
)
POSTGRES_PLACEHOLDER = (
    "<paste a trigger key from: headwater key create --name postgres --scope trigger>"
)
TIMEOUT_SECONDS = 30

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_WORKSPACE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class IntegrationError(HeadwaterError, ValueError):
    """A URL, name or workspace id that cannot go into the generated SQL."""

    code = "integration_invalid"


@dataclass(frozen=True)
class Endpoint:
    """Where the procedure posts: the trigger URL and the `host:port` to allow."""

    trigger_url: str
    host_port: str


def endpoint(url: str, workspace_id: str) -> Endpoint:
    """The trigger URL and `host:port` for a server's public base URL.

    The port is the URL's own, else 443 for https and 80 for http. A path on the base
    (a server behind a reverse proxy under `/headwater`) is kept.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise IntegrationError(f"--url must be an http(s) URL, got {url!r}")
    if not parts.hostname:
        raise IntegrationError(f"--url has no host: {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise IntegrationError(
            f"--url must be a plain base URL (no credentials, query or fragment): {url!r}"
        )
    try:
        port = parts.port
    except ValueError as ex:
        raise IntegrationError(f"--url has a bad port: {url!r}") from ex
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not _WORKSPACE_ID.match(workspace_id or ""):
        raise IntegrationError(f"not a workspace id: {workspace_id!r}")
    host = parts.hostname
    if ":" in host:
        raise IntegrationError("use a host name, not an IPv6 address, in --url")
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    if "$$" in base or "'" in base or "\\" in base:
        raise IntegrationError(f"--url must not contain $$, quotes or backslashes: {url!r}")
    trigger_url = f"{base}/api/v1/workspaces/{workspace_id}/scripts/trigger"
    return Endpoint(trigger_url=trigger_url, host_port=f"{host}:{port}")


def _name(value: str, what: str, max_parts: int = 3) -> str:
    parts = value.split(".")
    if len(parts) > max_parts or not all(_IDENT.match(p) for p in parts):
        raise IntegrationError(
            f"{what} must be {'an unquoted identifier' if max_parts == 1 else 'a dotted name'}"
            f" of at most {max_parts} part(s) (letters, digits, _ and $), got {value!r}"
        )
    return value


def _prefix(name: str) -> str:
    """`db.schema.` of `db.schema.proc` (empty for an unqualified name)."""
    return name.rpartition(".")[0] + "." if "." in name else ""


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def handler_source(url: str, workspace_id: str) -> str:
    """The stored procedure's Python: what goes between the `$$` markers, verbatim."""
    ep = endpoint(url, workspace_id)
    return f'''import json

import _snowflake
import requests

URL = {ep.trigger_url!r}


def main(session, job_name, dry_run=False):
    """Trigger a Headwater job by its bare name ('load'); Headwater resolves the ref."""
    headers = {{
        "Authorization": "Bearer " + _snowflake.get_generic_secret_string("api_key"),
        "Content-Type": "application/json",
    }}
    payload = {{"job_refs": [job_name], "dry_run": bool(dry_run)}}
    r = requests.post(URL, headers=headers, data=json.dumps(payload), timeout={TIMEOUT_SECONDS})
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail") or r.text
        except (ValueError, AttributeError):
            detail = r.text
        raise requests.HTTPError(
            f"Headwater answered {{r.status_code}} for job {{job_name!r}}: {{detail}}",
            response=r,
        )
    return r.json()
'''


def snowflake_sql(
    url: str,
    workspace_id: str,
    procedure: str = DEFAULT_PROCEDURE,
    *,
    network_rule: str | None = None,
    secret: str | None = None,
    integration: str = INTEGRATION,
    example_job: str = "load",
) -> str:
    """Snowflake DDL for a procedure `PROCEDURE(job_name string, dry_run boolean)`.

    The network rule and secret live beside the procedure (`db.schema.nr_headwater`,
    `db.schema.se_headwater_api_key`) unless named; the integration is an account
    object (`i_headwater`).
    """
    ep = endpoint(url, workspace_id)
    procedure = _name(procedure, "--procedure")
    prefix = _prefix(procedure)
    rule = _name(network_rule or prefix + NETWORK_RULE, "--network-rule")
    sec = _name(secret or prefix + SECRET, "--secret")
    eai = _name(integration, "--integration", max_parts=1)
    schema_hint = ""
    if procedure.count(".") == 2:
        db, schema, _ = procedure.split(".")
        schema_hint = (
            f"-- The objects live in {db}.{schema}; if it does not exist yet:\n"
            f"--   create database if not exists {db};\n"
            f"--   create schema if not exists {db}.{schema};\n"
        )
    return f"""\
-- Headwater: trigger jobs from Snowflake.
-- Server {ep.trigger_url.split("/api/v1/")[0]}, workspace {workspace_id}.
-- Creating a network rule, secret and external access integration needs a role with
-- CREATE INTEGRATION (e.g. ACCOUNTADMIN). Snowflake must reach {ep.host_port}.
{schema_hint}
create or replace network rule {rule}
  mode = egress
  type = host_port
  value_list = ({_sql_str(ep.host_port)});

create or replace secret {sec}
  type = generic_string
  secret_string = {_sql_str(SNOWFLAKE_PLACEHOLDER)};

create or replace external access integration {eai}
  allowed_network_rules = ({rule})
  allowed_authentication_secrets = ({sec})
  enabled = true;

-- job_name is the bare job name (e.g. {example_job!r}): Headwater resolves it.
-- Returns Headwater's answer:
--   {{"triggered": [{{job_ref, status, run_id, run, ...}}], "failed": [...]}}
create or replace procedure {procedure}(
  job_name string,
  dry_run boolean default false
)
returns variant
language python
runtime_version = '3.12'
packages = ('snowflake-snowpark-python', 'requests')
handler = 'main'
external_access_integrations = ({eai})
secrets = ('api_key' = {sec})
as
$$
{handler_source(url, workspace_id)}$$;

-- check the plumbing without starting a run:
--   call {procedure}({_sql_str(example_job)}, true);
-- start a run:
--   call {procedure}({_sql_str(example_job)});
-- let another role call it:
--   grant usage on procedure {procedure}(string, boolean) to role <role>;
"""


def postgres_sql(
    url: str,
    workspace_id: str,
    function: str = DEFAULT_PG_FUNCTION,
    *,
    secret_table: str | None = None,
    example_job: str = "load",
) -> str:
    """PostgreSQL DDL for `FUNCTION(job_name text, dry_run boolean) returns bigint` via pg_net.

    The key sits in a table beside the function that only its owner can read; the
    function is `security definer`, so callers need only EXECUTE on it.
    """
    ep = endpoint(url, workspace_id)
    function = _name(function, "--procedure", max_parts=2)
    if "." not in function:
        function = "public." + function
    schema = function.split(".")[0]
    table = _name(secret_table or PG_SECRET_TABLE, "secret table", max_parts=2)
    if "." not in table:
        # the function pins its search_path, so everything it reads is schema-qualified
        table = f"{schema}.{table}"
    signature = f"{function}(text, boolean)"
    return f"""\
-- Headwater: trigger jobs from PostgreSQL with the pg_net extension.
-- Server {ep.trigger_url.split("/api/v1/")[0]}, workspace {workspace_id}.
--
-- pg_net is ASYNCHRONOUS. net.http_post only queues the request and returns its id;
-- pg_net's background worker sends it after the calling transaction COMMITS (nothing
-- is sent if it rolls back). So the function returns that request id, not
-- Headwater's answer, and an HTTP error (401, 404 ...) raises nothing here.
-- Once the request has completed, read the answer from net._http_response:
--
--   select status_code, content::jsonb, timed_out, error_msg
--   from net._http_response where id = <request id>;
--
-- pg_net keeps responses only for a while (setting pg_net.ttl).

create extension if not exists pg_net;
create schema if not exists {schema};

create table if not exists {table} (
  name text primary key,
  value text not null
);
revoke all on table {table} from public;
-- paste the key below; running this again with the placeholder keeps a stored key
insert into {table} (name, value)
values ('api_key', {_sql_str(POSTGRES_PLACEHOLDER)})
on conflict (name) do update set value = excluded.value
  where excluded.value not like '<paste a trigger key%';

-- job_name is the bare job name (e.g. {example_job!r}): Headwater resolves it.
create or replace function {function}(
  job_name text,
  dry_run boolean default false
)
returns bigint
language sql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
  select net.http_post(
    url := {_sql_str(ep.trigger_url)},
    body := jsonb_build_object(
      'job_refs', jsonb_build_array(job_name),
      'dry_run', coalesce(dry_run, false)
    ),
    params := '{{}}'::jsonb,
    headers := jsonb_build_object(
      'Authorization', 'Bearer ' || (select value from {table} where name = 'api_key'),
      'Content-Type', 'application/json'
    ),
    timeout_milliseconds := {TIMEOUT_SECONDS * 1000}
  );
$$;
revoke all on function {signature} from public;

-- check the plumbing without starting a run (then commit, and read net._http_response):
--   select {function}({_sql_str(example_job)}, true);
-- start a run:
--   select {function}({_sql_str(example_job)});
-- let another role call it:
--   grant execute on function {signature} to <role>;
"""
