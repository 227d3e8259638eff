"""dbt Cloud watches: the runs of dbt Cloud jobs the monitor drives

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 01:15:00
"""

import sqlalchemy as sa
from alembic import op

import headwater.store.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dbt_cloud_watches",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("dbt_job_id", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("intent_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("dbt_run_id", sa.BigInteger(), nullable=True),
        sa.Column("href", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("deadline_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_dbt_cloud_watches_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_dbt_cloud_watches")),
    )


def downgrade() -> None:
    op.drop_table("dbt_cloud_watches")
