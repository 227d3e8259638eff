"""leader leases: which server runs the engine when several share a database

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 19:50:00
"""

import sqlalchemy as sa
from alembic import op

import headwater.store.models

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("expires_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.Column("acquired_at", headwater.store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_leases")),
    )


def downgrade() -> None:
    op.drop_table("leader_leases")
