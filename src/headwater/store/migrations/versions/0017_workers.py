"""remote workers: the workers table, a run's pool and its lease

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 19:10:00
"""

import sqlalchemy as sa
from alembic import op

import headwater.store.models

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pools", sa.JSON(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("in_use", sa.Integer(), nullable=False),
        sa.Column("started_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("stopped_at", headwater.store.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pool", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", headwater.store.models.UTCDateTime(), nullable=True)
        )
        batch_op.create_index("ix_runs_lease", ["lease_expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_lease")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("pool")
    op.drop_table("workers")
