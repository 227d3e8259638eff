"""debounce states: the debouncer of each job with a run_interval

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 01:05:00
"""

import sqlalchemy as sa
from alembic import op

import headwater.store.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "debounce_states",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("last_fire_at", headwater.store.models.UTCDateTime(), nullable=True),
        sa.Column("due_at", headwater.store.models.UTCDateTime(), nullable=True),
        sa.Column("in_flight", sa.Boolean(), nullable=False),
        sa.Column("follow_up", sa.Boolean(), nullable=False),
        sa.Column("fire_count", sa.Integer(), nullable=False),
        sa.Column("in_flight_run_id", sa.String(length=36), nullable=True),
        sa.Column("last_run_id", sa.String(length=36), nullable=True),
        sa.Column("request", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("updated_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_debounce_states_job_id_jobs")
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_debounce_states")),
    )


def downgrade() -> None:
    op.drop_table("debounce_states")
