"""`headwater`: run a dlt workspace's jobs, and drive the server from the terminal."""

from __future__ import annotations

import typer

from headwater.cli import (
    automations,
    backfills,
    db,
    deploy,
    jobs,
    keys,
    runs,
    server,
    snowflake,
    workers,
)

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
# in the order `headwater --help` lists them
app.add_typer(jobs.app, name="job")
app.add_typer(runs.app, name="run")
app.add_typer(keys.app, name="key")
app.add_typer(backfills.app, name="backfill")
app.add_typer(workers.app, name="worker")
app.add_typer(automations.automation_app, name="automation")
app.add_typer(automations.delivery_app, name="delivery")
app.add_typer(db.app, name="db")
app.command()(server.up)
app.command()(deploy.deploy)
app.command()(deploy.connect)
app.command("snowflake-sql")(snowflake.snowflake_sql_cmd)


if __name__ == "__main__":
    app()
