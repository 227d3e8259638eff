"""Automations on a real `headwater up`: mail through a local SMTP server (aiosmtpd) by
apprise, apprise's JSON target and a signed webhook against a local receiver that checks the
signature, a receiver down for a while and across a restart (delivered later, once per id),
three failures in a row pausing a job and triggering another, and in-code hooks that
succeed, raise, hang, or follow a SIGKILLed run. Each on `up`'s own worker and on remote
workers (`[remote]`: PostgreSQL, RabbitMQ)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from headwater.core.signatures import signature
from tests.integration.harness import WHERE, Server, served

pytestmark = pytest.mark.integration

HOOK_SECRET = "whsec-test-1234"
SMTP_PASS = "smtp-pass-5678"

WORKSPACE = """
import os
import signal
import time

import dlt.hub.run as run


@run.job(expose={"tags": ["ingest"]})
def load():
    raise RuntimeError("source is down")


@run.job
def ok():
    print("ok ran")


@run.job
def cleanup():
    print("cleaned up")


@run.job
def hooked():
    print("hooked ran")


@run.job
def grumpy():
    print("grumpy ran")


@run.job
def sleepy():
    print("sleepy ran")


@run.job
def killed():
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["load", "ok", "cleanup", "hooked", "grumpy", "sleepy", "killed"]
"""

HOOKS = """
import json
import os
import time


def record(run):
    name = "hook-" + run["job_ref"].rsplit(".", 1)[-1] + ".json"
    with open(os.path.join(os.path.dirname(__file__), name), "w") as f:
        json.dump(run, f)
    print("recorded", run["number"])


def explode(run):
    raise ValueError("hook exploded on purpose")


def hang(run):
    time.sleep(600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A webhook receiver that checks Headwater's signature; `down` answers 503."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.down = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                header = self.headers.get("X-Headwater-Signature", "")
                valid = None
                if header:
                    t = int(header.split(",")[0].removeprefix("t="))
                    valid = signature(HOOK_SECRET, body, t) == header
                receiver.got.append(
                    {
                        "path": self.path,
                        "delivery": self.headers.get("X-Headwater-Delivery"),
                        "valid": valid,
                        "body": json.loads(body),
                    }
                )
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        return [g for g in self.got if g["path"] == path]


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[str] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                box.mails.append(envelope.content.decode(errors="replace"))
                return "250 OK"

        def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            return AuthResult(success=data.login == b"hw" and data.password == SMTP_PASS.encode())

        self.port = free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=auth,
            auth_require_tls=False,
        )
        self.controller.start()


MESSAGE = "{{ run.job_ref }} run {{ run.number }} {{ run.status }}: {{ run.failure_reason }}"


def config(receiver: Receiver, mailbox: Mailbox) -> str:
    mail = (
        f"mailtos://hw:secret:SMTP_PASS@example.com:{mailbox.port}?smtp=127.0.0.1"
        "&mode=insecure&from=hw@example.com&to=team@example.com"
    )
    return f"""
[jobs.hooked]
on_success = "hooks:record"

[jobs.grumpy]
on_success = "hooks:explode"

[jobs.sleepy]
on_success = "hooks:hang"

[jobs.killed]
on_failure = "hooks:record"

[[automations]]
name = "ingest failures by mail"
on = ["job.fail:tag:ingest"]
notify = ["{mail}"]
title = "{{{{ run.job_ref }}}} failed"
message = "{MESSAGE}"

[[automations]]
name = "ok to the receiver"
on = ["run.completed:ok"]
notify = ["json://127.0.0.1:{receiver.url.rsplit(":", 1)[1]}/apprise"]
webhook = {{ url = "{receiver.url}/hook", secret = "env:HOOK_SECRET" }}

[[automations]]
name = "stop the flood"
on = ["job.fail:load"]
count = 3
actions = [{{ pause = "load" }}, {{ trigger = "cleanup" }}]
"""


@pytest.fixture(scope="module", params=WHERE)
def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Server, Receiver, Mailbox]]:
    ws = tmp_path_factory.mktemp("automations") / "ws"
    ws.mkdir()
    receiver, mailbox = Receiver(), Mailbox()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    (ws / "hooks.py").write_text(HOOKS)
    (ws / "headwater.toml").write_text(config(receiver, mailbox))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOOK_SECRET", HOOK_SECRET)
        mp.setenv("HEADWATER_DELIVERY_BACKOFF_S", "0.5")
        mp.setenv("HEADWATER_HOOK_TIMEOUT_S", "3")
        try:
            with served(ws, request.param) as server:
                # the SMTP password is a workspace secret, as `dlthub variable set --secret` sets it
                answer = server.http.patch(
                    f"{server.w}/variables",
                    json={"upserts": [{"name": "SMTP_PASS", "type": "secret", "value": SMTP_PASS}]},
                )
                assert answer.status_code == 200, answer.text
                yield server, receiver, mailbox
        finally:
            mailbox.controller.stop()
            receiver.server.shutdown()


def deliveries(srv: Server, **params: Any) -> list[dict[str, Any]]:
    return srv.get(f"{srv.w}/deliveries", params=params)["items"]


