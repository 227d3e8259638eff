"""Delivering the outbox: each due row is sent (apprise, a signed webhook, a hook in a
process of its own, or an action on a job or run), its attempt recorded, and a failed one
retried with exponential backoff and jitter until `MAX_ATTEMPTS`. Rows live in the store,
so a restart goes on where it stopped: delivery is at least once, and every row carries a
delivery id receivers drop duplicates by."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from headwater.automations.rules import SECRET_IN_URL
from headwater.core.errors import HeadwaterError
from headwater.core.signatures import signature
from headwater.core.specs import LogLine
from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.store import Store
from headwater.workspace import triggers
from headwater.workspace.config import resolve_secret
from headwater.workspace.launch import fire

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_S = float(os.environ.get("HEADWATER_DELIVERY_BACKOFF_S", "5"))
BACKOFF_CAP_S = 15 * 60.0
"""5 s, 10 s, 20 s ... (HEADWATER_DELIVERY_BACKOFF_S) at most 15 minutes between attempts:
about 1.5 hours in all."""
HOOK_TIMEOUT_S = float(os.environ.get("HEADWATER_HOOK_TIMEOUT_S", "60"))
"""How long a hook may run (HEADWATER_HOOK_TIMEOUT_S)."""
WEBHOOK_TIMEOUT_S = 15.0
HOOK_RUNNER = (
    "import importlib, json, sys\n"
    "module, _, name = sys.argv[1].partition(':')\n"
    "getattr(importlib.import_module(module), name)(json.load(sys.stdin))\n"
)


class DeliveryError(HeadwaterError):
    """An attempt failed; the message is what the delivery log shows."""

    code = "delivery_failed"


class Deliverer:
    def __init__(
        self,
        store: Store,
        ws_id: str,
        *,
        code_dir: Callable[[], Path],
        variables: Callable[[], Mapping[str, str]] = dict,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.code_dir = code_dir
        self.variables = variables
        self.env = env if env is not None else os.environ
        self.clock = clock
        self.backoff_s = backoff_s
        self.http = httpx.Client(timeout=WEBHOOK_TIMEOUT_S)
        # an event may bring deliveries; a retry comes due within the period
        self._loop = SupervisedLoop(
            "deliveries", self._step, clock, TopicWake(store.notifier, notify.EVENTS), period=1.0
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _step(self, now: datetime) -> float:
        sent = self.run_once(now)
        if sent:
            return 0
        nxt = self.store.next_delivery_at()
        if nxt is None:
            return 1.0
        return max(0.05, min(1.0, (nxt - self.clock()).total_seconds()))

    def run_once(self, now: datetime | None = None) -> int:
        """Attempt every due delivery once; answers how many were attempted."""
        now = now or self.clock()
        due = self.store.due_deliveries(now)
        for delivery in due:
            try:
                self.send(delivery)
            except Exception as ex:  # whatever broke, the attempt is recorded
                attempt = delivery["attempts"] + 1
                retry = None
                if attempt < MAX_ATTEMPTS:
                    delay = min(BACKOFF_CAP_S, self.backoff_s * 2 ** (attempt - 1))
                    retry = self.clock() + timedelta(seconds=delay * (0.5 + random.random() / 2))
                error = str(ex) or type(ex).__name__
                log.warning(
                    "delivery %s (%s %s) failed, attempt %d: %s",
                    delivery["delivery_id"],
                    delivery["kind"],
                    delivery["target"],
                    attempt,
                    error,
                )
                self.store.record_attempt(delivery, False, error, self.clock(), retry)
            else:
                self.store.record_attempt(delivery, True, None, self.clock(), None)
        return len(due)

    # -- kinds ----------------------------------------------------------------------------------

    def send(self, delivery: dict[str, Any]) -> None:
        kind = delivery["kind"]
        payload = delivery["payload"]
        if kind == "notify":
            self._notify(payload)
        elif kind == "webhook":
            self._webhook(delivery)
        elif kind == "hook":
            self._hook(delivery)
        elif kind in ("pause", "resume", "trigger"):
            self._job_action(kind, str(payload["target"]), delivery)
        elif kind == "cancel":
            if delivery["run_id"]:
                self.store.request_cancel(
                    delivery["run_id"], f"cancelled by automation {delivery['automation']!r}"
                )
        else:
            raise DeliveryError(f"unknown delivery kind {kind!r}")

    def _secret(self, ref: str) -> str:
        return resolve_secret(ref, self.env, self.variables().get)

    def _notify(self, payload: dict[str, Any]) -> None:
        import apprise

        url = SECRET_IN_URL.sub(lambda m: self._secret(m.group(0)), payload["url"])
        sender = apprise.Apprise()
        if not sender.add(url):
            raise DeliveryError("apprise does not understand this URL (see apprise's docs)")
        if not sender.notify(title=payload.get("title") or "", body=payload.get("body") or " "):
            raise DeliveryError("the notification was not accepted (apprise's log has why)")

    def _webhook(self, delivery: dict[str, Any]) -> None:
        payload = delivery["payload"]
        document = {**payload["body"], "delivery_id": delivery["delivery_id"]}
        body = json.dumps(document, default=str, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Headwater",
            "X-Headwater-Delivery": delivery["delivery_id"],
            "X-Headwater-Event": delivery["event"],
            **(payload.get("headers") or {}),
        }
        if payload.get("secret"):
            headers["X-Headwater-Signature"] = signature(
                self._secret(payload["secret"]), body, int(time.time())
            )
        try:
            answer = self.http.post(payload["url"], content=body, headers=headers)
        except httpx.HTTPError as ex:
            raise DeliveryError(f"{payload['url']}: {ex!r}") from ex
        if answer.status_code >= 300:
            raise DeliveryError(f"{payload['url']} answered {answer.status_code}")

    def _hook(self, delivery: dict[str, Any]) -> None:
        """The workspace's `module:function`, called in a process of its own with the run's
        data on stdin and a timeout; what it prints goes to the run's log."""
        payload = delivery["payload"]
        code = self.code_dir()
        env = {k: v for k, v in self.env.items() if not k.startswith("HEADWATER_")}
        env.update(self.variables())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
        env["DLT_PROJECT_DIR"] = str(code)
        name = payload["callable"]
        try:
            done = subprocess.run(
                [sys.executable, "-c", HOOK_RUNNER, name],
                input=json.dumps(payload["run"], default=str),
                cwd=code,
                env=env,
                capture_output=True,
                text=True,
                timeout=HOOK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as ex:
            self._run_line(delivery, f"hook {name} timed out after {HOOK_TIMEOUT_S:g}s")
            raise DeliveryError(f"hook {name} timed out after {HOOK_TIMEOUT_S:g}s") from ex
        output = (done.stdout + done.stderr).strip().splitlines()
        for line in output[-50:]:
            self._run_line(delivery, f"hook {name}: {line}")
        if done.returncode:
            tail = output[-1] if output else f"exit code {done.returncode}"
            self._run_line(delivery, f"hook {name} failed: {tail}")
            raise DeliveryError(f"hook {name} failed: {tail}")
        self._run_line(delivery, f"hook {name} done")

    def _run_line(self, delivery: dict[str, Any], text: str) -> None:
        run_id = delivery["run_id"]
        if not run_id:
            return
        line = LogLine(text, "runner", "run", "stdout", self.clock())
        self.store.append_logs({run_id: (self.store.next_line_num(run_id), [line])})

    def _job_action(self, kind: str, ref: str, delivery: dict[str, Any]) -> None:
        jobs = self.store.active_jobs(self.ws_id)
        full = triggers.resolve_ref(ref, [j["job_ref"] for j in jobs])
        job = next(j for j in jobs if j["job_ref"] == full)
        if kind in ("pause", "resume"):
            self.store.set_paused(job["id"], kind == "pause")
        else:
            fire(
                self.store,
                job,
                triggers.manual_trigger(job["definition"]),
                now=self.clock(),
                previous_run_id=delivery["run_id"],
                dedupe_key=f"automation:{delivery['delivery_id']}",
            )
