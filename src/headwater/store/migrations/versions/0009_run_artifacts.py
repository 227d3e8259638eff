"""run artifacts: files a run leaves (dbt's run_results.json, manifest.json)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 01:00:00
"""

import sqlalchemy as sa
from alembic import op

import headwater.store.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_artifacts_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "name", name=op.f("pk_run_artifacts")),
    )


def downgrade() -> None:
    op.drop_table("run_artifacts")
