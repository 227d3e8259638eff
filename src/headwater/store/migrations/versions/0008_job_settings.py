"""job settings: what headwater.toml sets for each job

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 00:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settings", sa.JSON(), nullable=True))
    op.execute("UPDATE jobs SET settings = '{}'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("settings", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("settings")
