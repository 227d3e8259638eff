"""archive, publish, run packages

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:12:05.118213
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("archived_at", sa.DateTime(), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_secret", sa.String(length=36), nullable=True))

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code_package_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("config_package_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("config_package_id")
        batch_op.drop_column("code_package_id")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("public_secret")

    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.drop_column("archived_at")
