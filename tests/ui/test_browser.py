"""The web pages in a real browser: Debian's chromium driven by Playwright, headless, on a
real `headwater up`. Signs in, runs a job from its page and watches its log lines arrive
live, cancels a run, pauses and resumes a schedule, filters runs and pages them, follows a
chain from run to run, creates and revokes a key, checks a read key cannot act and that
`<script>` in a job name, a log line or a parameter runs nothing. A screenshot of every
page goes to `test-output/ui/`."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.harness import Server

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "ui"
EVIL = "<script>window.pwned=1</script>"

WORKSPACE = """
import time

import dlt.hub.run as run
from dlt.hub.run import trigger


@run.job
def ticker():
    for i in range(12):
        print(f"tick {i}", flush=True)
        time.sleep(0.25)


@run.job(execute={"timeout": {"timeout": 600, "grace_period": 2}})
def sleeper():
    print("sleeping", flush=True)
    time.sleep(120)


@run.job(trigger=trigger.schedule("0 3 * * *"), expose={"tags": ["nightly"]})
def nightly():
    print("night")


@run.job(expose={"tags": ["ingest"]})
def load():
    print("loaded")


@run.job(trigger=[load.success])
def transform():
    print("transformed")


@run.job(expose={"display_name": "<img src=x onerror=window.pwned=2>"})
def shady(note="plain"):
    print("<script>window.pwned=3</script>", note)


__all__ = ["ticker", "sleeper", "nightly", "load", "transform", "shady"]
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("ui") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    server = Server(ws).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (bash .ci/run does)")
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def key(srv: Server, name: str, scope: str) -> str:
    return srv.cli("key", "create", "--name", name, "--scope", scope).stdout.strip()


def signed_in(browser: Browser, srv: Server, scope: str = "admin") -> Page:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{srv.url}/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.fill("input[name=key]", key(srv, f"{scope}-{len(page.context.pages)}-{id(page)}", scope))
    page.click("button:has-text('Sign in')")
    expect(page).to_have_url(re.compile(rf"/w/{srv.ws_id}$"))
    return page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def job_link(page: Page, name: str) -> None:
    page.click(f"tr[data-job='jobs.__deployment__.{name}'] a >> nth=0")


def test_sign_in_run_a_job_and_watch_its_log_live(browser: Browser, srv: Server) -> None:
    page = signed_in(browser, srv)
    shot(page, "jobs")
    job_link(page, "ticker")
    expect(page.locator("h1")).to_contain_text("ticker")
    page.click("button:has-text('Run now')")
    expect(page).to_have_url(re.compile(r"/runs/"))
    expect(page.locator("#run-status")).to_contain_text(re.compile("pending|starting|running"))
    # lines arrive while the run runs: the first is shown before the last is printed
    expect(page.locator("#log")).to_contain_text("tick 1", timeout=30_000)
    assert "tick 11" not in page.locator("#log").inner_text()
    expect(page.locator("#log")).to_contain_text("tick 11", timeout=30_000)
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=30_000)
    shot(page, "run")
    # searchable afterwards
    page.fill("input[name=q]", "tick 7")
    page.click("button:has-text('Search')")
    expect(page.locator("#log mark")).to_have_text("tick 7")
    assert page.errors == []  # type: ignore[attr-defined]


def test_cancel_a_run_from_its_page(browser: Browser, srv: Server) -> None:
    page = signed_in(browser, srv)
    job_link(page, "sleeper")
    page.click("button:has-text('Run now')")
    expect(page.locator("#log")).to_contain_text("sleeping", timeout=30_000)
    page.click("button:has-text('Cancel run')")
    expect(page.locator("#flash")).to_have_text("cancel requested")
    # the status refreshes itself: cancelling, then cancelled once the grace period is over
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=30_000)


def test_pause_and_resume_a_schedule(browser: Browser, srv: Server) -> None:
    page = signed_in(browser, srv)
    job_link(page, "nightly")
    page.click("button:has-text('Pause schedule')")
    expect(page.locator("#flash")).to_have_text("schedule paused")
    expect(page.locator("h1")).to_contain_text("paused")
    assert srv.jobs()["nightly"]["is_paused"] is True
    shot(page, "job")
    page.click("button:has-text('Resume schedule')")
    expect(page.locator("#flash")).to_have_text("schedule resumed")
    assert srv.jobs()["nightly"]["is_paused"] is False


def test_follow_a_chain_from_run_to_run_and_see_the_graph(browser: Browser, srv: Server) -> None:
    load = srv.wait_run(srv.start_run("load")["id"], timeout=60)
    chained = srv.wait_for(lambda: srv.runs("transform"), 30, "the chained run")
    srv.wait_run(chained[0]["id"], timeout=60)
    page = signed_in(browser, srv)
    page.goto(f"{srv.url}/w/{srv.ws_id}/runs/{load['id']}")
    page.click(f"a[href$='/runs/{chained[0]['id']}']")
    expect(page.locator("h1")).to_contain_text("Run #1")
    expect(page.locator("body")).to_contain_text("triggered by")
    page.click(f"a[href$='/runs/{load['id']}']")
    expect(page).to_have_url(re.compile(load["id"]))
    job_link_page = f"{srv.url}/w/{srv.ws_id}/jobs/{srv.job_id('transform')}"
    page.goto(job_link_page)
    expect(page.locator("#graph canvas")).to_have_count(1)
    expect(page.locator("#durations canvas")).to_have_count(1)
    page.wait_for_timeout(300)  # the charts' first frame
    shot(page, "job-chain")


