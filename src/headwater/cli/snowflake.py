"""`headwater snowflake-sql`: SQL that lets Snowflake (or PostgreSQL) trigger jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.console import WorkspaceOpt, client_for, fail
from headwater.client import ClientError


def snowflake_sql_cmd(
    url: Annotated[
        str, typer.Option(help="This server's public base URL, as Snowflake will reach it.")
    ],
    procedure: Annotated[
        str | None,
        typer.Option(
            help="Procedure (function for postgres) to create; default"
            " headwater.public.p_trigger_headwater_job"
            " (postgres: headwater.p_trigger_headwater_job)."
        ),
    ] = None,
    workspace_id: Annotated[
        str | None, typer.Option(help="Workspace id (default: asked from the running server).")
    ] = None,
    target: Annotated[str, typer.Option(help="snowflake, or postgres (pg_net).")] = "snowflake",
    network_rule: Annotated[
        str | None, typer.Option(help="Network rule name (default: nr_headwater beside it).")
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="Secret name (default: se_headwater_api_key beside it).")
    ] = None,
    integration: Annotated[
        str, typer.Option(help="External access integration name.")
    ] = "i_headwater",
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Print SQL that lets Snowflake (or PostgreSQL with pg_net) trigger this server's jobs."""
    from headwater.integrations import snowflake as sf

    if target not in ("snowflake", "postgres"):
        fail(f"--target is snowflake or postgres, got {target!r}")
    example = "load"
    if workspace_id is None:
        client = client_for(workspace)
        workspace_id = client.ws
        try:
            jobs = [j for j in client.jobs() if j.get("job_type") == "batch"]
            # the example names a job people start by hand: one without triggers, if any
            jobs.sort(key=lambda j: bool(j["job_definition"].get("triggers")))
            names = [j["job_ref"].rsplit(".", 1)[-1] for j in jobs]
            example = next((n for n in names if n == "load"), names[0] if names else example)
        except (ClientError, KeyError):
            pass  # only the example in the comments needs the job list
    try:
        if target == "postgres":
            sql = sf.postgres_sql(
                url, workspace_id, procedure or sf.DEFAULT_PG_FUNCTION, example_job=example
            )
        else:
            sql = sf.snowflake_sql(
                url,
                workspace_id,
                procedure or sf.DEFAULT_PROCEDURE,
                network_rule=network_rule,
                secret=secret,
                integration=integration,
                example_job=example,
            )
    except sf.IntegrationError as ex:
        fail(str(ex))
    print(sql, end="")
