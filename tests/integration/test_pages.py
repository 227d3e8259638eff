"""The pages behind `job_url` and `run_url`, with a key kept in a cookie."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.harness import HERE, Server, copy_workspace

pytestmark = pytest.mark.integration


def test_run_and_job_pages_show_state_and_log_after_sign_in(tmp_path) -> None:
    srv = Server(copy_workspace(HERE / "workspace", tmp_path / "ws")).start(wait_warm=False)
    try:
        run = srv.wait_run(srv.start_run("greet", parameters={"greeting": "<b>hi</b>"})["id"])
        assert run["run_url"].endswith(f"/w/{srv.ws_id}/runs/{run['id']}")
        assert run["job_url"].endswith(f"/w/{srv.ws_id}/jobs/{run['job_id']}")
        browser = httpx.Client(base_url=srv.url, follow_redirects=False)
        first = browser.get(f"/w/{srv.ws_id}/runs/{run['id']}")
        assert first.status_code == 303 and first.headers["location"].startswith("/ui/login")
        key = srv.cli("key", "create", "--name", "browser", "--scope", "read").stdout.strip()
        signed = browser.post(
            "/ui/login", data={"key": key, "next": f"/w/{srv.ws_id}/runs/{run['id']}"}
        )
        assert signed.status_code == 303
        assert key not in signed.headers["location"]
        page = browser.get(signed.headers["location"])
        assert page.status_code == 200
        # the log arrives as JSON data the page's script writes as text; the parameter is
        # escaped in the page itself (tests/ui checks in a browser that nothing runs)
        assert "greeting=\\u003cb\\u003ehi\\u003c/b\\u003e" in page.text
        assert "&#34;greeting&#34;: &#34;&lt;b&gt;hi&lt;/b&gt;&#34;" in page.text
        assert "completed" in page.text
        job = browser.get(f"/w/{srv.ws_id}/jobs/{run['job_id']}")
        assert "jobs.__deployment__.greet" in job.text and run["id"] in job.text
        overview = browser.get(f"/w/{srv.ws_id}")
        assert "jobs.__deployment__.ok" in overview.text
        bad = httpx.post(f"{srv.url}/ui/login", data={"key": "dlt_sa_nope"})
        assert "unknown API key" in bad.text
    finally:
        srv.stop()


ROWS_JOB = """

@run.job
def rows():
    path = os.path.join(os.getcwd(), "pages.duckdb")
    duckdb = dlt.destinations.duckdb(path)
    pipeline = dlt.pipeline("page_rows", destination=duckdb, dataset_name="raw")
    pipeline.run([{"n": i} for i in range(7)], table_name="items")


__all__.append("rows")
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("pages") / "ws")
    manifest = ws / "__deployment__.py"
    manifest.write_text(manifest.read_text() + ROWS_JOB)
    server = Server(ws).start(wait_warm=False)
    yield server
    server.stop()


def sign_in(srv: Server, **headers: str) -> tuple[httpx.Client, str, str]:
    """A browser signed in with a new read key: (browser, key, the key's name)."""
    name = f"browser-{uuid.uuid4().hex[:8]}"
    key = srv.cli("key", "create", "--name", name, "--scope", "read").stdout.strip()
    browser = httpx.Client(base_url=srv.url, follow_redirects=False, timeout=30)
    resp = browser.post("/ui/login", data={"key": key}, headers=headers)
    assert resp.status_code == 303, resp.text
    return browser, key, name


def title(html: str) -> str:
    found = re.search(r"<title>(.*?)</title>", html)
    assert found, html[:300]
    return found.group(1)


def test_the_cookie_is_a_server_side_session_not_the_key(srv: Server) -> None:
    browser, key, _ = sign_in(srv, Origin=srv.url)
    session = browser.cookies["headwater_session"]
    assert session and key not in session
    cookie = browser.post("/ui/login", data={"key": key}, headers={"Origin": srv.url}).headers[
        "set-cookie"
    ]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    behind_tls = httpx.post(
        f"{srv.url}/ui/login", data={"key": key}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in behind_tls.headers["set-cookie"]
    # the session id is no API key, and only its hash is stored
    as_key = httpx.get(f"{srv.url}{srv.w}/jobs", headers={"Authorization": f"Bearer {session}"})
    assert as_key.status_code == 401
    raw = b"".join(p.read_bytes() for p in (srv.workspace / ".headwater").glob("headwater.db*"))
    assert session.encode() not in raw
    assert browser.get(f"/w/{srv.ws_id}").status_code == 200


def test_revoking_the_key_or_signing_out_ends_the_session(srv: Server) -> None:
    browser, _, _ = sign_in(srv)
    assert browser.get(f"/w/{srv.ws_id}").status_code == 200
    session = browser.cookies["headwater_session"]
    out = browser.post("/ui/logout", headers={"Origin": srv.url})
    assert out.status_code == 303 and 'headwater_session=""' in out.headers["set-cookie"]
    replayed = httpx.get(f"{srv.url}/w/{srv.ws_id}", cookies={"headwater_session": session})
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/ui/login")

    browser, _, name = sign_in(srv)
    srv.cli("key", "revoke", name)
    gone = browser.get(f"/w/{srv.ws_id}")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/login")


def test_a_cross_origin_login_or_logout_is_refused(srv: Server) -> None:
    key = srv.cli("key", "create", "--name", "xo", "--scope", "read").stdout.strip()
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/form.html"},
    ):
        resp = httpx.post(f"{srv.url}/ui/login", data={"key": key}, headers=headers)
        assert resp.status_code == 403, (headers, resp.text)
        assert "set-cookie" not in resp.headers
    browser, _, _ = sign_in(srv, Referer=f"{srv.url}/ui/login")
    assert browser.post("/ui/logout", headers={"Origin": "https://evil.example"}).status_code == 403
    assert browser.get(f"/w/{srv.ws_id}").status_code == 200


