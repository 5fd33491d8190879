"""data_loss: what the recorder could not keep, counted in the record

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_loss",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("t_us", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("first_t_us", sa.BigInteger(), nullable=False),
        sa.Column("last_t_us", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["session.id"],
                                name=op.f("fk_data_loss_session_id_session")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_loss")),
    )
    with op.batch_alter_table("data_loss", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_loss_session_id"), ["session_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("data_loss", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_loss_session_id"))
    op.drop_table("data_loss")
