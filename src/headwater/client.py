"""The HTTP client the CLI uses: the dltHub runtime API paths, plus Headwater's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
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

    def automations(self) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{self.w}/automations")["items"])

    def deliveries(self, failed: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        params = {"failed": str(failed).lower(), "limit": limit}
        return list(self._call("GET", f"{self.w}/deliveries", params=params)["items"])

    def artifacts(self, run_id: str) -> dict[str, Any]:
        """The run's artifact files and its dbt table (`dbt`: None when it ran no dbt)."""
        return self._call("GET", f"{self.w}/job-runs/{run_id}/artifacts")

    def pipeline_run(self, pipeline_run_id: str) -> dict[str, Any]:
        """One pipeline run a job run reported: its tables and their rows."""
        return self._call(
            "GET", f"/telemetry/v1/workspaces/{self.ws}/pipeline-runs/{pipeline_run_id}"
        )

    def intervals(self, job_id: str) -> dict[str, Any]:
        """The job's intervals, freshness and deadline."""
        return self._call("GET", f"{self.w}/jobs/{job_id}/intervals")

    def backfill(self, job_id: str, **body: Any) -> dict[str, Any]:
        """Start (or with `dry_run`, plan) a backfill: `start`, `end`, `refresh`."""
        return self._call("POST", f"{self.w}/jobs/{job_id}/-backfill", json=body)

    def backfills(self, job_id: str | None = None) -> list[dict[str, Any]]:
        params = {"job_id": job_id} if job_id else {}
        return list(self._call("GET", f"{self.w}/backfills", params=params)["items"])

    def get_backfill(self, ref: str) -> dict[str, Any]:
        return self._call("GET", f"{self.w}/backfills/{ref}")

    def cancel_backfill(self, ref: str) -> dict[str, Any]:
        return self._call("POST", f"{self.w}/backfills/{ref}/-cancel")

    def workers(self) -> dict[str, Any]:
        """Remote workers and pools (`--executor celery`)."""
        return self._call("GET", f"{self.w}/workers")

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
