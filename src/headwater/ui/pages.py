"""Read-only pages for the links the API and the `dlthub` CLI print.

`/w/{ws}`, `/w/{ws}/jobs/{job}` and `/w/{ws}/runs/{run}`: plain server-rendered
HTML; `/` leads to them. A browser signs in once at `/ui/login` with a read or
admin key. The key itself is never kept: the cookie holds a random session id
(stored as a hash, with an expiry, tied to the key: revoking the key ends its
sessions), HttpOnly, SameSite=Lax and Secure when the request came over HTTPS.
A POST from another origin (login, logout) is refused: the key never appears
in a URL nor in the browser.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import Headers

from headwater.api.auth import SESSION_TTL, Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.responses import ApiError
from headwater.core.access import Action, allows
from headwater.core.policy import is_served
from headwater.core.states import TERMINAL, RunStatus

COOKIE = "headwater_session"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#1d2733;
 padding:0 1rem}
h1{font-size:1.4rem}a{color:#0b63c5}table{border-collapse:collapse;width:100%}
td,th{padding:.3rem .6rem;border-bottom:1px solid #e3e7ec;text-align:left;vertical-align:top}
.completed{color:#1a7f37}.failed{color:#cf222e}.cancelled,.cancelling{color:#9a6700}
.running,.starting,.pending{color:#0969da}.skipped{color:#6e7781}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;font-size:12.5px}
.dim{color:#6e7781}.err{color:#cf222e}
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, body: str, refresh: bool = False) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="2">' if refresh else ""
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>{e(title)} · Headwater"
        f"</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


SIGN_OUT = (
    "<form method='post' action='/ui/logout' style='float:right'><button>Sign out</button></form>"
)


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


def refused_cross_origin() -> HTMLResponse:
    response = page("Refused", "<p class='err'>Refused: this form was sent from another site.</p>")
    response.status_code = 403
    return response


def not_served(job: dict[str, Any]) -> str:
    """A plain mark on jobs Headwater lists but does not run (interactive ones)."""
    if is_served(job["job_type"]):
        return ""
    return f" <span class='dim'>({e(job['job_type'])}: not served)</span>"


def status(s: str | None) -> str:
    return f"<span class='{e(s)}'>{e(s)}</span>"


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["ui"], include_in_schema=False)
    store = ctx.store

    def viewer(request: Request) -> Principal | Response:
        session = request.cookies.get(COOKIE)
        try:
            if session:
                principal = auth.check_session(session)
            else:
                principal = auth.authenticate(request)
        except ApiError:
            return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)
        if not allows(principal.scope, Action.READ):
            return page("Not allowed", "<p class='err'>Pages need a read or admin key.</p>")
        return principal

    def workspace_name(ws: str) -> str:
        row = store.get_workspace(ws)
        return (row or {}).get("name") or ws

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
        return page(
            "Sign in",
            "<h1>Headwater</h1><form method='post' action='/ui/login'>"
            f"<input type='hidden' name='next' value='{e(next)}'>"
            "<p>API key (read or admin): <input name='key' type='password' size='60'></p>"
            "<p><button>Sign in</button></p></form>"
            "<p class='dim'>Make one with <code>headwater key create --name me --scope read</code>."
            "</p>",
        )

    @r.post("/ui/login")
    def login(request: Request, key: str = Form(...), next: str = Form("/")) -> Any:
        if not same_origin(request.headers, https=over_https(request)):
            return refused_cross_origin()
        try:
            principal = auth.check_secret(key.strip())
        except ApiError as ex:
            return page("Sign in", f"<p class='err'>{e(ex.detail)}</p><a href='/ui/login'>back</a>")
        if not allows(principal.scope, Action.READ):
            return page(
                "Sign in",
                "<p class='err'>Pages need a read or admin key.</p><a href='/ui/login'>back</a>",
            )
        # only a path of this server: `//host` and `/\host` (browsers read `\` as `/`) leave it
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
            samesite="lax",
            secure=over_https(request),
        )
        return resp

    @r.post("/ui/logout")
    def logout(request: Request) -> Any:
        if not same_origin(request.headers, https=over_https(request)):
            return refused_cross_origin()
        session = request.cookies.get(COOKIE)
        if session:
            auth.end_session(session)
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=over_https(request))
        return resp

    @r.get("/w/{ws}")
    def workspace_page(ws: str, request: Request) -> Any:
        who = viewer(request)
        if not isinstance(who, Principal):
            return who
        ctx.check_ws(ws)
        jobs, _ = store.list_jobs(ws, limit=1000)
        latest = store.latest_runs([j["id"] for j in jobs])
        rows = "".join(
            f"<tr><td><a href='/w/{e(ws)}/jobs/{e(j['id'])}'>{e(j['job_ref'])}</a>"
            f"{not_served(j)}"
            f"{' <span class=dim>(paused)</span>' if j['is_paused'] else ''}"
            f"{' <span class=dim>(archived)</span>' if j['is_archived'] else ''}</td>"
            f"<td>{e(', '.join(j['triggers']))}</td><td>{e(j['next_run_at'])}</td>"
            f"<td>{_run_link(ws, latest.get(j['id']))}</td></tr>"
            for j in jobs
        )
        runs, total = store.list_runs(ws, limit=25)
        refs = {j["id"]: j["job_ref"] for j in jobs}
        manifest = ctx.manifest_status()
        error = (
            f"<p class='err'>Manifest error: {e(manifest['error'])}</p>"
            if manifest["error"]
            else ""
        )
        name = workspace_name(ws)
        return page(
            name,
            f"{SIGN_OUT}<h1>Workspace {e(name)}</h1>{error}<p class=dim>{e(ws)} · manifest"
            f" version {e(manifest['version'])}</p><table><tr><th>job</th><th>triggers</th>"
            f"<th>next run</th><th>last run</th></tr>{rows}</table>"
            f"<h2>Recent runs ({total})</h2>{_runs_table(ws, runs, refs)}",
        )

    @r.get("/w/{ws}/jobs/{job}")
    def job_page(ws: str, job: str, request: Request) -> Any:
        who = viewer(request)
        if not isinstance(who, Principal):
            return who
        ctx.check_ws(ws)
        row = store.get_job(job)
        if row is None:
            found, _ = store.list_jobs(ws, ref=job, limit=1)
            row = found[0] if found else None
        if row is None or row["workspace_id"] != ws:
            return page("No such job", f"<p class='err'>No job {e(job)}.</p>")
        runs, total = store.list_runs(ws, job_id=row["id"], limit=50)
        name = workspace_name(ws)
        return page(
            f"{row['job_ref']} · {name}",
            f"{SIGN_OUT}<p><a href='/w/{e(ws)}'>{e(name)}</a></p><h1>{e(row['job_ref'])}"
            f"{not_served(row)}</h1>"
            f"<p>{e(row['job_type'])} · version {e(row['version'])} · triggers "
            f"{e(', '.join(row['triggers']))} · next run {e(row['next_run_at'])}"
            f"{' · paused' if row['is_paused'] else ''}</p>"
            f"<h2>Runs ({total})</h2>{_runs_table(ws, runs, {row['id']: row['job_ref']})}"
            f"<h2>Definition</h2><pre>{e(json.dumps(row['definition'], indent=2))}</pre>",
        )

    @r.get("/w/{ws}/runs/{run_id}")
    def run_page(ws: str, run_id: str, request: Request) -> Any:
        who = viewer(request)
        if not isinstance(who, Principal):
            return who
        ctx.check_ws(ws)
        run = store.get_run(run_id)
        if run is None or run["workspace_id"] != ws:
            return page("No such run", f"<p class='err'>No run {e(run_id)}.</p>")
        job = store.get_job(run["job_id"]) or {"job_ref": "?", "id": run["job_id"]}
        (run,) = ctx.with_summaries([run])
        previous = None
        if run["number"] > 1:
            found, _ = store.list_runs(ws, job_id=run["job_id"], number=run["number"] - 1, limit=1)
            previous = found[0] if found else None
        lines = store.read_logs(run_id, limit=100_000)
        log = "\n".join(
            f"{x['line_num'] + 1:>5} {x['reported_at'].strftime('%H:%M:%S.%f')[:-3]} "
            f"{'' if x['source'] == 'user' else '[' + x['source'] + '] '}{x['content']}"
            for x in lines
        )
        facts = "".join(
            f"<tr><th>{e(k)}</th><td>{v}</td></tr>"
            for k, v in (
                ("status", status(run["status"])),
                ("reason", e(run["reason"])),
                ("trigger", e(run["trigger"])),
                ("created", e(run["created_at"])),
                ("started", e(run["started_at"])),
                ("finished", e(run["finished_at"])),
                ("exit code", e(run["exit_code"])),
                ("parameters", e(run["parameters"])),
                ("rows loaded", _rows_loaded(run["pipeline_run_summaries"])),
                ("previous run", _run_link(ws, previous) if previous else ""),
                ("triggered by run", _link_id(ws, run["previous_run_id"])),
            )
            if v or k not in ("triggered by run",)
        )
        active = RunStatus(run["status"]) not in TERMINAL
        name = workspace_name(ws)
        return page(
            f"{job['job_ref']} #{run['number']} · {name}",
            f"{SIGN_OUT}<p><a href='/w/{e(ws)}'>{e(name)}</a> · "
            f"<a href='/w/{e(ws)}/jobs/{e(job['id'])}'>"
            f"{e(job['job_ref'])}</a></p><h1>Run #{e(run['number'])}</h1><table>{facts}</table>"
            f"<h2>Log</h2><pre>{e(log)}</pre>",
            refresh=active,
        )

    return r


def _rows_loaded(summaries: list[dict[str, Any]]) -> str:
    """Rows each of the run's pipelines loaded (from the run's telemetry), and their sum."""
    if not summaries:
        return "<span class='dim'>no pipeline reported</span>"
    parts = [
        f"{e(s['total_rows'])} <span class='dim'>({e(s['pipeline_name'])} → "
        f"{e(s['destination_name'])}.{e(s['dataset_name'])}, {e(s['status'])})</span>"
        for s in summaries
    ]
    if len(summaries) == 1:
        return parts[0]
    total = sum(s["total_rows"] or 0 for s in summaries)
    return f"{total} in all: " + "; ".join(parts)


def _link_id(ws: str, run_id: str | None) -> str:
    return f"<a href='/w/{e(ws)}/runs/{e(run_id)}'>{e(run_id)}</a>" if run_id else ""


def _run_link(ws: str, run: dict[str, Any] | None) -> str:
    if run is None:
        return "-"
    return (
        f"<a href='/w/{e(ws)}/runs/{e(run['id'])}'>#{e(run['number'])}</a> {status(run['status'])}"
    )


def _runs_table(ws: str, runs: list[dict[str, Any]], refs: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><td>{_run_link(ws, x)}</td><td>{e(refs.get(x['job_id'], x['job_id']))}</td>"
        f"<td>{e(x['trigger'])}</td><td>{e(x['started_at'])}</td><td>{e(x['reason'])}</td></tr>"
        for x in runs
    )
    return (
        "<table><tr><th>run</th><th>job</th><th>trigger</th><th>started</th><th>reason</th></tr>"
        f"{rows}</table>"
    )
