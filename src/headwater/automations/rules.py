"""From the event log to the outbox: which automations (and per-job hooks) an event calls
for, each action rendered once into a delivery row.

The event is written in the same transaction as the run state it reports; the rows derived
from it carry the key `event:<id>` (unique per automation and action), so deriving them
again after a crash adds nothing. Runs late to start or running long are found by a clock,
keyed `late:<run id>` / `long:<run id>`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from headwater.core import automations as rules
from headwater.core.states import RunStatus
from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.store import Store

log = logging.getLogger(__name__)

CURSOR = "automations"
SCAN_S = 10.0
"""How often runs late to start and runs running long are looked for."""
LOG_TAIL = 20
DEFAULT_TITLE = "{{ event.name }}: {{ job.ref or 'workspace' }}"
DEFAULT_MESSAGE = (
    "{% if run %}{{ run.job_ref }} run {{ run.number }} {{ run.status }}"
    "{% if run.duration is not none %} after {{ run.duration }}s{% endif %}"
    "{% if run.failure_reason %}: {{ run.failure_reason }}{% endif %}"
    "{% if url %}\n{{ url }}{% endif %}"
    "{% else %}{{ event.name }}: {{ event.payload.error or '' }}{% endif %}"
)
HOOK_EVENTS = {
    "run.completed": "on_success",
    "run.failed": "on_failure",
    "run.cancelled": "on_cancel",
}
SECRET_IN_URL = re.compile(r"(?<![A-Za-z0-9])(env|secret):([A-Za-z_][A-Za-z0-9_]*)")

_templates = SandboxedEnvironment(autoescape=False)


def masked_url(url: str) -> str:
    """An apprise URL as shown: its secrets are references (`secret:NAME`) until it is
    sent, and any password or token written in it plainly is hidden by apprise's privacy
    view."""
    import apprise

    plain = SECRET_IN_URL.sub(lambda m: f"{{{m.group(0)}}}", url)
    try:
        instance = apprise.Apprise.instantiate(plain)
    except Exception:
        instance = None
    return instance.url(privacy=True) if instance else re.sub(r"//[^@/]*@", "//***@", url)


def render(template: str, context: dict[str, Any]) -> str:
    try:
        return _templates.from_string(template).render(**context)
    except Exception as ex:  # a user's template: say what broke instead of sending nothing
        return f"[template error: {ex}] " + json.dumps(context.get("event"), default=str)


class RuleEngine:
    def __init__(
        self,
        store: Store,
        ws_id: str,
        base_url: Callable[[], str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.base_url = base_url
        self.clock = clock
        self._position: int | None = None
        self._scanned_at: datetime | None = None
        self._config: tuple[int, dict[str, Any]] | None = None
        self._loop = SupervisedLoop(
            "automations",
            self._step,
            clock,
            TopicWake(store.notifier, notify.EVENTS),
            period=SCAN_S,
        )

    def start(self) -> None:
        if self.store.get_cursor(CURSOR) is None:
            # automations start with what happens from now on
            self.store.set_cursor(CURSOR, self.store.last_event_id())
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _step(self, now: datetime) -> float | None:
        moved = self.run_once(now)
        return 0 if moved else None

    def config(self) -> dict[str, Any]:
        """The last good headwater.toml, read again when it changed (it moves JOBS)."""
        version = self.store.notifier.version(notify.JOBS)
        if self._config is None or self._config[0] != version:
            row = self.store.workspace_config(self.ws_id)
            self._config = (version, (row or {}).get("config") or {})
        return self._config[1]

    # -- one turn -------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> int:
        """Derive deliveries from the events after the cursor, and from the clock every
        SCAN_S; answers how many events were read."""
        now = now or self.clock()
        config = self.config()
        automations = [a for a in config.get("automations") or [] if a.get("enabled", True)]
        if self._position is None:
            self._position = self.store.get_cursor(CURSOR) or 0
        events = self.store.events_after(self._position)
        for event in events:
            if event["workspace_id"] == self.ws_id:
                self._handle(event, automations, now)
        if events:
            self._position = events[-1]["id"]
            self.store.set_cursor(CURSOR, self._position)
        if self._scanned_at is None or (now - self._scanned_at).total_seconds() >= SCAN_S:
            self._scanned_at = now
            self._scan(automations, now)
        return len(events)

    def _handle(
        self, event: dict[str, Any], automations: list[dict[str, Any]], now: datetime
    ) -> None:
        hook_field = HOOK_EVENTS.get(event["kind"])
        if not automations and hook_field is None:
            return  # nothing can follow from it: no reads (a burst writes several events a run)
        job = self.store.get_job(event["job_id"]) if event["job_id"] else None
        target = (job.get("settings") or {}).get(hook_field) if hook_field and job else None
        if not automations and not target:
            return
        run = self.store.get_run(event["run_id"]) if event["run_id"] else None
        names = rules.user_events(event["kind"], event["payload"] or {}, (run or {}).get("reason"))
        rows: list[dict[str, Any]] = []
        key = f"event:{event['id']}"
        for automation in automations:
            hit = rules.matching(automation["on"], names, _ref(job), _tags(job))
            if hit is None:
                continue
            name = hit.split(":", 1)[0]
            if (
                automation.get("count", 1) > 1
                and job is not None
                and name in ("job.fail", "run.failed", "job.success", "run.completed")
            ):
                wanted = "failed" if name in ("job.fail", "run.failed") else "completed"
                recent = self.store.list_runs(self.ws_id, job_id=job["id"], limit=50)[0]
                ended = [r["status"] for r in recent if r["status"] in ("completed", "failed")]
                if not rules.streak(ended, automation["count"], wanted):
                    continue
            rows += self._actions(automation, key, name, event, run, job)
        if target and job is not None and run is not None:
            rows.append(
                {
                    "automation": f"hook:{hook_field}",
                    "event_key": key,
                    "event": event["kind"],
                    "action": 0,
                    "kind": "hook",
                    "target": target,
                    "run_id": run["id"],
                    "job_id": job["id"],
                    "payload": {
                        "callable": target,
                        "run": _run_data(run, job, self.base_url(), self.ws_id),
                    },
                }
            )
        if rows:
            self.store.enqueue(self.ws_id, rows, now)

    def _scan(self, automations: list[dict[str, Any]], now: datetime) -> None:
        """Runs not started `after` past their tick (`run.late`), or running longer than
        `after` (`run.long`)."""
        timed = [
            a
            for a in automations
            if any(o.split(":", 1)[0] in ("run.late", "run.long") for o in a["on"])
        ]
        if not timed:
            return
        active, _ = self.store.list_runs(
            self.ws_id,
            statuses=[RunStatus.PENDING.value, RunStatus.STARTING.value, RunStatus.RUNNING.value],
            limit=1000,
        )
        rows: list[dict[str, Any]] = []
        jobs: dict[str, dict[str, Any] | None] = {}
        for run in active:
            if run["job_id"] not in jobs:
                jobs[run["job_id"]] = self.store.get_job(run["job_id"])
            job = jobs[run["job_id"]]
            for automation in timed:
                after = timedelta(seconds=float(automation["after"]))
                late = run["status"] == "pending" and now - run["created_at"] > after
                long = (
                    run["status"] == "running"
                    and run["started_at"] is not None
                    and (now - run["started_at"] > after)
                )
                for name, hit in (("run.late", late), ("run.long", long)):
                    if (
                        not hit
                        or rules.matching(automation["on"], [name], _ref(job), _tags(job)) is None
                    ):
                        continue
                    event = {
                        "id": None,
                        "kind": name,
                        "payload": {"after_s": after.total_seconds()},
                        "created_at": now,
                    }
                    rows += self._actions(automation, f"{name}:{run['id']}", name, event, run, job)
        if rows:
            self.store.enqueue(self.ws_id, rows, now)

    # -- rendering ------------------------------------------------------------------------------

    def _actions(
        self,
        automation: dict[str, Any],
        key: str,
        name: str,
        event: dict[str, Any],
        run: dict[str, Any] | None,
        job: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        context = self._context(name, event, run, job)
        title = render(automation.get("title") or DEFAULT_TITLE, context)
        body = render(automation.get("message") or DEFAULT_MESSAGE, context)
        base = {
            "automation": automation["name"],
            "event_key": key,
            "event": name,
            "run_id": run["id"] if run else None,
            "job_id": job["id"] if job else None,
        }
        rows = []
        index = 0
        for url in automation.get("notify") or []:
            rows.append(
                {
                    **base,
                    "action": index,
                    "kind": "notify",
                    "target": masked_url(url),
                    "payload": {"url": url, "title": title, "body": body},
                }
            )
            index += 1
        hook = automation.get("webhook")
        if hook:
            document = {
                "event": name,
                "automation": automation["name"],
                "message": body,
                "run": context["run"],
                "job": context["job"],
                "url": context["url"],
                "logs": context["logs"],
            }
            rows.append(
                {
                    **base,
                    "action": index,
                    "kind": "webhook",
                    "target": hook["url"],
                    "payload": {
                        "url": hook["url"],
                        "secret": hook.get("secret"),
                        "headers": hook.get("headers") or {},
                        "body": document,
                    },
                }
            )
            index += 1
        for action in automation.get("actions") or []:
            ((kind, target),) = action.items()
            rows.append(
                {
                    **base,
                    "action": index,
                    "kind": kind,
                    "target": str(target),
                    "payload": {"target": target},
                }
            )
            index += 1
        return rows

    def _context(
        self,
        name: str,
        event: dict[str, Any],
        run: dict[str, Any] | None,
        job: dict[str, Any] | None,
    ) -> dict[str, Any]:
        run_data = _run_data(run, job, self.base_url(), self.ws_id) if run else None
        logs: list[str] = []
        if run is not None:
            # the last lines, as stored: secrets were masked when they were written
            first = max(-1, self.store.next_line_num(run["id"]) - LOG_TAIL - 1)
            logs = [line["content"] for line in self.store.read_logs(run["id"], after=first)]
        return {
            "event": {
                "name": name,
                "payload": event.get("payload") or {},
                "at": str(event.get("created_at")),
            },
            "run": run_data,
            "job": {"ref": _ref(job), "tags": _tags(job), "id": job["id"] if job else None},
            "logs": logs,
            "url": run_data["url"] if run_data else None,
        }


def _ref(job: dict[str, Any] | None) -> str | None:
    return job["job_ref"] if job else None


def _tags(job: dict[str, Any] | None) -> list[str]:
    if not job:
        return []
    return [t[4:] for t in job.get("triggers") or [] if str(t).startswith("tag:")]


def _run_data(
    run: dict[str, Any], job: dict[str, Any] | None, base_url: str, ws_id: str
) -> dict[str, Any]:
    started, finished = run.get("started_at"), run.get("finished_at")
    duration = round((finished - started).total_seconds(), 1) if started and finished else None
    return {
        "id": run["id"],
        "job_ref": _ref(job),
        "number": run["number"],
        "status": run["status"],
        "trigger": run["trigger"],
        "failure_reason": run.get("reason") if run["status"] != "completed" else None,
        "exit_code": run.get("exit_code"),
        "duration": duration,
        "created_at": str(run.get("created_at")),
        "url": f"{base_url}/w/{ws_id}/runs/{run['id']}",
    }
