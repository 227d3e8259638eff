"""The web pages: jobs, a job, runs, a run (live log), the timeline, the workspace.

Server-rendered with Jinja2 (autoescaped) and htmx for the parts that refresh; charts and
the chain graph drawn by ECharts (laid out by dagre), vendored under `static/vendor`, so no
request leaves the server. The routes are the ones the API and the `dlthub` CLI link to:
`/w/{ws}`, `/w/{ws}/jobs/{id}`, `/w/{ws}/runs/{id}`.

A browser signs in once at `/ui/login` with a read or admin key. The key itself is never
kept: the cookie holds a random session id (stored as a hash, with an expiry, tied to the
key: revoking the key ends its sessions), HttpOnly, SameSite=Strict and Secure when the
request came over HTTPS. Every state-changing form carries a CSRF token derived from the
session (and must come from this server's origin); a read key sees everything and changes
nothing, and the buttons say so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.staticfiles import StaticFiles

from headwater.api.auth import SESSION_TTL, Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.responses import ApiError
from headwater.api.routes.jobs import TriggerJobsRequest, trigger_many
from headwater.api.routes.logs import follow
from headwater.core.access import Action, Scope, allows
from headwater.core.policy import is_served
from headwater.core.states import TERMINAL, RunStatus
from headwater.store.views import TIMELINE_RUNS
from headwater.workspace import triggers

COOKIE = "headwater_session"
HERE = Path(__file__).parent
PAGE_SIZE = 50
JOBS_PAGE = 50
STATUSES = [s.value for s in RunStatus]
TRIGGER_KINDS = ["manual", "schedule", "every", "once", "job.success", "job.fail", "tag",
                 "webhook", "http", "deployment", "pipeline_name"]  # fmt: skip
MAX_LOG_LINES_SHOWN = 20_000


def _when(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(run: dict[str, Any]) -> float | None:
    start, end = run.get("started_at"), run.get("finished_at")
    if start is None:
        return None
    return ((end or datetime.now(UTC)) - start).total_seconds()


def _duration(run: dict[str, Any]) -> str:
    s = _seconds(run)
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.ChainableUndefined,
)
templates.filters["when"] = _when
templates.filters["duration"] = _duration
# JSON for people to read (autoescaped as any text); `tojson` is for <script> data blocks
templates.filters["pretty"] = lambda value: json.dumps(value, indent=1, default=str)


def static_files() -> StaticFiles:
    """`/ui/static`: the pages' stylesheet, script and vendored libraries."""
    return StaticFiles(directory=HERE / "static")


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their key's name and scope, the session's CSRF token."""

    principal: Principal
    session: str
    name: str

    @property
    def scope(self) -> str:
        return str(self.principal.scope.value)

    @property
    def can_act(self) -> bool:
        return allows(self.principal.scope, Action.ADMIN)

    @property
    def csrf(self) -> str:
        return csrf_token(self.session)


def csrf_token(session: str) -> str:
    """The token a session's forms carry: derived from the session id, which only the
    browser holds (HttpOnly), so another site can neither read nor forge it."""
    return hashlib.sha256(b"headwater-csrf:" + session.encode()).hexdigest()[:40]


def over_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS, directly or through a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def same_origin(headers: Headers, https: bool) -> bool:
    """Whether a state-changing POST came from our own pages: its `Origin` (or, without
    one, its `Referer`) names this server. A request with neither is no browser's
    cross-site form (browsers send `Origin` on every POST), so it passes."""
    origin = headers.get("origin")
    if origin is None:
        referer = headers.get("referer")
        if referer is None:
            return True
        origin = _origin_of(referer)
    if not origin or origin == "null":
        return False
    hosts = {h.strip().lower() for h in (headers.get("host"), headers.get("x-forwarded-host")) if h}
    schemes = ("https",) if https else ("http", "https")
    return origin.lower() in {f"{s}://{h}" for s in schemes for h in hosts}


def _origin_of(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}" if sep else ""


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status_code)


def message(
    title: str, text: str, status_code: int, viewer: Viewer | None = None, ws: str = ""
) -> HTMLResponse:
    return render(
        "message.html", status_code, title=title, message=text, error=True, viewer=viewer, ws=ws
    )


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["ui"], include_in_schema=False)
    store = ctx.store

    def viewer(request: Request) -> Viewer | Response:
        session = request.cookies.get(COOKIE)
        try:
            if not session:
                raise ApiError(401, "no session", "not_authenticated")
            principal = auth.check_session(session)
        except ApiError:
            return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)
        if not allows(principal.scope, Action.READ):
            return message("Not allowed", "Pages need a read or admin key.", 403)
        return Viewer(principal, session, principal.name or "key")

    def acting(request: Request, csrf: str | None) -> Viewer | Response:
        """The viewer of a state-changing form: from this origin, with the session's token,
        holding an admin key."""
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        token = csrf or request.headers.get("x-csrf-token") or ""
        if not same_origin(request.headers, https=over_https(request)) or not hmac.compare_digest(
            token, who.csrf
        ):
            return message(
                "Refused",
                "Refused: this form did not come from this server's pages.",
                403,
                who,
                ctx.ws_id,
            )
        if not who.can_act:
            return message(
                "Not allowed",
                f"You signed in with a {who.scope} key: it sees, but cannot change anything."
                " Sign in with an admin key to act.",
                403,
                who,
                ctx.ws_id,
            )
        return who

    def workspace_name(ws: str) -> str:
        row = store.get_workspace(ws)
        return (row or {}).get("name") or ws

    def back(url: str, flash: str | None = None, error: bool = False) -> RedirectResponse:
        if flash:
            sep = "&" if "?" in url else "?"
            url += sep + urlencode({"flash": flash, **({"error": "1"} if error else {})})
        return RedirectResponse(url, status_code=303)

    def base(request: Request, who: Viewer, ws: str, nav: str, title: str) -> dict[str, Any]:
        return {
            "viewer": who,
            "ws": ws,
            "nav": nav,
            "title": title,
            "flash": request.query_params.get("flash"),
            "flash_error": bool(request.query_params.get("error")),
        }

    # -- sign in ----------------------------------------------------------------------------

    @r.get("/", include_in_schema=False)
    def root(request: Request) -> Any:
        """People who open the server's address get its pages (or the sign-in first)."""
        session = request.cookies.get(COOKIE)
        target = f"/w/{ctx.ws_id}"
        try:
            if session is None:
                raise ApiError(401, "no session", "not_authenticated")
            auth.check_session(session)
        except ApiError:
            target = f"/ui/login?next={quote(target)}"
        return RedirectResponse(target, status_code=303)

    @r.get("/ui/login")
    def login_form(next: str = "/") -> Any:
        return render("login.html", title="Sign in", next=next, viewer=None)

    @r.post("/ui/login")
    def login(request: Request, key: str = Form(...), next: str = Form("/")) -> Any:
        if not same_origin(request.headers, https=over_https(request)):
            return message("Refused", "Refused: this form was sent from another site.", 403)
        try:
            principal = auth.check_secret(key.strip())
        except ApiError as ex:
            return render("login.html", title="Sign in", next=next, error=ex.detail, viewer=None)
        if not allows(principal.scope, Action.READ):
            return render(
                "login.html",
                title="Sign in",
                next=next,
                error="Pages need a read or admin key.",
                viewer=None,
            )
        # only a path of this server: `//host` and `/\\host` (browsers read `\\` as `/`) leave it
        local = next.startswith("/") and not next.startswith("//") and "\\" not in next
        target = next if local else "/"
        if target == "/":
            target = f"/w/{ctx.ws_id}"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(
            COOKIE,
            auth.start_session(principal),
            max_age=int(SESSION_TTL.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=over_https(request),
        )
        return resp

    @r.post("/ui/logout")
    def logout(request: Request) -> Any:
        if not same_origin(request.headers, https=over_https(request)):
            return message("Refused", "Refused: this form was sent from another site.", 403)
        session = request.cookies.get(COOKIE)
        if session:
            auth.end_session(session)
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=over_https(request))
        return resp

    # -- jobs -------------------------------------------------------------------------------

    @r.get("/w/{ws}")
    def jobs_page(
        ws: str, request: Request, q: str = "", tag: str = "", status: str = "", page: int = 1
    ) -> Any:
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        return render(
            "jobs.html",
            **base(request, who, ws, "jobs", workspace_name(ws)),
            **jobs_context(ws, q, tag, status, max(1, page)),
            request_url=str(request.url.path)
            + (f"?{request.url.query}" if request.url.query else ""),
        )

    def jobs_context(ws: str, q: str, tag: str, status: str, page: int = 1) -> dict[str, Any]:
        jobs = store.active_jobs_cached(ws)
        latest = store.latest_runs([j["id"] for j in jobs]) if status else {}
        tags: set[str] = set()
        rows = []
        for j in jobs:
            d = j["definition"]
            expose = d.get("expose") or {}
            job_tags = list(expose.get("tags") or [])
            tags.update(job_tags)
            row = {
                **j,
                "display_name": expose.get("display_name") or j["job_ref"].rsplit(".", 1)[-1],
                "tags": job_tags,
                "served": is_served(j["job_type"]),
            }
            text = f"{row['display_name']} {j['job_ref']}".lower()
            if q and q.lower() not in text:
                continue
            if tag and tag not in job_tags:
                continue
            if status and (latest.get(j["id"]) or {}).get("status") != status:
                continue
            rows.append(row)
        pages = max(1, -(-len(rows) // JOBS_PAGE))
        page = min(page, pages)
        shown = rows[(page - 1) * JOBS_PAGE : page * JOBS_PAGE]
        # only the shown jobs' runs are read: a page costs the same with 5 jobs or 5,000
        ids = [j["id"] for j in shown]
        latest = latest or store.latest_runs(ids)
        strips = store.last_runs_by_job(ids, 20)
        for row in shown:
            row["latest"] = latest.get(row["id"])
            row["strip"] = strips.get(row["id"], [])
            row["humanized"] = (
                ", ".join(_human(t) for t in row["definition"].get("triggers") or []) or "manual"
            )
        kept = {k: v for k, v in {"q": q, "tag": tag, "status": status}.items() if v}
        return {
            "jobs": shown,
            "matched": len(rows),
            "page": page,
            "pages": pages,
            "page_link": lambda n: f"/w/{ws}?" + urlencode({**kept, "page": n}),
            "tags": sorted(tags),
            "statuses": STATUSES,
            "q": q,
            "tag": tag,
            "status_filter": status,
            "manifest": ctx.manifest_status(),
            "workspace_name": workspace_name(ws),
        }

    @r.post("/w/{ws}/dry-run")
    async def dry_run(
        request: Request, ws: str, selectors: str = Form(""), csrf: str = Form("")
    ) -> Any:
        who = acting(request, csrf)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        wanted = selectors.split()
        if not wanted:
            return back(f"/w/{ws}", "give one or more selectors", error=True)
        answer = await trigger_many(
            ctx, [], wanted, TriggerJobsRequest(selectors=wanted, dry_run=True), who.principal
        )
        items = answer["succeeded"] + answer["skipped"]
        return render(
            "jobs.html",
            **base(request, who, ws, "jobs", workspace_name(ws)),
            **jobs_context(ws, "", "", ""),
            dry=items,
            dry_selectors=selectors,
            request_url=f"/w/{ws}",
        )

    @r.get("/w/{ws}/jobs/{job}")
    def job_page(ws: str, job: str, request: Request) -> Any:
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        row = store.get_job(job)
        if row is None:
            found, _ = store.list_jobs(ws, ref=job, limit=1)
            row = found[0] if found else None
        if row is None or row["workspace_id"] != ws:
            return message("No such job", f"No job {job}.", 404, who, ws)
        runs, total = store.list_runs(ws, job_id=row["id"], limit=50)
        history, _ = store.list_runs(ws, job_id=row["id"], limit=200)
        d = row["definition"]
        view = {
            **row,
            "display_name": (d.get("expose") or {}).get("display_name")
            or row["job_ref"].rsplit(".", 1)[-1],
            "trigger_list": [{"raw": t, "human": _human(t)} for t in row["triggers"]],
            "has_schedule": triggers.has_next_tick(d, datetime.now(UTC)) or row["is_paused"],
        }
        chart = [
            {
                "id": x["id"],
                "number": x["number"],
                "status": x["status"],
                "at": x["started_at"].isoformat(),
                "seconds": round(_seconds(x) or 0.0, 3),
            }
            for x in reversed(history)
            if x["started_at"] is not None and x["finished_at"] is not None
        ]
        return render(
            "job.html",
            **base(request, who, ws, "jobs", f"{row['job_ref']} · {workspace_name(ws)}"),
            job=view,
            runs=runs,
            total=total,
            refs={row["id"]: row["job_ref"]},
            chart=chart,
            graph=chain_graph(ws, row),
        )

    def chain_graph(ws: str, job: dict[str, Any]) -> dict[str, Any]:
        """The jobs chained to this one (`job.success`/`job.fail` triggers, freshness), as
        far as the chain goes either way: nodes and edges for the graph."""
        jobs = store.active_jobs_cached(ws)
        by_ref = {j["job_ref"]: j for j in jobs}
        edges: list[dict[str, str]] = []
        for j in jobs:
            for t in j["triggers"] or []:
                kind, _, ref = str(t).partition(":")
                if kind in ("job.success", "job.fail") and ref in by_ref:
                    edges.append({"source": ref, "target": j["job_ref"], "kind": kind})
            for c in j["definition"].get("freshness") or []:
                ref = str(c).partition(":")[2]
                if ref in by_ref:
                    edges.append({"source": ref, "target": j["job_ref"], "kind": "fresh"})
        linked = {job["job_ref"]}
        grew = True
        while grew:
            grew = False
            for e in edges:
                if (e["source"] in linked) != (e["target"] in linked):
                    linked.update((e["source"], e["target"]))
                    grew = True
        edges = [e for e in edges if e["source"] in linked and e["target"] in linked]
        latest = store.latest_runs([by_ref[ref]["id"] for ref in linked])
        nodes = [
            {
                "id": ref,
                "label": ref.rsplit(".", 1)[-1],
                "href": f"/w/{ws}/jobs/{by_ref[ref]['id']}",
                "status": (latest.get(by_ref[ref]["id"]) or {}).get("status"),
                "current": ref == job["job_ref"],
            }
            for ref in sorted(linked)
        ]
        return {"nodes": nodes, "edges": edges}

    @r.post("/w/{ws}/jobs/{job_id}/run")
    async def run_now(
        request: Request,
        ws: str,
        job_id: str,
        parameters: str = Form(""),
        profile: str = Form(""),
        refresh: str = Form(""),
        csrf: str = Form(""),
    ) -> Any:
        who = acting(request, csrf)
        if not isinstance(who, Viewer):
            return who
        job = ctx.job(ws, job_id)
        here = f"/w/{ws}/jobs/{job_id}"
        try:
            params = json.loads(parameters) if parameters.strip() else None
        except ValueError as ex:
            return back(here, f"parameters are not JSON: {ex}", error=True)
        if params is not None and not isinstance(params, dict):
            return back(here, "parameters must be a JSON object", error=True)
        body = TriggerJobsRequest(
            job_ids=[job["id"]],
            profile=profile.strip() or None,
            refresh=bool(refresh),
            parameters=params,
        )
        answer = await trigger_many(ctx, [job["id"]], [], body, who.principal)
        if answer["succeeded"]:
            return back(f"/w/{ws}/runs/{answer['succeeded'][0]['job_run_id']}", "run started")
        item = (answer["skipped"] or answer["failed"] or [{}])[0]
        why = "; ".join(item.get("reasons") or []) or item.get("detail") or item.get("status")
        return back(here, f"no run: {item.get('status', 'failed')}: {why}", error=True)

    @r.post("/w/{ws}/jobs/{job_id}/{action}")
    def pause_or_resume(
        request: Request, ws: str, job_id: str, action: str, csrf: str = Form("")
    ) -> Any:
        who = acting(request, csrf)
        if not isinstance(who, Viewer):
            return who
        job = ctx.job(ws, job_id)
        if action not in ("pause", "resume"):
            return message("Unknown action", f"No action {action}.", 404, who, ws)
        store.set_paused(job["id"], action == "pause")
        return back(f"/w/{ws}/jobs/{job_id}", f"schedule {action}d")

    # -- runs -------------------------------------------------------------------------------

    @r.get("/w/{ws}/runs")
    def runs_page(
        request: Request,
        ws: str,
        job: str = "",
        status: str = "",
        trigger_kind: str = "",
        start: str = "",
        end: str = "",
        cursor: str = "",
    ) -> Any:
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        from headwater.api import serialize as ser

        try:
            after = ser.decode_cursor(cursor) if cursor else None
            lo = _local(start)
            hi = _local(end)
        except (ApiError, ValueError):
            return message(
                "Bad filter", "The filter or page link is not one these pages made.", 400, who, ws
            )
        if status and status not in STATUSES:
            return message("Bad filter", f"No status {status}.", 400, who, ws)
        runs, total = store.list_runs(
            ws,
            job_id=job or None,
            statuses=[status] if status else [],
            trigger_kinds=[trigger_kind] if trigger_kind else [],
            start=lo,
            end=hi,
            after=after,
            limit=PAGE_SIZE + 1,
        )
        more = len(runs) > PAGE_SIZE
        runs = runs[:PAGE_SIZE]
        jobs, _ = store.list_jobs(ws, limit=10_000)
        filters = {
            "job": job,
            "status": status,
            "trigger_kind": trigger_kind,
            "start": start,
            "end": end,
        }
        kept = {k: v for k, v in filters.items() if v}
        next_page = (
            f"/w/{ws}/runs?" + urlencode({**kept, "cursor": ser.encode_cursor(runs[-1])})
            if more and runs
            else None
        )
        return render(
            "runs.html",
            **base(request, who, ws, "runs", f"Runs · {workspace_name(ws)}"),
            runs=runs,
            total=total,
            refs={j["id"]: j["job_ref"] for j in jobs},
            jobs=jobs,
            statuses=STATUSES,
            kinds=TRIGGER_KINDS,
            f=filters,
            next_page=next_page,
            first_page=(f"/w/{ws}/runs?" + urlencode(kept)) if cursor else None,
        )

    @r.get("/w/{ws}/runs/{run_id}")
    def run_page(ws: str, run_id: str, request: Request, q: str = "") -> Any:
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        run = store.get_run(run_id)
        if run is None or run["workspace_id"] != ws:
            return message("No such run", f"No run {run_id}.", 404, who, ws)
        job = store.get_job(run["job_id"]) or {"job_ref": "?", "id": run["job_id"]}
        (run,) = ctx.with_summaries([run])
        upstream = store.get_run(run["previous_run_id"]) if run.get("previous_run_id") else None
        if upstream is not None:
            upstream = {
                **upstream,
                "job_ref": (store.get_job(upstream["job_id"]) or {}).get("job_ref"),
            }
        previous = None
        if run["number"] > 1:
            found, _ = store.list_runs(ws, job_id=run["job_id"], number=run["number"] - 1, limit=1)
            previous = found[0] if found else None
        lines = [
            {"line_num": x["line_num"], "content": x["content"], "source": x["source"]}
            for x in store.read_logs(run_id, limit=MAX_LOG_LINES_SHOWN)
        ]
        if q:
            lines = [x for x in lines if q.lower() in x["content"].lower()]
        steps = [{"label": "created", "at": run["created_at"], "note": run["trigger"]}]
        for attempt in (
            store.attempts_of(run_id)
            if run.get("attempt", 1) > 1 or run.get("retry_policy")
            else []
        ):
            steps.append(
                {
                    "label": f"attempt {attempt['attempt']} ended",
                    "at": attempt["finished_at"],
                    "note": f"{attempt['status']}: {attempt.get('reason') or ''}",
                }
            )
        if run["started_at"]:
            steps.append(
                {
                    "label": "started",
                    "at": run["started_at"],
                    "note": f"waited {_gap(run['created_at'], run['started_at'])}",
                }
            )
        if run["finished_at"]:
            steps.append(
                {
                    "label": run["status"],
                    "at": run["finished_at"],
                    "note": f"ran {_duration(run)}" if run["started_at"] else "",
                }
            )
        return render(
            "run.html",
            **base(
                request,
                who,
                ws,
                "runs",
                f"{job['job_ref']} #{run['number']} · {workspace_name(ws)}",
            ),
            run=run,
            job=job,
            upstream=upstream,
            previous=previous,
            caused=store.caused_runs(run_id),
            lines=lines,
            q=q,
            shown=len(lines),
            steps=steps,
            pipelines=run.get("pipeline_run_summaries") or [],
            external=store.external_link(run_id),
            active=RunStatus(run["status"]) not in TERMINAL,
        )

    def log_stream_refusal(ws: str, run_id: str, request: Request) -> Response | None:
        """Why the log stream is not for this request (no session, no such run), or None."""
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        run = store.get_run(run_id)
        if run is None or run["workspace_id"] != ws:
            return message("No such run", f"No run {run_id}.", 404, who, ws)
        return None

    @r.get("/w/{ws}/runs/{run_id}/log-stream")
    async def log_stream(ws: str, run_id: str, request: Request, after: int = -1) -> Any:
        # async for the stream; the session and run are read in the thread pool, as the
        # stream's own reads are, so a slow database never stalls the event loop
        refusal = await run_in_threadpool(log_stream_refusal, ws, run_id, request)
        if refusal is not None:
            return refusal
        return StreamingResponse(
            follow_log(ctx, run_id, after, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @r.post("/w/{ws}/runs/{run_id}/cancel")
    def cancel(request: Request, ws: str, run_id: str, csrf: str = Form("")) -> Any:
        who = acting(request, csrf)
        if not isinstance(who, Viewer):
            return who
        run = ctx.run(ws, run_id)
        store.request_cancel(run["id"], "cancelled from the web page")
        return back(f"/w/{ws}/runs/{run_id}", "cancel requested")

    # -- timeline and workspace ---------------------------------------------------------------

    @r.get("/w/{ws}/timeline")
    def timeline(ws: str, request: Request, hours: int = 24) -> Any:
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        hours = max(1, min(hours, 24 * 14))
        end = datetime.now(UTC)
        start = end - timedelta(hours=hours)
        runs, more = store.runs_between(ws, start, end, TIMELINE_RUNS)
        # compact rows (a page carries thousands): [job, number, status, created, started,
        # finished, id], job and status as indexes into their lists, times in milliseconds
        # after `start` (None: not yet); jobs by name, so a job keeps its row
        jobs = sorted({x[1] for x in runs})
        job_at = {ref: i for i, ref in enumerate(jobs)}
        status_at = {s: i for i, s in enumerate(STATUSES)}
        bars = [[job_at[j], n, status_at[s], c, b, f, i] for i, j, n, s, c, b, f in runs]
        return render(
            "timeline.html",
            **base(request, who, ws, "timeline", f"Timeline · {workspace_name(ws)}"),
            hours=hours,
            shown=len(bars),
            more=more,
            gantt={
                "start": _ms(start),
                "end": _ms(end),
                "jobs": jobs,
                "statuses": STATUSES,
                "runs": bars,
            },
        )

    def settings_page(
        request: Request, who: Viewer, ws: str, new_key: dict[str, Any] | None = None
    ) -> HTMLResponse:
        return render(
            "settings.html",
            **base(request, who, ws, "settings", f"Workspace · {workspace_name(ws)}"),
            workspace_name=workspace_name(ws),
            manifest=ctx.manifest_status(),
            versions=store.manifest_versions(ws),
            keys=store.list_keys(ws),
            variables=ctx.variables.scopes(ws),
            new_key=new_key,
        )

    @r.get("/w/{ws}/settings")
    def settings(ws: str, request: Request) -> Any:
        who = viewer(request)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        return settings_page(request, who, ws)

    @r.post("/w/{ws}/keys")
    def create_key(
        request: Request,
        ws: str,
        name: str = Form(...),
        scope: str = Form("read"),
        csrf: str = Form(""),
    ) -> Any:
        who = acting(request, csrf)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        if scope not in set(Scope) or not name.strip():
            return back(f"/w/{ws}/settings", "a key needs a name and a scope", error=True)
        row, secret = store.create_key(ws, name.strip()[:100], scope)
        # shown in this answer only: never in a URL, nor stored
        return settings_page(
            request, who, ws, {"name": row["name"], "scope": row["scope"], "key": secret}
        )

    @r.post("/w/{ws}/keys/{key_id}/revoke")
    def revoke_key(request: Request, ws: str, key_id: str, csrf: str = Form("")) -> Any:
        who = acting(request, csrf)
        if not isinstance(who, Viewer):
            return who
        ctx.check_ws(ws)
        revoked = store.revoke_key(ws, key_id)
        auth.clear()
        if not revoked:
            return back(f"/w/{ws}/settings", "no such active key", error=True)
        return back(f"/w/{ws}/settings", f"revoked {revoked[0]['name']}")

    return r


def _log_event(line: dict[str, Any]) -> bytes:
    data = {"line_num": line["line_num"], "content": line["content"], "source": line["source"]}
    return b"event: log\ndata: " + json.dumps(data).encode() + b"\n\n"


def follow_log(ctx: ApiContext, run_id: str, after: int, request: Request) -> AsyncIterator[bytes]:
    """The run's log lines after `after`, then live until the run ends (an `end` event)."""
    return follow(ctx.store, run_id, request, after, _log_event, b"event: end\ndata: {}\n\n")


def _human(trigger: str) -> str:
    try:
        return triggers.humanize(trigger)
    except Exception:
        return trigger


def _ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def _gap(a: datetime, b: datetime) -> str:
    return _duration({"started_at": a, "finished_at": b})


def _local(value: str) -> datetime | None:
    """A `datetime-local` field (UTC on these pages)."""
    if not value:
        return None
    at = datetime.fromisoformat(value)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
