"""retries: attempts of runs, their retry policy and when a retry may start

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 01:30:00
"""

import sqlalchemy as sa
from alembic import op

import headwater.store.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("retry_policy", sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(
            sa.Column("not_before", headwater.store.models.UTCDateTime(), nullable=True)
        )
    op.execute("UPDATE runs SET attempt = 1")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.alter_column("attempt", existing_type=sa.Integer(), nullable=False)
    op.create_table(
        "run_attempts",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", headwater.store.models.UTCDateTime(), nullable=True),
        sa.Column("finished_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("retry_at", headwater.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_attempts_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "attempt", name=op.f("pk_run_attempts")),
    )


def downgrade() -> None:
    op.drop_table("run_attempts")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("not_before")
        batch_op.drop_column("retry_policy")
        batch_op.drop_column("attempt")
