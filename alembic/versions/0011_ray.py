"""Scale-out on Ray (the home-made work queue is retired) and a validation split for examples.

- ``work_items`` is dropped: ``autolabel run --worker`` and its PostgreSQL queue are gone; scale
  out with ``--executor ray`` (collection sharded by corpus documents, one pass).
- ``examples.split`` gains ``validation`` (issue 13: train documents are explained, validation
  documents choose among candidate explanations, test documents score the chosen one). The
  column widens from ``VARCHAR(8)`` to ``VARCHAR(16)``: PostgreSQL enforces the length, and
  "validation" has 10 characters.

On SQLite the ``examples`` table is rebuilt in batch mode (SQLite cannot alter a CHECK
constraint); it carries none of the search-index triggers of migration 0002.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SPLIT = "split IN ('train','test')"
NEW_SPLIT = "split IN ('train','validation','test')"


def upgrade() -> None:
    with op.batch_alter_table("examples") as batch:
        batch.drop_constraint(op.f("ck_examples_split"), type_="check")
        batch.alter_column("split", type_=sa.String(16), existing_type=sa.String(8),
                           existing_nullable=False)
        batch.create_check_constraint("split", NEW_SPLIT)
    with op.batch_alter_table("work_items") as batch:
        batch.drop_index("ix_work_items_key_status")
    op.drop_table("work_items")


def downgrade() -> None:
    _create_work_items()
    op.execute("DELETE FROM examples WHERE split = 'validation'")
    with op.batch_alter_table("examples") as batch:
        batch.drop_constraint(op.f("ck_examples_split"), type_="check")
        batch.alter_column("split", type_=sa.String(8), existing_type=sa.String(16),
                           existing_nullable=False)
        batch.create_check_constraint("split", OLD_SPLIT)


def _create_work_items() -> None:
    """The queue table exactly as migration 0003 created it."""
    op.create_table(
        "work_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sae_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("feature_lo", sa.Integer(), nullable=False),
        sa.Column("feature_hi", sa.Integer(), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending','claimed','done','failed')", name=op.f("ck_work_items_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_work_items_run_id_runs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["sae_id"], ["saes.id"], name=op.f("fk_work_items_sae_id_saes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_items")),
        sa.UniqueConstraint("sae_id", "key", "feature_lo", name="uq_work_items_identity"),
    )
    with op.batch_alter_table("work_items") as batch:
        batch.create_index("ix_work_items_key_status", ["key", "status", "feature_lo"],
                           unique=False)