def test_login_sends_people_only_to_this_servers_pages(srv: Server) -> None:
    key = srv.cli("key", "create", "--name", "redirects", "--scope", "read").stdout.strip()
    for away in ("https://evil.example/", "//evil.example/", "/\\evil.example/", "/\\/evil"):
        resp = httpx.post(f"{srv.url}/ui/login", data={"key": key, "next": away})
        assert resp.status_code == 303
        assert resp.headers["location"] == f"/w/{srv.ws_id}", away
    kept = httpx.post(f"{srv.url}/ui/login", data={"key": key, "next": f"/w/{srv.ws_id}/runs"})
    assert kept.headers["location"] == f"/w/{srv.ws_id}/runs"


def test_the_root_leads_to_the_pages(srv: Server) -> None:
    anon = httpx.get(f"{srv.url}/")
    assert anon.status_code == 303
    assert anon.headers["location"] == f"/ui/login?next=/w/{srv.ws_id}"
    browser, _, _ = sign_in(srv)
    assert browser.get("/").headers["location"] == f"/w/{srv.ws_id}"


def test_pages_name_the_workspace_mark_interactive_jobs_and_show_rows_and_previous_run(
    srv: Server,
) -> None:
    name = srv.get(srv.w)["name"]
    browser, _, _ = sign_in(srv)
    overview = browser.get(f"/w/{srv.ws_id}").text
    assert name in title(overview) and srv.ws_id not in title(overview)
    assert re.search(
        r"<b>dashboard</b></a>\s*<span[^>]*>interactive: not served</span>", overview
    ), overview
    first = srv.wait_run(srv.start_run("rows")["id"], timeout=90)
    second = srv.wait_run(srv.start_run("rows")["id"], timeout=90)
    assert second["status"] == "completed", srv.logs(second["id"])
    assert second["pipeline_run_summaries"][0]["total_rows"] == 7
    job_page = browser.get(f"/w/{srv.ws_id}/jobs/{second['job_id']}").text
    assert name in title(job_page) and srv.ws_id not in title(job_page)
    page = browser.get(f"/w/{srv.ws_id}/runs/{second['id']}").text
    assert name in title(page) and srv.ws_id not in title(page)
    rows = re.search(r"<th>rows loaded</th><td>(.*?)</td>", page, re.S)
    assert rows and rows.group(1).startswith("7 ") and "page_rows" in rows.group(1), page
    previous = re.search(r"<th>previous run</th><td>(.*?)</td>", page, re.S)
    assert previous and f"/runs/{first['id']}" in previous.group(1), page


def test_the_timeline_carries_the_windows_runs_as_compact_rows(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("greet", parameters={"greeting": "hi"})["id"])
    browser, _, _ = sign_in(srv)
    page = browser.get(f"/w/{srv.ws_id}/timeline")
    assert page.status_code == 200
    found = re.search(r'<script type="application/json" id="gantt-data">(.*?)</script>', page.text)
    assert found, page.text[:500]
    gantt = json.loads(found.group(1))
    assert gantt["end"] - gantt["start"] == 24 * 3600 * 1000
    (row,) = [r for r in gantt["runs"] if r[6] == run["id"]]
    job, number, status, created, started, finished, _ = row
    assert gantt["jobs"][job] == run["job_ref"] and number == run["number"]
    assert gantt["statuses"][status] == "completed"
    assert 0 < created <= started <= finished <= gantt["end"] - gantt["start"]
    assert 'id="capped"' not in page.text


def test_the_log_stream_replays_an_ended_runs_lines_then_ends(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("greet", parameters={"greeting": "streamed"})["id"])
    path = f"/w/{srv.ws_id}/runs/{run['id']}/log-stream"
    anon = httpx.get(f"{srv.url}{path}")
    assert anon.status_code == 303 and anon.headers["location"].startswith("/ui/login")
    browser, _, _ = sign_in(srv)
    stream = browser.get(path)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "event: log" in stream.text and "streamed" in stream.text
    assert stream.text.endswith("event: end\ndata: {}\n\n")
    assert browser.get(f"/w/{srv.ws_id}/runs/{uuid.uuid4()}/log-stream").status_code == 404
    assert browser.get(f"/w/nope/runs/{run['id']}/log-stream").status_code == 404
