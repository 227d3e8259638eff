"""intervals: backfills, when a job's completed intervals were cleared (refresh), the
deliver deadline of runs, and jobs waiting for fresh upstreams

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 09:30:00
"""

import sqlalchemy as sa
from alembic import op

import headwater.store.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("intervals_reset_at", headwater.store.models.UTCDateTime(), nullable=True)
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("backfill_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("deadline_at", headwater.store.models.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("deadline_missed_at", headwater.store.models.UTCDateTime(), nullable=True)
        )
        batch_op.create_index("ix_runs_job_interval", ["job_id", "interval_start"])
        batch_op.create_index("ix_runs_deadline", ["deadline_at"])
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("start_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("end_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("refresh", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", headwater.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name=op.f("fk_backfills_workspace_id_workspaces")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_backfills_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfills")),
        sa.UniqueConstraint("workspace_id", "number", name="uq_backfills_workspace_number"),
    )
    op.create_table(
        "freshness_waits",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("since", headwater.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_freshness_waits_job_id_jobs")
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_freshness_waits")),
    )


def downgrade() -> None:
    op.drop_table("freshness_waits")
    op.drop_table("backfills")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_deadline")
        batch_op.drop_index("ix_runs_job_interval")
        batch_op.drop_column("deadline_missed_at")
        batch_op.drop_column("deadline_at")
        batch_op.drop_column("backfill_id")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("intervals_reset_at")
