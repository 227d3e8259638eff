"""A local dbt Cloud Administrative API v2, as `../shared/reference/dbt-cloud-api.md` describes
it: test code that answers from memory, in its own process (`python -m tests.fakes.dbt_cloud
--port N`), so the client, the monitor and the benchmark meet the contract without the
internet.

What it follows: the `{data, status, extra}` envelope; `Authorization: Token` or `Bearer`
(401 otherwise); 404 for an unknown job or run; runs going 1 queued -> 2 starting -> 3 running
-> 10 success / 20 error on each job's plan, or 30 when cancelled; `status__in` as ONE JSON
list value (`status__in=[1,2,3]`; anything else is a 400, as the API does not understand
repeated keys); `order_by` (`id`, `-id`, `created_at`, `-created_at`), `limit` (at most 100),
`offset`; `include_related` as a JSON list; cancel (an already finished run is answered as
it is); rerun; artifacts listed and served raw, without the envelope.

Test controls under `/_control/`: add jobs with a plan, inject faults (a status code with
`Retry-After`, or a delay, for the next N matching requests), read the request log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PREFIX = "/api/v2/accounts/{account_id:int}"


@dataclass
class Plan:
    """How a job's runs go: seconds queued, starting and running, then how they end."""

    queued: float = 0.2
    starting: float = 0.1
    running: float = 0.5
    outcome: int = 10
    """10 success or 20 error."""
    message: str = "Job failed: a model errored"


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    times: int = 1


@dataclass
class State:
    token: str = "dbtc_test_token"
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    plans: dict[int, Plan] = field(default_factory=dict)
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_run_id: int = 70_000
    faults: list[Fault] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    host: str = "http://127.0.0.1"
    fail_after_post: int = 0
    """The next N run POSTs make their run, then answer 500 (did it happen? look it up)."""


STATE = State()
STATUS_NAMES = {
    1: "Queued",
    2: "Starting",
    3: "Running",
    10: "Success",
    20: "Error",
    30: "Cancelled",
}


def envelope(
    data: Any, code: int = 200, extra: dict[str, Any] | None = None, msg: str = ""
) -> JSONResponse:
    return JSONResponse(
        {
            "data": data,
            "status": {
                "code": code,
                "is_success": code < 400,
                "user_message": msg or ("Success!" if code < 400 else "Error"),
                "developer_message": "",
            },
            "extra": extra or {},
        },
        status_code=code,
    )


def error(code: int, msg: str, headers: dict[str, str] | None = None) -> JSONResponse:
    response = envelope(None, code, msg=msg)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _now_iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    """The run as the API shows it, its status moved on by its job's plan."""
    return _render(_advance(run))


def _render(run: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in run.items() if not k.startswith("_")}
    view["status_humanized"] = STATUS_NAMES[run["status"]]
    view["is_complete"] = run["status"] in (10, 20, 30)
    view["is_success"] = run["status"] == 10
    view["is_error"] = run["status"] == 20
    view["is_cancelled"] = run["status"] == 30
    return view


def _advance(run: dict[str, Any]) -> dict[str, Any]:
    """The run with its status moved on by its job's plan."""
    if run["status"] not in (10, 20, 30) and not run.get("frozen"):
        plan = STATE.plans.get(run["job_definition_id"]) or Plan()
        age = time.time() - run["_created"]
        if age >= plan.queued + plan.starting + plan.running:
            run["status"] = plan.outcome
            run["status_message"] = plan.message if plan.outcome == 20 else None
            run["finished_at"] = _now_iso(time.time())
        elif age >= plan.queued + plan.starting:
            run["status"] = 3
        elif age >= plan.queued:
            run["status"] = 2
    return run


