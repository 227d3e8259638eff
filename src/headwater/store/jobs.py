"""Manifest versions and the jobs reconciled to them: deploy, read, pause, archive,
publish."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from headwater.core.specs import JobSpec
from headwater.store import notify
from headwater.store.base import Flag, StoreBase
from headwater.store.db import write
from headwater.store.sql import (
    ACTIVE_JOBS,
    GET_JOB,
    GET_JOB_VERSION,
    INSERT_JOB,
    INSERT_JOB_VERSION,
    INSERT_MANIFEST,
    LATEST_MANIFEST,
    LATEST_MANIFEST_KEY,
    PUBLISHED_JOB,
    RESTART_SCHEDULES,
    UPDATE_JOB,
    WORKSPACE_JOBS,
    jobs_page,
    new_id,
    row_dict,
    utcnow,
)

JOB_CACHE_S = 2.0


@dataclass(frozen=True)
class DeployedJob:
    job: dict[str, Any]
    outcome: str  # created | updated | unchanged | archived
    previous_version: dict[str, Any] | None


def _paused(on: bool, now: datetime) -> dict[str, Any]:
    return {"is_paused": on, "updated_at": now}


def _archived(on: bool, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"is_archived": on, "updated_at": now}
    if on:
        values["next_run_at"] = None
    return values


def _published(on: bool, now: datetime) -> dict[str, Any]:
    return {"public_secret": new_id() if on else None, "updated_at": now}


PAUSED = Flag(
    read=GET_JOB,
    write=UPDATE_JOB,
    is_set=lambda job: bool(job["is_paused"]),
    values=_paused,
    events=("job.paused", "job.resumed"),
    of_job=True,
    restart_schedules=RESTART_SCHEDULES,
)
ARCHIVED = Flag(
    read=GET_JOB,
    write=UPDATE_JOB,
    is_set=lambda job: bool(job["is_archived"]),
    values=_archived,
    events=("job.archived", "job.unarchived"),
    of_job=True,
    restart_schedules=RESTART_SCHEDULES,
)
PUBLISHED = Flag(
    read=GET_JOB,
    write=UPDATE_JOB,
    is_set=lambda job: job["public_secret"] is not None,
    values=_published,
    events=("job.published", "job.unpublished"),
    of_job=True,
    notify_jobs=False,
)


class Jobs(StoreBase):
    # job versions never change once written: every run start reads one
    _versions: dict[str, dict[str, Any]]
    _jobs: dict[str, tuple[int, float, dict[str, Any]]]
    _active: dict[str, tuple[int, list[dict[str, Any]]]]

    def _init_jobs(self) -> None:
        self._versions = {}
        self._jobs = {}
        self._active = {}

    def latest_manifest(self, ws_id: str) -> dict[str, Any] | None:
        return self._one(LATEST_MANIFEST, {"b_ws_id": ws_id})

    def deploy(
        self,
        ws_id: str,
        manifest: dict[str, Any],
        manifest_hash: str,
        warnings: list[str],
        specs: Sequence[JobSpec],
        deployment_module: str | None,
        dry_run: bool = False,
        code_package_id: str | None = None,
        config_package_id: str | None = None,
        also_reconcile: Sequence[str] = (),
    ) -> tuple[int | None, list[DeployedJob]]:
        """Store a manifest version and reconcile the jobs to it.

        Jobs missing from a manifest of the same deployment module are archived:
        their triggers stop, their history stays. `also_reconcile` names further modules
        whose jobs `specs` hold in full (`headwater.toml`'s): theirs missing are archived
        too. A job whose `headwater.toml` settings or added triggers changed is updated in
        place (no new job version). A manifest with the hash and packages of the newest
        version adds no version. Answers `(new version or None, outcomes)`.
        """
        now = utcnow()
        outcomes: list[DeployedJob] = []
        with write(self.engine) as conn:
            latest = conn.execute(LATEST_MANIFEST_KEY, {"b_ws_id": ws_id}).first()
            existing = {
                r.job_ref: dict(r._mapping)
                for r in conn.execute(WORKSPACE_JOBS, {"b_ws_id": ws_id})
            }
            seen: set[str] = set()
            for spec in specs:
                seen.add(spec.job_ref)
                old = existing.get(spec.job_ref)
                if old is None:
                    outcomes.append(
                        self._create_job(conn, ws_id, spec, deployment_module, now, dry_run)
                    )
                elif (
                    old["definition_hash"] != spec.definition_hash
                    or old["is_archived"]
                    or (old["settings"] or {}) != spec.settings
                    or list(old["triggers"] or []) != list(spec.triggers)
                ):
                    outcomes.append(
                        self._update_job(conn, old, spec, deployment_module, now, dry_run)
                    )
                else:
                    outcomes.append(DeployedJob(old, "unchanged", None))
            if deployment_module is not None or also_reconcile:
                for ref, old in existing.items():
                    if ref in seen or old["is_archived"]:
                        continue
                    module = old["deployment_module"]
                    ours = module in also_reconcile or (
                        deployment_module is not None and module in (None, deployment_module)
                    )
                    if not ours:
                        continue
                    if not dry_run:
                        conn.execute(
                            UPDATE_JOB,
                            {
                                "b_id": old["id"],
                                "is_archived": True,
                                "next_run_at": None,
                                "updated_at": now,
                            },
                        )
                        old = {**old, "is_archived": True, "updated_at": now}
                    outcomes.append(DeployedJob(old, "archived", None))
            version: int | None = None
            changed = latest is None or (
                latest.hash,
                latest.code_package_id,
                latest.config_package_id,
            ) != (
                manifest_hash,
                code_package_id,
                config_package_id,
            )
            if changed and not dry_run:
                version = (latest.version if latest else 0) + 1
                conn.execute(
                    INSERT_MANIFEST,
                    dict(
                        workspace_id=ws_id,
                        version=version,
                        hash=manifest_hash,
                        deployment_module=deployment_module,
                        manifest=manifest,
                        warnings=list(warnings),
                        code_package_id=code_package_id,
                        config_package_id=config_package_id,
                        created_at=now,
                    ),
                )
                self._event(
                    conn,
                    ws_id,
                    "deployment.loaded",
                    payload={"version": version, "hash": manifest_hash},
                    now=now,
                )
        if not dry_run:
            self.notifier.notify(notify.JOBS, notify.EVENTS)
        return version, outcomes

    def _create_job(
        self,
        conn: Connection,
        ws_id: str,
        spec: JobSpec,
        module: str | None,
        now: datetime,
        dry_run: bool,
    ) -> DeployedJob:
        job_id, version_id = new_id(), new_id()
        values = dict(
            id=job_id,
            workspace_id=ws_id,
            job_ref=spec.job_ref,
            job_type=spec.job_type,
            definition=spec.definition,
            definition_hash=spec.definition_hash,
            version=1,
            current_version_id=version_id,
            triggers=spec.triggers,
            default_trigger=spec.default_trigger,
            pipeline_name=spec.pipeline_name,
            deployment_module=spec.deployment_module or module,
            settings=spec.settings,
            is_paused=False,
            is_archived=False,
            run_counter=0,
            next_run_at=None,
            created_at=now,
            updated_at=now,
        )
        if not dry_run:
            conn.execute(INSERT_JOB, values)
            conn.execute(
                INSERT_JOB_VERSION,
                dict(
                    id=version_id,
                    job_id=job_id,
                    version=1,
                    definition=spec.definition,
                    definition_hash=spec.definition_hash,
                    created_at=now,
                ),
            )
        return DeployedJob(values, "created", None)

    def _update_job(
        self,
        conn: Connection,
        old: dict[str, Any],
        spec: JobSpec,
        module: str | None,
        now: datetime,
        dry_run: bool,
    ) -> DeployedJob:
        previous = None
        if old["current_version_id"]:
            previous = row_dict(
                conn.execute(GET_JOB_VERSION, {"b_id": old["current_version_id"]}).first()
            )
        values: dict[str, Any] = dict(
            job_type=spec.job_type,
            triggers=spec.triggers,
            default_trigger=spec.default_trigger,
            pipeline_name=spec.pipeline_name,
            deployment_module=spec.deployment_module or module,
            settings=spec.settings,
            is_archived=False,
            updated_at=now,
        )
        if old["definition_hash"] != spec.definition_hash:
            version_id = new_id()
            values.update(
                definition=spec.definition,
                definition_hash=spec.definition_hash,
                version=old["version"] + 1,
                current_version_id=version_id,
            )
            if not dry_run:
                conn.execute(
                    INSERT_JOB_VERSION,
                    dict(
                        id=version_id,
                        job_id=old["id"],
                        version=old["version"] + 1,
                        definition=spec.definition,
                        definition_hash=spec.definition_hash,
                        created_at=now,
                    ),
                )
        if not dry_run:
            conn.execute(UPDATE_JOB, {"b_id": old["id"], **values})
        return DeployedJob({**old, **values}, "updated", previous)

    def list_jobs(
        self,
        ws_id: str,
        *,
        ref: str | None = None,
        is_archived: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        count, page = jobs_page(ws_id, ref, is_archived, limit, offset)
        with self.reader.connect() as conn:
            total = conn.execute(count).scalar_one()
            rows = conn.execute(page).all()
        return [dict(r._mapping) for r in rows], int(total)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self._one(GET_JOB, {"b_id": job_id})

    def get_job_cached(self, job_id: str) -> dict[str, Any] | None:
        """The job as of the last change this process heard of (JOBS) and at most
        JOB_CACHE_S old: for triggers, which re-read what may change under their lock."""
        version, now = self.notifier.version(notify.JOBS), time.monotonic()
        hit = self._jobs.get(job_id)
        if hit is not None and hit[0] == version and now - hit[1] < JOB_CACHE_S:
            return hit[2]
        job = self.get_job(job_id)
        if job is not None:
            if len(self._jobs) > 10_000:
                self._jobs.clear()
            self._jobs[job_id] = (version, now, job)
        return job

    def published_job(self, public_secret: str) -> dict[str, Any] | None:
        """The job published under `public_secret`, if any."""
        return self._one(PUBLISHED_JOB, {"b_public_secret": public_secret})

    def get_job_version(self, version_id: str) -> dict[str, Any] | None:
        cached = self._versions.get(version_id)
        if cached is not None:
            return dict(cached)
        version = self._one(GET_JOB_VERSION, {"b_id": version_id})
        if version is not None:
            if len(self._versions) > 10_000:
                self._versions.clear()
            self._versions[version_id] = version
            return dict(version)
        return None

    def active_jobs(self, ws_id: str) -> list[dict[str, Any]]:
        return self._all(ACTIVE_JOBS, {"b_ws_id": ws_id})

    def active_jobs_cached(self, ws_id: str) -> list[dict[str, Any]]:
        """`active_jobs`, read again only after a deploy, pause or resume (JOBS moved): for
        loops woken often (by every run), which must not read every job on each wake."""
        version = self.notifier.version(notify.JOBS)
        cached = self._active.get(ws_id)
        if cached is None or cached[0] != version:
            cached = (version, self.active_jobs(ws_id))
            self._active[ws_id] = cached
        return cached[1]

    def set_paused(self, job_id: str, paused: bool) -> dict[str, Any] | None:
        """Pause a job (no trigger starts a run) or resume it; ticks missed meanwhile are
        not made up: its schedules restart from now."""
        return self._set_flag(PAUSED, job_id, paused)

    def set_archived(self, job_id: str, archived: bool) -> dict[str, Any] | None:
        """Archive a job by hand (its triggers stop, its history stays) or bring it back."""
        return self._set_flag(ARCHIVED, job_id, archived)

    def set_published(self, job_id: str, published: bool) -> dict[str, Any] | None:
        """Give the job a public secret (kept when it has one) or take it away."""
        return self._set_flag(PUBLISHED, job_id, published)

    def set_next_run(self, updates: dict[str, datetime | None]) -> None:
        if not updates:
            return
        with write(self.engine) as conn:
            for job_id, at in updates.items():
                conn.execute(UPDATE_JOB, {"b_id": job_id, "next_run_at": at})
