"""Statements for run telemetry: what a run's dlt sent to its beacon, and its pipeline runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Engine, Float, Select, case, cast, delete, func, insert, select

from headwater.core import traces
from headwater.core.errors import HeadwaterError
from headwater.store.db import write
from headwater.store.models import PipelineRunRecord, Run, TelemetryPayload
from headwater.store.sql import dialect_insert, new_id, row_dict, utcnow

TP = TelemetryPayload.__table__
PR = PipelineRunRecord.__table__
R = Run.__table__
KINDS = ("trace", "state", "job_result")
MAX_PAYLOADS_PER_RUN = 1000
"""A run that sends more (a job looping over pipelines) has the rest refused."""
LIST_TOTAL_CAP = 10_001
"""Lists report their total up to this, as the platform does."""

SUMMARY_COLUMNS = (
    PR.c.run_id,
    PR.c.id,
    PR.c.pipeline_name,
    PR.c.transaction_id,
    PR.c.destination_name,
    PR.c.dataset_name,
    PR.c.status,
    PR.c.total_rows_loaded,
    PR.c.duration_ms,
    PR.c.started_at,
    PR.c.finished_at,
)
STATS_COLUMNS = (
    PR.c.id,
    PR.c.pipeline_name,
    PR.c.dataset_name,
    PR.c.destination_name,
    PR.c.status,
    PR.c.started_at,
    PR.c.duration_ms,
    PR.c.total_rows_extracted,
    PR.c.total_rows_loaded,
    PR.c.total_bytes_loaded,
    PR.c.has_schema_migration,
)
SORTABLE = ("started_at", "finished_at", "duration_ms", "total_rows_loaded", "total_bytes_loaded")
STATS_SORTABLE = (
    "average_duration_ms",
    "latest_pipeline_run_at",
    "success_ratio",
    "total_pipeline_run_count",
    "total_rows_loaded",
)
"""What stats sort by, besides the name they group by."""
SUMMED = ("total_rows_loaded", "total_bytes_loaded", "total_rows_extracted")


class TooManyPayloads(HeadwaterError):
    """A run sent more beacon payloads than one run may store."""

    code = "too_many_payloads"
    status = 409


@dataclass
class PipelineRunFilter:
    start: datetime
    end: datetime
    q: str | None = None
    statuses: Sequence[str] = ()
    pipeline_names: Sequence[str] = ()
    dataset_names: Sequence[str] = ()
    destination_names: Sequence[str] = ()
    run_ids: Sequence[str] = ()
    is_empty_run: bool | None = None
    triggered_by: str | None = None
    """Only the pipeline runs of job runs this key triggered (a trigger key's view)."""
    sort: list[tuple[str, str]] = field(default_factory=lambda: [("started_at", "desc")])


@dataclass
class StatsQuery:
    """What the stats routes group by, keep and sort, beyond the runs' `PipelineRunFilter`."""

    by: str
    """`pipeline_name` or `dataset_name`: one row per pipeline, or per dataset."""
    latest_statuses: Sequence[str] = ()
    """Only groups whose latest run has one of these statuses."""
    latest_destination_names: Sequence[str] = ()
    sort: list[tuple[str, str]] = field(
        default_factory=lambda: [("latest_pipeline_run_at", "desc")]
    )
    """(`by` or one of `STATS_SORTABLE`, `asc`/`desc`), the first key first."""


class TelemetryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reader = engine.execution_options(readonly=True)

    def record(
        self, run: dict[str, Any], kind: str, payload: dict[str, Any], size_bytes: int
    ) -> dict[str, Any] | None:
        """Keep one payload of a run; a trace also becomes (or replaces) a pipeline run.

        Answers the pipeline run of a trace, else None. Raises `traces.TraceError`
        for a trace that names no pipeline or transaction (nothing is stored), and
        `TooManyPayloads` past `MAX_PAYLOADS_PER_RUN`.
        """
        assert kind in KINDS
        now = utcnow()
        derived = traces.pipeline_run(payload) if kind == "trace" else None
        name = payload.get("pipeline_name")
        row = {
            "id": new_id(),
            "workspace_id": run["workspace_id"],
            "run_id": run["id"],
            "kind": kind,
            "pipeline_name": traces.text(name, 300) if isinstance(name, str) else None,
            "payload": payload,
            "size_bytes": size_bytes,
            "received_at": now,
        }
        with write(self.engine) as conn:
            stored = conn.execute(
                select(func.count()).select_from(TP).where(TP.c.run_id == run["id"])
            ).scalar_one()
            if stored >= MAX_PAYLOADS_PER_RUN:
                raise TooManyPayloads(f"a run keeps at most {MAX_PAYLOADS_PER_RUN} payloads")
            if kind == "state":
                # schemas are big and only the newest matter
                conn.execute(
                    delete(TP).where(
                        TP.c.run_id == run["id"],
                        TP.c.kind == "state",
                        TP.c.pipeline_name.is_(None)
                        if row["pipeline_name"] is None
                        else TP.c.pipeline_name == row["pipeline_name"],
                    )
                )
            conn.execute(insert(TP).values(**row))
            if derived is None:
                return None
            detail = derived.pop("detail")
            values = {
                **derived,
                "workspace_id": run["workspace_id"],
                "run_id": run["id"],
                "trace_id": row["id"],
                "started_at": derived["started_at"] or now,
                "detail": detail,
                "updated_at": now,
            }
            stmt = dialect_insert(conn, PR).values(id=new_id(), created_at=now, **values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[PR.c.run_id, PR.c.transaction_id], set_=values
            )
            conn.execute(stmt)
            return row_dict(
                conn.execute(
                    select(PR).where(
                        PR.c.run_id == run["id"],
                        PR.c.transaction_id == derived["transaction_id"],
                    )
                ).first()
            )

    # -- reads ------------------------------------------------------------------------------

    def job_result(self, run_id: str) -> dict[str, Any] | None:
        """The newest job result the run's dlt delivered (the payload row)."""
        with self.reader.connect() as conn:
            return row_dict(
                conn.execute(
                    select(TP)
                    .where(TP.c.run_id == run_id, TP.c.kind == "job_result")
                    .order_by(TP.c.received_at.desc(), TP.c.id.desc())
                    .limit(1)
                ).first()
            )

    def payload(self, payload_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return row_dict(conn.execute(select(TP).where(TP.c.id == payload_id)).first())

    def payloads(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        cond = [TP.c.run_id == run_id]
        if kind is not None:
            cond.append(TP.c.kind == kind)
        with self.reader.connect() as conn:
            rows = conn.execute(select(TP).where(*cond).order_by(TP.c.received_at)).all()
        return [dict(r._mapping) for r in rows]

    def get_pipeline_run(self, pipeline_run_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return row_dict(conn.execute(select(PR).where(PR.c.id == pipeline_run_id)).first())

    def summaries(self, run_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The pipeline runs of many job runs in one query, oldest first per job run."""
        ids = list(dict.fromkeys(run_ids))
        out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if not ids:
            return out
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(*SUMMARY_COLUMNS)
                .where(PR.c.run_id.in_(ids))
                .order_by(PR.c.run_id, PR.c.started_at, PR.c.id)
            ).all()
        for r in rows:
            out[r.run_id].append(dict(r._mapping))
        return out

    def list_pipeline_runs(
        self, ws_id: str, f: PipelineRunFilter, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Pipeline runs started in `[f.start, f.end)`, sorted as asked; total capped."""
        cond = self._conditions(ws_id, f)
        order = []
        for key, direction in f.sort:
            col = PR.c[key]
            order.append(col.desc() if direction == "desc" else col.asc())
        order.append(PR.c.id.desc())
        with self.reader.connect() as conn:
            capped = select(PR.c.id).where(*cond).limit(LIST_TOTAL_CAP).subquery()
            total = conn.execute(select(func.count()).select_from(capped)).scalar_one()
            rows = conn.execute(
                select(PR).where(*cond).order_by(*order).limit(limit).offset(offset)
            ).all()
        return [dict(r._mapping) for r in rows], int(total)

    def stats(
        self, ws_id: str, f: PipelineRunFilter, q: StatsQuery, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One row per pipeline (`q.by="pipeline_name"`) or dataset (`"dataset_name"`) that
        ran in the window: its counts, totals and latest run, as the stats routes answer them.

        One `GROUP BY … ORDER BY … LIMIT`; groups the sort ties keep the order they first ran
        in, and missing values sort last either way. Answers the page and the total.
        """
        stmt = self._stats(ws_id, f, q)
        ordered = stmt.order_by(*self._stats_order(stmt, q)).limit(limit).offset(offset)
        with self.reader.connect() as conn:
            total = conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            rows = conn.execute(ordered).all()
        return [_stats_row(r._mapping) for r in rows], int(total)

    def _stats(self, ws_id: str, f: PipelineRunFilter, q: StatsQuery) -> Select[Any]:
        key = PR.c[q.by]
        runs = (
            select(
                key.label("group_key"),
                *STATS_COLUMNS,
                func.row_number()
                .over(partition_by=key, order_by=(PR.c.started_at.desc(), PR.c.id.desc()))
                .label("newest"),
                func.row_number()
                .over(partition_by=key, order_by=(PR.c.started_at, PR.c.id))
                .label("oldest"),
            )
            .where(*self._conditions(ws_id, f), key.is_not(None))
            .cte("runs")
        )
        succeeded = func.sum(case((runs.c.status == "succeeded", 1), else_=0))
        durations = cast(func.sum(runs.c.duration_ms), BigInteger)
        timed = func.count(runs.c.duration_ms)
        groups = (
            select(
                runs.c.group_key,
                func.count().label("total_pipeline_run_count"),
                succeeded.label("succeeded_pipeline_run_count"),
                (cast(succeeded, Float) / func.count()).label("success_ratio"),
                func.sum(runs.c.total_rows_loaded).label("total_rows_loaded"),
                func.sum(runs.c.total_bytes_loaded).label("total_bytes_loaded"),
                func.sum(runs.c.total_rows_extracted).label("total_rows_extracted"),
                func.coalesce(durations, 0).label("total_duration_ms"),
                _rounded_mean(durations, timed).label("average_duration_ms"),
                func.count(runs.c.pipeline_name.distinct()).label("distinct_pipeline_count"),
                func.sum(case((runs.c.has_schema_migration, 1), else_=0)).label(
                    "schema_migration_count"
                ),
                # the order the groups first ran in breaks the sort's ties
                func.min(runs.c.started_at).label("first_at"),
                func.min(case((runs.c.oldest == 1, runs.c.id))).label("first_id"),
            )
            .group_by(runs.c.group_key)
            .subquery("groups")
        )
        latest = runs.alias("latest")
        cond = [latest.c.newest == 1]
        if q.latest_statuses:
            cond.append(latest.c.status.in_(list(q.latest_statuses)))
        if q.latest_destination_names:
            cond.append(latest.c.destination_name.in_(list(q.latest_destination_names)))
        return (
            select(
                groups,
                latest.c.destination_name.label("latest_destination_name"),
                latest.c.started_at.label("latest_pipeline_run_at"),
                latest.c.status.label("latest_status"),
                latest.c.dataset_name.label("latest_dataset_name"),
                latest.c.pipeline_name.label("latest_pipeline_name"),
                latest.c.id.label("latest_pipeline_run_id"),
            )
            .join_from(groups, latest, latest.c.group_key == groups.c.group_key)
            .where(*cond)
        )

    def _stats_order(self, stmt: Select[Any], q: StatsQuery) -> list[Any]:
        cols = stmt.selected_columns

        def bytewise(col: Any) -> Any:
            # code point order, as SQLite's and Python's, whatever the database's collation
            return col.collate("C") if self.engine.dialect.name == "postgresql" else col

        order: list[Any] = []
        for name, direction in q.sort:
            col: Any = bytewise(cols.group_key) if name == q.by else cols[name]
            order.append((col.desc() if direction == "desc" else col.asc()).nulls_last())
        return [*order, cols.first_at, bytewise(cols.first_id)]

    def _conditions(self, ws_id: str, f: PipelineRunFilter) -> list[Any]:
        cond = [PR.c.workspace_id == ws_id, PR.c.started_at >= f.start, PR.c.started_at < f.end]
        if f.q:
            pattern = (
                "%"
                + f.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            cond.append(func.lower(PR.c.pipeline_name).like(pattern, escape="\\"))
        for column, values in (
            (PR.c.status, f.statuses),
            (PR.c.pipeline_name, f.pipeline_names),
            (PR.c.dataset_name, f.dataset_names),
            (PR.c.destination_name, f.destination_names),
            (PR.c.run_id, f.run_ids),
        ):
            if values:
                cond.append(column.in_(list(values)))
        if f.is_empty_run is not None:
            cond.append(PR.c.is_empty_run.is_(f.is_empty_run))
        if f.triggered_by is not None:
            cond.append(PR.c.run_id.in_(select(R.c.id).where(R.c.triggered_by == f.triggered_by)))
        return cond

    def watermark(self, ws_id: str) -> datetime | None:
        """When telemetry last recorded anything for the workspace."""
        with self.reader.connect() as conn:
            return conn.execute(
                select(func.max(TP.c.received_at)).where(TP.c.workspace_id == ws_id)
            ).scalar_one()


def _rounded_mean(total: Any, n: Any) -> Any:
    """`round(total / n)` as Python rounds (half to even), in integers; NULL when `n` is 0.
    Exact, where a float division in SQL would round differently on each database."""
    q, r = total // n, total % n
    return case(
        (n == 0, None),
        else_=q + case((2 * r > n, 1), ((2 * r == n) & (q % 2 == 1), 1), else_=0),
    )


def _stats_row(row: Any) -> dict[str, Any]:
    """Sums come back as PostgreSQL NUMERIC: integers, as Python summed them."""
    out = dict(row)
    for k in SUMMED:
        out[k] = int(out[k] or 0)
    return out
