"""The explanation quality gate: status ``rejected`` with a reason code and a gate version.

``explanations`` gains ``reason`` (the gate's short code for a rejected candidate: empty, echo,
loop, too_long, prompt_reference, incomplete, copy) and ``gate_version`` (the gate that judged
the row; NULL for rows stored before the gate). The status CHECK admits ``rejected``.

Existing rows keep their status here: the gate is library code that evolves, and a migration
must stay frozen. The explain stage re-judges every candidate whose ``gate_version`` is NULL
or older (no LLM call: from the stored raw reply and prompt), and ``autolabel explain
--recheck`` does the same on demand and prints what changed per reason.

On SQLite the CHECK constraint is changed in place, by the procedure SQLite documents for
changing CHECK constraints (``writable_schema``, then a new ``schema_version``), not by a batch
rebuild: rebuilding ``explanations`` would drop it with foreign keys on, which cascades to every
score and embedding, and trips the search-index trigger on ``saes`` that names the table. The
columns are plain ``ADD COLUMN``s. On PostgreSQL all of it is plain ALTERs; the generated
``search_tsv`` column and the triggers of revision 0002 are untouched.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUS = "status IN ('ok','parse_error','refused','error')"
NEW_STATUS = "status IN ('ok','parse_error','refused','error','rejected')"

COLUMNS = (sa.Column("reason", sa.String(32), nullable=True),
           sa.Column("gate_version", sa.Integer(), nullable=True))


def _sqlite_check(old: str, new: str) -> None:
    """Swap the status CHECK text in the stored CREATE TABLE (SQLite's documented way to
    change a CHECK constraint without rebuilding the table), inside the migration's
    transaction; a schema that does not hold ``old`` is refused rather than guessed at."""
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'explanations'").scalar()
    if f"CHECK ({old})" not in str(sql):
        raise RuntimeError(f"explanations has no CHECK ({old}); the database was altered by "
                           "hand — restore it from a backup or report it")
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar() or 0)
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = replace(sql, ?, ?) "
        "WHERE type = 'table' AND name = 'explanations'", (f"CHECK ({old})", f"CHECK ({new})"))
    bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def _set_check(old: str, new: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_check(old, new)
        return
    op.drop_constraint(op.f("ck_explanations_status"), "explanations", type_="check")
    op.create_check_constraint(op.f("ck_explanations_status"), "explanations", new)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("explanations", column.copy())
    _set_check(OLD_STATUS, NEW_STATUS)


def downgrade() -> None:
    # The old schema has no "rejected": such rows go back to the nearest old status.
    op.execute("UPDATE explanations SET status = 'parse_error' WHERE status = 'rejected'")
    _set_check(NEW_STATUS, OLD_STATUS)
    for column in COLUMNS:
        op.drop_column("explanations", column.name)
