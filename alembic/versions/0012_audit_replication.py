"""Audit report identity: ``audits.document_id``, unique across databases.

Two databases used to give their first audits the same document id (``AUD-00001``) and, through
``autolabel run``'s shared default folder, the same report path. A report's document id is now
``AUD-<short hash of the database identity>-<audit id>``, stored on the audit row when it is
written, so it stays the id the report carries even if the database file moves later. Audits
made before this revision keep NULL (their reports carry the old id). Replication statistics
and orientation counts live in the flags' evidence JSON, which needs no schema change.

A plain ADD COLUMN on both dialects; ``audits`` carries no search-index triggers, so the
SQLite batch rebuild on downgrade needs nothing recreated.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audits", sa.Column("document_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("document_id")
