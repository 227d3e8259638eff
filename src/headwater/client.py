"""The HTTP client the CLI uses: the dltHub runtime API paths, plus Headwater's own."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from headwater.core.errors import HeadwaterError


class ClientError(HeadwaterError):
    code = "client_error"

    def __init__(
        self, status: int, detail: str, code: str | None = None, extra: Any = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.extra = extra


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


class Client:
    def __init__(self, url: str, workspace_id: str, api_key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.ws = workspace_id
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    @property
    def w(self) -> str:
        return f"/api/v1/workspaces/{self.ws}"

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.TransportError as ex:
            raise ClientError(0, f"cannot reach Headwater at {self.url}: {ex}") from ex
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"detail": resp.text}
            raise ClientError(
                resp.status_code, str(body.get("detail")), body.get("code"), body.get("extra")
            )
        return resp.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def workspace(self) -> dict[str, Any]:
        return self._call("GET", self.w)

    def reload(self) -> dict[str, Any]:
        return self._call("POST", f"{self.w}/-reload")

    def jobs(self, include_archived: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 1000, "offset": 0}
        if not include_archived:
            params["is_archived"] = "false"
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", f"{self.w}/jobs", params=params)
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items
            params["offset"] = len(items)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.w}/jobs/{job_id}")

    def set_paused(self, job_id: str, paused: bool) -> dict[str, Any]:
        return self._call("POST", f"{self.w}/jobs/{job_id}/{'-pause' if paused else '-resume'}")

    def trigger(self, **body: Any) -> dict[str, Any]:
        return self._call("POST", f"{self.w}/jobs/-trigger", json=body)

    def runs(
        self,
        job_id: str | None = None,
        statuses: list[str] | None = None,
        limit: int = 50,
        number: int | None = None,
    ) -> dict[str, Any]:
        params: list[tuple[str, Any]] = [("limit", limit), ("offset", 0)]
        if job_id:
            params.append(("job_id", job_id))
        if number is not None:
            params.append(("number", number))
        for s in statuses or []:
            params.append(("status", s))
        return self._call("GET", f"{self.w}/job-runs", params=params)

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.w}/job-runs/{run_id}")

    def pipeline_run(self, pipeline_run_id: str) -> dict[str, Any]:
        """One pipeline run a job run reported: its tables and their rows."""
        return self._call(
            "GET", f"/telemetry/v1/workspaces/{self.ws}/pipeline-runs/{pipeline_run_id}"
        )

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"{self.w}/job-runs/{run_id}/-cancel")

    def latest_package(self, plural: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"{self.w}/{plural}/latest")
        except ClientError as ex:
            if ex.status == 404:
                return None
            raise

    def upload_package(
        self, plural: str, data: bytes, requirements: bytes | None
    ) -> dict[str, Any]:
        """Issue an upload and send the package to the URL the server answered, with its token."""
        issued = self._call("POST", f"{self.w}/{plural}/-issue-upload")
        name = "workspace.tar.gz" if plural == "deployments" else "configurations.tar.gz"
        files: dict[str, Any] = {"file": (name, data, "application/x-tar")}
        if requirements is not None:
            files["requirements_file"] = ("requirements.json", requirements, "application/json")
        try:
            resp = httpx.post(
                issued["upload_url"],
                files=files,
                headers={"Authorization": f"Bearer {issued['upload_token']}"},
                timeout=300,
            )
        except httpx.TransportError as ex:
            raise ClientError(0, f"upload to {issued['upload_url']} failed: {ex}") from ex
        if resp.status_code >= 400:
            raise ClientError(resp.status_code, resp.json().get("detail", resp.text))
        return resp.json()

    def deploy(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"{self.w}/-deploy", json=body)

    def keys(self) -> list[dict[str, Any]]:
        return self._call("GET", f"{self.w}/api-keys")["items"]

    def create_key(self, name: str, scope: str, expires_in_days: int | None) -> dict[str, Any]:
        body = {"name": name, "scope": scope, "expires_in_days": expires_in_days}
        return self._call("POST", f"{self.w}/api-keys", json=body)

    def revoke_key(self, id_or_name: str) -> list[dict[str, Any]]:
        return self._call("POST", f"{self.w}/api-keys/{id_or_name}/-revoke")["items"]

    def logs(self, run_id: str, page: int = 10_000) -> Iterator[dict[str, Any]]:
        """The stored log, line by line, fetched a page at a time with a cursor (the last
        line number read), so neither side holds a long log whole."""
        path = f"/logs/v1/workspaces/{self.ws}/job-runs/{run_id}/logs"
        after = -1
        while True:
            got = 0
            try:
                with self.http.stream(
                    "GET", path, params={"after": after, "limit": page}, timeout=None
                ) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        try:
                            detail = str(resp.json().get("detail"))
                        except ValueError:
                            detail = resp.text
                        raise ClientError(resp.status_code, detail)
                    for text in resp.iter_lines():
                        if text.strip():
                            line = json.loads(text)
                            after = line["line_num"]
                            got += 1
                            yield line
            except httpx.TransportError as ex:
                raise ClientError(0, f"reading the log from {self.url} failed: {ex}") from ex
            if got < page:
                return

    def follow_logs(self, run_id: str) -> Iterator[dict[str, Any]]:
        """Log lines as they come; ends when the server closes the stream (the run ended)."""
        path = f"/logs/v1/workspaces/{self.ws}/job-runs/{run_id}/log-stream"
        with self.http.stream(
            "GET", path, headers={"Accept": "text/event-stream"}, timeout=None
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ClientError(resp.status_code, resp.text)
            event = None
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "log":
                    yield json.loads(line[5:])
                elif not line:
                    event = None
