"""dbt Cloud's Administrative API v2, as `../shared/reference/dbt-cloud-api.md` checks it.

Transport (rule R5 of `debounced-trigger.md`): `Authorization: Token`; retries with capped
exponential backoff and jitter on connection errors, 429 (honouring `Retry-After`, capped)
and 5xx; never on other 4xx, which fail with dbt Cloud's own message. The run POST is
repeated only when it surely was not processed (a connection error, 429, 503): after a read
timeout it raises `RunPostUnknown`, and the caller looks the run up by its cause, so one
Headwater run never makes two dbt Cloud runs.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from headwater.core.errors import HeadwaterError

QUEUED, STARTING, RUNNING, SUCCESS, ERROR, CANCELLED = 1, 2, 3, 10, 20, 30
ACTIVE_STATUSES = (QUEUED, STARTING, RUNNING)
TERMINAL_STATUSES = (SUCCESS, ERROR, CANCELLED)
STATUS_NAMES = {
    QUEUED: "queued",
    STARTING: "starting",
    RUNNING: "running",
    SUCCESS: "success",
    ERROR: "error",
    CANCELLED: "cancelled",
}
MAX_CAUSE = 255
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class DbtCloudError(HeadwaterError):
    """dbt Cloud refused a request (or could not be reached after the retries)."""

    code = "dbt_cloud_error"

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class RunPostUnknown(DbtCloudError):
    """A run POST timed out after it was sent: dbt Cloud may have started the run."""

    code = "dbt_cloud_post_unknown"


def cut_cause(cause: str) -> str:
    """The cause as dbt Cloud takes it: at most 255 characters (httpx escapes the JSON)."""
    return cause if len(cause) <= MAX_CAUSE else cause[: MAX_CAUSE - 1] + "…"


@dataclass(frozen=True)
class Retry:
    attempts: int = 5
    base_s: float = 1.0
    max_s: float = 30.0
    retry_after_cap_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap_s)
        backoff: float = min(self.max_s, self.base_s * 2**attempt)
        return backoff * (0.5 + rand() / 2)  # jitter: half to all of the backoff


class DbtCloudClient:
    def __init__(
        self,
        access_url: str,
        account_id: int,
        token: str,
        *,
        http: httpx.AsyncClient | None = None,
        retry: Retry = Retry(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base = f"{access_url.rstrip('/')}/api/v2/accounts/{account_id}/"
        self.account_id = account_id
        self._headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.http = http or httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
        self.retry = retry
        self.sleep = sleep
        self.rand = rand

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        post_run: bool = False,
        raw: bool = False,
    ) -> Any:
        url = self.base + path
        last: str = ""
        for attempt in range(self.retry.attempts):
            retry_after: float | None = None
            try:
                answer = await self.http.request(
                    method, url, params=params, json=body, headers=self._headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as ex:
                last = f"cannot reach dbt Cloud at {self.base}: {ex!r}"
            except httpx.TimeoutException as ex:
                if post_run:
                    raise RunPostUnknown(
                        f"dbt Cloud did not answer the run request: {ex!r}"
                    ) from ex
                last = f"dbt Cloud did not answer in time: {ex!r}"
            except httpx.HTTPError as ex:
                if post_run:
                    raise RunPostUnknown(f"the run request broke off: {ex!r}") from ex
                last = f"dbt Cloud request failed: {ex!r}"
            else:
                status = answer.status_code
                if status < 400:
                    return answer.content if raw else answer.json()
                message = _message(answer)
                if status == 429 or status >= 500:
                    if post_run and status not in (429, 503):
                        # a 500 may come after the run was made: look it up, never repeat
                        raise RunPostUnknown(f"dbt Cloud answered {status}: {message}", status)
                    retry_after = _retry_after(answer)
                    last = f"dbt Cloud answered {status}: {message}"
                else:
                    raise DbtCloudError(f"dbt Cloud answered {status}: {message}", status)
            if attempt + 1 < self.retry.attempts:
                await self.sleep(self.retry.delay(attempt, retry_after, self.rand))
        raise DbtCloudError(f"{last} (after {self.retry.attempts} attempts)")

    # -- endpoints ------------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> dict[str, Any]:
        return dict((await self._request("GET", f"jobs/{job_id}/"))["data"])

    async def trigger_run(
        self,
        job_id: int,
        cause: str,
        *,
        steps_override: Sequence[str] | None = None,
        schema_override: str | None = None,
        git_branch: str | None = None,
        git_sha: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"cause": cut_cause(cause)}
        for key, value in (
            ("steps_override", list(steps_override) if steps_override else None),
            ("schema_override", schema_override),
            ("git_branch", git_branch),
            ("git_sha", git_sha),
        ):
            if value is not None:
                body[key] = value
        answer = await self._request("POST", f"jobs/{job_id}/run/", body=body, post_run=True)
        return dict(answer["data"])

    async def rerun(self, job_id: int) -> dict[str, Any]:
        """Retry the job's last failed run from the point of failure."""
        answer = await self._request("POST", f"jobs/{job_id}/rerun/", body={}, post_run=True)
        return dict(answer["data"])

    async def list_runs(
        self,
        job_id: int,
        statuses: Sequence[int] | None = None,
        *,
        order_by: str = "-id",
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "job_definition_id": job_id,
            "order_by": order_by,
            "limit": min(limit, 100),
        }
        if offset:
            params["offset"] = offset
        if statuses:
            params["status__in"] = json.dumps(list(statuses))  # one JSON list, not repeated keys
        return list((await self._request("GET", "runs/", params=params))["data"])

    async def get_run(self, run_id: int) -> dict[str, Any]:
        return dict((await self._request("GET", f"runs/{run_id}/"))["data"])

    async def cancel_run(self, run_id: int) -> dict[str, Any]:
        """Cancel a run; one already finished is answered as it is (that counts as done)."""
        return dict((await self._request("POST", f"runs/{run_id}/cancel/", body={}))["data"])

    async def get_artifact(self, run_id: int, path: str) -> bytes:
        content: bytes = await self._request("GET", f"runs/{run_id}/artifacts/{path}", raw=True)
        return content

    async def aclose(self) -> None:
        await self.http.aclose()


def _message(answer: httpx.Response) -> str:
    try:
        status = answer.json().get("status") or {}
        return str(status.get("user_message") or status.get("developer_message") or answer.text)
    except ValueError:
        return answer.text[:500]


def _retry_after(answer: httpx.Response) -> float | None:
    value = answer.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