def test_a_failed_ingest_run_mails_the_team(env: tuple[Server, Receiver, Mailbox]) -> None:
    srv, _receiver, mailbox = env
    run = srv.wait_run(srv.start_run("load")["id"])
    assert run["status"] == "failed"
    mail = srv.wait_for(lambda: mailbox.mails, 30, "a mail")[0]
    assert "Subject: jobs.__deployment__.load failed" in mail
    assert f"jobs.__deployment__.load run {run['number']} failed: " in mail
    assert "source is down" in mail
    # the SMTP password never shows: not in the rules, not in the delivery log
    shown = json.dumps(srv.get(f"{srv.w}/automations")) + json.dumps(deliveries(srv))
    assert SMTP_PASS not in shown, shown
    assert "hw:****@" in shown


def test_a_completed_run_reaches_the_signed_webhook_and_apprises_json(
    env: tuple[Server, Receiver, Mailbox],
) -> None:
    srv, receiver, _ = env
    run = srv.wait_run(srv.start_run("ok")["id"])
    hook = srv.wait_for(lambda: receiver.at("/hook"), 30, "the webhook")[0]
    assert hook["valid"] is True
    assert hook["body"]["event"] == "run.completed"
    assert hook["body"]["run"]["id"] == run["id"]
    assert hook["body"]["url"].endswith(f"/runs/{run['id']}")
    assert "ok ran" in "\n".join(hook["body"]["logs"])
    assert hook["delivery"] == hook["body"]["delivery_id"]
    srv.wait_for(lambda: receiver.at("/apprise"), 30, "apprise's JSON")


def test_a_receiver_down_gets_it_later_once_even_across_a_restart(
    env: tuple[Server, Receiver, Mailbox],
) -> None:
    srv, receiver, _ = env
    receiver.down = True
    run = srv.wait_run(srv.start_run("ok")["id"])
    failing = srv.wait_for(
        lambda: [d for d in deliveries(srv, failed="true") if d["run_id"] == run["id"]],
        30,
        "a failing delivery",
    )
    assert failing[0]["status"] == "pending" and failing[0]["attempts"] >= 1
    listed = srv.cli("delivery", "ls", "--failed").stdout
    assert "ok to the receiver" in listed and "503" in listed
    srv.kill()
    receiver.down = False
    srv.start()
    srv.wait_for(
        lambda: [g for g in receiver.at("/hook") if g["body"]["run"]["id"] == run["id"]],
        60,
        "the late delivery",
    )
    srv.wait_for(
        lambda: all(
            d["status"] == "delivered" for d in deliveries(srv) if d["run_id"] == run["id"]
        ),
        30,
        "all delivered",
    )
    ids = [g["delivery"] for g in receiver.at("/hook") if g["body"]["run"]["id"] == run["id"]]
    assert len(ids) == len(set(ids)) == 1


def test_three_failures_in_a_row_pause_the_job_and_trigger_cleanup(
    env: tuple[Server, Receiver, Mailbox],
) -> None:
    srv, _, _ = env
    before = len(srv.runs("cleanup"))
    failed = [r for r in srv.runs("load") if r["status"] == "failed"]
    for _ in range(3 - len(failed) % 3):
        srv.wait_run(srv.start_run("load")["id"])
    srv.wait_for(lambda: srv.jobs()["load"]["is_paused"], 30, "load paused")
    cleanup = srv.wait_for(lambda: srv.runs("cleanup")[before:] or None, 30, "cleanup run")
    assert srv.wait_run(cleanup[0]["id"])["status"] == "completed"


def test_hooks_run_after_the_run_and_never_change_its_outcome(
    env: tuple[Server, Receiver, Mailbox],
) -> None:
    srv, _, _ = env
    workspace = Path(srv.workspace)
    hooked = srv.wait_run(srv.start_run("hooked")["id"])
    recorded = srv.wait_for(lambda: (workspace / "hook-hooked.json").exists(), 30, "hook ran")
    assert recorded
    data = json.loads((workspace / "hook-hooked.json").read_text())
    assert data["id"] == hooked["id"] and data["status"] == "completed"
    srv.wait_for(lambda: "hook hooks:record done" in _log(srv, hooked["id"]), 30, "hook logged")
    grumpy = srv.wait_run(srv.start_run("grumpy")["id"])
    srv.wait_for(
        lambda: (
            "hook hooks:explode failed: ValueError: hook exploded on purpose"
            in _log(srv, grumpy["id"])
        ),
        30,
        "the hook's failure in the run's log",
    )
    assert srv.run(grumpy["id"])["status"] == "completed"
    sleepy = srv.wait_run(srv.start_run("sleepy")["id"])
    srv.wait_for(
        lambda: "hook hooks:hang timed out after 3s" in _log(srv, sleepy["id"]), 30, "timeout"
    )
    assert srv.run(sleepy["id"])["status"] == "completed"
    # a run whose process was SIGKILLed still gets its on_failure hook
    killed = srv.wait_run(srv.start_run("killed")["id"])
    assert killed["status"] == "failed"
    srv.wait_for(lambda: (workspace / "hook-killed.json").exists(), 30, "hook after SIGKILL")


def test_automation_ls_shows_the_rules_without_secrets(
    env: tuple[Server, Receiver, Mailbox],
) -> None:
    srv, _, _ = env
    listed = srv.cli("automation", "ls").stdout
    assert "stop the flood" in listed and "3 in a row" in listed
    assert SMTP_PASS not in listed and HOOK_SECRET not in listed


def _log(srv: Server, run_id: str) -> str:
    return "\n".join(line["content"] for line in srv.logs(run_id))
