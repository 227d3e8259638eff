"""Finding the server a CLI command talks to, and the files a server leaves for it.

`headwater up` writes `WORKSPACE/.headwater/server.json` (its URL and workspace id),
`admin.key` (the local admin key, readable by its owner only) and notes itself in the
state folder (`last.json`); the CLI reads them back here, after the environment
(`HEADWATER_URL`, `HEADWATER_WORKSPACE_ID`, `HEADWATER_API_KEY`). Both sides live in
this one module so the files' format cannot drift apart.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from headwater.client import Client, ClientError

if TYPE_CHECKING:
    from headwater.store.store import Store

SERVER_FILE = "server.json"
ADMIN_KEY_FILE = "admin.key"
LAST_SERVER_FILE = "last.json"
SEARCH_DEPTH = 3
"""How many folders below the current one the CLI looks for a running server's workspace."""
SEARCH_MAX_DIRS = 2000
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "venv", "build", "dist"})


@dataclass(frozen=True)
class FoundServer:
    url: str
    workspace_id: str
    api_key: str
    workspace: Path | None
    """The workspace folder whose `.headwater` named the server (None: from the environment)."""
    note: str | None = None
    """How the server was found, when it was not from the folder the user named."""


def state_dir() -> Path:
    """Where the CLI keeps what outlives a folder (`HEADWATER_STATE_DIR`, else the XDG state
    folder: `~/.local/state/headwater`)."""
    if explicit := os.environ.get("HEADWATER_STATE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "headwater"


def remember_server(workspace: Path, url: str, workspace_id: str, pid: int) -> Path:
    """Note the server `headwater up` started, for commands run outside any workspace."""
    path = state_dir() / LAST_SERVER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{pid}")
    tmp.write_text(
        json.dumps(
            {"workspace": str(workspace), "url": url, "workspace_id": workspace_id, "pid": pid}
        )
    )
    os.replace(tmp, path)
    return path


def find_server(workspace: Path) -> tuple[str, str, str]:
    """`(url, workspace_id, api_key)` from the environment, else from a running `headwater up`."""
    found = locate_server(workspace)
    return found.url, found.workspace_id, found.api_key


def locate_server(workspace: Path, search: bool = False) -> FoundServer:
    """The server for `workspace`: the environment's, else the one its `.headwater` names.

    With `search` (the user named no folder) and nothing found there, the running server
    of a workspace above or below `workspace` is used, else the one `headwater up`
    started last; several below, or none at all, is an error that says which `-w` to pass.
    """
    url = os.environ.get("HEADWATER_URL")
    ws_id = os.environ.get("HEADWATER_WORKSPACE_ID")
    home = workspace.resolve() / ".headwater"
    if search and not url and not (home / SERVER_FILE).exists():
        found = _search(workspace.resolve())
        if found is not None:
            return found
    key = os.environ.get("HEADWATER_API_KEY", "")
    server_file = home / SERVER_FILE
    if server_file.exists() and not (url and ws_id):
        info = json.loads(server_file.read_text())
        url = url or info["url"]
        ws_id = ws_id or info["workspace_id"]
    if not key:
        key = _admin_key(home)
    if not url:
        raise ClientError(
            0,
            f"no Headwater server found for {workspace.resolve()}: start one with `headwater up"
            " WORKSPACE`, pass `-w WORKSPACE` (the folder it serves), or set HEADWATER_URL and"
            " HEADWATER_WORKSPACE_ID",
        )
    if not ws_id:
        ws_id = Client(url, "", "").health()["workspace_id"]
    return FoundServer(url.rstrip("/"), str(ws_id), key, workspace.resolve())


def _admin_key(home: Path) -> str:
    path = home / ADMIN_KEY_FILE
    return path.read_text().strip() if path.exists() else ""


def _running(workspace: Path) -> FoundServer | None:
    """The server `workspace/.headwater/server.json` names, if it answers as that workspace."""
    try:
        info = json.loads((workspace / ".headwater" / SERVER_FILE).read_text())
        url, ws_id = str(info["url"]).rstrip("/"), str(info["workspace_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _answers(url, ws_id):
        return None
    key = os.environ.get("HEADWATER_API_KEY") or _admin_key(workspace / ".headwater")
    return FoundServer(url, ws_id, key, workspace)


def _answers(url: str, ws_id: str) -> bool:
    try:
        resp = httpx.get(f"{url}/health", timeout=2.0)
        return resp.status_code == 200 and resp.json().get("workspace_id") == ws_id
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def _hint(workspace: Path, cwd: Path) -> str:
    """`-w PATH` as the user can type it from `cwd`."""
    return f"-w {workspace.relative_to(cwd) if workspace.is_relative_to(cwd) else workspace}"


def _search(cwd: Path) -> FoundServer | None:
    if (cwd / "__deployment__.py").exists() or (cwd / ".headwater").is_dir():
        # a workspace of its own: another one's server would be the wrong one
        raise ClientError(
            0,
            f"no Headwater server runs for the workspace {cwd}: start it with `headwater up`"
            " here, or pass `-w WORKSPACE` for another one",
        )
    for parent in cwd.parents:  # inside a workspace, as git finds its repository
        if (parent / ".headwater" / SERVER_FILE).exists():
            found = _running(parent)
            if found is not None:
                return _noted(found, cwd, "the workspace this folder is in")
            break
    below = [ws for ws in _workspaces_below(cwd) if ws != cwd]
    running = [found for ws in below if (found := _running(ws)) is not None]
    if len(running) == 1:
        return _noted(running[0], cwd, "the only one running below this folder")
    if len(running) > 1:
        raise ClientError(
            0,
            f"several Headwater servers run for workspaces below {cwd}; name one with "
            + " or ".join(f"`{_hint(f.workspace, cwd)}`" for f in running if f.workspace),
        )
    last = _last_started()
    if last is not None:
        return _noted(last, cwd, "the one `headwater up` started last")
    stale = ", ".join(_hint(ws, cwd) for ws in below)
    raise ClientError(
        0,
        f"no Headwater server runs for {cwd}"
        + (f" nor for the workspaces below it ({stale}: stopped)" if stale else "")
        + ": start one with `headwater up WORKSPACE`, then run commands inside WORKSPACE or"
        " pass `-w WORKSPACE`",
    )


def _noted(found: FoundServer, cwd: Path, how: str) -> FoundServer:
    assert found.workspace is not None
    return FoundServer(
        found.url,
        found.workspace_id,
        found.api_key,
        found.workspace,
        f"using the Headwater server at {found.url} of {found.workspace} ({how});"
        f" pass `{_hint(found.workspace, cwd)}` to name it",
    )


def _workspaces_below(root: Path) -> list[Path]:
    """Folders up to `SEARCH_DEPTH` below `root` holding `.headwater/server.json`, sorted."""
    found: list[Path] = []
    visited = 0
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        if (here / ".headwater" / SERVER_FILE).is_file():
            found.append(here)
        depth = len(here.relative_to(root).parts)
        visited += 1
        if depth >= SEARCH_DEPTH or visited >= SEARCH_MAX_DIRS:
            dirnames.clear()
        else:
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
            )
    return sorted(found)


def _last_started() -> FoundServer | None:
    try:
        info = json.loads((state_dir() / LAST_SERVER_FILE).read_text())
        workspace = Path(info["workspace"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _running(workspace)


def ensure_admin_key(store: Store, ws_id: str, home: Path) -> Path:
    """The local admin key the `headwater` CLI uses, in a file only its owner can read:
    the one in `home` while it is an active admin key of `ws_id`, else a new one."""
    path = home / ADMIN_KEY_FILE
    if path.exists():
        row = store.find_key(path.read_text().strip())
        now = datetime.now(UTC)
        if (
            row is not None
            and row["workspace_id"] == ws_id
            and row["scope"] == "admin"
            and row["revoked_at"] is None
            and (row["expires_at"] is None or row["expires_at"] > now)
        ):
            os.chmod(path, 0o600)
            return path
    _row, secret = store.create_key(ws_id, "local-admin", "admin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    return path
