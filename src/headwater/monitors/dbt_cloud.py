"""The dbt Cloud monitor: fires and watches the runs of dbt Cloud jobs from one asyncio loop,
holding no worker process and no run slot.

A Headwater run of a dbt Cloud job is created `pending` like any other (by any trigger; the
worker never claims it). The monitor then:
1. decides the job's `mode` against dbt Cloud's own runs of the job (status 1, 2, 3; R4):
   `skip` declines the run (`skipped`, naming dbt Cloud's runs), `replace` cancels them
   first, `ignore` does not look; `reuse_existing_run` attaches to one instead;
2. stores the intent (cause, time) and moves the run to `starting` BEFORE the run POST, and
   dbt Cloud's run id and link right after (`running`): after a crash, even a SIGKILL, a
   watch with an id is resumed, and one without is looked up by its cause among the job's
   runs created since the intent; it is only posted again when dbt Cloud has no such run;
3. polls every watched run each `poll_interval` (the due ones, in order of due time, with
   bounded concurrency; a job with many watches through its list of active runs, 100 a
   request, instead of one request a run), writes each status change as a log line, and at
   the end keeps the run's `run_results.json` and `manifest.json`, names failed models and
   tests, and ends the Headwater run completed / failed / cancelled, or failed with reason timeout.
A Headwater run cancelled while it watches cancels the dbt Cloud run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from headwater.core import dbt_results
from headwater.core.policy import MONITOR_ID
from headwater.core.specs import LogLine
from headwater.core.states import RunStatus
from headwater.integrations.dbt_cloud import (
    ACTIVE_STATUSES,
    CANCELLED,
    ERROR,
    STATUS_NAMES,
    SUCCESS,
    TERMINAL_STATUSES,
    DbtCloudClient,
    DbtCloudError,
    RunPostUnknown,
    cut_cause,
)
from headwater.store.store import Store
from headwater.store.watches import EXTERNAL_TYPE
from headwater.workspace.config import SecretNotFound, resolve_secret

log = logging.getLogger(__name__)

TURN_S = 0.5
"""How often new, cancelled and due runs are looked for."""
MAX_IN_FLIGHT = 200
"""HTTP requests to dbt Cloud at once, across every watch."""
MAX_FIRING = 50
"""Runs fired (or resumed after a restart) at once: more only queue their store work ahead
of the polls' (the loop's thread pool is shared) and hold their rows meanwhile."""
BATCH_MIN = 20
"""A dbt Cloud job watched this many times at once is polled through its list of active
runs (100 a page): 10,000 watches cost 100 requests a poll interval, not 10,000."""
PAGE = 100
PAGES_AT_ONCE = 10
"""Pages of one job's list requested at once: a poll of 10,000 runs takes 10 round trips,
not 100."""
LOOKUP_SLACK = timedelta(seconds=60)
"""A run found by cause counts when created this long before the intent, at most (clocks)."""


@dataclass(slots=True)
class Watch:
    run_id: str
    number: int
    job_ref: str
    settings: dict[str, Any]
    client: DbtCloudClient
    dbt_run_id: int
    href: str | None
    last_status: int | None
    deadline: datetime
    due: float = 0.0
    """When the next poll is due (monotonic): polls keep their cadence, whatever a poll
    and its writes took."""
    ending: bool = False
    """Its end (artifacts, the run's last state) is being written: not polled again."""


class DbtCloudMonitor:
    def __init__(
        self,
        store: Store,
        ws_id: str,
        *,
        variables: Callable[[], Mapping[str, str]] = dict,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.variables = variables
        self.env = env if env is not None else os.environ
        self.clock = clock
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._watches: dict[str, Watch] = {}
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._firing: set[str] = set()
        self._cancelling: set[str] = set()
        self._http: httpx.AsyncClient | None = None
        self._gate: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clients: dict[str, tuple[str, dict[str, Any], DbtCloudClient]] = {}
        """Job id -> (definition hash, settings, client): one per job, shared by its watches."""
        self._lines: dict[str, list[LogLine]] = {}
        """Log lines not yet written, by run: written together once per turn."""
        self._next_line: dict[str, int] = {}
        self._statuses: dict[str, int] = {}
        """Last statuses seen and not yet stored."""
        self._batching: dict[tuple[int, int], list[Watch]] = {}
        """Jobs whose active runs are being listed (a batch poll in flight), with the watches
        that came due meanwhile."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="dbt-cloud-monitor", daemon=True
        )
        self._thread.start()
        ready.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run(ready))
        finally:
            loop.close()

    async def _run(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        self._gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        # every connection kept: a new TCP connection per poll costs more CPU than the poll
        limits = httpx.Limits(
            max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT
        )
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0), limits=limits)
        ready.set()
        try:
            await self._resume()
            while not self._stopping.is_set():
                try:
                    await self.turn()
                except Exception:  # a bad turn must not end the watches
                    log.exception("dbt Cloud monitor turn failed")
                wait = TURN_S
                if self._due:  # a poll due sooner than the next turn is not kept waiting
                    wait = min(wait, max(0.005, self._due[0][0] - time.monotonic()))
                try:
                    await asyncio.wait_for(self._stopping.wait(), wait)
                except TimeoutError:
                    pass
        finally:
            # R8: fires in flight finish within their HTTP timeout
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=35)
            await self._flush()
            await self._http.aclose()

    # -- one turn -------------------------------------------------------------------------------

    async def turn(self) -> None:
        """Fire new runs, cancel cancelled ones, poll the due ones."""
        jobs = await asyncio.to_thread(self.store.active_jobs_cached, self.ws_id)
        if not self._watches and not any(j["job_type"] == EXTERNAL_TYPE for j in jobs):
            return  # no dbt Cloud job: nothing to look for
        if len(self._firing) < MAX_FIRING:
            # the oldest first; those being fired are still pending and among them
            pending = await asyncio.to_thread(
                self.store.external_runs, self.ws_id, (RunStatus.PENDING,), MAX_FIRING
            )
            for run in pending:
                if len(self._firing) >= MAX_FIRING:
                    break
                if run["id"] not in self._firing:
                    self._firing.add(run["id"])
                    self._spawn(self._fire(run))
        cancelling = await asyncio.to_thread(
            self.store.external_runs, self.ws_id, (RunStatus.CANCELLING,)
        )
        for run in cancelling:
            if run["id"] not in self._cancelling and run["id"] not in self._firing:
                self._cancelling.add(run["id"])
                self._spawn(self._cancel(run["id"]))
        now = time.monotonic()
        due: list[Watch] = []
        while self._due and self._due[0][0] <= now:
            at, _seq, run_id = heapq.heappop(self._due)
            watch = self._watches.get(run_id)
            # an entry a batch poll moved on is stale: the watch is in the heap again
            if watch is not None and watch.due == at and run_id not in self._cancelling:
                due.append(watch)
        for key, group in self._by_job(due).items():
            if key in self._batching:  # seen by the list in flight, or polled after it
                self._batching[key] += group
                continue
            watched = [w for w in self._watches.values() if _job_key(w) == key and not w.ending]
            if len(watched) >= BATCH_MIN:
                # the whole job at once: every watch of it is seen in the same pages
                self._batching[key] = []
                self._spawn(self._poll_job(key, watched))
            else:
                for watch in group:
                    self._spawn(self._poll(watch))
        await self._flush()

    @staticmethod
    def _by_job(watches: list[Watch]) -> dict[tuple[int, int], list[Watch]]:
        groups: dict[tuple[int, int], list[Watch]] = {}
        for watch in watches:
            groups.setdefault(_job_key(watch), []).append(watch)
        return groups

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule(self, watch: Watch, after: float) -> None:
        now = time.monotonic()
        # the next poll is `after` past the last one's due time (its cadence), not past its
        # end; a watch that fell behind is polled at once, not in a burst
        watch.due = max(now, watch.due + after) if watch.due else now + after
        heapq.heappush(self._due, (watch.due, next(self._seq), watch.run_id))

    # -- clients --------------------------------------------------------------------------------

    def _client(self, settings: dict[str, Any]) -> DbtCloudClient:
        conn = settings["connection"]
        token = resolve_secret(conn["token"], self.env, self.variables().get)
        assert self._http is not None
        return DbtCloudClient(conn["access_url"], int(conn["account_id"]), token, http=self._http)

    def _for_job(self, job: dict[str, Any]) -> tuple[dict[str, Any], DbtCloudClient]:
        """The job's settings and client, shared by all its watches while it is unchanged."""
        cached = self._clients.get(job["id"])
        if cached is None or cached[0] != job["definition_hash"]:
            settings = job["definition"]["dbt_cloud"]
            cached = (job["definition_hash"], settings, self._client(settings))
            self._clients[job["id"]] = cached
        return cached[1], cached[2]

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        assert self._gate is not None
        async with self._gate:
            return await fn(*args, **kw)

    # -- firing ---------------------------------------------------------------------------------

    async def _fire(self, run: dict[str, Any]) -> None:
        try:
            # cached: one job's runs fired together share its row (and its job_ref)
            job = await asyncio.to_thread(self.store.get_job_cached, run["job_id"])
            assert job is not None
            try:
                settings, client = self._for_job(job)
            except SecretNotFound as ex:
                await self._end(run["id"], RunStatus.FAILED, f"dbt Cloud token: {ex}")
                return
            await self._fire_with(run, job, settings, client)
        except Exception as ex:
            log.exception("firing dbt Cloud run of %s failed", run["id"])
            await self._end(run["id"], RunStatus.FAILED, f"dbt Cloud: {ex}")
        finally:
            self._firing.discard(run["id"])

    async def _fire_with(
        self, run: dict[str, Any], job: dict[str, Any], settings: dict[str, Any], client: Any
    ) -> None:
        dbt_job = int(settings["job_id"])
        mode = settings.get("mode", "skip")
        attach: dict[str, Any] | None = None
        if settings.get("reuse_existing_run") or mode in ("skip", "replace"):
            try:
                active = await self._call(client.list_runs, dbt_job, ACTIVE_STATUSES)
            except DbtCloudError as ex:
                await self._end(run["id"], RunStatus.FAILED, f"dbt Cloud: listing runs: {ex}")
                return
            if active and settings.get("reuse_existing_run"):
                attach = active[0]
            elif active and mode == "skip":
                ids = ", ".join(str(r["id"]) for r in active)
                await self._end(
                    run["id"],
                    RunStatus.SKIPPED,
                    f"skipped: dbt Cloud run(s) {ids} of job {dbt_job} in progress (mode skip)",
                )
                return
            elif active and mode == "replace":
                for other in active:
                    try:
                        await self._call(client.cancel_run, other["id"])
                    except DbtCloudError as ex:
                        await self._end(
                            run["id"],
                            RunStatus.FAILED,
                            f"replace: dbt Cloud run {other['id']} could not be cancelled: {ex}",
                        )
                        return
                await self._line(
                    run["id"],
                    "replace: cancelled dbt Cloud run(s) "
                    + ", ".join(str(r["id"]) for r in active),
                )
        cause = cut_cause(await asyncio.to_thread(self._cause, settings, run, job))
        now = self.clock()
        deadline = now + timedelta(seconds=float(settings.get("timeout") or 7 * 86400))
        await asyncio.to_thread(
            self.store.watch_intent,
            run["id"],
            job["id"],
            int(settings["connection"]["account_id"]),
            dbt_job,
            cause,
            deadline,
            now,
        )
        moved = await asyncio.to_thread(
            self.store.transition, run["id"], RunStatus.STARTING, worker_id=MONITOR_ID
        )
        if moved is None:  # cancelled meanwhile
            return
        if attach is not None:
            await self._line(run["id"], f"attached to dbt Cloud run {attach['id']} (reuse)")
            await self._started(run["id"], run["number"], job, settings, client, attach, deadline)
            return
        await self._post(run["id"], run["number"], job, settings, client, cause, now, deadline)

    async def _post(
        self,
        run_id: str,
        number: int,
        job: dict[str, Any],
        settings: dict[str, Any],
        client: DbtCloudClient,
        cause: str,
        intent_at: datetime,
        deadline: datetime,
    ) -> None:
        dbt_job = int(settings["job_id"])
        try:
            started: dict[str, Any] | None = None
            if settings.get("retry_from_failure"):
                last = await self._call(client.list_runs, dbt_job, None, limit=1)
                if last and last[0]["status"] == ERROR:
                    started = await self._call(client.rerun, dbt_job)
                    await self._line(run_id, f"rerun from failure of dbt Cloud run {last[0]['id']}")
            if started is None:
                started = await self._call(
                    client.trigger_run,
                    dbt_job,
                    cause,
                    steps_override=settings.get("steps_override"),
                    schema_override=settings.get("schema_override"),
                    git_branch=settings.get("git_branch"),
                    git_sha=settings.get("git_sha"),
                )
        except RunPostUnknown as ex:
            await self._line(run_id, f"{ex}; looking the run up by its cause")
            found = await self._find_by_cause(client, dbt_job, cause, intent_at)
            if found is None:
                await self._end(run_id, RunStatus.FAILED, f"dbt Cloud: {ex}")
                return
            started = found
        except DbtCloudError as ex:
            await self._end(run_id, RunStatus.FAILED, f"dbt Cloud: {ex}")
            return
        await self._started(run_id, number, job, settings, client, started, deadline)

    async def _find_by_cause(
        self, client: DbtCloudClient, dbt_job: int, cause: str, since: datetime
    ) -> dict[str, Any] | None:
        """The job's run made with this cause since the intent, not watched by another run."""
        for run in await self._call(client.list_runs, dbt_job, None, limit=100):
            created = _parse_time(run.get("created_at"))
            if run.get("cause") != cause or (created and created < since - LOOKUP_SLACK):
                continue
            other = await asyncio.to_thread(
                self.store.attached_run, client.account_id, int(run["id"])
            )
            if other is None:
                return dict(run)
        return None

    async def _started(
        self,
        run_id: str,
        number: int,
        job: dict[str, Any],
        settings: dict[str, Any],
        client: DbtCloudClient,
        dbt_run: dict[str, Any],
        deadline: datetime,
    ) -> None:
        dbt_run_id, href = int(dbt_run["id"]), dbt_run.get("href")
        await asyncio.to_thread(self.store.watch_update, run_id, dbt_run_id=dbt_run_id, href=href)
        moved = await asyncio.to_thread(self.store.transition, run_id, RunStatus.RUNNING)
        await self._line(run_id, f"dbt Cloud run {dbt_run_id} started: {href}")
        if moved is None:
            # cancelled while the POST was in flight: cancel what it started
            self._watches[run_id] = Watch(
                run_id, number, job["job_ref"], settings, client, dbt_run_id, href, None, deadline
            )
            self._cancelling.add(run_id)
            await self._cancel(run_id)
            return
        if not settings.get("wait_for_termination", True):
            await self._end(run_id, RunStatus.COMPLETED, None, exit_code=0)
            return
        watch = Watch(
            run_id,
            number,
            job["job_ref"],
            settings,
            client,
            dbt_run_id,
            href,
            int(dbt_run.get("status") or 1),
            deadline,
        )
        self._watches[run_id] = watch
        self._schedule(watch, float(settings.get("poll_interval") or 30))

    def _cause(self, settings: dict[str, Any], run: dict[str, Any], job: dict[str, Any]) -> str:
        template = settings.get("cause") or "Triggered by Headwater: {trigger}"
        upstream: dict[str, Any] = {}
        if run.get("previous_run_id"):
            upstream = self.store.get_run(run["previous_run_id"]) or {}
        upstream_job = self.store.get_job(upstream["job_id"]) if upstream else None
        fields = {
            "trigger": run["trigger"],
            "job_ref": job["job_ref"],
            "run_number": run["number"],
            "upstream_job_ref": (upstream_job or {}).get("job_ref", ""),
            "upstream_run_number": upstream.get("number", ""),
        }
        try:
            return str(template.format(**fields))
        except (KeyError, IndexError, ValueError):
            return str(template)

    # -- restart --------------------------------------------------------------------------------

    async def _resume(self) -> None:
        """After a restart: every live watch goes on; an intent without a run id is looked
        up by its cause (posted again only when dbt Cloud has no such run)."""
        gate = asyncio.Semaphore(MAX_FIRING)
        for row in await asyncio.to_thread(self.store.live_watches, self.ws_id):
            self._firing.add(row["run_id"])
            self._spawn(self._resume_one(row, gate))

    async def _resume_one(self, row: dict[str, Any], gate: asyncio.Semaphore) -> None:
        async with gate:
            await self._resume_watch(row)

    async def _resume_watch(self, row: dict[str, Any]) -> None:
        run_id = row["run_id"]
        try:
            job = await asyncio.to_thread(self.store.get_job_cached, row["job_id"])
            assert job is not None
            settings, client = self._for_job(job)
            if row["dbt_run_id"] is None:
                found = await self._find_by_cause(
                    client, int(row["dbt_job_id"]), row["cause"], row["intent_at"]
                )
                if found is not None:
                    await self._line(run_id, f"after a restart: found dbt Cloud run {found['id']}")
                    await self._started(
                        run_id, row["number"], job, settings, client, found, row["deadline_at"]
                    )
                else:
                    await self._post(
                        run_id,
                        row["number"],
                        job,
                        settings,
                        client,
                        row["cause"],
                        row["intent_at"],
                        row["deadline_at"],
                    )
                return
            watch = Watch(
                run_id,
                row["number"],
                job["job_ref"],
                settings,
                client,
                int(row["dbt_run_id"]),
                row["href"],
                row["last_status"],
                row["deadline_at"],
            )
            self._watches[run_id] = watch
            await self._line(run_id, f"after a restart: watching dbt Cloud run {watch.dbt_run_id}")
            self._schedule(watch, 0)
        except Exception as ex:
            log.exception("resuming the watch of %s failed", run_id)
            await self._end(run_id, RunStatus.FAILED, f"dbt Cloud: {ex}")
        finally:
            self._firing.discard(run_id)

    # -- polling --------------------------------------------------------------------------------

    async def _poll(self, watch: Watch) -> None:
        try:
            dbt_run = await self._call(watch.client.get_run, watch.dbt_run_id)
        except DbtCloudError as ex:
            log.warning("polling dbt Cloud run %s failed: %s", watch.dbt_run_id, ex)
            dbt_run = None
        await self._observe(watch, dbt_run)

    async def _poll_job(self, key: tuple[int, int], watches: list[Watch]) -> None:
        """Poll every watch of one dbt Cloud job through the job's active runs, 100 a page,
        PAGES_AT_ONCE pages at a time; each watch is seen as its page comes, and keeps its
        own cadence from this poll on. A watch not listed (it ended, or a page moved under
        the listing) is read on its own, as is one that came due meanwhile and was not in
        the list's watches."""
        client, dbt_job = watches[0].client, key[1]
        by_id = {w.dbt_run_id: w for w in watches}
        seen: set[int] = set()
        started = time.monotonic()
        try:
            offset, pages_left = 0, -(-len(by_id) // PAGE)  # at least the watches' pages
            while True:
                wave = max(1, min(PAGES_AT_ONCE, pages_left))
                pages = await asyncio.gather(
                    *(
                        self._call(
                            client.list_runs,
                            dbt_job,
                            list(ACTIVE_STATUSES),
                            order_by="id",
                            limit=PAGE,
                            offset=offset + i * PAGE,
                        )
                        for i in range(wave)
                    )
                )
                for page in pages:
                    for dbt_run in page:
                        watch = by_id.get(int(dbt_run["id"]))
                        if watch is not None and watch.dbt_run_id not in seen:
                            seen.add(watch.dbt_run_id)
                            await self._seen(watch, dbt_run, started)
                offset, pages_left = offset + wave * PAGE, pages_left - wave
                if len(seen) == len(by_id) or any(len(page) < PAGE for page in pages):
                    break
        except DbtCloudError as ex:
            log.warning("listing the runs of dbt Cloud job %s failed: %s", dbt_job, ex)
        finally:
            came_due = self._batching.pop(key, [])
        # each on its own, as a small job's are
        for watch in [*watches, *(w for w in came_due if w.dbt_run_id not in by_id)]:
            if watch.dbt_run_id not in seen and watch.run_id in self._watches and not watch.ending:
                self._spawn(self._poll(watch))

    async def _seen(self, watch: Watch, dbt_run: dict[str, Any], started: float) -> None:
        """A watch shown in a list of its job's runs."""
        if watch.run_id not in self._watches or watch.ending:
            return
        watch.due = started  # the cadence restarts at this poll for the whole job
        if int(dbt_run["status"]) in TERMINAL_STATUSES or self.clock() >= watch.deadline:
            # its end fetches artifacts or cancels: the rest of the list does not wait
            self._spawn(self._observe(watch, dbt_run))
        else:
            await self._observe(watch, dbt_run)

    async def _observe(self, watch: Watch, dbt_run: dict[str, Any] | None) -> None:
        """What one poll saw of a watched run (None: the poll failed)."""
        interval = float(watch.settings.get("poll_interval") or 30)
        if watch.run_id not in self._watches or watch.ending:
            return
        if dbt_run is not None:
            status = int(dbt_run["status"])
            if status != watch.last_status:
                watch.last_status = status
                self._statuses[watch.run_id] = status
                await self._line(
                    watch.run_id,
                    f"dbt Cloud run {watch.dbt_run_id}: {STATUS_NAMES.get(status, status)}",
                )
            if status in TERMINAL_STATUSES:
                watch.ending = True
                await self._finish(watch, dbt_run)
                return
        if self.clock() >= watch.deadline:
            watch.ending = True
            await self._time_out(watch)
            return
        self._schedule(watch, interval)

    async def _finish(self, watch: Watch, dbt_run: dict[str, Any]) -> None:
        status = int(dbt_run["status"])
        summary = await self._keep_artifacts(watch) if status != CANCELLED else None
        message = dbt_run.get("status_message") or ""
        if status == SUCCESS:
            target, reason, code = RunStatus.COMPLETED, None, 0
        elif status == CANCELLED:
            target, reason, code = (
                RunStatus.CANCELLED,
                f"dbt Cloud run {watch.dbt_run_id} was cancelled",
                None,
            )
        else:
            target, code = RunStatus.FAILED, 1
            reason = f"dbt Cloud run {watch.dbt_run_id} error" + (f": {message}" if message else "")
            if summary:
                reason += f"; {summary}"
        await self._end(
            watch.run_id,
            target,
            reason,
            exit_code=code,
            event={
                "status": {SUCCESS: "success", ERROR: "error", CANCELLED: "cancelled"}[status],
                "run_id": watch.dbt_run_id,
                "message": message or STATUS_NAMES[status],
                "job_run_url": watch.href,
            },
        )

    async def _keep_artifacts(self, watch: Watch) -> str | None:
        files: dict[str, bytes] = {}
        for name in dbt_results.ARTIFACT_NAMES:
            try:
                files[name] = await self._call(watch.client.get_artifact, watch.dbt_run_id, name)
            except DbtCloudError as ex:
                await self._line(watch.run_id, f"dbt Cloud artifact {name} not kept: {ex}")
        if not files:
            return None
        await asyncio.to_thread(self.store.save_artifacts, watch.run_id, files, "dbt_cloud")
        try:
            rows = dbt_results.node_results(json.loads(files.get(dbt_results.RUN_RESULTS, b"{}")))
        except ValueError:
            return None
        return dbt_results.failure_summary(rows)

    async def _time_out(self, watch: Watch) -> None:
        timeout = float(watch.settings.get("timeout") or 0)
        reason = f"timeout: dbt Cloud run {watch.dbt_run_id} not finished after {timeout:g}s"
        if watch.settings.get("cancel_on_timeout"):
            try:
                await self._call(watch.client.cancel_run, watch.dbt_run_id)
                reason += "; cancelled it in dbt Cloud"
            except DbtCloudError as ex:
                reason += f"; cancelling it in dbt Cloud failed: {ex}"
        await self._end(
            watch.run_id,
            RunStatus.FAILED,
            reason,
            event={
                "status": "timeout",
                "run_id": watch.dbt_run_id,
                "message": reason,
                "job_run_url": watch.href,
            },
        )

    # -- cancel ---------------------------------------------------------------------------------

    async def _cancel(self, run_id: str) -> None:
        """The Headwater run was cancelled: cancel its dbt Cloud run, then end it."""
        try:
            watch = self._watches.get(run_id)
            if watch is None:
                row = await asyncio.to_thread(self.store.get_watch, run_id)
                if row is not None and row["dbt_run_id"] is not None:
                    job = await asyncio.to_thread(self.store.get_job, row["job_id"])
                    assert job is not None
                    _settings, client = self._for_job(job)
                    await self._call(client.cancel_run, int(row["dbt_run_id"]))
                    await self._line(run_id, f"cancelled dbt Cloud run {row['dbt_run_id']}")
            else:
                await self._call(watch.client.cancel_run, watch.dbt_run_id)
                await self._line(run_id, f"cancelled dbt Cloud run {watch.dbt_run_id}")
            await self._end(run_id, RunStatus.CANCELLED, "cancelled by request")
        except Exception as ex:
            log.warning("cancelling the dbt Cloud run of %s failed: %s", run_id, ex)
            await self._end(
                run_id, RunStatus.CANCELLED, f"cancelled; the dbt Cloud run may go on: {ex}"
            )
        finally:
            self._cancelling.discard(run_id)

    # -- store ----------------------------------------------------------------------------------

    async def _line(self, run_id: str, text: str) -> None:
        """A log line of the run, written with the others of this turn (`_flush`)."""
        self._lines.setdefault(run_id, []).append(
            LogLine(text, "runner", "run", "stdout", self.clock())
        )

    async def _flush(self) -> None:
        """Write the turn's log lines and statuses, in one transaction each."""
        lines, self._lines = self._lines, {}
        statuses, self._statuses = self._statuses, {}
        if lines:
            await asyncio.to_thread(self._write_lines, lines)
        if statuses:
            await asyncio.to_thread(self.store.watch_statuses, statuses)

    def _write_lines(self, lines: dict[str, list[LogLine]]) -> None:
        batches = {}
        for run_id, items in lines.items():
            first = self._next_line.get(run_id)
            if first is None:
                first = self.store.next_line_num(run_id)
            batches[run_id] = (first, items)
            self._next_line[run_id] = first + len(items)
        self.store.append_logs(batches)

    async def _end(
        self,
        run_id: str,
        target: RunStatus,
        reason: str | None,
        *,
        exit_code: int | None = None,
        event: dict[str, Any] | None = None,
    ) -> None:
        self._watches.pop(run_id, None)
        if reason:
            await self._line(run_id, reason)
        # its lines come before its end: a follower of the log stops at the end
        await self._flush()
        self._next_line.pop(run_id, None)
        fields: dict[str, Any] = {"reason": reason}
        if exit_code is not None:
            fields["exit_code"] = exit_code
        if target is RunStatus.CANCELLED:
            # a running run is cancelled through `cancelling`, as the state machine says
            await asyncio.to_thread(
                self.store.transition, run_id, RunStatus.CANCELLING, cancel_requested=True
            )
        moved = await asyncio.to_thread(self.store.transition, run_id, target, **fields)
        if moved is not None and event is not None:
            await asyncio.to_thread(
                self.store.add_event,
                moved["workspace_id"],
                "dbt_cloud.finished",
                job_id=moved["job_id"],
                run_id=run_id,
                payload=event,
            )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _job_key(watch: Watch) -> tuple[int, int]:
    """Watches polled together: the same client (connection) and dbt Cloud job."""
    return (id(watch.client), int(watch.settings["job_id"]))
