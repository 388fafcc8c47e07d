"""Reliability: runs can be ``killed``; free-text columns that writers can overflow become Text.

PostgreSQL enforces ``VARCHAR(n)`` and rejected the audit's 51-character flag direction, which
failed every ``autolabel run`` there in its audit stage. Columns whose values come from
free text (a flag's direction and category, a scorer's simulator name, which embeds a model
name) are Text now. ``runs.status`` gains ``killed``: the next run marks a run whose process
vanished (SIGKILL, power cut) instead of leaving it ``running`` forever.

On SQLite, tables are rebuilt with batch mode (SQLite cannot alter a CHECK constraint); none of
these tables carries the search-index triggers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_RUN_STATUS = "status IN ('running','ok','failed','partial')"
NEW_RUN_STATUS = "status IN ('running','ok','failed','partial','killed')"
TEXT_COLUMNS = {"flags": [("direction", 32, True), ("category", 64, False)],
                "scores": [("simulator", 64, False)]}


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch.create_check_constraint("status", NEW_RUN_STATUS)
    for table, columns in TEXT_COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for name, length, nullable in columns:
                batch.alter_column(name, type_=sa.Text(), existing_type=sa.String(length),
                                   existing_nullable=nullable)


def downgrade() -> None:
    for table, columns in TEXT_COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for name, length, nullable in columns:
                batch.alter_column(name, type_=sa.String(length), existing_type=sa.Text(),
                                   existing_nullable=nullable)
    op.execute("UPDATE runs SET status = 'failed' WHERE status = 'killed'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch.create_check_constraint("status", OLD_RUN_STATUS)