async def _gate(request: Request) -> Response | None:
    """Auth, the request log and injected faults, before any endpoint."""
    request.state.logged = {
        "method": request.method,
        "path": request.url.path,
        "query": str(request.url.query),
        "at": time.time(),
    }
    STATE.requests.append(request.state.logged)
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme not in ("Token", "Bearer") or token != STATE.token:
        return error(401, "Invalid token.")
    for fault in STATE.faults:
        if (
            fault.times > 0
            and fault.method == request.method
            and fault.path.search(request.url.path)
        ):
            fault.times -= 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else {}
                return error(fault.status, f"injected {fault.status}", headers)
            break
    return None


def _account(request: Request) -> int:
    return int(request.path_params["account_id"])


async def get_job(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    job = STATE.jobs.get(int(request.path_params["job_id"]))
    if job is None or job["account_id"] != _account(request):
        return error(404, "Job not found.")
    return envelope(job)


def _new_run(job: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    STATE.next_run_id += 1
    run_id = STATE.next_run_id
    now = time.time()
    run = {
        "id": run_id,
        "account_id": job["account_id"],
        "job_definition_id": job["id"],
        "project_id": job.get("project_id", 1),
        "environment_id": job.get("environment_id", 1),
        "status": 1,
        "status_message": None,
        "cause": body.get("cause"),
        "trigger": {
            "cause": body.get("cause"),
            "steps_override": body.get("steps_override"),
            "schema_override": body.get("schema_override"),
            "git_branch": body.get("git_branch"),
        },
        "git_sha": body.get("git_sha"),
        "created_at": _now_iso(now),
        "finished_at": None,
        "href": f"{STATE.host}/deploy/{job['account_id']}/projects/1/runs/{run_id}/",
        "_created": now,
    }
    STATE.runs[run_id] = run
    return run


async def trigger_run(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    job = STATE.jobs.get(int(request.path_params["job_id"]))
    if job is None or job["account_id"] != _account(request):
        return error(404, "Job not found.")
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return error(400, "Invalid JSON.")
    cause = body.get("cause")
    if not isinstance(cause, str) or not cause:
        return error(400, "cause is required")
    if len(cause) > 255:
        return error(400, "cause: Ensure this field has no more than 255 characters.")
    made = run_view(_new_run(job, body))
    if STATE.fail_after_post > 0:
        STATE.fail_after_post -= 1
        return error(500, "injected 500 after the run was made")
    return envelope(made)


async def rerun(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    job = STATE.jobs.get(int(request.path_params["job_id"]))
    if job is None:
        return error(404, "Job not found.")
    run = _new_run(job, {"cause": "Rerun from failure"})
    run["_rerun"] = True
    return envelope(run_view(run))


async def list_runs(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    q = request.query_params
    if len(q.getlist("status__in")) > 1 or len(q.getlist("include_related")) > 1:
        return error(400, "status__in and include_related take one JSON list")
    account = _account(request)
    runs = [r for r in STATE.runs.values() if r["account_id"] == account]
    if "job_definition_id" in q:
        job_id = int(q["job_definition_id"])
        runs = [r for r in runs if r["job_definition_id"] == job_id]
    # filtered and sorted on the stored runs; only the page is rendered (a bench lists
    # 10,000 runs a hundred times a poll interval)
    runs = [_advance(r) for r in runs]
    if "status__in" in q:
        try:
            wanted = json.loads(q["status__in"])
            assert isinstance(wanted, list)
        except (ValueError, AssertionError):
            return error(400, "status__in must be a JSON list such as [1,2,3]")
        runs = [r for r in runs if r["status"] in wanted]
    if "status" in q:
        runs = [r for r in runs if r["status"] == int(q["status"])]
    order = q.get("order_by", "id")
    key = order.lstrip("-")
    if key not in ("id", "created_at"):
        return error(400, f"cannot order by {order}")
    runs.sort(key=lambda r: r[key], reverse=order.startswith("-"))
    limit = min(int(q.get("limit", 100)), 100)
    offset = int(q.get("offset", 0))
    page = [_render(r) for r in runs[offset : offset + limit]]
    # which runs the answer showed: a poll of each (bench/dbt_cloud_watch.py)
    request.state.logged["run_ids"] = [v["id"] for v in page]
    extra = {
        "filters": dict(q),
        "order_by": order,
        "pagination": {"count": len(page), "total_count": len(runs)},
    }
    return envelope(page, extra=extra)


async def get_run(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    run = STATE.runs.get(int(request.path_params["run_id"]))
    if run is None or run["account_id"] != _account(request):
        return error(404, "Run not found.")
    return envelope(run_view(run))


async def cancel_run(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    run = STATE.runs.get(int(request.path_params["run_id"]))
    if run is None:
        return error(404, "Run not found.")
    view = run_view(run)
    if not view["is_complete"]:
        run["status"] = 30
        run["finished_at"] = _now_iso(time.time())
    return envelope(run_view(run))


def _run_results(run: dict[str, Any]) -> dict[str, Any]:
    failed = run["status"] == 20
    return {
        "metadata": {"dbt_version": "1.10.0", "generated_at": run.get("finished_at")},
        "elapsed_time": 1.0,
        "args": {},
        "results": [
            {
                "unique_id": "model.cloud.orders",
                "status": "success",
                "execution_time": 0.5,
                "adapter_response": {"rows_affected": 42},
                "message": "SELECT 42",
                "failures": None,
            },
            {
                "unique_id": "test.cloud.not_null_orders_id.abc123",
                "status": "fail" if failed else "pass",
                "execution_time": 0.1,
                "adapter_response": {},
                "message": None,
                "failures": 3 if failed else 0,
            },
        ],
    }


async def list_artifacts(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    run = STATE.runs.get(int(request.path_params["run_id"]))
    if run is None or not run_view(run)["is_complete"]:
        return error(404, "Run not found or not finished.")
    return envelope(["manifest.json", "run_results.json"])


async def get_artifact(request: Request) -> Response:
    if (blocked := await _gate(request)) is not None:
        return blocked
    run = STATE.runs.get(int(request.path_params["run_id"]))
    path = request.path_params["path"]
    if run is None or not run_view(run)["is_complete"] or run["status"] == 30:
        return error(404, "Artifact not found.")
    if path == "run_results.json":
        return JSONResponse(_run_results(run))
    if path == "manifest.json":
        return JSONResponse({"metadata": {"project_name": "cloud"}, "nodes": {}})
    return error(404, "Artifact not found.")


# -- test controls ------------------------------------------------------------------------------


async def control_job(request: Request) -> Response:
    body = await request.json()
    job = {
        "id": int(body["id"]),
        "account_id": int(body.get("account_id", 1)),
        "name": body.get("name", f"job {body['id']}"),
        "project_id": 1,
        "environment_id": 1,
    }
    STATE.jobs[job["id"]] = job
    STATE.plans[job["id"]] = Plan(**body.get("plan", {}))
    return JSONResponse(job)


async def control_fault(request: Request) -> Response:
    body = await request.json()
    STATE.faults.append(
        Fault(
            method=body["method"],
            path=re.compile(body["path"]),
            status=body.get("status"),
            retry_after=body.get("retry_after"),
            delay=body.get("delay", 0.0),
            times=body.get("times", 1),
        )
    )
    return JSONResponse({"faults": len(STATE.faults)})


async def control_fail_after_post(request: Request) -> Response:
    STATE.fail_after_post = int((await request.json())["times"])
    return JSONResponse({"ok": True})


async def control_requests(request: Request) -> Response:
    return JSONResponse(STATE.requests)


async def control_runs(request: Request) -> Response:
    return JSONResponse([run_view(r) for r in STATE.runs.values()])


async def control_add_run(request: Request) -> Response:
    """A run started outside Headwater (by dbt Cloud's own schedule, say)."""
    body = await request.json()
    run = _new_run(STATE.jobs[int(body["job_id"])], {"cause": body.get("cause", "Scheduled")})
    if body.get("frozen"):
        run["frozen"] = True  # stays at its status until the test moves it
        run["status"] = int(body.get("status", 3))
    return JSONResponse(run_view(run))


async def control_set(request: Request) -> Response:
    body = await request.json()
    run = STATE.runs[int(request.path_params["run_id"])]
    run.update(status=int(body["status"]), frozen=True, status_message=body.get("message"))
    return JSONResponse(run_view(run))


async def control_reset(request: Request) -> Response:
    fresh = State(token=STATE.token, host=STATE.host)
    STATE.__dict__.update(fresh.__dict__)
    return JSONResponse({"ok": True})


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


def app() -> Starlette:
    routes = []
    for suffix in ("/", ""):  # Estuary omits trailing slashes
        routes += [
            Route(f"{PREFIX}/jobs/{{job_id:int}}{suffix}", get_job),
            Route(f"{PREFIX}/jobs/{{job_id:int}}/run{suffix}", trigger_run, methods=["POST"]),
            Route(f"{PREFIX}/jobs/{{job_id:int}}/rerun{suffix}", rerun, methods=["POST"]),
            Route(f"{PREFIX}/runs{suffix}", list_runs),
            Route(f"{PREFIX}/runs/{{run_id:int}}{suffix}", get_run),
            Route(f"{PREFIX}/runs/{{run_id:int}}/cancel{suffix}", cancel_run, methods=["POST"]),
            Route(f"{PREFIX}/runs/{{run_id:int}}/artifacts{suffix}", list_artifacts),
        ]
    routes += [
        Route(f"{PREFIX}/runs/{{run_id:int}}/artifacts/{{path:path}}", get_artifact),
        Route("/_control/jobs", control_job, methods=["POST"]),
        Route("/_control/faults", control_fault, methods=["POST"]),
        Route("/_control/requests", control_requests),
        Route("/_control/fail_after_post", control_fail_after_post, methods=["POST"]),
        Route("/_control/runs", control_runs),
        Route("/_control/runs", control_add_run, methods=["POST"]),
        Route("/_control/runs/{run_id:int}", control_set, methods=["POST"]),
        Route("/_control/reset", control_reset, methods=["POST"]),
        Route("/_health", health),
    ]
    return Starlette(routes=routes)


class FakeDbtCloud:
    """The fake in its own process, driven from a test: `with FakeDbtCloud() as fake:`."""

    def __init__(self, token: str = STATE.token) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Any = None

    def __enter__(self) -> FakeDbtCloud:
        import subprocess
        import sys

        import httpx

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.dbt_cloud",
                "--port",
                str(self.port),
                "--token",
                self.token,
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/_health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the fake dbt Cloud did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        answer = httpx.post(f"{self.url}{path}", json=body, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def add_job(self, job_id: int, account_id: int = 1, **plan: Any) -> None:
        self._post("/_control/jobs", {"id": job_id, "account_id": account_id, "plan": plan})

    def fault(self, method: str, path: str, **spec: Any) -> None:
        self._post("/_control/faults", {"method": method, "path": path, **spec})

    def add_run(self, job_id: int, **spec: Any) -> dict[str, Any]:
        return dict(self._post("/_control/runs", {"job_id": job_id, **spec}))

    def set_run(self, run_id: int, status: int, message: str | None = None) -> None:
        self._post(f"/_control/runs/{run_id}", {"status": status, "message": message})

    def fail_after_post(self, times: int = 1) -> None:
        self._post("/_control/fail_after_post", {"times": times})

    def reset(self) -> None:
        self._post("/_control/reset", {})

    def requests(self, method: str | None = None, path: str = "") -> list[dict[str, Any]]:
        import httpx

        log = httpx.get(f"{self.url}/_control/requests", timeout=10).json()
        return [
            r
            for r in log
            if (method is None or r["method"] == method) and re.search(path, r["path"])
        ]

    def runs(self) -> list[dict[str, Any]]:
        import httpx

        return list(httpx.get(f"{self.url}/_control/runs", timeout=10).json())


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default=STATE.token)
    args = parser.parse_args()
    STATE.token = args.token
    STATE.host = f"http://127.0.0.1:{args.port}"
    uvicorn.run(app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
