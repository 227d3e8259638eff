"""`headwater deploy` (reload here, or upload to a remote server) and `headwater connect`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from headwater.cli.console import WorkspaceOpt, call, client_for, err, fail, out, server_for
from headwater.client import Client


def deploy(
    workspace: WorkspaceOpt = Path("."),
    to: Annotated[
        str | None,
        typer.Option(help="Deploy to a remote Headwater at this URL (code, configuration, jobs)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Admin key of the remote server (or HEADWATER_API_KEY).")
    ] = None,
    workspace_id: Annotated[
        str | None, typer.Option(help="Workspace id of the remote server (default: asked).")
    ] = None,
) -> None:
    """Load `__deployment__.py` again and reconcile jobs; with --to, deploy to a remote server."""
    if to:
        raise typer.Exit(_deploy_remote(workspace, to, key, workspace_id))
    client = client_for(workspace)
    result = call(client.reload)
    if not result["ok"]:
        if result.get("error_type") == "ConfigError":
            fail(
                "headwater.toml not loaded (the server keeps its last good configuration"
                f" and manifest version {result['version']}):\n" + result["error"]
            )
        fail(
            f"manifest not loaded (the server keeps version {result['version']}):\n"
            + result["error"]
        )
    for job in result["jobs"]:
        out.print(f"  {job['outcome']:<10} {job['job_ref']}")
    for warning in result["warnings"]:
        out.print(f"  [yellow]warning[/yellow] {escape(warning)}")
    out.print(
        f"manifest version {result['version']}" + ("" if result["changed"] else " (unchanged)")
    )


def _deploy_remote(workspace: Path, url: str, key: str | None, ws_id: str | None) -> int:
    """Upload the workspace's code and configuration (when changed), then reconcile its jobs."""
    from headwater.workspace.config import ConfigError, load_config
    from headwater.workspace.launch import job_specs
    from headwater.workspace.manifest import ManifestError, load_manifest
    from headwater.workspace.packages import build_packages

    key = key or os.environ.get("HEADWATER_API_KEY")
    if not key:
        fail("--key (or HEADWATER_API_KEY) is needed: an admin key of the remote server")
    assert key is not None
    ws_id = ws_id or Client(url, "", key).health()["workspace_id"]
    client = Client(url, ws_id, key)
    try:
        loaded = load_manifest(workspace)
        # a bad headwater.toml is refused here, before anything is uploaded
        job_specs(loaded, load_config(workspace))
    except ManifestError as ex:
        fail(f"manifest not loaded: {ex.detail}")
    except ConfigError as ex:
        fail(f"headwater.toml not loaded: {ex.detail}")
    code, code_hash, config, config_hash = build_packages(workspace.resolve())
    for plural, data, content_hash, req in (
        ("deployments", code, code_hash, b"{}"),
        ("configurations", config, config_hash, None),
    ):
        latest = call(client.latest_package, plural)
        if latest is not None and latest["content_hash"] == content_hash:
            out.print(f"  {plural:<15} unchanged (version {latest['version']})")
            continue
        stored = call(client.upload_package, plural, data, req)
        out.print(
            f"  {plural:<15} uploaded version {stored['version']} ({stored['file_count']} files)"
        )
    answer = call(
        client.deploy,
        {
            "job_definition_engine_version": loaded.manifest["engine_version"],
            "job_definition_hash": loaded.hash,
            "jobs": loaded.jobs,
            "deployment_module": loaded.manifest.get("deployment_module"),
            "description": loaded.manifest.get("description"),
            "dry_run": False,
        },
    )
    receipt = answer["job_receipt"]
    for item in receipt["succeeded"] + receipt["skipped"]:
        out.print(f"  {item['outcome']:<10} {item['job']['job_ref']}")
    out.print(f"deployed to {url} (workspace {ws_id})")
    return 0


CONNECT_KEYS_FILE = "connect-keys.json"
"""Keys `connect` made, by scope and name, so that it reuses them (mode 0600, as admin.key)."""


def connect(
    workspace: WorkspaceOpt = Path("."),
    name: Annotated[str, typer.Option(help="Name of the key to use or create.")] = "dlthub-cli",
    scope: Annotated[str, typer.Option(help="trigger, read or admin.")] = "admin",
) -> None:
    """Print the settings that point the `dlthub` CLI and SDK at this server.

    The key is created once and reused while it is active (kept in
    WORKSPACE/.headwater/connect-keys.json, readable by its owner only)."""
    found = server_for(workspace)
    client = Client(found.url, found.workspace_id, found.api_key)
    key = _connect_key(client, found.workspace, name, scope)
    print(f"export RUNTIME__API_BASE_URL={client.url}")
    print(f"export RUNTIME__API_KEY={key}")
    print(f"export RUNTIME__WORKSPACE_ID={client.ws}")


def _connect_key(client: Client, workspace: Path | None, name: str, scope: str) -> str:
    """The active key `connect` made before for this name and scope, else a new one."""
    home = workspace / ".headwater" if workspace is not None else None
    path = home / CONNECT_KEYS_FILE if home is not None and home.is_dir() else None
    stored: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    slot = f"{client.ws}/{scope}/{name}"
    mine = stored.get(slot)
    if mine:
        now = datetime.now(UTC)
        for k in call(client.keys):
            if (
                k["id"] == mine.get("id")
                and k["revoked_at"] is None
                and (k["expires_at"] is None or _aware(k["expires_at"]) > now)
            ):
                err.print(f"[dim]using the {scope} key {name!r} ({k['prefix']}...)[/dim]")
                return str(mine["key"])
    if path is None:
        # nowhere to keep it: a name of its own, so `key revoke` can tell it from others
        name = f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    created = call(client.create_key, name, scope, None)
    err.print(f"[dim]created the {scope} key {name!r} ({created['prefix']}...)[/dim]")
    if path is not None:
        stored[slot] = {"id": created["id"], "key": created["key"]}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f, indent=1)
        os.chmod(path, 0o600)
    return str(created["key"])


def _aware(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
