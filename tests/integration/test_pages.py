"""The pages behind `job_url` and `run_url`, with a key kept in a cookie."""

from __future__ import annotations

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
        assert "greeting=&lt;b&gt;hi&lt;/b&gt;" in page.text  # output is escaped
        assert "completed" in page.text
        job = browser.get(f"/w/{srv.ws_id}/jobs/{run['job_id']}")
        assert "jobs.__deployment__.greet" in job.text and run["id"] in job.text
        overview = browser.get(f"/w/{srv.ws_id}")
        assert "jobs.__deployment__.ok" in overview.text
        bad = httpx.post(f"{srv.url}/ui/login", data={"key": "dlt_sa_nope"})
        assert "unknown API key" in bad.text
    finally:
        srv.stop()