def test_filter_and_page_runs(browser: Browser, srv: Server) -> None:
    for _ in range(3):
        srv.wait_run(srv.start_run("load")["id"], timeout=60)
    page = signed_in(browser, srv)
    page.click("header a:has-text('Runs')")
    page.select_option("select[name=job]", label="jobs.__deployment__.transform")
    page.click("button:has-text('Filter')")
    rows = page.locator("#runs-list tbody tr")
    expect(rows.first).to_contain_text("transform")
    assert all("transform" in t for t in rows.all_inner_texts())
    page.select_option("select[name=job]", label="any")
    page.select_option("select[name=trigger_kind]", "job.success")
    page.click("button:has-text('Filter')")
    assert all("job.success" in t for t in rows.all_inner_texts())
    shot(page, "runs")
    page.goto(f"{srv.url}/w/{srv.ws_id}/timeline")
    expect(page.locator("#gantt canvas")).to_have_count(1)
    shot(page, "timeline")


def test_create_and_revoke_a_key(browser: Browser, srv: Server) -> None:
    page = signed_in(browser, srv)
    page.click("header a:has-text('Workspace')")
    page.fill("#new-key-form input[name=name]", "from-the-page")
    page.select_option("#new-key-form select[name=scope]", "read")
    page.click("#new-key-form button")
    secret = page.locator("#new-key .key").inner_text()
    assert secret.startswith("dlt_sa_")
    shot(page, "workspace")
    ok = srv.http.get(f"{srv.w}/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert ok.status_code == 200
    page.reload()  # shown once: not on the page again
    assert secret not in page.content()
    page.click("tr[data-key='from-the-page'] button:has-text('Revoke')")
    expect(page.locator("#flash")).to_have_text("revoked from-the-page")
    gone = srv.http.get(f"{srv.w}/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert gone.status_code == 401


def test_a_read_key_sees_but_cannot_press_a_button(browser: Browser, srv: Server) -> None:
    page = signed_in(browser, srv, scope="read")
    expect(page.locator("header")).to_contain_text("read only")
    job_link(page, "load")
    button = page.locator("button:has-text('Run now')")
    expect(button).to_be_disabled()
    assert "admin key" in (button.get_attribute("title") or "")
    # a forged post with the session's own token is refused on the server as well
    token = page.locator("#run-now input[name=csrf]").get_attribute("value")
    before = len(srv.runs("load"))
    answer = page.request.post(
        page.url + "/run", form={"csrf": token or ""}, headers={"Origin": srv.url}
    )
    assert answer.status == 403 and len(srv.runs("load")) == before


def test_a_post_without_the_csrf_token_is_refused(browser: Browser, srv: Server) -> None:
    page = signed_in(browser, srv)
    job_link(page, "load")
    before = len(srv.runs("load"))
    answer = page.request.post(page.url + "/run", form={}, headers={"Origin": srv.url})
    assert answer.status == 403 and len(srv.runs("load")) == before


def test_script_in_a_name_a_log_line_or_a_parameter_runs_nothing(
    browser: Browser, srv: Server
) -> None:
    page = signed_in(browser, srv)
    expect(page.locator("tr[data-job='jobs.__deployment__.shady']")).to_contain_text(
        "<img src=x onerror=window.pwned=2>"
    )
    job_link(page, "shady")
    page.fill("textarea[name=parameters]", json.dumps({"note": EVIL}))
    page.click("button:has-text('Run now')")
    expect(page.locator("#log")).to_contain_text("window.pwned=3", timeout=30_000)
    expect(page.locator("#parameters")).to_contain_text(EVIL)
    expect(page.locator("#log")).to_contain_text(EVIL)
    page.reload()
    assert page.evaluate("window.pwned") is None
    for path in ("", "/runs", "/timeline"):
        page.goto(f"{srv.url}/w/{srv.ws_id}{path}")
        assert page.evaluate("window.pwned") is None
    assert page.errors == []  # type: ignore[attr-defined]


def test_the_jobs_page_with_history_and_the_workspace_page(browser: Browser, srv: Server) -> None:
    page = signed_in(browser, srv)
    expect(page.locator("tr[data-job='jobs.__deployment__.load'] .strip a")).not_to_have_count(0)
    page.select_option("select[name=tag]", "ingest")
    page.click("button:has-text('Filter')")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    page.goto(f"{srv.url}/w/{srv.ws_id}")
    shot(page, "jobs-history")
    page.goto(f"{srv.url}/w/{srv.ws_id}/settings")
    expect(page.locator("table").first).to_contain_text("1")  # manifest version 1
